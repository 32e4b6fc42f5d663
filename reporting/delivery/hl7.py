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

from readingroom.hl7 import (DEFAULT_VERSION, build_ack as kernel_ack, escape, fill_msh, fit, peek_header, read_ack,
                             timestamp, unescape, wrap, write_person)
from readingroom.schema import utcnow

from reporting.delivery.document import DeliveryDoc, DeliveryError

log = logging.getLogger(__name__)

VERSION = DEFAULT_VERSION
HL7_STATUS = {"preliminary": "P", "final": "F", "addendum": "C", "corrected": "C"}


def control_id(doc: DeliveryDoc) -> str:
    return f"RR{doc.version_id}"


def build_oru(doc: DeliveryDoc, *, sending_application: str = "READINGROOM", sending_facility: str = "READINGROOM",
              receiving_application: str = "", receiving_facility: str = "", now: datetime | None = None) -> str:
    """The ORU^R01 message (ER7, segments separated by ``\\r``), validated strictly by hl7apy."""
    status = HL7_STATUS[doc.status]
    msg = Message("ORU_R01", version=VERSION, validation_level=VALIDATION_LEVEL.STRICT)
    fill_msh(msg, message_type="ORU^R01^ORU_R01", control_id=control_id(doc), application=sending_application,
             facility=sending_facility, receiving_application=receiving_application,
             receiving_facility=receiving_facility, sent_at=now or utcnow(), limit=20)
    msg.msh.msh_12 = VERSION
    result = msg.add_group("ORU_R01_PATIENT_RESULT")
    patient = result.add_group("ORU_R01_PATIENT")
    patient.pid.pid_1 = "1"
    patient.pid.pid_3 = f"{fit(doc.patient_id or 'UNKNOWN')}^^^{fit(doc.site or 'READINGROOM', 20)}^MR"
    patient.pid.pid_5 = write_person(doc.patient_name) or "UNKNOWN"
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
        obr.obr_16 = "^" + write_person(doc.referring_physician)
    obr.obr_22 = timestamp(doc.signed_at)
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
        obx.obx_14 = timestamp(doc.signed_at)
        obx.obx_16 = fit(doc.signed_by)
    if not msg.validate():
        raise DeliveryError("the ORU message did not validate; this is a bug in reporting/delivery/hl7.py")
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
    kernel's ACK, sent from the application and facility the message was for."""
    head = peek_header(received)
    return kernel_ack(received, code, text, application=head.get("receiving_app") or "RIS",
                      facility=head.get("receiving_facility") or "HOSPITAL")


def check_ack(reply: str, expected_control_id: str) -> str:
    """Accept an AA (or CA) ACK for our message; raise DeliveryError for anything else."""
    ack = read_ack(reply)
    if not ack.code and not ack.control_id:
        raise DeliveryError(f"the RIS answered something that is not an HL7 ACK (no MSA segment): {reply[:120]!r}")
    if ack.control_id != expected_control_id:
        raise DeliveryError(f"the RIS acknowledged message {ack.control_id!r}, not ours ({expected_control_id})")
    if not ack.accepted:
        raise DeliveryError(f"the RIS answered {ack.code} for {expected_control_id}: {ack.text or 'no reason'}")
    return ack.code
