"""HL7 v2 orders: read ORM^O01 / OMI^O23 (versions 2.2 to 2.8), write rejections and questions.

hl7apy checks the envelope and builds what we send. Fields are read by position from each
segment's ER7 text (``readingroom.hl7.Segment``), so that one reader serves every version: OBR-4
is a CE in 2.3 and a CWE in 2.7, but its first component is the procedure code in both.
Z-segments are accepted and ignored, except ZDS-1 (a Study Instance UID that some RIS send).
Escaping, person names, the MSH and the ACK are the kernel's (``readingroom.hl7``), shared with
the report delivery.

    parsed = parse_order_message(text)          # raises MessageError naming the problem
    ack = build_ack(text, "AA")                 # or "AE"/"AR" with the error text
"""

from __future__ import annotations

import logging
import re
from datetime import datetime
from functools import lru_cache
from typing import Iterable

from readingroom.hl7 import (DEFAULT_VERSION, Segment, ack_code, build_ack, escape, fill_msh, new_control_id,
                             normalize_newlines, peek_header, read_person, supported_version, write_person)
from readingroom.schema import utcnow
from orders.common import (
    CONTROL_ALIASES, MODALITIES, MessageError, ParsedMessage, ParsedOrder, guess_modality, normalize_laterality,
    normalize_priority, parse_hl7_time,
)

log = logging.getLogger(__name__)

# The kernel's HL7 helpers this module used to define, still importable from here for the
# orders code, its tests and the demo site (readingroom.hl7 is their one source).
__all__ = ["DEFAULT_VERSION", "EGFR_LOINC", "NOTICES", "SUPPORTED_TYPES", "ack_code", "build_ack",
           "build_order_notice", "build_rejection", "normalize_newlines", "parse_order_message",
           "peek_header"]

SUPPORTED_TYPES = {("ORM", "O01"), ("OMI", "O23")}

# LOINC codes of an estimated GFR result (OBX-3), besides any identifier that says "GFR".
EGFR_LOINC = {"33914-3", "48642-3", "48643-3", "50044-7", "50210-4", "62238-1", "69405-9", "70969-1",
              "77147-7", "88293-6", "88294-4", "94677-2", "98979-8", "98980-6"}
_CONTRAST = re.compile(r"contrast|iod|gadolin|omnipaque|iohexol|iopamidol|visipaque|gadovist|dotarem",
                       re.IGNORECASE)


@lru_cache(maxsize=1024)
def _known_segment(name: str, version: str) -> bool:
    """Does HL7 ``version`` define this segment? (hl7apy's tables; Z-segments are always allowed.)"""
    from hl7apy import load_reference
    from hl7apy.exceptions import ChildNotFound

    if name.startswith("Z"):
        return True
    try:
        load_reference(name, "Segment", version)
        return True
    except ChildNotFound:
        return False


def _check_structure(text: str) -> str:
    """Check the envelope against hl7apy's tables: encoding characters, a supported version, and
    segment names that version defines (or Z-segments). Returns the version.

    hl7apy's full parser builds an object per component (about 50 ms a message on our machines);
    the fields we need are read by position instead (``Segment``), so this checks only what the
    full parse would have refused."""
    from hl7apy import SUPPORTED_LIBRARIES

    separators = text[3:8]
    field_sep = separators[0]
    if len(set(separators[:4])) < 4 or any(c.isalnum() or c in "\r\n " for c in separators[:4]):
        raise MessageError(f"MSH-1/MSH-2 encoding characters {separators[:4]!r} are not valid; use |^~\\&",
                           ack="AR", code="102", location="MSH-2")
    msh = Segment(text.split("\r", 1)[0], separators)
    version = msh.component(12) or DEFAULT_VERSION
    if version not in SUPPORTED_LIBRARIES:
        raise MessageError(f"HL7 version {version!r} is not supported; send version 2.2 to 2.8.2",
                           ack="AR", code="203", location="MSH-12")
    for number, line in enumerate(text.split("\r"), 1):
        name = line[:3]
        if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name) or (len(line) > 3 and line[3] != field_sep):
            raise MessageError(f"segment {number} ({line[:20]!r}) is not an HL7 segment", ack="AR", code="100")
        if not _known_segment(name, version):
            raise MessageError(f"unknown segment {name} in HL7 {version}. Name custom segments Z..., or remove "
                               "them", ack="AR", code="100", location=name)
    return version


