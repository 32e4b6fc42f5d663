"""The real sample images of pydicom-data, and the demo's studies made of them.

``sample_dir`` is where pydicom-data keeps its files (the real head CT slice and chest CR the
phantoms insert lesions into). ``DEMO_STUDIES`` groups sample files into plausible studies with a
demo patient, accession and priority: the demo sends their images (triage/demo.py) and their
orders (orders/demo.py).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)


def sample_dir() -> Path:
    """The folder of real sample images shipped by the pydicom-data package."""
    import data_store  # the import name of the pydicom-data package

    return Path(data_store.__file__).resolve().parent / "data"


@dataclass(frozen=True)
class DemoStudy:
    """One demo study: which sample files, sent by whom, for which demo patient and order."""

    key: str
    sender_ae: str
    patient_name: str
    patient_id: str
    sex: str
    birth_date: str
    accession: str
    description: str
    files: tuple[str, ...]
    priority: str = "ROUTINE"   # Requested Procedure Priority, as the modality worklist gave it


DEMO_STUDIES = (
    DemoStudy("ct-head", "STMARY_CT", "DOE^JOHN", "SM100231", "M", "19480312", "SM24001",
              "CT HEAD WITHOUT CONTRAST", ("693_J2KR.dcm",), "STAT"),
    DemoStudy("cxr", "STMARY_CR", "RIVERA^ANA", "SM100877", "F", "19710630", "SM24002",
              "XR CHEST 1 VIEW", ("RG1_J2KR.dcm",)),
    DemoStudy("ct-abdomen", "STMARY_PACS", "NGUYEN^PAUL", "SM101554", "M", "19660204", "SM24003",
              "CT ABDOMEN PELVIS WITH CONTRAST", ("explicit_VR-UN.dcm",)),
    DemoStudy("xr-hand", "STMARY_CR", "SMITH^LUCY", "SM102210", "F", "19890917", "SM24004",
              "XR HAND 2 VIEWS", ("RG3_J2KR.dcm",)),
    DemoStudy("mr-shoulder", "NORTHSIDE_MR", "KOWALSKI^ADAM", "NS55012", "M", "19790122", "NS8801",
              "MR SHOULDER LEFT WITHOUT CONTRAST", ("MR2_J2KR.dcm",)),
    DemoStudy("mr-brain", "NORTHSIDE_MR", "OKAFOR^GRACE", "NS55340", "F", "19550809", "NS8802",
              "MR BRAIN WITHOUT CONTRAST", ("emri_small_jpeg_ls_lossless.dcm",), "HIGH"),
    DemoStudy("us-abdomen", "NORTHSIDE_US", "MEYER^EVA", "NS55871", "F", "19920411", "NS8803",
              "US ABDOMEN COMPLETE", ("US1_J2KR.dcm", "OBXXXX1A_rle_2frame.dcm")),
    DemoStudy("nm-bone", "NORTHSIDE_PACS", "BROWN^OLIVER", "NS56002", "M", "19500101", "NS8804",
              "NM BONE SCAN WHOLE BODY", ("JPEG-LL.dcm",)),
)

