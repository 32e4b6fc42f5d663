"""Are the triage models' weights there and whole? The check behind ``readingroom models`` and the
start-up banner (app.py adds the Whisper models' lines from ``dictation.install``)."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

from readingroom.settings import PROJECT_ROOT, Settings

from models.registry import INPUT_KINDS, WEIGHTS_DIR, all_models, load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelLine:
    """One model as the start-up banner and ``readingroom models`` show it. ``problem`` is empty
    when the model is present and complete, else it says what is wrong and what to do."""

    role: str           # whisper live, whisper final, whisper spare, triage
    name: str
    version: str = ""   # triage models: the card's version
    path: str = ""
    checked: str = ""   # sha256, size, crc, onnx, files
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def weights_problem(path: Path, checksum: bool) -> tuple[str, str]:
    """(how it was checked, problem) for a triage model's weights. The cards record no checksum
    of their files, so: not empty, not a Git LFS pointer, model.pt's zip CRCs, and with
    ``checksum`` the ONNX graph parsed and checked by onnx."""
    if path.is_dir():
        return "files", ""   # a MONAI bundle folder: its own loader checks it
    if not path.is_file() or path.stat().st_size == 0:
        return "", f"{path} is missing or empty; restore it (git checkout {path}) or retrain (readingroom train)"
    with open(path, "rb") as fh:
        if fh.read(40).startswith(b"version https://git-lfs"):
            return "", f"{path} is a Git LFS pointer, not the weights; run `git lfs pull`"
    checked = "size"
    torch_weights = path.parent / "model.pt"
    if torch_weights.is_file() and torch_weights.read_bytes()[:2] == b"PK":   # torch's zip format
        try:
            with zipfile.ZipFile(torch_weights) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            bad = str(exc)
        if bad:
            return "", f"{torch_weights} is damaged ({bad}); restore it (git checkout) or retrain (readingroom train)"
        checked = "crc"
    if checksum:
        import onnx

        try:
            onnx.checker.check_model(onnx.load(str(path)))
        except Exception as exc:  # noqa: BLE001 - any parse or check error means damaged weights
            return "", f"{path} is damaged ({str(exc).splitlines()[0][:120]}); restore it or retrain"
        checked = "onnx"
    return checked, ""


def triage_lines(settings: Settings, checksum: bool) -> list[ModelLine]:
    """One line per triage model of the registry, checked; and one per weights folder it skipped."""
    cards = all_models(WEIGHTS_DIR, load_config(settings.config_dir / settings.models.file), PROJECT_ROOT)
    lines = []
    for card in cards:
        checked, problem = weights_problem(card.path, checksum)
        unset = [finding for finding in card.findings if finding not in card.thresholds]
        if not problem and (card.kind not in INPUT_KINDS or not card.findings or unset):
            problem = (f"{card.path.parent / 'metadata.json'} needs input.kind ({', '.join(INPUT_KINDS)}), "
                       f"findings and a threshold for each (missing: {', '.join(unset) or '-'})")
        lines.append(ModelLine("triage", card.name, card.version, str(card.path), checked, problem))
    listed = {Path(line.path).parent for line in lines}
    for folder in sorted(p for p in WEIGHTS_DIR.iterdir() if p.is_dir()) if WEIGHTS_DIR.is_dir() else []:
        if folder not in listed:   # the registry skipped it: say so here, not only in the log
            lines.append(ModelLine("triage", folder.name, "", str(folder), "", f"{folder} needs model.onnx "
                                   "and a valid metadata.json; restore it (git checkout) or retrain"))
    return lines
