"""HL7 v2.5.1 ORU^R01 for a signed report, built and validated with hl7apy; the ACK it expects.

One OBX (TX, LOINC 18782-3) per line of the signed text; OBR-25 and OBX-11 carry the result
status (P preliminary, F final, C corrected or addendum). MSH-10 is ``RR<version id>``: a resend
of the same version carries the same control id, so a RIS can drop the duplicate.
"""

from __future__ import annotations

import logging
from datetime import datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.core import Message
from hl7apy.parser import parse_message

from readingroom.schema import utcnow

from dictation.delivery.document import DeliveryDoc, DeliveryError

log = logging.getLogger(__name__)

VERSION = "2.5.1"
HL7_STATUS = {"preliminary": "P", "final": "F", "addendum": "C", "corrected": "C"}
_ESCAPES = (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\"))


def escape(text: str) -> str:
    """Escape HL7 delimiters in free text (HL7 v2 chapter 2.7); line breaks become spaces."""
    for raw, esc in _ESCAPES:
        text = text.replace(raw, esc)
    return text.replace("\r", " ").replace("\n", " ")


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


def unescape(text: str) -> str:
    for raw, esc in reversed(_ESCAPES):
        text = text.replace(esc, raw)
    return text


def _ts(value: datetime) -> str:
    return value.strftime("%Y%m%d%H%M%S")


def _person(name: str) -> str:
    """A DICOM person name (FAMILY^GIVEN) as HL7 components, other delimiters escaped."""
    return "^".join(fit(part) for part in (name or "").split("^")[:5])


def control_id(doc: DeliveryDoc) -> str:
    return f"RR{doc.version_id}"


def build_oru(doc: DeliveryDoc, *, sending_application: str = "READINGROOM", sending_facility: str = "READINGROOM",
              receiving_application: str = "", receiving_facility: str = "", now: datetime | None = None) -> str:
    """The ORU^R01 message (ER7, segments separated by ``\\r``), validated strictly by hl7apy."""
    status = HL7_STATUS[doc.status]
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    msg.msh.msh_3 = fit(sending_application, 20)
    msg.msh.msh_4 = fit(sending_facility, 20)
    msg.msh.msh_5 = fit(receiving_application, 20)
    msg.msh.msh_6 = fit(receiving_facility, 20)
    msg.msh.msh_7 = _ts(now or utcnow())
    msg.msh.msh_9 = "ORU^R01^ORU_R01"
    msg.msh.msh_10 = control_id(doc)
    msg.msh.msh_11 = "P"
    msg.msh.msh_12 = VERSION
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    patient.pid.pid_3 = f"{fit(doc.patient_id or 'UNKNOWN')}^^^{fit(doc.site or 'READINGROOM', 20)}^MR"
    patient.pid.pid_5 = _person(doc.patient_name) or "UNKNOWN"
    if doc.patient_birth_date:
        patient.pid.pid_7 = doc.patient_birth_date
    sex = (doc.patient_sex or "U").strip().upper()[:1]
    patient.pid.pid_8 = sex if sex in ("M", "F", "O", "U") else "U"
    order = result.add_group("ORU_R01_ORDER_OBSERVATION")
    order.orc.orc_1 = "RE"
    order.orc.orc_2 = fit(doc.accession)
    order.orc.orc_3 = fit(doc.accession)
    obr = order.obr
    obr.obr_1 = "1"
    obr.obr_2 = fit(doc.accession)
    obr.obr_3 = fit(doc.accession)
    description = fit(doc.description or "Imaging study")
    obr.obr_4 = f"{description}^{description}^L"
    when = (doc.study_date + (doc.study_time or "").split(".")[0])[:14]
    if when:
        obr.obr_7 = when
    if doc.referring_physician:
        obr.obr_16 = "^" + _person(doc.referring_physician)
    obr.obr_22 = _ts(doc.signed_at)
    obr.obr_24 = "RAD"
    obr.obr_25 = status
    obr.obr_32 = fit(doc.signed_by)
    # One OBX per line; hl7apy holds a TX value to 199 characters, so long lines are wrapped.
    lines = [piece for line in (doc.text.splitlines() or [""]) for piece in wrap(line)]
    for n, line in enumerate(lines, start=1):
        group = order.add_group("ORU_R01_OBSERVATION")
        obx = group.obx
        obx.obx_1 = str(n)
        obx.obx_2 = "TX"
        obx.obx_3 = "18782-3^Radiology Study observation (narrative)^LN"
        obx.obx_4 = "1"
        obx.obx_5 = escape(line) if line.strip() else " "
        obx.obx_11 = status
        obx.obx_14 = _ts(doc.signed_at)
        obx.obx_16 = fit(doc.signed_by)
    if not msg.validate():
        raise DeliveryError("the ORU message did not validate; this is a bug in dictation/delivery/hl7.py")
    return msg.to_er7()


def parse(text: str) -> Message:
    """Parse and strictly validate an ER7 message (raises hl7apy's errors)."""
    message = parse_message(text.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
    message.validate()
    return message


def report_text(message: Message) -> str:
    """The report text of an ORU^R01, from its OBX segments (for tests and receivers)."""
    order = message.oru_r01_patient_result.oru_r01_order_observation
    return "\n".join(unescape(group.obx.obx_5.value).rstrip() for group in order.oru_r01_observation)


def build_ack(received: str, code: str = "AA", text: str = "") -> str:
    """An ACK for ``received`` as the site's RIS answers it (our test peers and the bench): the
    orders listener's ACK builder, sent from the application and facility the message was for."""
    from triage.orders.hl7 import build_ack as ack_for, peek_header

    head = peek_header(received)
    return ack_for(received, code, text, application=head.get("receiving_app") or "RIS",
                   facility=head.get("receiving_facility") or "HOSPITAL")


def check_ack(reply: str, expected_control_id: str) -> str:
    """Accept an AA (or CA) ACK for our message; raise DeliveryError for anything else."""
    try:
        ack = parse_message(reply.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.TOLERANT,
                            find_groups=False)
        code = ack.msa.msa_1.value
        acked = ack.msa.msa_2.value
        detail = ack.msa.msa_3.value if ack.msa.msa_3 else ""
    except Exception as exc:  # noqa: BLE001 - anything unreadable is a failed delivery
        raise DeliveryError(f"the RIS answered something that is not an HL7 ACK ({exc}): {reply[:120]!r}") from None
    if acked != expected_control_id:
        raise DeliveryError(f"the RIS acknowledged message {acked!r}, not ours ({expected_control_id})")
    if code not in ("AA", "CA"):
        raise DeliveryError(f"the RIS answered {code} for {expected_control_id}: {unescape(detail) or 'no reason'}")
    return code
