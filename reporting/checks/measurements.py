"""Measurements: a unit without a number, and the critical-result communication against the report.

"Measuring millimeters" (the number was not dictated, or speech recognition lost it) is blocking;
so is a communication whose side or size differs from the report's own for that finding.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable

from reporting.checks.clinical import critical_mentions
from reporting.checks.consistency import CONTRADICTION_SECTIONS, RULES_OUT, _quote
from reporting.checks.issues import Issue
from reporting.checks.text import _CONCEPT, _SIDE, RELATED, Mention, mentions, sentences, sides

log = logging.getLogger(__name__)


# --- measurements: a unit without a number, the critical-result communication ----------------------
_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                 "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
                 "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_WORD_VALUE = {w: i if i < 20 else 20 + 10 * (i - 20) for i, w in enumerate(_NUMBER_WORDS)}
_WORD = r"(?:" + "|".join(_NUMBER_WORDS) + r"|hundred|half)"
_NUMBER = (rf"(?:\d+(?:\.\d+)?|\.\d+|\b{_WORD}(?:[\s-]+(?:and\s+a\s+|point\s+)?{_WORD})*(?:\s+point\s+{_WORD})*\b)")
# unit -> (dimension, factor to the base unit: mm, ml, HU)
UNITS = {"mm": ("length", 1.0), "cm": ("length", 10.0), "millimeter": ("length", 1.0),
         "centimeter": ("length", 10.0), "ml": ("volume", 1.0), "milliliter": ("volume", 1.0),
         "hu": ("density", 1.0), "hounsfield unit": ("density", 1.0)}
_UNIT = (r"(?<![A-Za-z_/])(?:mm|cm|ml|mL|HU|(?i:millimet(?:er|re)s?|centimet(?:er|re)s?|millilit(?:er|re)s?|"
         r"hounsfield units?))(?![\w/])")
_UNIT_RE = re.compile(_UNIT)
_MEASUREMENT = re.compile(rf"(?i:({_NUMBER})((?:\s*(?<![a-z])(?:x|by)(?![a-z])\s*{_NUMBER})*))\s*-?\s*({_UNIT})")
# What may stand before a unit instead of a digit: a number word, a vague quantity ("a few
# millimeters"), a placeholder (its own check names it), a range or a dimension's number.
_BEFORE_UNIT = re.compile(rf"(?:\d|\b{_WORD}|\b(?:few|several|couple|fraction)|_|(?-i:\bX{{2,}})|\?|\])\s*-?\s*$",
                          re.IGNORECASE)


def _unit_name(unit: str) -> str:
    unit = unit.lower().rstrip("s").replace("metre", "meter").replace("litre", "liter")
    return unit if unit in UNITS else {"hounsfield unit": "hu"}.get(unit, unit)


def number_value(text: str) -> float | None:
    """'8', '2.5', 'nine', 'two point five', 'twenty one', 'one and a half' -> a number; else None."""
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    whole, point = text.split(" point ", 1) if " point " in text else (text, "")
    total = 0.0
    for word in re.split(r"[\s-]+", whole):
        if word in _WORD_VALUE:
            total += _WORD_VALUE[word]
        elif word == "hundred":
            total = (total or 1) * 100
        elif word == "half":
            total += 0.5
        elif word not in ("and", "a", ""):
            return None
    digits = [str(_WORD_VALUE.get(w, "")) for w in point.split()]
    if point and not all(d.isdigit() and len(d) == 1 for d in digits):
        return None
    return total + (float("0." + "".join(digits)) if point else 0.0)


def check_units(report: dict[str, str]) -> list[Issue]:
    """A measurement unit with no number before it ('measuring millimeters', '3 x cm'): the number
    was not dictated, or speech recognition lost it."""
    issues: list[Issue] = []
    for section, text in report.items():
        for m in _UNIT_RE.finditer(text or ""):
            before = text[:m.start()]
            if _BEFORE_UNIT.search(before):
                continue
            sentence = re.split(r"(?<=[.!?;:])\s+|\n", before)[-1]
            phrase = " ".join(sentence.split()[-2:] + [m.group(0)])
            issues.append(Issue(f"unit_without_number:{section}:{phrase.lower()}", "units", "blocking",
                                f"'{phrase}' ({section}): the unit {m.group(0)!r} stands without a number. Dictate "
                                "the measurement (e.g. '8 mm'), or override with a reason.", section))
    return issues


@dataclass
class _Facts:
    sides: set[str] = field(default_factory=set)
    sizes: dict[str, set[float]] = field(default_factory=dict)     # dimension -> values in mm, ml, HU
    shown: dict[float, str] = field(default_factory=dict)          # value -> as written ("8 mm")


def _measurements(sentence: str) -> list[tuple[int, str, float, str]]:
    """(position, dimension, value in the base unit, as written) of every number + unit."""
    out = []
    for m in _MEASUREMENT.finditer(sentence):
        dimension, factor = UNITS[_unit_name(m.group(3))]
        numbers = [m.group(1), *re.split(r"\s*(?<![a-z])(?:x|by)(?![a-z])\s*", m.group(2), flags=re.IGNORECASE)[1:]]
        for number in numbers:
            value = number_value(number)
            if value is not None:
                out.append((m.start(), dimension, round(value * factor, 3), f"{number.strip()} {m.group(3)}"))
    return out


def _owners(here: list[Mention], pos: int) -> list[str]:
    """The concepts of the sentence's positive mentions nearest to ``pos`` ('*' when there are none)."""
    if not here:
        return ["*"]
    distance: dict[str, int] = {}
    for m in here:
        d = min(abs(pos - m.start), abs(pos - m.end))
        distance[m.concept] = min(d, distance.get(m.concept, d))
    best = min(distance.values())
    return [c for c, d in distance.items() if d == best]


