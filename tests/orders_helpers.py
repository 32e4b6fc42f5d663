"""HL7 order messages for the tests: built with hl7apy, or read from tests/data/hl7 (hand-written)."""

from __future__ import annotations

from pathlib import Path

HL7_DIR = Path(__file__).resolve().parent / "data" / "hl7"


def hl7_file(name: str) -> str:
    return (HL7_DIR / name).read_text(encoding="utf-8")


def build_orm(accession: str, *, control: str = "NW", version: str = "2.5", control_id: str | None = None,
              patient_id: str = "SM100877", patient_name: str = "RIVERA^ANA", facility: str = "STMARY",
              procedure: str = "XRCHEST^XR CHEST 2 VIEWS", modality: str = "CR", priority: str = "R",
              indication: str = "Cough and fever for 5 days", start: str = "20261129080000",
              ordering: str = "1234^WELBY^MARCUS^^^DR", laterality: str = "") -> str:
    """An ORM^O01 built with hl7apy, as a RIS would send it."""
    from hl7apy.core import Message

    msg = Message("ORM_O01", version=version)
    msg.msh.msh_3 = "RIS"
    msg.msh.msh_4 = facility
    msg.msh.msh_5 = "READINGROOM"
    msg.msh.msh_6 = "TELERAD"
    msg.msh.msh_9 = "ORM^O01^ORM_O01"
    msg.msh.msh_10 = control_id or f"{control}-{accession}"
    msg.msh.msh_11 = "P"
    pid = msg.add_segment("PID")
    pid.pid_1 = "1"
    pid.pid_3 = f"{patient_id}^^^{facility}^MR"
    pid.pid_5 = patient_name
    pid.pid_7 = "19710630"
    pid.pid_8 = "F"
    pv1 = msg.add_segment("PV1")
    pv1.pv1_2 = "O"
    orc = msg.add_segment("ORC")
    orc.orc_1 = control
    orc.orc_2 = f"P-{accession}"
    orc.orc_3 = accession
    orc.orc_7 = f"^^^{start}^^{priority}"
    orc.orc_12 = ordering
    obr = msg.add_segment("OBR")
    obr.obr_1 = "1"
    obr.obr_2 = f"P-{accession}"
    obr.obr_3 = accession
    obr.obr_4 = procedure
    obr.obr_18 = accession
    obr.obr_24 = modality
    obr.obr_31 = f"^{indication}"
    if laterality:
        obr.obr_46 = laterality
    return msg.to_er7()