def parse_order_message(text: str) -> ParsedMessage:
    """Read an ORM^O01 or OMI^O23 into orders. Raises MessageError (AR or AE) naming the problem."""
    text = normalize_newlines(text)
    if not text.startswith("MSH") or len(text) < 9:
        raise MessageError("the message does not start with an MSH segment", ack="AR", code="100",
                           location="MSH")
    version = _check_structure(text)
    separators = text[3:8]
    segments = [Segment(line, separators) for line in text.split("\r")]
    msh = segments[0]
    message_type = msh.component(9, 1).upper()
    event = msh.component(9, 2).upper()
    parsed = ParsedMessage(
        message_type=f"{message_type}^{event}", control_id=msh.component(10, 1), version=version,
        sending_application=msh.component(3, 1), sending_facility=msh.component(4, 1),
        receiving_application=msh.component(5, 1), receiving_facility=msh.component(6, 1),
    )
    if (message_type, event) not in SUPPORTED_TYPES:
        raise MessageError(f"message type {parsed.message_type} is not supported; send ORM^O01 or OMI^O23",
                           ack="AR", code="200", location="MSH-9")
    if not parsed.control_id:
        raise MessageError("MSH-10 (message control ID) is empty", ack="AR", code="101", location="MSH-10")

    pid = next((s for s in segments if s.name == "PID"), None)
    pv1 = next((s for s in segments if s.name == "PV1"), None)
    if pid is None:
        raise MessageError("no PID segment: the order names no patient", code="100", location="PID")
    patient_id = pid.component(3, 1) or pid.component(2, 1)
    if not patient_id:
        raise MessageError("PID-3 (patient identifier) is empty", location="PID-3")
    patient = {
        "patient_id": patient_id, "patient_name": read_person(pid, 5), "patient_birth_date": pid.component(7)[:8],
        "patient_sex": pid.component(8)[:16],
        "visit_number": (pv1.component(19) if pv1 else "") or pid.component(18),
        "patient_class": pv1.component(2) if pv1 else "",
    }
    referring = read_person(pv1, 8) if pv1 else ""
    allergy = "; ".join(
        s.component(3, 2) or s.component(3, 1) for s in segments
        if s.name == "AL1" and _CONTRAST.search(" ".join(s.components(3)) + " " + s.component(2))
    )
    egfr = _egfr(s for s in segments if s.name == "OBX")
    diagnoses = [s.component(4) or s.component(3, 2) for s in segments if s.name == "DG1"]

    # Orders: each ORC starts one; the OBR, TQ1, IPC, NTE and Z segments after it belong to it.
    groups: list[dict[str, list[Segment]]] = []
    for seg in segments[1:]:
        if seg.name == "ORC":
            groups.append({"ORC": [seg]})
        elif groups and seg.name in ("OBR", "TQ1", "IPC", "NTE", "ZDS", "OBX"):
            groups[-1].setdefault(seg.name, []).append(seg)
        elif seg.name == "OBR":  # an OBR without ORC (seen in some 2.2/2.3 feeds)
            raise MessageError("OBR without a preceding ORC segment", code="100", location="ORC")
    if not groups:
        raise MessageError("no ORC segment: the message holds no order", code="100", location="ORC")
    for index, group in enumerate(groups, 1):
        parsed.orders.append(_order(group, index, patient, referring, allergy, egfr, diagnoses, segments))
    return parsed


