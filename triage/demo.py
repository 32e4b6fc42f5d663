"""The demo worklist: real sample images from pydicom-data, grouped into plausible studies
(``models.phantoms.DEMO_STUDIES``), plus two synthetic head CTs (the second with a phantom
subdural hematoma), sent through our own DICOM listener like a hospital would send them.

Each sample file gets new UIDs, a demo patient and an accession number, so that the studies
look like a night's work from two sites. The pixel data and transfer syntax stay as they are
(JPEG 2000, JPEG lossless, RLE and uncompressed all travel).
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
from pydicom import Dataset, dcmread

from models.phantoms import DEMO_STUDIES, DemoStudy, ct_head, ct_series, sample_dir, uid
from readingroom import dicom_net as scu
from readingroom.settings import Settings

log = logging.getLogger(__name__)

__all__ = ["demo_datasets", "seed_demo"]


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


def _demo_head(seed: int, hemorrhage: bool) -> tuple[np.ndarray, float]:
    """A 24-slice head CT of the one head phantom (models/phantoms/head_ct.py): a normal 512 x 512
    head, or a 256 x 256 head with a subdural hematoma, so that the demo shows what a positive AI
    finding does. Returns (HU volume, pixel spacing in mm)."""
    if hemorrhage:
        case = ct_head(np.random.default_rng(seed), n_slices=24, size=256, positive=True, subtype="subdural")
    else:
        case = ct_head(np.random.default_rng(seed), n_slices=24, size=512, positive=False)
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
