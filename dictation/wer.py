"""Word error rate with a simple Whisper-style English normalizer, and per-word alignment.

The normalizer (the ``whisper_normalizer`` package is not a dependency): lowercase, hyphens to
spaces, punctuation removed (decimal points kept), number words to digits, units to one
spelling (mm, cm, percent), letters and digits split ("L4-L5" and "L four L five" both become
"l 4 l 5"). Both reference and hypothesis go through it, so only recognition errors count.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from dictation.lexicon import CRITICAL_WORDS
from dictation.normalize import NUMBER_WORDS, _words_to_number

log = logging.getLogger(__name__)

UNIT_SPELLING = {
    "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "%": "percent", "ml": "ml", "milliliters": "ml",
}
BRITISH = {"haemorrhage": "hemorrhage", "oedema": "edema", "oesophagus": "esophagus", "centre": "center"}


def normalize_for_wer(text: str) -> list[str]:
    text = text.lower().replace("%", " percent ")
    text = re.sub(r"(?<=\d)\.(?=\d)", "\x00", text)         # keep decimal points
    text = re.sub(r"[-/]", " ", text)
    text = re.sub(r"[^\w\s\x00]", " ", text).replace("\x00", ".")
    text = re.sub(r"(?<=[a-z])(?=\d)|(?<=\d)(?=[a-z])", " ", text)
    words = [BRITISH.get(w, UNIT_SPELLING.get(w, w)) for w in text.split()]
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j] in NUMBER_WORDS and not (j == i and words[j] == "point"):
            j += 1
        if j > i:
            k = j
            while k > i and _words_to_number(words[i:k]) is None:
                k -= 1
            if k > i:
                out.append(_words_to_number(words[i:k]))
                i = k
                continue
        out.append(words[i])
        i += 1
    return out


@dataclass
class Alignment:
    ref: list[str]
    hyp: list[str]
    substitutions: int
    deletions: int
    insertions: int
    ref_errors: list[bool]           # per reference word: substituted or deleted

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions


def align(ref: list[str], hyp: list[str]) -> Alignment:
    n, m = len(ref), len(hyp)
    dist = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        dist[i][0] = i
    for j in range(m + 1):
        dist[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost = 0 if ref[i - 1] == hyp[j - 1] else 1
            dist[i][j] = min(dist[i - 1][j] + 1, dist[i][j - 1] + 1, dist[i - 1][j - 1] + cost)
    i, j = n, m
    subs = dels = ins = 0
    ref_errors = [False] * n
    while i > 0 or j > 0:
        if i > 0 and j > 0 and dist[i][j] == dist[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            if ref[i - 1] != hyp[j - 1]:
                subs += 1
                ref_errors[i - 1] = True
            i, j = i - 1, j - 1
        elif i > 0 and dist[i][j] == dist[i - 1][j] + 1:
            dels += 1
            ref_errors[i - 1] = True
            i -= 1
        else:
            ins += 1
            j -= 1
    return Alignment(ref, hyp, subs, dels, ins, ref_errors)


def is_critical(word: str) -> bool:
    """Negations, laterality, numbers and units: the words a report must not lose."""
    return word in CRITICAL_WORDS or bool(re.fullmatch(r"\d+(\.\d+)?", word)) or word in ("mm", "cm", "percent")
