"""HL7 v2 helpers that the order intake (``orders``) and the report delivery
(``reporting.delivery``) share: escaping, reading fields by position, person names, the MSH of
what we send, and acknowledgements (building ours, reading the peer's).

One rule for each, so that what one side writes the other reads back:

    escape("R > L & 3|4\\nnext")      # 'R > L \\T\\ 3\\F\\4\\.br\\next' (HL7 v2 chapter 2.7)
    Segment(line, "|^~\\&").component(5, 2)
    read_ack(reply).code              # 'AA'; ack_code(reply) is the same, upper-cased
    build_ack(received, "AE", "PID-3 is empty", "101", "PID-3")

Messages are built with hl7apy (imported lazily: it loads its tables on first use); free text is
escaped here because hl7apy reads an assigned value as ER7 and would split it at ``^`` and ``&``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from itertools import count
from typing import Any

from readingroom.schema import utcnow

log = logging.getLogger(__name__)

DEFAULT_VERSION = "2.5.1"
SEPARATORS = "|^~\\&"          # MSH-1 and MSH-2 of every message we send
_counter = count(1)

# Escapes of the delimiters (HL7 v2 chapter 2.7): the escape character first, so that the
# backslashes of the other escapes are not escaped again.
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))
LINE_BREAK = "\\.br\\"


# -- escaping ----------------------------------------------------------------------------------
def escape(text: str) -> str:
    """Free text for an HL7 field, with the standard escapes (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\);
    a line break (CR, LF or CRLF) becomes ``\\.br\\``, so no raw CR can end a segment early."""
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    return LINE_BREAK.join(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))


def unescape(value: str, separators: str = SEPARATORS) -> str:
    """The text of an escaped HL7 value: delimiters, ``\\.br\\`` (a line break) and ``\\Xhh\\``
    (hexadecimal bytes, as Latin-1) are restored; other escapes (highlighting) are dropped."""
    field_sep = separators[0]
    comp_sep, rep_sep, esc, sub_sep = tuple((separators[1:5] + "^~\\&")[:4])
    if esc not in value:
        return value
    table = {"F": field_sep, "S": comp_sep, "R": rep_sep, "T": sub_sep, "E": esc, ".br": "\n"}

    def sub(match: re.Match) -> str:
        code = match.group(1)
        if code in table:
            return table[code]
        if re.fullmatch(r"X[0-9A-Fa-f]+", code):
            try:
                return bytes.fromhex(code[1:]).decode("latin-1")
            except ValueError:
                return ""
        return ""

    return re.sub(re.escape(esc) + r"(.*?)" + re.escape(esc), sub, value)


def fit(text: str, limit: int = 199) -> str:
    """``text`` escaped and cut to ``limit`` characters without splitting an escape sequence."""
    raw = text or ""
    while len(escape(raw)) > limit:
        raw = raw[:-1]
    return escape(raw)


def wrap(line: str, limit: int = 199) -> list[str]:
    """Split a long line (at a space where possible) into pieces whose escaped form fits ``limit``."""
    pieces, rest = [], line
    while len(escape(rest)) > limit:
        cut = limit
        while len(escape(rest[:cut])) > limit:
            cut -= 1
        space = rest.rfind(" ", 0, cut)
        if space > cut // 2:
            cut = space + 1
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:]
    pieces.append(rest)
    return pieces


def normalize_newlines(text: str) -> str:
    """Segments end with CR; senders also use LF or CRLF. Trailing blank lines are dropped."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(line for line in text.split("\r") if line.strip())


