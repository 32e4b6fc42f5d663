"""What every order entry point shares: the parsed order, its errors, priorities and times.

``ParsedOrder`` is the one shape an order has between a parser (HL7 v2 in ``hl7.py``, FHIR
ServiceRequest in ``fhir.py``) and the database (``store.py``): plain text fields named like the
``orders`` table columns, so that an order read from either source is stored the same way.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


class OrderError(ReadingRoomError):
    """An order operation cannot be done (unknown accession, wrong state, no protocol...)."""


class MessageError(ReadingRoomError):
    """An incoming order message cannot be accepted; the message names the problem.

    ``ack`` is the HL7 acknowledgement code: "AR" (rejected: not a message we can read at all,
    wrong type or version) or "AE" (error: a readable message with a missing or bad field).
    ``code`` is the HL7 error code (table 0357) and ``location`` the field, e.g. "PID-3".
    """

    def __init__(self, text: str, ack: str = "AE", code: str = "101", location: str = "") -> None:
        super().__init__(text)
        self.text, self.ack, self.code, self.location = text, ack, code, location


class SenderNotAllowed(MessageError):
    """The sender may not do what the message asks: change or cancel another site's order, or
    claim a site from an address that site does not send from. Answered AR (HL7) or 403 (FHIR)."""

    def __init__(self, text: str, code: str = "207", location: str = "MSH-4") -> None:
        super().__init__(text, ack="AR", code=code, location=location)


# Order control codes we act on (HL7 table 0119): new, cancel (the site's), change.
NEW, CANCEL, CHANGE = "NW", "CA", "XO"
CONTROL_ALIASES = {"NW": NEW, "CA": CANCEL, "DC": CANCEL, "OC": CANCEL, "XO": CHANGE, "XX": CHANGE}

# HL7 priority codes (ORC-7.6 / TQ1-9 / OBR-27.6, table 0027) and FHIR request-priority codes,
# mapped to the words the priority policy knows (configs/findings.yaml, order_priorities).
PRIORITY_WORDS = {
    "S": "STAT", "STAT": "STAT", "A": "ASAP", "ASAP": "ASAP", "U": "URGENT", "URGENT": "URGENT",
    "R": "ROUTINE", "ROUTINE": "ROUTINE", "P": "ROUTINE", "C": "ROUTINE", "T": "ROUTINE",
    "PRN": "ROUTINE", "HIGH": "HIGH", "MEDIUM": "MEDIUM", "LOW": "LOW",
}

# DICOM modality codes an order may name (OBR-24 diagnostic service section, IPC-5, or a prefix).
MODALITIES = ("CT", "MR", "US", "CR", "DX", "XA", "RF", "MG", "NM", "PT", "OT")
_MODALITY_WORDS = {"XR": "CR", "RAD": "CR", "XRAY": "CR", "MRI": "MR", "CTA": "CT", "PET": "PT", "MAMMO": "MG"}


def normalize_priority(value: str) -> str:
    """'S' -> 'STAT', 'r' -> 'ROUTINE'; an unknown word is kept upper-case (the policy decides)."""
    word = (value or "").strip().upper()
    return PRIORITY_WORDS.get(word, word[:16])


def guess_modality(*texts: str) -> str:
    """The modality from a diagnostic section, a procedure code or a description ("CT HEAD" -> "CT")."""
    for text in texts:
        for word in re.findall(r"[A-Za-z]+", (text or "").upper()):
            if word in MODALITIES:
                return word
            if word in _MODALITY_WORDS:
                return _MODALITY_WORDS[word]
    return ""


_LATERALITY = (("BILATERAL", "BILATERAL"), ("BILAT", "BILATERAL"), ("LEFT", "LEFT"), ("RIGHT", "RIGHT"),
               ("LT", "LEFT"), ("RT", "RIGHT"))
_LATERALITY_CODES = {"L": "LEFT", "R": "RIGHT", "B": "BILATERAL", "LEFT": "LEFT", "RIGHT": "RIGHT",
                     "BILATERAL": "BILATERAL", "LT": "LEFT", "RT": "RIGHT"}


def normalize_laterality(code: str = "", *texts: str) -> str:
    """LEFT, RIGHT, BILATERAL or "": from a code (L/R/B) or from words in a description."""
    if code.strip().upper() in _LATERALITY_CODES:
        return _LATERALITY_CODES[code.strip().upper()]
    for text in texts:
        words = set(re.findall(r"[A-Z]+", (text or "").upper()))
        for word, side in _LATERALITY:
            if word in words:
                return side
    return ""


_TS = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.\d+)?([+-]\d{4})?$")


def parse_hl7_time(value: str) -> datetime | None:
    """An HL7 TS/DTM ("20261129031500+0100") as naive UTC; None when empty or unreadable."""
    value = (value or "").strip()
    match = _TS.match(value)
    if not match:
        return None
    parts = [int(p) if p else d for p, d in zip(match.groups()[:6], (0, 1, 1, 0, 0, 0), strict=True)]
    try:
        moment = datetime(*parts)
    except ValueError:
        return None
    offset = match.group(7)
    if offset:
        sign = 1 if offset[0] == "+" else -1
        moment -= sign * timedelta(hours=int(offset[1:3]), minutes=int(offset[3:5]))
    return moment


@dataclass
class ParsedOrder:
    """One order as read from a message, before it is stored. Empty text means "not given"."""

    control: str                     # NW, CA or XO
    accession: str
    placer_order: str = ""
    filler_order: str = ""
    patient_id: str = ""
    patient_name: str = ""
    patient_birth_date: str = ""
    patient_sex: str = ""
    visit_number: str = ""
    patient_class: str = ""
    ordering_physician: str = ""
    procedure_code: str = ""
    procedure_description: str = ""
    modality: str = ""
    priority: str = ""
    laterality: str = ""
    indication: str = ""
    contrast_allergy: str = ""
    egfr: float | None = None
    scheduled_at: datetime | None = None
    study_uid: str = ""
    warnings: list[str] = field(default_factory=list)

    def columns(self) -> dict:
        """The values to store on the ``orders`` row (without control and warnings)."""
        data = asdict(self)
        data.pop("control")
        data.pop("warnings")
        return data


@dataclass
class ParsedMessage:
    """An order message: who sent it, and the orders in it (one per ORC/OBR group)."""

    message_type: str
    control_id: str
    version: str
    sending_application: str = ""
    sending_facility: str = ""
    receiving_application: str = ""
    receiving_facility: str = ""
    orders: list[ParsedOrder] = field(default_factory=list)
