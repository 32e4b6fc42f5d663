"""The voice-command grammar: is this whole utterance a command, and which one?

Pure: ``CommandGrammar.parse(text, macros)`` returns a ``Command`` or None. The grammar comes from
configs/commands.yaml. Fuzzy matching tolerates recognition slips ("go to finding", "scratch
dat") but only the whole utterance counts: a command inside a sentence is text.
"""

from __future__ import annotations

import difflib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from readingroom.errors import ConfigError

from reporting.report import SECTION_ORDER, Command

log = logging.getLogger(__name__)

class _GrammarFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prompt: list[str] = []
    min_similarity: float = 0.84
    margin: float = 0.04
    fillers: list[str] = []
    commands: dict[str, list[str]]
    punctuation: dict[str, str] = {}
    sections: dict[str, list[str]] = {}


def clean_utterance(text: str, fillers: Iterable[str] = ()) -> str:
    """Lowercase, no punctuation, no filler words, single spaces."""
    text = re.sub(r"[^\w\s']", " ", text.lower()).replace("'", "")
    skip = set(fillers)
    return " ".join(w for w in text.split() if w not in skip)


@dataclass
class CommandGrammar:
    phrases: list[tuple[str, str, str | None]]        # (phrase, action, argument)
    punctuation: dict[str, str]
    sections: dict[str, list[str]]
    fillers: list[str] = field(default_factory=list)
    min_similarity: float = 0.84
    margin: float = 0.04
    prompt_phrases: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> "CommandGrammar":
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
            spec = _GrammarFile.model_validate(data)
        except FileNotFoundError:
            raise ConfigError(f"Command grammar {path} not found; restore configs/commands.yaml.") from None
        except (yaml.YAMLError, ValidationError) as exc:
            raise ConfigError(f"Command grammar {path} is invalid: {exc}") from None
        unknown = sorted(set(spec.sections) - set(SECTION_ORDER))
        if unknown:
            raise ConfigError(f"{path}: unknown section(s) {unknown}; valid: {list(SECTION_ORDER)}")
        return cls(
            phrases=[(p, action, None) for action, ps in spec.commands.items() for p in ps],
            punctuation=spec.punctuation,
            sections=spec.sections,
            fillers=spec.fillers,
            min_similarity=spec.min_similarity,
            margin=spec.margin,
            prompt_phrases=spec.prompt,
        )

    def prompt(self, macros: Iterable[str] = ()) -> str:
        """Initial prompt for a short utterance: the command phrases, then the macro names."""
        phrases = self.prompt_phrases or [p for p, _, _ in self.phrases if "{" not in p]
        phrases = [*phrases, *(f"Insert macro {m}" for m in macros)]
        return "Voice commands: " + " ".join(p[:1].upper() + p[1:] + "." for p in phrases)

    def section_of(self, name: str) -> str | None:
        name = clean_utterance(name)
        for key, aliases in self.sections.items():
            if name == key.replace("_", " ") or name in aliases:
                return key
        return None

    def expand(self, macros: Iterable[str] = ()) -> list[tuple[str, str, str | None]]:
        """Every concrete phrase: slots filled with sections, macros, punctuation words."""
        out: list[tuple[str, str, str | None]] = []
        slots = {
            "{section}": [(a, k) for k, aliases in self.sections.items() for a in aliases],
            "{macro}": [(clean_utterance(m), m) for m in macros],
            "{punctuation}": list(self.punctuation.items()),
        }
        for phrase, action, _ in self.phrases:
            slot = next((s for s in slots if s in phrase), None)
            if slot is None:
                out.append((clean_utterance(phrase, self.fillers), action, None))
                continue
            for spoken, arg in slots[slot]:
                out.append((clean_utterance(phrase.replace(slot, spoken), self.fillers), action, arg))
        return out

    def parse(self, text: str, macros: Iterable[str] = ()) -> Command | None:
        """The command this whole utterance is, or None (then it is text)."""
        said = clean_utterance(text, self.fillers)
        if not said or len(said.split()) > 8:
            return None
        if self.section_of(said):
            return None                # a spoken header alone ("Clinical information.") is text
        candidates = self.expand(macros)
        best: tuple[float, str, str, str | None] | None = None
        second = 0.0
        for phrase, action, arg in candidates:
            if phrase == said:
                return Command(action, arg, text, 1.0)
            score = difflib.SequenceMatcher(None, said, phrase).ratio()
            if best is None or score > best[0]:
                if best is not None and (best[1], best[3]) != (action, arg):
                    second = max(second, best[0])
                best = (score, phrase, action, arg)
            elif (action, arg) != (best[2], best[3]):
                second = max(second, score)
        if best is None:
            return None
        score, phrase, action, arg = best
        if said.startswith("insert macro ") and (action != "insert_macro" or score < self.min_similarity):
            # a macro this template lacks: still a command (the report says it is unknown)
            return Command("insert_macro", said[len("insert macro "):], text, 1.0)
        # short phrases must match more closely: one letter off in "next" is a different word
        needed = self.min_similarity + (0.08 if len(phrase) <= 6 else 0.0)
        if score >= needed and score - second >= self.margin:
            return Command(action, arg, text, round(score, 3))
        return None
