"""Per-study AI scores for the simulator: the ``scores`` part of a scenario and reading the CSV.

``readingroom evaluate`` exports one row per study: a ``study_uid`` column, and per finding a
probability column and a 0/1 label column. A scenario modality with ``scores`` instead of
``findings`` samples its studies' truth and AI output from such a file (``studies.py``); the
probabilities go through ``triage.priority.decide`` with the model's own threshold, as on the
live worklist.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from readingroom.errors import ConfigError
from readingroom.settings import PROJECT_ROOT

log = logging.getLogger(__name__)


class ScoresSpec(BaseModel):
    """Per-study AI scores exported by ``readingroom evaluate``: one row per study, a
    ``study_uid`` column, a probability column and a 0/1 label column per finding."""

    model_config = ConfigDict(extra="forbid")

    path: str
    findings: list[str] | None = None          # default: every finding with both columns
    probability_column: str = "{finding}"
    label_column: str = "{finding}_label"
    # The model's operating threshold per finding (its model card's); a finding not listed uses
    # the policy's threshold. triage.priority.decide applies it, as on the live worklist.
    thresholds: dict[str, float] = {}


@dataclass(frozen=True)
class ScoreTable:
    """A scores file, read: one row per study."""

    uids: tuple[str, ...]
    findings: tuple[str, ...]
    probabilities: np.ndarray   # (studies, findings)
    labels: np.ndarray          # (studies, findings), bool


def _scores_path(spec: ScoresSpec, base_dir: str) -> Path:
    path = Path(spec.path)
    if path.is_absolute():
        return path
    for root in (Path(base_dir) if base_dir else None, PROJECT_ROOT, Path.cwd()):
        if root is not None and (root / path).is_file():
            return root / path
    return (Path(base_dir) if base_dir else PROJECT_ROOT) / path


@lru_cache(maxsize=16)
def read_scores(path: str, findings: tuple[str, ...] | None, prob_col: str, label_col: str) -> ScoreTable:
    """Read (once: cached) a scores CSV. ``findings`` None takes every finding with both a
    ``prob_col`` and a ``label_col`` column; a missing file or column, or a value that is not a
    number, is a ConfigError."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise ConfigError(f"scores file {path} not found (export it with `readingroom evaluate`)") from None
    if "study_uid" not in columns:
        raise ConfigError(f"scores file {path} has no study_uid column")
    if findings is None:
        findings = tuple(c for c in columns if c != "study_uid"
                         and c == prob_col.format(finding=c) and label_col.format(finding=c) in columns)
    missing = [col for f in findings for col in (prob_col.format(finding=f), label_col.format(finding=f))
               if col not in columns]
    if missing or not findings:
        raise ConfigError(f"scores file {path}: missing columns {', '.join(missing) or '(no finding found)'}; "
                          f"expected {prob_col!r} and {label_col!r} per finding")
    if not rows:
        raise ConfigError(f"scores file {path} has no rows")
    try:
        probs = np.array([[float(r[prob_col.format(finding=f)]) for f in findings] for r in rows])
        labels = np.array([[float(r[label_col.format(finding=f)]) for f in findings] for r in rows]) >= 0.5
    except ValueError as exc:
        raise ConfigError(f"scores file {path}: a value is not a number ({exc})") from None
    return ScoreTable(tuple(r["study_uid"] for r in rows), tuple(findings), probs, labels)


def load_scores(spec: ScoresSpec, base_dir: str = "") -> ScoreTable:
    """The scores file a scenario names (a relative path: in the scenario's folder, the project
    root, or the working directory, the first that has it)."""
    path = _scores_path(spec, base_dir)
    return read_scores(str(path), tuple(spec.findings) if spec.findings else None,
                       spec.probability_column, spec.label_column)

