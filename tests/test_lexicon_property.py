"""Property tests of post-correction (issue 17): it rewrites misheard spans into lexicon terms,
and never deletes, drops or merges anything else.

Random sentences mix lexicon terms, near-misses, common words, number-like tokens, units,
negations and laterality. The number-like, negation and laterality words are defined here, from
the issue's wording, not imported from dictation.lexicon: the test checks the promise, not the
implementation's own list.
"""

from __future__ import annotations

import re

from hypothesis import given, settings, strategies as st

from dictation.lexicon import Lexicon
from dictation.models import tiny_en_path
from dictation.normalize import normalize_report_text
from readingroom.settings import CONFIG_DIR

LEXICON = Lexicon.load(CONFIG_DIR / "lexicon.txt", tokenizer_json=tiny_en_path() / "tokenizer.json")

NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty "
    "ninety hundred point i"
).split()
NEGATIONS = ["no", "not", "without", "negative", "absent", "never", "none"]
LATERALITY = ["left", "right", "bilateral", "bilaterally", "ipsilateral", "contralateral"]
UNITS = ["mm", "cm", "millimeters", "millimeter", "centimeters", "percent", "ml", "x", "by"]
NEAR_MISSES = [
    "new motor ax", "new mo thorax", "atelectisis", "bibasiler", "plural", "hemorage", "sub dural",
    "hemotoma", "nodle", "pnemothorax", "cardiomeagly", "consolidaton", "efusion", "a cute", "cute",
    "measuring", "measures", "intracranial", "subdural hematoma", "mid line shift", "measuring ix",
    "measuring ay", "hematoma xi",
]
COMMON = [
    "there", "is", "a", "the", "of", "with", "and", "in", "which", "patient", "small", "large",
    "seen", "lung", "lobe", "upper", "lower", "along", "since", "prior", "stable", "new", "mild",
    "at", "to", "motor", "ax", "measuring", "ix", "ay", "xi",
]

_TOKENS = re.compile(r"[A-Za-z][A-Za-z'-]*|\d+(?:\.\d+)?")


def _parts(text: str) -> list[str]:
    """Words (hyphenated words split) and digit groups, lower case, in order."""
    out: list[str] = []
    for token in _TOKENS.findall(text):
        out += [p for p in re.split(r"[-']", token.lower()) if p]
    return out


def number_like(text: str) -> list[str]:
    return [p for p in _parts(text) if p in NUMBER_WORDS or p[:1].isdigit()]


def critical(text: str) -> list[str]:
    return [p for p in _parts(text) if p in NEGATIONS or p in LATERALITY]


def _proper_subspans(span: str) -> set[str]:
    """'measuring ix' -> {'measuring', 'ix'}: what replacing the span by a part of it drops."""
    words = span.lower().split()
    return {" ".join(words[a:b]) for a in range(len(words)) for b in range(a + 1, len(words) + 1)
            if b - a < len(words)}


def _cased(word: str, upper: bool) -> str:
    return word[:1].upper() + word[1:] if upper else word


digits = st.integers(0, 400).map(str)
decimals = st.tuples(st.integers(0, 40), st.integers(0, 9)).map(lambda t: f"{t[0]}.{t[1]}")
hyphenated = st.tuples(st.sampled_from(NUMBER_WORDS[:20]), st.sampled_from(["millimeter", "centimeter"])
                       ).map("-".join)
word = st.one_of(
    st.sampled_from(LEXICON.terms[:200]),
    st.sampled_from(NEAR_MISSES),
    st.sampled_from(COMMON),
    st.sampled_from(NUMBER_WORDS), st.just("i"), digits, decimals, hyphenated,
    st.sampled_from(UNITS),
    st.sampled_from(NEGATIONS + LATERALITY),
    st.sampled_from([",", ".", ";"]),
)
sentences = st.lists(st.tuples(word, st.booleans()), min_size=1, max_size=16).map(
    lambda items: " ".join(_cased(w, up) for w, up in items)
)


@settings(max_examples=200, deadline=None)
@given(sentences)
def test_post_correction_keeps_numbers_negations_and_laterality(text):
    corrected, corrections = LEXICON.correct(text)
    # (a) number-like tokens: same multiset, same order
    assert number_like(corrected) == number_like(text)
    # (b) negations and laterality survive, in order
    assert critical(corrected) == critical(text)
    # (c) never empty; outside the corrected spans every character survives verbatim, in order
    assert corrected.strip()
    rebuilt, cursor = [], 0
    for c in corrections:
        assert cursor <= c.start < c.end <= len(text) and text[c.start : c.end] == c.original
        assert not number_like(c.original) and not critical(c.original)
        assert not set(_parts(c.original)) & set(UNITS)
        assert c.term.lower() not in _proper_subspans(c.original)      # no deletion in disguise
        term = c.term if not c.original[:1].isupper() or c.term[:1].isupper() else c.term[:1].upper() + c.term[1:]
        rebuilt += [text[cursor : c.start], term]
        cursor = c.end
    rebuilt.append(text[cursor:])
    assert "".join(rebuilt) == corrected
    # the words outside corrected spans: their count is preserved
    outside = _parts(text[: corrections[0].start]) if corrections else _parts(text)
    for c, nxt in zip(corrections, corrections[1:] + [None]):
        outside += _parts(text[c.end : nxt.start if nxt else len(text)])
    assert len(_parts(corrected)) == len(outside) + sum(len(_parts(c.term)) for c in corrections)


@settings(max_examples=200, deadline=None)
@given(sentences)
def test_correction_then_normalization_keeps_critical_words_and_never_says_cute(text):
    """The session's path (DictationSession.clean_text): post-correction, then normalization."""
    final = normalize_report_text(LEXICON.correct(text)[0])
    assert critical(final) == critical(text)
    assert not re.search(r"\bcute\b", final, re.IGNORECASE)
    # a number-like word is turned into digits or kept, never dropped: each run of number
    # words leaves at least one number-like token behind
    runs = len(re.findall(r"(?:\b(?:%s)\b[\s,]*)+" % "|".join(NUMBER_WORDS) + r"|\d+(?:\.\d+)?",
                          text, re.IGNORECASE))
    assert len(number_like(final)) >= runs


def test_the_issue_sentence_keeps_a_token_between_measuring_and_millimeters():
    corrected, _ = LEXICON.correct("Subdural hematoma measuring i millimeters.")
    match = re.search(r"measuring\s+(\S+)\s+millimeters", corrected)
    assert match is not None and match.group(1) == "i"
    assert normalize_report_text(corrected) == "Subdural hematoma measuring i millimeters."
