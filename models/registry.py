"""Which triage models are installed: one folder per model under models/weights/.

A model folder holds ``model.onnx`` and ``metadata.json`` (its model card, with at least
``name``, ``version`` and ``modalities``). Folders without both are ignored with a warning.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    modalities: tuple[str, ...]
    path: Path
    metadata: dict = field(default_factory=dict, compare=False)


def installed_models(weights_dir: Path = WEIGHTS_DIR) -> list[ModelCard]:
    cards: list[ModelCard] = []
    if not weights_dir.is_dir():
        return cards
    for folder in sorted(p for p in weights_dir.iterdir() if p.is_dir()):
        card_path, onnx_path = folder / "metadata.json", folder / "model.onnx"
        if not (card_path.exists() and onnx_path.exists()):
            log.warning("ignoring %s: a model folder needs model.onnx and metadata.json", folder)
            continue
        try:
            meta = json.loads(card_path.read_text(encoding="utf-8"))
            cards.append(ModelCard(meta["name"], str(meta["version"]), tuple(meta["modalities"]), onnx_path, meta))
        except (ValueError, KeyError) as exc:
            log.warning("ignoring %s: its metadata.json is invalid (%s)", folder, exc)
    return cards


def models_for(modalities: set[str], weights_dir: Path = WEIGHTS_DIR) -> list[ModelCard]:
    return [card for card in installed_models(weights_dir) if modalities & set(card.modalities)]