def _egfr(obx_segments: Iterable[Segment]) -> float | None:
    for seg in obx_segments:
        ident = " ".join(seg.components(3)).upper()
        if seg.component(3, 1) in EGFR_LOINC or "GFR" in ident:
            try:
                return float(seg.component(5).replace(",", ".").lstrip("<>= "))
            except ValueError:
                continue
    return None


def _order(group: dict[str, list[Segment]], index: int, patient: dict, referring: str, allergy: str,
           egfr: float | None, diagnoses: list[str], segments: list[Segment]) -> ParsedOrder:
    orc = group["ORC"][0]
    obr = group.get("OBR", [None])[0]
    tq1 = group.get("TQ1", [None])[0]
    ipc = group.get("IPC", [None])[0]
    zds = (group.get("ZDS") or [s for s in segments if s.name == "ZDS"] or [None])[0]
    where = f"order {index}"

    raw_control = orc.component(1).upper()
    control = CONTROL_ALIASES.get(raw_control)
    if control is None:
        raise MessageError(f"{where}: order control code ORC-1 {raw_control!r} is not supported; "
                           "send NW (new), CA (cancel) or XO (change)" if raw_control else
                           f"{where}: ORC-1 (order control code) is empty", code="103" if raw_control else "101",
                           location="ORC-1")
    if obr is None and control != "CA":
        raise MessageError(f"{where}: no OBR segment: the order names no procedure", code="100", location="OBR")

    def obr_c(number: int, comp: int = 1) -> str:
        return obr.component(number, comp) if obr else ""

    placer = orc.component(2) or obr_c(2)
    filler = orc.component(3) or obr_c(3)
    accession = (ipc.component(1) if ipc else "") or obr_c(18) or filler or placer
    if not accession:
        raise MessageError(f"{where}: no accession number (IPC-1, OBR-18, ORC-3 or ORC-2 are all empty)",
                           location="OBR-18")
    if len(accession) > 16:
        # DICOM AccessionNumber is SH (16 characters): a longer one could never link to images.
        raise MessageError(f"{where}: accession number {accession!r} is longer than 16 characters (DICOM SH)",
                           code="102", location="OBR-18")

    procedure_code = obr_c(4, 1) or obr_c(4, 4)
    procedure_text = obr_c(4, 2) or obr_c(4, 5) or procedure_code
    if control != "CA" and not procedure_code and not procedure_text:
        raise MessageError(f"{where}: OBR-4 (procedure) is empty", location="OBR-4")

    priority_raw = ((tq1.component(9) if tq1 else "") or orc.component(7, 6) or obr_c(27, 6) or obr_c(5))
    scheduled = (parse_hl7_time(tq1.component(7) if tq1 else "") or parse_hl7_time(orc.component(7, 4))
                 or parse_hl7_time(obr_c(27, 4)) or parse_hl7_time(obr_c(36)))
    reasons = [obr.component(31, 2, rep) or obr.component(31, 1, rep) for rep in range(len(obr.repetitions(31)))] \
        if obr else []
    notes = [s.component(3) for s in group.get("NTE", [])]
    indication_parts = [r for r in reasons + [obr_c(13)] + diagnoses + notes if r]
    indication = "; ".join(dict.fromkeys(indication_parts))
    modality_code = (ipc.component(5) if ipc else "") or obr_c(24)
    modality = modality_code.upper() if modality_code.upper() in MODALITIES else \
        guess_modality(modality_code, procedure_code, procedure_text)
    # OBR-46 (placer supplemental information, e.g. "L^Left"), OBR-15.5 (site modifier), else words.
    laterality = normalize_laterality(obr_c(46) or obr_c(15, 5), procedure_text, obr_c(46, 2))
    study_uid = (ipc.component(3) if ipc else "") or (zds.component(1) if zds else "")
    if study_uid and not re.fullmatch(r"[0-9]+(\.[0-9]+)*", study_uid):
        study_uid = ""
    order = ParsedOrder(
        control=control, accession=accession, placer_order=placer[:64], filler_order=filler[:64], **patient,
        ordering_physician=read_person(orc, 12) or (read_person(obr, 16) if obr else "") or referring,
        procedure_code=procedure_code[:64], procedure_description=procedure_text[:200], modality=modality,
        priority=normalize_priority(priority_raw), laterality=laterality, indication=indication,
        contrast_allergy=allergy[:200], egfr=egfr, scheduled_at=scheduled, study_uid=study_uid[:64],
    )
    if not order.patient_name:
        order.warnings.append("PID-5 (patient name) is empty")
    return order


