"""The Lab tab's plain core: which data folder to suggest, the sample set its button makes, and
the evaluation it runs. The Lab tab (workstation/tab_lab.py) only wires these to its components.

A suggestion is only ever a folder that exists: a new user's first click must not meet "No such
folder". When there is none, the box stays empty and the "Make a sample set" button writes one
with the same code as ``readingroom phantoms`` (models.phantoms.write_dataset).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

SAMPLE_STUDIES = 20
# Held-out seeds are 9000 and above (models/weights/*/metadata.json): never seen in training.
SAMPLE_SEED = 9000
PHANTOMS_FOLDER = "phantoms"      # under home, like `readingroom phantoms --out var/phantoms/...`


class LabError(ReadingRoomError):
    """A Lab action that cannot be done; the message says what to do on the page."""


def model_task(card: Any) -> str | None:
    """The phantom task (``ich`` or ``cxr``) a model reads: its card's ``task``, or the task
    whose findings cover all of the model's findings; None for a model no phantom fits."""
    from models.phantoms import TASK_FINDINGS

    task = (getattr(card, "metadata", None) or {}).get("task")
    if task in TASK_FINDINGS:
        return str(task)
    findings = set(getattr(card, "findings", ()) or ())
    for name, covered in TASK_FINDINGS.items():
        if findings and findings <= set(covered):
            return name
    return None


def sample_folder(home: Path, task: str) -> Path:
    """Where the sample button writes: ``<home>/phantoms/<task>-sample``."""
    return Path(home) / PHANTOMS_FOLDER / f"{task}-sample"


def _labelled(folder: Path) -> bool:
    return folder.is_dir() and (folder / "labels.csv").is_file()


def default_folder(home: Path, task: str | None) -> str:
    """The data folder to pre-fill for a task: the sample set if it was made, else another
    labelled ``<home>/phantoms/<task>-*`` folder (first by name), else "" (nothing to suggest).
    Computed when the page loads, so a folder made since then is suggested at the next load."""
    if not task:
        return ""
    sample = sample_folder(home, task)
    if _labelled(sample):
        return str(sample)
    root = Path(home) / PHANTOMS_FOLDER
    others = sorted(p for p in root.glob(f"{task}-*") if _labelled(p)) if root.is_dir() else []
    return str(others[0]) if others else ""


def data_for_model(home: Path, task: str | None, current: str) -> str:
    """The data folder box after the model changed: a folder the user typed stays; an empty box,
    or one that holds another task's suggestion, gets this task's suggestion (maybe empty)."""
    current = (current or "").strip()
    root = (Path(home) / PHANTOMS_FOLDER).resolve()
    if current and Path(current).expanduser().resolve().parent != root:
        return current
    return default_folder(home, task)


def _rows(labels: Path) -> int:
    with labels.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def make_sample(home: Path, task: str | None, *, n: int = SAMPLE_STUDIES, seed: int = SAMPLE_SEED,
                size: int | None = None, progress: bool = True) -> tuple[Path, bool]:
    """Write ``n`` SYNTHETIC studies of ``task`` and their labels.csv into the sample folder (the
    code of ``readingroom phantoms``); returns (folder, written). A complete set already there
    (labels.csv is written last, with ``n`` rows) is kept: ``written`` is False."""
    from models.phantoms import TASK_FINDINGS, write_dataset

    if task not in TASK_FINDINGS:
        raise LabError("This model reads no kind of study that the sample generator makes; "
                       f"choose a model for {' or '.join(sorted(TASK_FINDINGS))} phantoms.")
    folder = sample_folder(home, task)
    labels = folder / "labels.csv"
    if labels.is_file() and _rows(labels) == n:
        return folder, False
    write_dataset(task, n, seed, folder, size=size, progress=progress)
    log.info("Lab: wrote a sample set of %d %s studies to %s", n, task, folder)
    return folder, True


def evaluation_inputs(data: str, labels: str) -> tuple[Path, Path]:
    """The data folder and labels CSV the Lab's boxes name (labels default to the folder's)."""
    folder = Path((data or "").strip()).expanduser()
    if not (data or "").strip() or not folder.is_dir():
        raise LabError(f"No such folder: {data!r}. Give a folder of DICOM studies with a labels.csv, "
                       "or press Make a sample set.")
    labels_path = Path(labels.strip()).expanduser() if (labels or "").strip() else folder / "labels.csv"
    return folder, labels_path


def evaluate_folder(card: Any, data: str, labels: str, out: Path, rules: dict | None = None,
                    progress: bool = True) -> tuple[str, list[str]]:
    """What the Lab's "Run evaluation" does: score ``card`` on the folder, as
    ``readingroom evaluate``; returns the report (markdown) and the plots' paths."""
    from models.evaluate import evaluate, report

    folder, labels_path = evaluation_inputs(data, labels)
    summary = evaluate(card, folder, labels_path, out, config_rules=rules, progress=progress)
    return report(summary), [str(p) for p in sorted(Path(out).glob("*.png"))]