def _facts(text: str) -> dict[str, _Facts]:
    """Positive concept -> the sides and measurements written next to it (each word goes to the
    nearest positive mention of its sentence; a sentence without any goes to '*')."""
    facts: dict[str, _Facts] = {}
    found = [m for m in mentions(text) if not m.negated]
    for sentence in sentences(text):
        here = [m for m in found if m.sentence == sentence]
        for side in _SIDE.finditer(sentence):
            for owner in _owners(here, side.start()):
                facts.setdefault(owner, _Facts()).sides |= sides(side.group(0))
        for pos, dimension, value, shown in _measurements(sentence):
            for owner in _owners(here, pos):
                f = facts.setdefault(owner, _Facts())
                f.sizes.setdefault(dimension, set()).add(value)
                f.shown.setdefault(value, shown)
        for m in here:
            facts.setdefault(m.concept, _Facts())
    return facts


def _family(concept: str) -> set[str]:
    return {concept, *RELATED.get(concept, set()), *RULES_OUT.get(concept, ())}


def communication_mismatches(report: dict[str, str], communication: str) -> list[Issue]:
    """Sides and measurements of a critical-result communication's text that differ from the
    report's own for that finding ('left' told, 'right' written; '10 mm' told, '8 mm' written)."""
    body = "\n".join(report.get(s, "") or "" for s in CONTRADICTION_SECTIONS)
    told, written = _facts(communication), _facts(body)
    issues: list[Issue] = []
    for concept, facts in told.items():
        if concept == "*":   # the communication names no finding we know: compare with the critical ones
            family = {m.concept for m in critical_mentions(body)} or {c for c in written if c != "*"}
            label = "the critical finding"
        else:
            family = _family(concept)
            label = _CONCEPT[concept].label
        ours = [written[c] for c in sorted(family) if c in written]
        if not ours:
            continue
        our_sides = set().union(*(f.sides for f in ours))
        if facts.sides and our_sides and not facts.sides <= our_sides:
            issues.append(Issue(
                f"communication_mismatch:{concept}:side", "communication", "blocking",
                f"The critical-result communication ('{_quote(communication)}') says "
                f"{'/'.join(sorted(facts.sides)).upper()} for {label}; the report says "
                f"{'/'.join(sorted(our_sides)).upper()}. Correct the report or record a corrected "
                "communication, or override with a reason.", "impression"))
        for dimension, values in sorted(facts.sizes.items()):
            our_values = set().union(*(f.sizes.get(dimension, set()) for f in ours))
            differ = sorted(values - our_values)
            if our_values and differ:
                shown = {v: s for f in ours for v, s in f.shown.items()}
                issues.append(Issue(
                    f"communication_mismatch:{concept}:{dimension}", "communication", "blocking",
                    f"The critical-result communication ('{_quote(communication)}') says "
                    f"{', '.join(facts.shown[v] for v in differ)} for {label}; the report says "
                    f"{', '.join(shown[v] for v in sorted(our_values))}. Correct the report or record a corrected "
                    "communication, or override with a reason.", "impression"))
    return issues


def check_communications(report: dict[str, str], communications: Iterable[str]) -> list[Issue]:
    return [issue for text in communications if (text or "").strip()
            for issue in communication_mismatches(report, text)]
