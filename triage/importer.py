"""``readingroom import PATH``: bring a folder of DICOM files in through the listener's code path."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError
from tqdm import tqdm

from triage.intake import CANNOT_UNDERSTAND, Intake, StoreResult

log = logging.getLogger(__name__)

# Recorded as the "calling AE title" of imported instances.
IMPORT_AE = "IMPORT"


@dataclass
class ImportSummary:
    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    study_uids: set[str] = field(default_factory=set)

    def add(self, path: Path, result: StoreResult) -> None:
        if result.outcome == "stored":
            self.stored += 1
        elif result.outcome == "duplicate":
            self.duplicates += 1
        else:
            self.rejected.append((str(path), f"0x{result.status:04X} {result.reason}"))
        if result.ok and result.study_uid:
            self.study_uids.add(result.study_uid)

    def format(self) -> str:
        lines = [f"stored {self.stored}, duplicates {self.duplicates}, rejected {len(self.rejected)}, "
                 f"studies {len(self.study_uids)}"]
        reasons = Counter(reason for _, reason in self.rejected)
        for path, reason in self.rejected[:50]:
            lines.append(f"  rejected {path}: {reason}")
        if len(self.rejected) > 50:
            lines.append(f"  ... and {len(self.rejected) - 50} more; by reason: {dict(reasons)}")
        return "\n".join(lines)


def iter_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is neither a file nor a folder")
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def read_file(path: Path):
    """The dataset and the file's bytes, or a reason it cannot be imported."""
    try:
        ds = dcmread(path)
    except InvalidDicomError:
        return None, None, "not a DICOM file (no DICM prefix); a file without File Meta Information cannot be imported"
    except Exception as exc:  # noqa: BLE001
        return None, None, f"cannot read the file: {exc}"
    return ds, path.read_bytes(), ""


def import_path(path: Path, intake: Intake, progress: bool = True) -> ImportSummary:
    summary = ImportSummary()
    files = iter_files(path)
    for file in tqdm(files, desc="import", unit="file", disable=not progress or not files):
        ds, data, reason = read_file(file)
        if ds is None:
            result = StoreResult(CANNOT_UNDERSTAND, "rejected", reason)
            log.warning("rejected %s: %s", file, reason)
        else:
            result = intake.store(ds, data, calling_ae=IMPORT_AE, source=str(file))
        summary.add(file, result)
    return summary
