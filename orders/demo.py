"""Demo orders: the orders behind the demo studies, plus a few new requests waiting for review.

``seed_demo_orders(db, settings)`` sends each order through the real HL7 path (built with hl7apy,
parsed, stored, acknowledged) before the demo images arrive, so that the images link to their
orders and the review tab has work: a thunderclap headache (suggests CT head + CTA), a headache
without red flags (an appropriateness hint), a shoulder MR without a side, a CT with a low eGFR.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Protocol, Sequence

from orders.store import receive_hl7
from readingroom.db import Database
from readingroom.settings import Settings

log = logging.getLogger(__name__)

PRIORITY_CODES = {"STAT": "S", "HIGH": "A", "ROUTINE": "R"}
# Facility (MSH-4) per demo sender; matched to the sites by name (configs/sites.yaml).
FACILITY = {"STMARY": "St. Mary's Hospital", "NORTHSIDE": "Northside Clinic"}

# The clinical question of each demo study's order (models.phantoms.DemoStudy.key).
INDICATIONS = {
    "ct-head": "Fall at home on apixaban, GCS 14, headache", "cxr": "Fever and productive cough, crackles right base",
    "ct-abdomen": "Right lower quadrant pain, raised CRP", "xr-hand": "Fall on outstretched hand, snuffbox tenderness",
    "mr-shoulder": "Painful arc, suspected supraspinatus tear", "mr-brain": "New focal seizure",
    "us-abdomen": "Deranged liver function tests", "nm-bone": "Prostate cancer staging, rising PSA",
}

# accession, patient id, name, sex, birth date, procedure code, description, priority, indication, side
PENDING = (
    ("SM24201", "SM103311", "PATEL^RAVI", "M", "19640505", "CTHEAD", "CT HEAD WITHOUT CONTRAST", "S",
     "Sudden thunderclap headache during exercise, worst of life", ""),
    ("SM24202", "SM103312", "LEE^MIN", "F", "19900214", "CTHEAD", "CT HEAD WITHOUT CONTRAST", "R",
     "Intermittent headache for 3 months", ""),
    ("NS8901", "NS57001", "WEBER^JONAS", "M", "19820919", "MRSHOULDER", "MR SHOULDER WITHOUT CONTRAST", "R",
     "Shoulder pain after a fall, suspected rotator cuff tear", ""),
    ("SM24203", "SM103313", "OKONKWO^IFE", "F", "19470712", "CTPA", "CT PULMONARY ANGIO", "A",
     "Pleuritic chest pain, raised D-dimer; eGFR 24", ""),
)


def _message(control_id: str, facility: str, accession: str, patient: tuple[str, str, str, str], code: str,
             description: str, priority: str, indication: str, side: str, when: dt.datetime,
             egfr: float | None = None) -> str:
    from hl7apy.core import Message

    patient_id, name, sex, birth = patient
    msg = Message("ORM_O01", version="2.5")
    msg.msh.msh_3, msg.msh.msh_4 = "DEMO_RIS", facility
    msg.msh.msh_5, msg.msh.msh_6 = "READINGROOM", "TELERAD"
    msg.msh.msh_9, msg.msh.msh_10, msg.msh.msh_11 = "ORM^O01^ORM_O01", control_id, "P"
    pid = msg.add_segment("PID")
    pid.pid_1, pid.pid_3, pid.pid_5, pid.pid_7, pid.pid_8 = "1", f"{patient_id}^^^{facility}^MR", name, birth, sex
    orc = msg.add_segment("ORC")
    orc.orc_1, orc.orc_2, orc.orc_3 = "NW", f"P{accession}", accession
    orc.orc_7 = f"^^^{when:%Y%m%d%H%M%S}^^{priority}"
    orc.orc_12 = "9001^DEMO^REFERRER"
    obr = msg.add_segment("OBR")
    obr.obr_1, obr.obr_2, obr.obr_3, obr.obr_4 = "1", f"P{accession}", accession, f"{code}^{description}"
    obr.obr_18 = accession
    obr.obr_31 = f"^{indication}"
    if side:
        obr.obr_46 = side
    if egfr is not None:
        obx = msg.add_segment("OBX")
        obx.obx_1, obx.obx_2, obx.obx_3, obx.obx_5, obx.obx_6 = "1", "NM", "62238-1^eGFR^LN", str(egfr), "mL/min"
    return msg.to_er7()


class DemoStudyFacts(Protocol):
    """What an order needs of a demo study (``models.phantoms.DemoStudy`` has it; the caller passes
    the studies, so orders do not depend on where the demo images come from)."""

    key: str
    sender_ae: str
    patient_name: str
    patient_id: str
    sex: str
    birth_date: str
    accession: str
    description: str
    priority: str


def demo_messages(studies: Sequence[DemoStudyFacts], now: dt.datetime | None = None) -> list[str]:
    """ORM^O01 messages for the demo: approved-to-be orders of the demo studies, then pending ones."""
    now = now or dt.datetime.now()
    messages = []
    for study in studies:
        facility = "STMARY" if study.sender_ae.startswith("STMARY") else "NORTHSIDE"
        messages.append(_message(f"DEMO-{study.accession}", FACILITY[facility], study.accession,
                                 (study.patient_id, study.patient_name, study.sex, study.birth_date),
                                 study.key.upper()[:16], study.description,
                                 PRIORITY_CODES.get(study.priority, "R"), INDICATIONS.get(study.key, ""), "", now))
    for accession, patient_id, name, sex, birth, code, description, priority, indication, side in PENDING:
        facility = FACILITY["STMARY" if accession.startswith("SM") else "NORTHSIDE"]
        egfr = 24.0 if "eGFR 24" in indication else None
        messages.append(_message(f"DEMO-{accession}", facility, accession, (patient_id, name, sex, birth), code,
                                 description, priority, indication, side, now, egfr))
    return messages


def seed_demo_orders(db: Database, settings: Settings, studies: Sequence[DemoStudyFacts]) -> int:
    """Store the demo orders (once: a second call is answered 'already exists'). Returns how many were new.

    The demo studies' orders are approved with their suggested protocol (or left for review when
    none fits); the pending ones wait for review."""
    from orders import review
    from orders.common import OrderError

    before = len(review.list_orders(db, limit=100000))
    for text in demo_messages(studies):
        receive_hl7(db, settings, text, peer="demo")  # an order already there is answered AE, and kept
    created = len(review.list_orders(db, limit=100000)) - before
    for study in studies:
        try:
            review.approve(db, settings, study.accession, user="demo")
        except OrderError:
            pass  # already approved, or no protocol fits: it waits in the review list
    log.info("demo: %d orders stored", created)
    return created
