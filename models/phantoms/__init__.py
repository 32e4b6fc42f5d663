"""Synthetic studies with known ground truth: head CTs (hemorrhage) and chest radiographs.

One module per concern:

    head_ct    the one head CT phantom (``ct_head``, its normal volume ``head_phantom``) and
               lesions inserted into the real pydicom-data head CT slice (``ct_head_real``)
    chest      chest radiographs (``cxr_image``), synthetic or with findings in the real CR
    dicom      phantoms as DICOM: deterministic UIDs, CT series, CR images
    datasets   case ``index`` of set ``seed`` (``draw_case``), written as studies and ``labels.csv``
               (``write_dataset``, the format ``readingroom evaluate`` reads)
    samples    the real pydicom-data sample images and the demo's studies made of them

Pure generators return arrays plus their truth (``CTCase``, ``CXRCase``). ``source == "real"``
cases insert lesions into the real pydicom-data images (head CT ``693``, chest CR ``RG1``) with
augmentation, so that the models also see real anatomy and real noise. Everything here is
SYNTHETIC; the DICOM carry it in their descriptions.
"""

from __future__ import annotations

import logging

from models.phantoms.chest import CXR_FINDINGS, CXRCase, cxr_image
from models.phantoms.datasets import GENERATOR_VERSION, TASK_FINDINGS, draw_case, size_bin, write_case, write_dataset
from models.phantoms.dicom import ct_series, cxr_dataset, new_dataset, uid
from models.phantoms.head_ct import (
    CT_FOV_MM, ICH_SUBTYPES, SMALL_SHARE, VISIBLE_CONTRAST_HU, VISIBLE_HU, VISIBLE_MM2, CTCase, ct_head, ct_head_real,
    head_phantom,
)
from models.phantoms.samples import DEMO_STUDIES, DemoStudy, sample_dir

log = logging.getLogger(__name__)

__all__ = [
    "CT_FOV_MM", "CTCase", "CXRCase", "CXR_FINDINGS", "DEMO_STUDIES", "DemoStudy", "GENERATOR_VERSION",
    "ICH_SUBTYPES", "SMALL_SHARE", "TASK_FINDINGS", "VISIBLE_CONTRAST_HU", "VISIBLE_HU", "VISIBLE_MM2",
    "ct_head", "ct_head_real", "ct_series", "cxr_dataset", "cxr_image", "draw_case", "head_phantom",
    "new_dataset", "sample_dir", "size_bin", "uid", "write_case", "write_dataset",
]
