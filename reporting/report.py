"""The structured report: sections, template fields, the cursor, and where dictated text goes.

Sections: clinical information, comparison, technique, findings, impression, recommendations.
A template (configs/templates/<name>.yaml) gives a section fields with normal defaults in
RadReport-like markup ("[preserved|indistinct]": a pick list, the first option the default),
plus macros. Dictated text goes to the active field, or the active section; spoken headers
("Findings ...", "Impression: ...") move the cursor, so a free dictation is split into sections.
"""

from __future__ import annotations

import copy
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from readingroom.errors import ConfigError

from reporting import checks

log = logging.getLogger(__name__)

SECTION_ORDER = (
    "clinical_information", "comparison", "technique", "findings", "impression", "recommendations",
)


@dataclass(frozen=True)
class Command:
    """An edit of the report: what a voice command (dictation/commands.py) or a button asks for."""

    action: str                      # next_field, goto_section, insert_macro, punctuation, ...
    argument: str | None = None      # section key, macro name or punctuation mark
    spoken: str = ""
    score: float = 1.0


SECTION_TITLES = {
    "clinical_information": "Clinical information", "comparison": "Comparison",
    "technique": "Technique", "findings": "Findings", "impression": "Impression",
    "recommendations": "Recommendations",
}
# Spoken header -> section; longest first when matching.
HEADER_WORDS = {
    "clinical information": "clinical_information", "clinical history": "clinical_information",
    "history": "clinical_information", "indication": "clinical_information",
    "comparison": "comparison", "comparisons": "comparison", "technique": "technique",
    "findings": "findings", "finding": "findings", "impression": "impression", "impressions": "impression",
    "conclusion": "impression", "recommendations": "recommendations",
    "recommendation": "recommendations",
}
_PICK = re.compile(r"\[([^\[\]|]+)(?:\|[^\[\]]*)?\]")


def render_markup(text: str) -> str:
    """'[preserved|indistinct]' -> 'preserved' (the default pick)."""
    return _PICK.sub(lambda m: m.group(1).strip(), text)


def pick_lists(text: str) -> list[list[str]]:
    return [[o.strip() for o in m.group(0)[1:-1].split("|")] for m in re.finditer(r"\[[^\[\]]+\]", text)]


class FieldSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    label: str
    normal: str = ""


class SectionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str = ""
    fields: list[FieldSpec] = []


