"""The radiology lexicon: recognition bias (prompt, hotwords) and confident post-correction.

Post-correction maps a near-miss ("new motor ax", "atelectisis") to a lexicon term only when it
is close in spelling and in sound (a small phonetic key), and clearly closer than the runner-up.
It never spans punctuation and never rewrites a word that is a common English word on its own.

What post-correction may and may not do (issue 17: "measuring nine millimeters" was heard as
"measuring i millimeters", and the span "measuring i" became the term "measuring", so the size
vanished from the report):

* It may rewrite a misheard span of one to three words into one lexicon term, even a shorter one
  ("new motor ax" -> "pneumothorax"): that is a correction, not a deletion.
* It never deletes a token. Every token outside a corrected span survives verbatim and in order,
  and a span never reaches past the words it matched.
* A span never includes a protected token: a number-like token (``NUMBER_LIKE``: "i", a
  mis-heard number word; "zero".."twenty", "thirty".."ninety", "hundred", "point", ordinals;
  digits and decimals such as "8" or "3.5"), a negation, a laterality word or a unit. So such a
  token is never replaced, dropped or merged into a neighbour.
* Every word of a multi-word span must earn its place: if a shorter part of the span matches the
  term at least as well ("measuring" alone is already "measuring"), the longer span is no
  candidate, because taking it would silently drop the extra word.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable

from readingroom.errors import ConfigError

log = logging.getLogger(__name__)

NEGATIONS = frozenset({
    "no", "not", "without", "none", "negative", "absent", "neither", "nor", "never", "cannot",
    "free", "resolved", "nothing", "non",
})
LATERALITY = frozenset({
    "left", "right", "bilateral", "bilaterally", "ipsilateral", "contralateral", "unilateral",
})
NUMBER_WORDS = frozenset({
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    "hundred", "point", "first", "second", "third", "fourth", "fifth", "sixth", "seventh",
    "eighth", "ninth", "tenth", "eleventh", "twelfth", "half",
})
UNIT_WORDS = frozenset({
    "mm", "cm", "ml", "hu", "millimeter", "millimeters", "centimeter", "centimeters", "percent",
    "milliliters", "by", "x",
})
# Number words, plus "i" (Whisper's spelling of a clipped number word: "measuring i millimeters"
# for "measuring nine millimeters") and "oh" (a spoken zero). Digits are tokens of their own.
NUMBER_LIKE = NUMBER_WORDS | {"i", "oh"}
CRITICAL_WORDS = NEGATIONS | LATERALITY
PROTECTED = NEGATIONS | LATERALITY | NUMBER_LIKE | UNIT_WORDS
STOPWORDS = frozenset({
    "the", "a", "an", "of", "and", "or", "in", "on", "at", "to", "with", "is", "are", "was",
    "there", "this", "that", "for", "from", "as", "be", "by", "it", "its", "which", "has",
})


def load_terms(path: Path) -> list[str]:
    """Terms in file order (the most common first), deduplicated, comments stripped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise ConfigError(f"Lexicon {path} not found; restore configs/lexicon.txt.") from None
    seen: dict[str, str] = {}
    for line in lines:
        term = line.split("#", 1)[0].strip()
        if term and term.lower() not in seen:
            seen[term.lower()] = term
    if not seen:
        raise ConfigError(f"Lexicon {path} has no terms; one term per line, '#' for comments.")
    return list(seen.values())


_PHONETIC_RULES = [
    (r"^pn", "n"), (r"^ps", "s"), (r"^kn", "n"), (r"ph", "f"), (r"th", "t"), (r"ch", "k"),
    (r"ck", "k"), (r"qu", "kw"), (r"x", "ks"), (r"c(?=[eiy])", "s"), (r"c", "k"), (r"q", "k"),
    (r"z", "s"), (r"dg", "j"), (r"gh", "g"), (r"y", "i"), (r"w(?![aeiou])", ""), (r"h", ""),
]


def phonetic_key(text: str) -> str:
    """A small sound-alike key: consonant skeleton with the first vowel sound kept."""
    s = re.sub(r"[^a-z]", "", text.lower())
    for pattern, repl in _PHONETIC_RULES:
        s = re.sub(pattern, repl, s)
    if not s:
        return ""
    head, tail = s[0], re.sub(r"[aeiou]", "", s[1:])
    return re.sub(r"(.)\1+", r"\1", head + tail)