# -- reading -----------------------------------------------------------------------------------
class Segment:
    """One segment's fields, read by position (HL7 numbering: MSH-9 is ``field(9)``).

    Reading by position serves every version: OBR-4 is a CE in 2.3 and a CWE in 2.7, but its
    first component is the procedure code in both."""

    def __init__(self, er7: str, separators: str = SEPARATORS) -> None:
        self.separators = separators
        self.field_sep = separators[0]
        self.comp_sep, self.rep_sep, self.escape, self.sub_sep = tuple((separators[1:5] + "^~\\&")[:4])
        parts = er7.split(self.field_sep)
        self.name = parts[0]
        # MSH-1 is the field separator itself, so MSH fields are shifted by one.
        self.fields = ([self.field_sep] + parts[1:]) if self.name == "MSH" else parts[1:]

    def repetitions(self, number: int) -> list[str]:
        raw = self.fields[number - 1] if 0 < number <= len(self.fields) else ""
        if self.name == "MSH" and number == 2:
            return [raw]
        return [r for r in raw.split(self.rep_sep)] if raw else []

    def component(self, number: int, comp: int = 1, rep: int = 0) -> str:
        reps = self.repetitions(number)
        if rep >= len(reps):
            return ""
        comps = reps[rep].split(self.comp_sep)
        value = comps[comp - 1] if comp <= len(comps) else ""
        return self.unescape(value.split(self.sub_sep)[0]).strip()

    def components(self, number: int, rep: int = 0) -> list[str]:
        reps = self.repetitions(number)
        if rep >= len(reps):
            return []
        return [self.unescape(c.split(self.sub_sep)[0]).strip() for c in reps[rep].split(self.comp_sep)]

    def unescape(self, value: str) -> str:
        return unescape(value, self.field_sep + self.comp_sep + self.rep_sep + self.escape + self.sub_sep)


