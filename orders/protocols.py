"""Protocols and appropriateness: rules kept as data (configs/protocols.yaml, appropriateness.yaml).

Pure functions over an order (the dict of ``review.order_dict``) and a loaded library:

    library = load_library(settings)
    suggestion = suggest_protocol(order, library)   # Suggestion(name, protocol, reason) or None
    hints = appropriateness_hints(order, load_hint_rules(settings))

Both files share one set of conditions (``matches``). A phrase matches at the start of a word, and
a phrase of 3 characters or fewer ("PE", "SAH") must be a whole word.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any


from readingroom.errors import ConfigError
from readingroom.settings import Settings, read_yaml_mapping

log = logging.getLogger(__name__)

PROTOCOLS_FILE = "protocols.yaml"
APPROPRIATENESS_FILE = "appropriateness.yaml"
PROTOCOL_KEYS = {"title", "modality", "procedures", "phases", "contrast", "slice_thickness_mm", "instructions"}
CONDITIONS = {"modality", "procedure_any", "procedure_none", "indication_any", "indication_none",
              "indication_empty", "egfr_below", "contrast_allergy", "priority_in", "laterality_missing"}


@dataclass(frozen=True)
class Suggestion:
    name: str
    protocol: dict[str, Any]
    reason: str


@dataclass
class Library:
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)

    def get(self, name: str) -> dict[str, Any]:
        if name not in self.protocols:
            raise ConfigError(f"no protocol {name!r} in {PROTOCOLS_FILE}; choose one of: "
                              + ", ".join(sorted(self.protocols)))
        return self.protocols[name]


def _read(path: Path) -> dict[str, Any]:
    return read_yaml_mapping(path, "restore it from configs/ in the ReadingRoom sources")


def _check_when(when: Any, where: str) -> dict[str, Any]:
    if not isinstance(when, dict):
        raise ConfigError(f"{where}: 'when' must be a mapping of conditions")
    unknown = set(when) - CONDITIONS
    if unknown:
        raise ConfigError(f"{where}: unknown condition(s) {sorted(unknown)}; valid: {sorted(CONDITIONS)}")
    return when


@lru_cache(maxsize=8)
def _library(path: Path, _mtime: float) -> Library:
    data = _read(path)
    protocols = data.get("protocols") or {}
    for name, proto in protocols.items():
        if not isinstance(proto, dict) or not {"title", "modality"} <= set(proto):
            raise ConfigError(f"{path}: protocol {name!r} needs at least a title and a modality")
        unknown = set(proto) - PROTOCOL_KEYS
        if unknown:
            raise ConfigError(f"{path}: protocol {name!r} has unknown key(s) {sorted(unknown)}; "
                              f"valid: {sorted(PROTOCOL_KEYS)}")
    rules = data.get("rules") or []
    for i, rule in enumerate(rules, 1):
        if rule.get("protocol") not in protocols:
            raise ConfigError(f"{path}: rule {i} names protocol {rule.get('protocol')!r}, which is not defined")
        _check_when(rule.get("when", {}), f"{path}: rule {i}")
    return Library(protocols=protocols, rules=rules)


def load_library(settings: Settings) -> Library:
    """configs/protocols.yaml, read again only when the file changes. Raises ConfigError."""
    path = settings.config_dir / PROTOCOLS_FILE
    return _library(path, path.stat().st_mtime if path.exists() else 0.0)


@lru_cache(maxsize=8)
def _hint_rules(path: Path, _mtime: float) -> tuple[dict[str, Any], ...]:
    rules = _read(path).get("rules") or []
    for i, rule in enumerate(rules, 1):
        if not rule.get("hint"):
            raise ConfigError(f"{path}: rule {i} has no hint text")
        _check_when(rule.get("when", {}), f"{path}: rule {rule.get('id', i)}")
    return tuple(rules)


def load_hint_rules(settings: Settings) -> tuple[dict[str, Any], ...]:
    """configs/appropriateness.yaml, read again only when the file changes. Raises ConfigError."""
    path = settings.config_dir / APPROPRIATENESS_FILE
    return _hint_rules(path, path.stat().st_mtime if path.exists() else 0.0)


# -- conditions ----------------------------------------------------------------------------------
def _phrase_in(phrase: str, text: str) -> bool:
    phrase = str(phrase).strip()
    if not phrase:
        return False
    tail = r"(?![A-Za-z0-9])" if len(phrase) <= 3 else ""
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(phrase) + tail, text, re.IGNORECASE) is not None


def _any(phrases: list[str] | str, text: str) -> bool:
    if isinstance(phrases, str):
        phrases = [phrases]
    return any(_phrase_in(p, text) for p in phrases)


def matches(when: dict[str, Any], order: dict[str, Any]) -> bool:
    """Do all the conditions hold for this order? (Unknown conditions are refused at load time.)"""
    procedure = f"{order.get('procedure_code', '')} {order.get('procedure_description', '')}"
    indication = order.get("indication") or ""
    checks = {
        "modality": lambda v: (order.get("modality") or "").upper() in
        ([m.upper() for m in v] if isinstance(v, list) else [str(v).upper()]),
        "procedure_any": lambda v: _any(v, procedure),
        "procedure_none": lambda v: not _any(v, procedure),
        "indication_any": lambda v: _any(v, indication),
        "indication_none": lambda v: not _any(v, indication),
        "indication_empty": lambda v: (not indication.strip()) == bool(v),
        "egfr_below": lambda v: order.get("egfr") is not None and float(order["egfr"]) < float(v),
        "contrast_allergy": lambda v: bool((order.get("contrast_allergy") or "").strip()) == bool(v),
        "priority_in": lambda v: (order.get("priority") or "").upper() in [str(p).upper() for p in v],
        "laterality_missing": lambda v: (not (order.get("laterality") or "")) == bool(v),
    }
    return all(checks[key](value) for key, value in when.items())


def appropriateness_hints(order: dict[str, Any], rules: tuple[dict[str, Any], ...]) -> list[str]:
    """The hint of every rule that fires, in file order."""
    return [rule["hint"] for rule in rules if matches(rule.get("when", {}), order)]


def suggest_protocol(order: dict[str, Any], library: Library) -> Suggestion | None:
    """A protocol for the order: the first indication rule that fires, else the protocol whose
    ``procedures`` name the order's procedure (longest phrase wins). None when nothing fits."""
    for rule in library.rules:
        if matches(rule.get("when", {}), order):
            name = rule["protocol"]
            return Suggestion(name, dict(library.protocols[name]), rule.get("why") or f"rule for {name}")
    code = (order.get("procedure_code") or "").upper()
    procedure = f"{code} {order.get('procedure_description', '')}"
    best: tuple[int, str] | None = None
    for name, proto in library.protocols.items():
        if order.get("modality") and proto.get("modality") and proto["modality"] != order["modality"]:
            continue
        for phrase in proto.get("procedures") or []:
            if str(phrase).upper() == code or _phrase_in(str(phrase), procedure):
                if best is None or len(str(phrase)) > best[0]:
                    best = (len(str(phrase)), name)
    if best is None:
        return None
    name = best[1]
    reason = f"default protocol for {order.get('procedure_description') or code}"
    return Suggestion(name, dict(library.protocols[name]), reason)


def step_description(protocol_name: str, protocol: dict[str, Any]) -> str:
    """The protocol as a DICOM Scheduled Procedure Step Description (LO: 64 characters)."""
    title = protocol.get("title") or protocol_name
    contrast = protocol.get("contrast") or ""
    text = f"{title}" + (f" [{contrast}]" if contrast and contrast != "none" and contrast not in title.lower() else "")
    return text[:64]
