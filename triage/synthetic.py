"""Synthetic but well-formed CT series (a simple head phantom) for the demo and the benchmark.

The images are real DICOM: CT Image Storage, consistent UIDs, spacing, orientation and position,
rescale to Hounsfield units. They carry "SYNTHETIC" in the patient and series descriptions.
The phantoms with findings for training models belong to ``models`` (the triage-models issue).
"""

from __future__ import annotations

import datetime as dt

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

_ROOT = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, with deterministic entropy below


def uid(*parts: object) -> str:
    """A deterministic UID from its parts (same parts, same UID)."""
    return generate_uid(prefix=_ROOT, entropy_srcs=[str(p) for p in parts])


def new_dataset(sop_class_uid: str, sop_instance_uid: str) -> Dataset:
    """An empty dataset ready to be saved: file meta (explicit VR little endian) and SOP UIDs."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class_uid, sop_instance_uid
    return ds


def head_phantom(n_slices: int, size: int = 512, seed: int = 0) -> np.ndarray:
    """HU volume (slices, rows, cols): air, skull, brain with grey/white contrast, ventricles, noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-1:1:complex(0, size), -1:1:complex(0, size)]
    volume = np.full((n_slices, size, size), -1000.0, dtype=np.float32)
    for k in range(n_slices):
        z = (k / max(1, n_slices - 1)) * 1.6 - 0.8          # -0.8 (skull base) .. 0.8 (vertex)
        scale = np.sqrt(max(0.05, 1 - z * z * 0.9))
        a, b = 0.72 * scale, 0.88 * scale
        outer = (xx / a) ** 2 + (yy / b) ** 2
        inner = (xx / (a - 0.05)) ** 2 + (yy / (b - 0.05)) ** 2
        sl = volume[k]
        sl[outer <= 1] = 1000 + 300 * rng.random()          # skull
        brain = inner <= 1
        sl[brain] = 32                                      # white matter
        cortex = brain & (inner > 0.75)
        sl[cortex] = 40                                     # grey matter ribbon
        if abs(z) < 0.4:                                    # lateral ventricles
            for side in (-1, 1):
                vent = ((xx - side * 0.12) / 0.07) ** 2 + ((yy + 0.05) / 0.25) ** 2 <= 1
                sl[vent & brain] = 5
        sl[brain] += rng.normal(0, 4, size=int(brain.sum())).astype(np.float32)
    return volume


def ct_series(volume_hu: np.ndarray, *, key: str, patient_name: str = "SYNTHETIC^HEAD",
              patient_id: str = "SYN0001", accession: str = "SYN0001",
              description: str = "CT HEAD WITHOUT CONTRAST (SYNTHETIC)", slice_thickness_mm: float = 5.0,
              pixel_spacing_mm: float = 0.45) -> list[Dataset]:
    """One CT Image Storage dataset per slice, little endian, rescaled to HU."""
    n, rows, cols = volume_hu.shape
    study_uid, series_uid, frame_uid = uid(key, "study"), uid(key, "series"), uid(key, "frame")
    today = dt.date.today().strftime("%Y%m%d")
    stored = np.clip(volume_hu + 1024, 0, 4095).astype(np.uint16)
    out = []
    for k in range(n):
        ds = new_dataset(CTImageStorage, uid(key, "image", k))
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.AccessionNumber = patient_name, patient_id, accession
        ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
        ds.StudyTime = ds.SeriesTime = "010000"
        ds.StudyDescription, ds.SeriesDescription = description, "AXIAL 5MM (SYNTHETIC)"
        ds.Modality, ds.BodyPartExamined, ds.Manufacturer = "CT", "HEAD", "ReadingRoom synthetic"
        ds.ReferringPhysicianName, ds.StudyID = "SYNTHETIC^REFERRER", "1"
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-cols * pixel_spacing_mm / 2, -rows * pixel_spacing_mm / 2, k * slice_thickness_mm]
        ds.SliceLocation = k * slice_thickness_mm
        ds.SliceThickness = slice_thickness_mm
        ds.PixelSpacing = [pixel_spacing_mm, pixel_spacing_mm]
        ds.KVP, ds.PatientPosition = 120, "HFS"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.WindowCenter, ds.WindowWidth = 40, 80
        ds.PixelData = stored[k].tobytes()
        out.append(ds)
    return out