def _compact(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


@lru_cache(maxsize=4)
def common_english_words(tokenizer_json: str) -> frozenset[str]:
    """Words that are one token in Whisper's vocabulary (so: common English words)."""
    try:
        vocab = json.loads(Path(tokenizer_json).read_text(encoding="utf-8"))["model"]["vocab"]
    except (OSError, KeyError, ValueError) as exc:
        log.warning("No tokenizer vocabulary (%s); post-correction treats no word as common", exc)
        return frozenset()
    return frozenset(w[1:].lower() for w in vocab if w.startswith("\u0120") and w[1:].isalpha())


@dataclass(frozen=True)
class Correction:
    """One replaced span: its words, the lexicon term, the score, and where the span was in the
    text given to ``Lexicon.correct`` (``start``/``end``: character offsets, end exclusive; -1
    if unknown). The offsets let an audit, or a test, check that nothing else was touched."""

    original: str
    term: str
    score: float
    start: int = -1
    end: int = -1


@dataclass
class Lexicon:
    terms: list[str]
    common_words: frozenset[str] = frozenset()
    min_similarity: float = 0.82
    margin: float = 0.05
    _index: list[tuple[str, str, str, int]] = field(default_factory=list, repr=False)
    _words: frozenset[str] = field(default=frozenset(), repr=False)

    def __post_init__(self) -> None:
        self._words = frozenset(w for t in self.terms for w in re.findall(r"[a-z]+", t.lower()))
        for term in self.terms:
            words = re.findall(r"[a-z]+", term.lower())
            if any(w in PROTECTED for w in words) or len(_compact(term)) < 5:
                continue                      # never a correction target
            self._index.append((term, _compact(term), phonetic_key(term), len(words)))

    @classmethod
    def load(cls, path: Path, *, tokenizer_json: Path | None = None, **kwargs) -> "Lexicon":
        common = common_english_words(str(tokenizer_json)) if tokenizer_json else frozenset()
        return cls(load_terms(path), common, **kwargs)

    # Biasing -------------------------------------------------------------------------------
    def prompt(self, template_terms: Iterable[str] = (), max_terms: int = 20, style: str = "comma") -> str:
        """A short, relevant initial prompt: template terms, then the most common terms.

        ``style`` "comma": one sentence, terms separated by commas (Whisper imitates a prompt's
        style, and "Term. Term." made it end a sentence after every word); "sentence": the old
        "Term. Term." form (for comparison).
        """
        chosen: list[str] = []
        for term in [*template_terms, *self.terms]:
            if term.lower() not in (c.lower() for c in chosen):
                chosen.append(term)
            if len(chosen) >= max_terms:
                break
        if style == "sentence":
            return "Radiology report. " + " ".join(t[:1].upper() + t[1:] + "." for t in chosen)
        if style == "groups":
            groups = [chosen[i : i + 5] for i in range(0, len(chosen), 5)]
            body = " ".join(", ".join(g)[:1].upper() + ", ".join(g)[1:] + "." for g in groups)
            return "Radiology report. Findings. " + body
        return "Radiology report with " + ", ".join(chosen) + "."

    def hotwords(self, template_terms: Iterable[str] = (), max_terms: int = 20) -> str:
        return " ".join(list(dict.fromkeys([*template_terms, *self.terms[:max_terms]]))[:max_terms])

    # Post-correction -----------------------------------------------------------------------
    def _ranked(self, span: str) -> list[tuple[str, float]]:
        """Lexicon terms close to ``span`` in spelling and sound, best first."""
        compact, key = _compact(span), phonetic_key(span)
        if len(compact) < 5:
            return []
        scored: dict[str, float] = {}
        for term, t_compact, t_key, _ in self._index:
            score = _similarity(compact, key, t_compact, t_key)
            if score is not None:
                scored[term] = score
        return sorted(scored.items(), key=lambda kv: -kv[1])

    def _best(self, span: str) -> tuple[str, float, float] | None:
        ranked = self._ranked(span)
        if not ranked:
            return None
        second = ranked[1][1] if len(ranked) > 1 else 0.0
        return ranked[0][0], ranked[0][1], second

    def _drops_a_word(self, words: list[str], term: str, score: float) -> bool:
        """True when a shorter part of the span matches ``term`` at least as well as the whole
        span: then the extra words add nothing to the match, and replacing the span would
        silently delete them ("measuring i" -> "measuring")."""
        t_compact = _compact(term)
        t_key = phonetic_key(term)
        n = len(words)
        for size in range(1, n):
            for a in range(n - size + 1):
                part = " ".join(words[a : a + size])
                if _compact(part) == t_compact:
                    return True
                sub = _similarity(_compact(part), phonetic_key(part), t_compact, t_key)
                if sub is not None and sub >= score:
                    return True
        return False

    def _candidate(self, lowered: list[str], words: list[str]) -> tuple[str, float] | None:
        """The confident term for one span of words, or None when the span is no candidate."""
        n = len(words)
        if lowered[0] in STOPWORDS or lowered[-1] in STOPWORDS:
            return None
        if n == 1 and (lowered[0] in self._words or lowered[0] in self.common_words):
            return None
        if n > 1 and all(w in self._words for w in lowered):
            return None
        span = " ".join(words)
        best = self._best(span)
        if best is None:
            return None
        term, score, second = best
        if term.lower() == span.lower():
            return None
        needed = self.min_similarity + 0.04 * (n - 1)
        if score < needed or score - second < self.margin:
            return None
        if n > 1 and self._drops_a_word(words, term, score):
            return None
        return term, score

    def correct(self, text: str) -> tuple[str, list[Correction]]:
        """Text with confident near-misses replaced by lexicon terms, and what was replaced.

        Only whole spans of one to three words are replaced, each by one term; every other
        token (spaces and punctuation included) is copied verbatim, in order. A span never
        contains a protected token (see the module docstring), so number-like tokens,
        negations, laterality and units come out exactly as they went in. Each Correction
        carries the span's character offsets in ``text``.
        """
        tokens = _TOKEN.findall(text)
        words = [(i, t) for i, t in enumerate(tokens) if _is_word(t)]
        proposals: list[tuple[float, int, int, str, str]] = []
        for a in range(len(words)):
            for n in (1, 2, 3):
                if a + n > len(words):
                    break
                span_items = words[a : a + n]
                first, last = span_items[0][0], span_items[-1][0]
                if any(not t.isspace() for t in tokens[first : last + 1] if not _is_word(t)):
                    break                                  # never across punctuation or digits
                lowered = [w.lower() for _, w in span_items]
                if any(is_protected(w) for w in lowered):
                    break                                  # never swallow a protected token
                found = self._candidate(lowered, [w for _, w in span_items])
                if found is not None:
                    span = " ".join(w for _, w in span_items)
                    proposals.append((found[1], first, last, span, found[0]))
        taken: set[int] = set()
        chosen: list[tuple[int, int, str, str, float]] = []
        for score, first, last, span, term in sorted(proposals, key=lambda p: -p[0]):
            if taken & set(range(first, last + 1)):
                continue
            taken |= set(range(first, last + 1))
            chosen.append((first, last, span, term, score))
        offsets = [0]
        for token in tokens:
            offsets.append(offsets[-1] + len(token))
        corrections = []
        for first, last, span, term, score in sorted(chosen, reverse=True):
            replacement = term if not span[:1].isupper() or term[:1].isupper() else term[:1].upper() + term[1:]
            tokens[first : last + 1] = [replacement]
            corrections.append(Correction(span, term, round(score, 3), offsets[first], offsets[last + 1]))
        if corrections:
            log.debug("post-correction: %s", corrections)
        return "".join(tokens), corrections[::-1]


_TOKEN = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:\.\d+)?|[^\sA-Za-z\d]+|\s+")


def _is_word(token: str) -> bool:
    return token[:1].isascii() and token[:1].isalpha()


def is_protected(word: str) -> bool:
    """A word post-correction never touches: a number-like token, negation, laterality or unit,
    also inside a hyphenated word ("nine-millimeter", "non-contrast")."""
    lowered = word.lower()
    return lowered in PROTECTED or any(part in PROTECTED for part in re.split(r"[-']", lowered))


def _similarity(compact: str, key: str, t_compact: str, t_key: str) -> float | None:
    """Half spelling, half sound; None when the two are not even roughly alike."""
    if abs(len(t_compact) - len(compact)) > max(2, 0.3 * len(t_compact)):
        return None
    if t_key[:1] != key[:1] and t_compact[:1] != compact[:1]:
        return None
    char = difflib.SequenceMatcher(None, compact, t_compact).ratio()
    if char < 0.6:
        return None
    sound = difflib.SequenceMatcher(None, key, t_key).ratio()
    return 0.5 * char + 0.5 * sound