# -- what we send ------------------------------------------------------------------------------
# What we tell the RIS about an order (ORC-1 order control, ORC-5 order status, ORC-16 reason code).
NOTICES = {
    "rejection": ("OC", "CA", "REJ", "Rejected by the reading radiologist: "),   # order cancelled by the filler
    "question": ("OH", "HD", "QRY", "Question from the reading radiologist: "),  # order held, awaiting an answer
}


def build_order_notice(order: dict, kind: str, text: str, receiving_application: str = "",
                       receiving_facility: str = "", application: str = "READINGROOM",
                       facility: str = "READINGROOM", version: str = DEFAULT_VERSION,
                       sent_at: datetime | None = None) -> str:
    """An ORM^O01 telling the site's RIS that we rejected an order (ORC-1 "OC", ORC-5 "CA") or hold
    it with a question (ORC-1 "OH", ORC-5 "HD"); the text goes in ORC-16.2 and an NTE.
    ``order`` is ``review.order_dict()``. Built with hl7apy; the free text is escaped here, because
    hl7apy reads an assigned value as ER7 and would split it at ^ and & (readingroom.hl7.escape)."""
    from hl7apy.core import Message

    control, status, reason_code, prefix = NOTICES[kind]
    version = supported_version(version)
    if version >= "2.6":  # ORM was withdrawn after 2.5.1
        version = DEFAULT_VERSION
    msg = Message("ORM_O01", version=version)
    fill_msh(msg, message_type="ORM^O01^ORM_O01" if version >= "2.4" else "ORM^O01", control_id=new_control_id(),
             application=application, facility=facility, receiving_application=receiving_application,
             receiving_facility=receiving_facility, sent_at=sent_at or utcnow())
    pid = msg.add_segment("PID")
    pid.pid_1 = "1"
    pid.pid_3 = order["patient_id"]
    pid.pid_5 = write_person(order["patient_name"] or "")
    orc = msg.add_segment("ORC")
    orc.orc_1 = control
    orc.orc_2 = order["placer_order"] or ""
    orc.orc_3 = order["filler_order"] or order["accession"]
    orc.orc_5 = status
    orc.orc_16 = f"{reason_code}^@@REASON@@"
    obr = msg.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = order["placer_order"] or ""
    obr.obr_3 = order["filler_order"] or order["accession"]
    obr.obr_4 = "@@PROCEDURE@@"
    obr.obr_18 = order["accession"]
    nte = msg.add_segment("NTE")
    nte.nte_1 = "1"
    nte.nte_3 = "@@NOTE@@"
    er7 = msg.to_er7()
    procedure = f"{escape(order['procedure_code'])}^{escape(order['procedure_description'])}"
    return (er7.replace("@@REASON@@", escape(text[:190])).replace("@@PROCEDURE@@", procedure)
            .replace("@@NOTE@@", escape((prefix + text)[:1000])))


def build_rejection(order: dict, reason: str, *args: str, **kwargs: object) -> str:
    """The rejection of an order for the site's RIS (see ``build_order_notice``)."""
    return build_order_notice(order, "rejection", reason, *args, **kwargs)  # type: ignore[arg-type]