class Template(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "free"
    title: str = "Free dictation"
    terms: list[str] = []
    sections: dict[str, SectionSpec] = Field(default_factory=dict)
    macros: dict[str, str] = {}


FREE = Template()


def list_templates(templates_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(templates_dir).glob("*.yaml"))


def load_template(name: str, templates_dir: Path) -> Template:
    """Template ``name`` from ``templates_dir``; 'free' is the empty template."""
    if name in ("", "free", None):
        return FREE
    path = Path(templates_dir) / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(
            f"No template {name!r} in {templates_dir}; choose one of "
            f"{['free', *list_templates(templates_dir)]}."
        )
    try:
        template = Template.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        raise ConfigError(f"Template {path} is invalid: {exc}") from None
    unknown = sorted(set(template.sections) - set(SECTION_ORDER))
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; valid: {list(SECTION_ORDER)}")
    return template


def split_headers(text: str) -> list[tuple[str | None, str]]:
    """Split text at spoken headers: [(section or None for 'no header'), text)]."""
    names = sorted(HEADER_WORDS, key=len, reverse=True)
    pattern = re.compile(
        r"(?:^|(?<=[.?!,;\n])\s*)(" + "|".join(re.escape(n) for n in names) + r")\s*(?:[:.,;-]\s*|\n|$)",
        re.IGNORECASE,
    )
    parts: list[tuple[str | None, str]] = []
    pos, current = 0, None
    for match in pattern.finditer(text):
        before = text[pos : match.start()].strip()
        if before:
            parts.append((current, before))
        current = HEADER_WORDS[match.group(1).lower()]
        pos = match.end()
        parts.append((current, ""))
    rest = text[pos:].strip()
    if rest or not parts:
        parts.append((current, rest))
    return [(s, t) for s, t in parts if t or s]


@dataclass
class Report:
    """The report being dictated: text per section and per field, a cursor, an undo stack."""

    template: Template = field(default_factory=Template)
    sections: dict[str, str] = field(default_factory=lambda: {s: "" for s in SECTION_ORDER})
    fields: dict[str, dict[str, str]] = field(default_factory=dict)
    section: str = "findings"
    field_index: int | None = None
    dictating: bool = True
    _history: list[tuple[dict, dict]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        for key, spec in self.template.sections.items():
            self.fields[key] = {f.name: "" for f in spec.fields}

    # cursor -------------------------------------------------------------------------------
    def _field_names(self, section: str | None = None) -> list[str]:
        spec = self.template.sections.get(section or self.section)
        return [f.name for f in spec.fields] if spec else []

    @property
    def active_field(self) -> str | None:
        names = self._field_names()
        if self.field_index is None or not names:
            return None
        return names[self.field_index]

    def _stops(self) -> list[tuple[str, int | None]]:
        stops: list[tuple[str, int | None]] = []
        for s in SECTION_ORDER:
            names = self._field_names(s)
            stops.extend([(s, i) for i in range(len(names))] if names else [(s, None)])
        return stops

    def _move(self, step: int) -> None:
        stops = self._stops()
        here = (self.section, self.field_index)
        if here not in stops:
            here = (self.section, 0 if self._field_names() else None)
            if step > 0 and here in stops:
                self.section, self.field_index = here
                return
        i = min(max(stops.index(here) + step, 0), len(stops) - 1)
        self.section, self.field_index = stops[i]

    def goto(self, section: str) -> None:
        self.section, self.field_index = section, None

    # text ---------------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Remember the text as it is now: the next "undo" command brings it back."""
        self._history.append((copy.deepcopy(self.sections), copy.deepcopy(self.fields)))
        del self._history[:-50]

    def _get(self) -> str:
        name = self.active_field
        return self.fields[self.section][name] if name else self.sections[self.section]

    def _set(self, text: str) -> None:
        name = self.active_field
        if name:
            self.fields[self.section][name] = text
        else:
            self.sections[self.section] = text

    def _append(self, text: str) -> None:
        current = self._get()
        joiner = "" if not current or current.endswith(("\n", " ")) or text[:1] in ".,;:?)\n" else " "
        self._set(current + joiner + text)

    def dictate(self, text: str) -> None:
        """Add dictated (normalized) text: headers move the cursor, the rest is appended."""
        self.snapshot()
        for section, part in split_headers(text):
            if section:
                self.goto(section)
            if part:
                current = self._get().rstrip()
                if not current or current[-1] in ".?!:\n":
                    part = part[:1].upper() + part[1:]
                self._append(part)

    def apply(self, command: Command) -> None:
        action = command.action
        if action == "undo":
            if self._history:
                self.sections, self.fields = self._history.pop()
            return
        if action in ("next_field", "previous_field"):
            self._move(1 if action == "next_field" else -1)
        elif action == "goto_section" and command.argument:
            self.goto(command.argument)
        elif action == "stop_dictating":
            self.dictating = False
        elif action == "scratch_that":
            self.snapshot()
            current = self._get().rstrip()
            sentences = re.split(r"(?<=[.?!])\s+", current)
            self._set(" ".join(sentences[:-1]) if len(sentences) > 1 else "")
        elif action == "new_paragraph":
            self.snapshot()
            self._set(self._get().rstrip() + "\n\n")
        elif action == "punctuation" and command.argument:
            self.snapshot()
            self._set(self._get().rstrip() + command.argument)
        elif action == "insert_normal":
            self.snapshot()
            self._insert_normal()
        elif action == "insert_macro" and command.argument in self.template.macros:
            self.snapshot()
            self._append(render_markup(self.template.macros[command.argument]))
        else:
            log.info("command %s ignored here (template %s)", command, self.template.name)

    def _insert_normal(self) -> None:
        """Fill the EMPTY fields (only the active one, when the cursor is on a field) and the empty
        section text with the template's normals. Dictated text is never replaced, and a normal
        sentence that contradicts what was dictated anywhere ("No acute intracranial hemorrhage."
        after "acute subdural hematoma") is left out: the pre-sign contradiction rule decides."""
        spec = self.template.sections.get(self.section)
        if spec is None:
            return
        active = self.active_field
        for f in spec.fields:
            if (active is None or f.name == active) and not self.fields[self.section][f.name].strip():
                self.fields[self.section][f.name] = self._consistent(render_markup(f.normal))
        if active is None and spec.default and not self.sections[self.section].strip():
            self.sections[self.section] = self._consistent(render_markup(spec.default))

    def _consistent(self, normal: str) -> str:
        """``normal`` without the sentences that contradict the report as it stands."""
        bad = checks.contradicting_sentences(normal, self.check_sections())
        if not bad:
            return normal
        log.info("insert normal: left out %s (contradicts the dictated text)", bad)
        return " ".join(s for s in checks.sentences(normal) if s not in bad)

    # output -------------------------------------------------------------------------------
    def section_text(self, section: str) -> str:
        spec = self.template.sections.get(section)
        lines = []
        if spec:
            for f in spec.fields:
                value = self.fields[section][f.name]
                if value:
                    lines.append(f"{f.label}: {value.strip()}")
        if self.sections[section].strip():
            lines.append(self.sections[section].strip())
        return "\n".join(lines)

    def as_dict(self) -> dict[str, str]:
        return {s: self.section_text(s) for s in SECTION_ORDER}

    def check_sections(self) -> dict[str, str]:
        """{section: field values and section text, without field labels}: what the checks read."""
        return {s: "\n".join([*[v for v in self.fields.get(s, {}).values() if v.strip()],
                               self.sections.get(s, "")]).strip() for s in SECTION_ORDER}

    def render(self) -> str:
        out = [self.template.title.upper()] if self.template.name != "free" else []
        for s in SECTION_ORDER:
            body = self.section_text(s)
            if body:
                out.append(f"{SECTION_TITLES[s].upper()}:\n{body}")
        return "\n\n".join(out)
