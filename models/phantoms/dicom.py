"""Phantoms as real DICOM: CT Image Storage series and CR images with deterministic UIDs.

The images are well-formed: consistent UIDs, spacing, orientation and position, rescale to
Hounsfield units (CT). They carry "SYNTHETIC" in the patient and series descriptions.
"""

from __future__ import annotations

import datetime as dt
import logging

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

log = logging.getLogger(__name__)

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


def cxr_dataset(image: np.ndarray, *, key: str, view: str, pixel_mm: float, monochrome1: bool,
                patient_id: str, accession: str):
    """A CR Image Storage dataset for a radiograph (attenuation 0..1 -> 12-bit stored values)."""
    cr = "1.2.840.10008.5.1.4.1.1.1"
    stored = np.clip(image, 0, 1.2) / 1.2 * 4095
    if monochrome1:
        stored = 4095 - stored
    ds = new_dataset(cr, uid(key, "image", 0))
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(key, "study"), uid(key, "series")
    ds.PatientName, ds.PatientID, ds.AccessionNumber = "SYNTHETIC^CHEST", patient_id, accession
    ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
    today = dt.date.today().strftime("%Y%m%d")
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = today
    ds.StudyTime = ds.SeriesTime = "010000"
    ds.StudyDescription = "XR CHEST 1 VIEW (SYNTHETIC)"
    ds.SeriesDescription = f"CHEST {view} (SYNTHETIC)"
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", view
    ds.Manufacturer, ds.ReferringPhysicianName, ds.StudyID = "ReadingRoom synthetic", "SYNTHETIC^REFERRER", "1"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.PatientOrientation = ["R", "F"] if view == "AP" else ["L", "F"]
    ds.ImagerPixelSpacing = ds.PixelSpacing = [round(pixel_mm, 4), round(pixel_mm, 4)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows, ds.Columns = image.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.WindowCenter, ds.WindowWidth = 2048, 4096
    ds.PixelData = stored.astype(np.uint16).tobytes()
    return ds


