"""Phantom data sets on disk: case ``index`` of set ``seed``, written as DICOM studies and ``labels.csv``.

``write_dataset`` writes the format ``readingroom evaluate`` reads:

    study_uid,path,<finding 0/1 columns>,subtype,lesion_size_mm,source,...
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from models.phantoms.chest import CXR_FINDINGS, cxr_image
from models.phantoms.dicom import ct_series, cxr_dataset, uid
from models.phantoms.head_ct import ICH_SUBTYPES, SMALL_SHARE, ct_head, ct_head_real

log = logging.getLogger(__name__)

TASK_FINDINGS = {"ich": ("ich",), "cxr": CXR_FINDINGS}
# Bumped whenever the same (task, seed, index) would draw a different case: cached training sets
# and the benchmark's held-out folders are named with it, so none is reused stale.
# 2: the real-slice CT volumes are rescaled per volume and their lesion slice is drawn.
# 3: a bleed must be visible (VISIBLE_HU, VISIBLE_MM2) on some slice, else it is redrawn; in the real
#    slice, blood only replaces tissue less dense than it (not the bone edge nor the bright cortex).
GENERATOR_VERSION = 3


def draw_case(task: str, seed: int, index: int, *, size: int | None = None, real_fraction: float = 0.1,
              n_slices: int = 32, small_share: float = SMALL_SHARE):
    """Case ``index`` of the dataset ``seed``: the same arguments always give the same case.
    ``small_share`` (head CT): the share of bleeds drawn 3-5 mm (training may ask for more)."""
    rng = np.random.default_rng([seed, index, 0 if task == "ich" else 1])
    real = bool(rng.random() < real_fraction)
    if task == "ich":
        positive = bool(rng.random() < 0.5)
        subtype = ICH_SUBTYPES[index % len(ICH_SUBTYPES)] if positive else None
        if real:
            return ct_head_real(rng, size=size or 256, positive=positive, small_share=small_share)
        return ct_head(rng, n_slices=n_slices, size=size or 256, positive=positive, subtype=subtype,
                       small_share=small_share)
    if task == "cxr":
        return cxr_image(rng, size=size or 1024, real=real)
    raise ValueError(f"unknown task {task!r}: use ich or cxr")



def write_case(task: str, case, out: Path, name: str, seed: int, index: int) -> tuple[str, list]:
    """Write one case as DICOM under ``out/name/``; returns (study_uid, files)."""
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    key = f"phantom-{task}-{seed}-{index}"
    pid = f"PH{task.upper()}{seed}-{index}"
    if task == "ich":
        datasets = ct_series(case.hu, key=key, patient_name="SYNTHETIC^PHANTOM", patient_id=pid,
                             accession=f"P{seed}{index:05d}", description="CT HEAD WITHOUT CONTRAST (SYNTHETIC)",
                             slice_thickness_mm=case.thickness_mm, pixel_spacing_mm=round(case.pixel_mm, 4))
        for ds in datasets:
            ds.SeriesDescription = f"AXIAL {case.thickness_mm:g}MM (SYNTHETIC PHANTOM)"
    else:
        mono1 = bool(np.random.default_rng([seed, index, 7]).random() < 0.5)
        datasets = [cxr_dataset(case.image, key=key, view=case.view, pixel_mm=case.pixel_mm, monochrome1=mono1,
                                patient_id=pid, accession=f"P{seed}{index:05d}")]
    files = []
    for k, ds in enumerate(datasets):
        path = folder / f"IM{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return uid(key, "study"), files


def write_dataset(task: str, n: int, seed: int, out: Path, *, size: int | None = None,
                  real_fraction: float = 0.1, progress: bool = True) -> Path:
    """Write ``n`` studies and ``labels.csv``; returns the labels path."""
    from tqdm import tqdm

    if task not in TASK_FINDINGS:
        raise ValueError(f"unknown task {task!r}: use ich or cxr")
    out.mkdir(parents=True, exist_ok=True)
    findings = TASK_FINDINGS[task]
    rows = []
    for i in tqdm(range(n), desc=f"phantoms {task}", disable=not progress, unit="study"):
        case = draw_case(task, seed, i, size=size, real_fraction=real_fraction)
        name = f"{task}-{seed}-{i:05d}"
        study_uid, _ = write_case(task, case, out, name, seed, i)
        row = {"study_uid": study_uid, "path": name}
        if task == "ich":
            row["ich"] = case.ich
            extra = {"slices_with_blood": int(case.slice_labels.sum()), "mimics": "+".join(case.mimics)}
        else:
            row.update({f: case.labels[f] for f in findings})
            extra = {"view": case.view}
        row.update({"subtype": case.subtype, "lesion_size_mm": case.size_mm, "source": case.source, **extra})
        rows.append(row)
    labels = out / "labels.csv"
    with labels.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    log.info("wrote %d %s studies and %s", n, task, labels)
    return labels


def size_bin(size_mm: float) -> str:
    """The lesion-size bins of the evaluation breakdown."""
    if size_mm <= 0:
        return "none"
    if size_mm < 5:
        return "<5 mm"
    if size_mm < 15:
        return "5-15 mm"
    return ">=15 mm"
