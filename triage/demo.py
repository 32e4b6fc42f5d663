"""The demo worklist: real sample images from pydicom-data, grouped into plausible studies,
plus two synthetic head CTs (the second with a phantom subdural hematoma), sent through our own
DICOM listener like a hospital would send them.

Each sample file gets new UIDs, a demo patient and an accession number, so that the studies
look like a night's work from two sites. The pixel data and transfer syntax stay as they are
(JPEG 2000, JPEG lossless, RLE and uncompressed all travel).
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING
import logging
from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

from readingroom.settings import Settings
from readingroom import dicom_net as scu
from triage.synthetic import ct_series, head_phantom, uid

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)


def sample_dir() -> Path:
    """The folder of real sample images shipped by the pydicom-data package."""
    import data_store  # the import name of the pydicom-data package

    return Path(data_store.__file__).resolve().parent / "data"


@dataclass(frozen=True)
class DemoStudy:
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


def _rewrite(ds: Dataset, study: DemoStudy, series_index: int, image_index: int, when: dt.datetime) -> Dataset:
    ds.StudyInstanceUID = uid("demo", study.key, "study")
    ds.SeriesInstanceUID = uid("demo", study.key, "series", series_index)
    ds.SOPInstanceUID = uid("demo", study.key, "image", series_index, image_index)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID = study.patient_name, study.patient_id
    ds.PatientSex, ds.PatientBirthDate = study.sex, study.birth_date
    ds.AccessionNumber, ds.StudyDescription = study.accession, study.description
    ds.StudyDate = when.strftime("%Y%m%d")
    ds.StudyTime = when.strftime("%H%M%S")
    ds.ReferringPhysicianName = "DEMO^REFERRER"
    ds.RequestedProcedurePriority = study.priority
    ds.SeriesNumber = series_index + 1
    ds.InstanceNumber = image_index + 1
    return ds


def demo_datasets() -> list[tuple[str, list[Dataset]]]:
    """(sender AE title, datasets) for every demo study, real samples first."""
    folder = sample_dir()
    now = dt.datetime.now()
    out: list[tuple[str, list[Dataset]]] = []
    for study in DEMO_STUDIES:
        datasets = [_rewrite(dcmread(folder / name), study, n, 0, now) for n, name in enumerate(study.files)]
        out.append((study.sender_ae, datasets))
    for sender, key, seed, name, patient_id, accession, priority in (
        ("STMARY_CT", "demo-synthetic-head", 7, "SYNTHETIC^HEAD", "SM199999", "SM24099", "ROUTINE"),
        ("NORTHSIDE_PACS", "demo-synthetic-head-2", 11, "SYNTHETIC^HEAD^TWO", "NS59999", "NS8899", "HIGH"),
    ):
        volume, spacing = _demo_head(seed, hemorrhage=key.endswith("-2"))
        series = ct_series(volume, key=key, patient_name=name, patient_id=patient_id, accession=accession,
                           pixel_spacing_mm=spacing)
        for ds in series:
            ds.RequestedProcedurePriority = priority
        out.append((sender, series))
    return out


def _demo_head(seed: int, hemorrhage: bool) -> tuple["np.ndarray", float]:
    """A 24-slice synthetic head CT; the second demo head carries a phantom subdural hematoma
    (models/phantoms.py), so that the demo shows what a positive AI finding does."""
    if not hemorrhage:
        return head_phantom(24, seed=seed), 0.45
    import numpy as np

    from models.phantoms import ct_head

    case = ct_head(np.random.default_rng(seed), n_slices=24, size=256, positive=True, subtype="subdural")
    return case.hu, round(case.pixel_mm, 4)


def seed_demo(settings: Settings, host: str = "127.0.0.1", port: int | None = None) -> int:
    """Send the demo studies to the running listener. Returns the number of images acknowledged."""
    port = port or settings.dicom.port
    acknowledged = 0
    for sender, datasets in demo_datasets():
        statuses = scu.send(datasets, host, port, called_ae=settings.dicom.ae_title, calling_ae=sender)
        ok = sum(1 for s in statuses if s == 0)
        if ok != len(statuses):
            log.warning("demo: %d of %d images from %s were not accepted: %s", len(statuses) - ok,
                        len(statuses), sender, statuses)
        acknowledged += ok
    log.info("demo: %d images sent through the listener", acknowledged)
    return acknowledged