def peek_header(text: str) -> dict[str, str]:
    """MSH fields of a message we may not be able to parse (for the ACK of a bad message)."""
    text = normalize_newlines(text)
    first = text.split("\r", 1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return {}
    msh = Segment(first, first[3:8])
    return {"app": msh.component(3), "facility": msh.component(4), "receiving_app": msh.component(5),
            "receiving_facility": msh.component(6), "control_id": msh.component(10),
            "version": msh.component(12), "event": msh.component(9, 2),
            "type": "^".join(c for c in msh.components(9)[:2] if c)}


# -- person names ------------------------------------------------------------------------------
XCN_SEGMENTS = ("ORC", "OBR", "PV1")   # their person fields are XCN: ID^family^given^...


def read_person(seg: Segment, number: int) -> str:
    """An XPN (or an XCN, whose leading ID is skipped) as a DICOM-style name: FAMILY^GIVEN^..."""
    comps = seg.components(number)
    if not comps:
        return ""
    if seg.name in XCN_SEGMENTS:
        comps = comps[1:]
        if not any(comps):
            return seg.component(number, 1)
    return "^".join(comps[:5]).rstrip("^")


def write_person(name: str, limit: int = 199) -> str:
    """A DICOM person name (FAMILY^GIVEN^...) as XPN components, each escaped and cut to ``limit``."""
    return "^".join(fit(part, limit) for part in (name or "").split("^")[:5])


# -- what we send ------------------------------------------------------------------------------
def timestamp(value: datetime) -> str:
    """An HL7 DTM to the second: 20261129040000."""
    return value.strftime("%Y%m%d%H%M%S")


def new_control_id() -> str:
    """A fresh MSH-10 for a message that is not a resend: RR<time><counter>."""
    return f"RR{utcnow():%Y%m%d%H%M%S}{next(_counter):04d}"


def supported_version(version: str) -> str:
    """``version`` when hl7apy knows it, else the default (2.5.1)."""
    from hl7apy import SUPPORTED_LIBRARIES

    return version if version in SUPPORTED_LIBRARIES else DEFAULT_VERSION


def fill_msh(msg: Any, *, message_type: str, control_id: str, application: str, facility: str,
             receiving_application: str = "", receiving_facility: str = "", sent_at: datetime | None = None,
             limit: int | None = None) -> None:
    """MSH-3 to MSH-11 of an hl7apy message we send (MSH-7 stays hl7apy's "now" unless ``sent_at``
    is given; MSH-12 is the message's version). Names are escaped, and cut to ``limit`` characters
    where the caller validates field lengths strictly (HD.1 is an IS of 20 in 2.5.1)."""
    def value(text: str) -> str:
        return fit(text, limit) if limit else escape(text)

    msh = msg.msh
    msh.msh_3 = value(application)
    msh.msh_4 = value(facility)
    if receiving_application:
        msh.msh_5 = value(receiving_application)
    if receiving_facility:
        msh.msh_6 = value(receiving_facility)
    if sent_at is not None:
        msh.msh_7 = timestamp(sent_at)
    msh.msh_9 = message_type
    msh.msh_10 = control_id
    msh.msh_11 = "P"


# HL7 table 0357, the error codes of ERR-3.
ERROR_NAMES = {"100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
               "103": "Table value not found", "200": "Unsupported message type",
               "201": "Unsupported event code", "203": "Unsupported version id", "204": "Unknown key identifier",
               "205": "Duplicate key identifier", "207": "Application internal error"}


def build_ack(received: str, code: str, text: str = "", error_code: str = "", location: str = "",
              application: str = "READINGROOM", facility: str = "READINGROOM") -> str:
    """An ACK for ``received``: code AA (accepted), AE (error) or AR (rejected), with the reason
    in MSA-3 and, from 2.5 on, an ERR segment (``error_code`` from table 0357, ``location`` such
    as "PID-3"). Answered in the sender's version when hl7apy knows it.

    Works on any input, even one that is not HL7: the ACK then names no control ID."""
    from hl7apy.core import Message

    head = peek_header(received)
    version = supported_version(head.get("version", ""))
    ack = Message("ACK", version=version)
    event = head.get("event") or "O01"
    fill_msh(ack, message_type=f"ACK^{event}^ACK" if version >= "2.4" else f"ACK^{event}",
             control_id=new_control_id(), application=application, facility=facility,
             receiving_application=head.get("app", ""), receiving_facility=head.get("facility", ""))
    ack.msa.msa_1 = code
    ack.msa.msa_2 = head.get("control_id", "")[:20] or ""
    if text:
        ack.msa.msa_3 = text[:80]
        if version >= "2.5":
            err = ack.add_segment("ERR")
            if location and re.fullmatch(r"[A-Z][A-Z0-9]{2}(-\d+)?", location):
                seg, _, field = location.partition("-")
                err.err_2 = f"{seg}^1^{field}" if field else seg
            err.err_3 = f"{error_code or '207'}^{ERROR_NAMES.get(error_code or '207', 'Application error')}^HL70357"
            err.err_4 = "E"
            err.err_8 = text[:250]
    return ack.to_er7()


# -- what we receive back ----------------------------------------------------------------------
@dataclass(frozen=True)
class Ack:
    """The MSA of a reply. ``code`` is as sent ("" when the reply has no MSA segment)."""

    code: str           # MSA-1: AA, AE, AR (original mode) or CA, CE, CR (enhanced mode)
    control_id: str     # MSA-2: the MSH-10 of the message acknowledged
    text: str = ""      # MSA-3, unescaped

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


def read_ack(reply: str) -> Ack:
    """The first MSA of ``reply`` (segments separated by CR, LF or CRLF); an empty Ack when the
    reply holds none (it is then not an acknowledgement)."""
    text = normalize_newlines(reply)
    separators = text[3:8] if text.startswith("MSH") and len(text) >= 8 else SEPARATORS
    for line in text.split("\r"):
        if line.startswith("MSA"):
            msa = Segment(line, separators)
            field_2 = msa.repetitions(2)
            control = msa.unescape(field_2[0]).strip() if field_2 else ""
            return Ack(msa.component(1), control, msa.unescape(msa.fields[2] if len(msa.fields) > 2 else "").strip())
    return Ack("", "")


def ack_code(reply: str) -> str:
    """MSA-1 of a reply, upper-cased (AA, AE, AR, CA, CE, CR), or "" when the reply has no MSA."""
    return read_ack(reply).code.upper()
