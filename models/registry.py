"""Which triage models are installed, and which series each one reads.

Shipped models: one folder per model under models/weights/, holding ``model.onnx`` (and
``model.pt``, the torch fallback) beside ``metadata.json`` (the model card: at least ``name``,
``version`` and ``modalities``; ``findings``, ``thresholds`` and ``input.kind`` to run).
Bring your own: ``configs/models.yaml`` lists more models (an ONNX file or a MONAI bundle folder
plus a metadata.json) and the series-selection rules per input kind. docs/models.md has the
formats. Folders or entries that are incomplete are skipped with a warning, never an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
INPUT_KINDS = ("ct-2.5d", "cxr-2d")


@dataclass(frozen=True)
class ModelCard:
    name: str
    version: str
    modalities: tuple[str, ...]
    path: Path                      # model.onnx, or a MONAI bundle folder
    metadata: dict = field(default_factory=dict, compare=False)
    rules: dict = field(default_factory=dict, compare=False)

    @property
    def kind(self) -> str:
        return str(self.metadata.get("input", {}).get("kind", ""))

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(self.metadata.get("findings", ()))

    @property
    def thresholds(self) -> dict[str, float]:
        return {k: float(v) for k, v in (self.metadata.get("thresholds") or {}).items()}

    @property
    def torch_weights(self) -> Path | None:
        pt = self.path.parent / "model.pt" if self.path.is_file() else None
        return pt if pt is not None and pt.exists() else None


def _card(meta: dict, model_path: Path, rules: dict | None = None) -> ModelCard:
    return ModelCard(meta["name"], str(meta["version"]), tuple(meta["modalities"]), model_path, meta, rules or {})


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
            cards.append(_card(json.loads(card_path.read_text(encoding="utf-8")), onnx_path))
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: its metadata.json is invalid (%s)", folder, exc)
    return cards


def load_config(path: Path) -> dict[str, Any]:
    """configs/models.yaml: ``rules`` (per input kind or model name) and ``models`` (BYO)."""
    import yaml

    if not path.exists():
        return {"rules": {}, "models": []}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {"rules": data.get("rules") or {}, "models": data.get("models") or []}


def registered_models(config: dict[str, Any], base: Path) -> list[ModelCard]:
    """Models brought by the user: ``{name, path, metadata?, rules?}`` entries of models.yaml."""
    cards = []
    for entry in config.get("models", []):
        try:
            path = Path(entry["path"]).expanduser()
            path = path if path.is_absolute() else base / path
            meta_path = Path(entry["metadata"]) if entry.get("metadata") else (
                path / "metadata.json" if path.is_dir() else path.parent / "metadata.json")
            meta_path = meta_path if meta_path.is_absolute() else base / meta_path
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            meta.setdefault("name", entry.get("name"))
            if entry.get("name"):
                meta["name"] = entry["name"]
            if not path.exists():
                raise FileNotFoundError(f"{path} does not exist")
            kind = meta.get("input", {}).get("kind")
            if kind not in INPUT_KINDS:
                raise ValueError(f"input.kind must be one of {', '.join(INPUT_KINDS)}, not {kind!r}")
            if not meta.get("findings"):
                raise ValueError("metadata.json must list its findings")
            cards.append(_card(meta, path, entry.get("rules")))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring the registered model %s: %s", entry.get("name", entry), exc)
    return cards


def all_models(weights_dir: Path = WEIGHTS_DIR, config: dict[str, Any] | None = None,
               base: Path | None = None) -> list[ModelCard]:
    cards = installed_models(weights_dir)
    if config:
        cards += registered_models(config, base or Path.cwd())
    return cards


def models_for(modalities: set[str], weights_dir: Path = WEIGHTS_DIR) -> list[ModelCard]:
    return [card for card in installed_models(weights_dir) if modalities & set(card.modalities)]


def find_model(name: str, weights_dir: Path = WEIGHTS_DIR, config: dict[str, Any] | None = None,
               base: Path | None = None) -> ModelCard | None:
    """A model by name, or by the path of a model folder / ONNX file / bundle."""
    for card in all_models(weights_dir, config, base):
        if card.name == name:
            return card
    path = Path(name)
    if path.is_dir() and (path / "metadata.json").exists():
        target = path / "model.onnx" if (path / "model.onnx").exists() else path
        try:
            return _card(json.loads((path / "metadata.json").read_text(encoding="utf-8")), target)
        except (ValueError, KeyError, TypeError):
            return None
    return None
