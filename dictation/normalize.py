"""Report text normalization: numbers and units, vertebral levels, spoken punctuation, sentences.

Pure functions on strings. Only number words, unit words, punctuation words, letter case and
the split word "a cute" (for "acute") are rewritten: every other word (negations and laterality
included) is kept as it is.

A number word is turned into digits only when it really is one: a word Whisper wrote instead of
a number ("measuring i millimeters" for "nine") is left exactly as it is, never dropped, so the
size's absence stays visible to the reader and to the pre-sign checks.
"""

from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

ONES = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
    "seven": 7, "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13,
    "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18,
    "nineteen": 19,
}
TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70,
    "eighty": 80, "ninety": 90,
}
NUMBER_WORDS = set(ONES) | set(TENS) | {"hundred", "point"}

UNITS = {
    "millimeter": "mm", "millimeters": "mm", "millimetre": "mm", "millimetres": "mm",
    "centimeter": "cm", "centimeters": "cm", "centimetre": "cm", "centimetres": "cm",
    "milliliter": "mL", "milliliters": "mL", "millilitre": "mL", "millilitres": "mL",
    "cc": "mL", "ccs": "mL",
    "percent": "%", "per cent": "%",
    "hounsfield units": "HU", "hounsfield unit": "HU",
}
# Number words before these become digits, the word stays (3 months, 2 levels).
COUNTED = {
    "months", "month", "weeks", "week", "days", "day", "years", "year", "hours", "mm", "cm",
    "levels", "level", "ribs", "times", "lesions", "nodules", "hu", "%", "x", "by",
}

# Spoken punctuation inside running text.
SPOKEN_PUNCTUATION = {
    "full stop": ".", "period": ".", "comma": ",", "colon": ":", "semicolon": ";",
    "semi colon": ";", "question mark": "?", "new line": "\n", "newline": "\n",
    "new paragraph": "\n\n", "open parenthesis": "(", "close parenthesis": ")",
    "hyphen": "-", "dash": "-",
}

VERTEBRA_MAX = {"c": 8, "t": 12, "l": 5, "s": 5}

_WORD = re.compile(r"[A-Za-z]+|\d+(?:\.\d+)?|%|\S")


def _words_to_number(tokens: list[str]) -> str | None:
    """'two point three' -> '2.3', 'twenty one' -> '21'; None if not a number."""
    if not tokens:
        return None
    if "point" in tokens:
        i = tokens.index("point")
        whole = _words_to_number(tokens[:i]) if i else "0"
        frac = tokens[i + 1 :]
        if whole is None or not frac or any(t not in ONES or ONES[t] > 9 for t in frac):
            return None
        return whole + "." + "".join(str(ONES[t]) for t in frac)
    total, current = 0, 0
    last = None
    for tok in tokens:
        if tok in ONES:
            if last in ONES or (last in TENS and ONES[tok] >= 10):
                return None
            current += ONES[tok]
        elif tok in TENS:
            if last is not None and last != "hundred":
                return None
            current += TENS[tok]
        elif tok == "hundred":
            if current == 0:
                return None
            current *= 100
        else:
            return None
        last = tok
    total += current
    return str(total)


def _convert_numbers(text: str) -> str:
    """Number-word runs become digits when a unit/count word follows, or when decimal."""
    return "\n".join(_convert_numbers_line(line) for line in text.split("\n"))


def _convert_numbers_line(text: str) -> str:
    words = text.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        j = i
        while j < len(words) and words[j].lower().strip(",") in NUMBER_WORDS and not (
            j > i and words[j - 1].endswith(",")
        ):
            j += 1
        if j > i:
            run = [w.lower().strip(",") for w in words[i:j]]
            # the longest convertible prefix
            value, k = None, j
            while k > i:
                value = _words_to_number(run[: k - i])
                if value is not None:
                    break
                k -= 1
            nxt = _unit_key(words, k)
            if value is not None and (
                "point" in run[: k - i] or nxt in UNITS or nxt in COUNTED or nxt == "unit"
            ):
                out.append(value + (",") * words[k - 1].endswith(","))
                i = k
                continue
        out.append(words[i])
        i += 1
    return " ".join(out)


def _unit_key(words: list[str], k: int) -> str:
    if k >= len(words):
        return ""
    word = re.sub(r"[^\w%]", "", words[k].lower())
    if k + 1 < len(words):
        pair = word + " " + re.sub(r"[^\w]", "", words[k + 1].lower())
        if pair in UNITS:
            return pair
    return word


def _convert_units(text: str) -> str:
    def repl(match: re.Match) -> str:
        unit = UNITS[re.sub(r"\s+", " ", match.group(2).lower())]
        sep = "" if unit == "%" else " "
        return f"{match.group(1)}{sep}{unit}"

    names = sorted(UNITS, key=len, reverse=True)
    pattern = r"(\d+(?:\.\d+)?)(?:\s*-\s*|\s+)(" + "|".join(re.escape(n) for n in names) + r")\b"
    text = re.sub(pattern, repl, text, flags=re.IGNORECASE)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*(mm|cm)\b", r"\1 \2", text)
    text = re.sub(r"(\d+(?:\.\d+)?)\s*(?:by|x)\s*(\d+(?:\.\d+)?)", r"\1 x \2", text)
    return text


_LEVEL_NUM = "|".join(sorted(ONES, key=len, reverse=True)) + r"|\d{1,2}"


def _convert_vertebrae(text: str) -> str:
    pattern = re.compile(
        rf"\b([CTLS])(?:\s*-\s*|\s+|(?=\d))({_LEVEL_NUM})\b(?![.,]\d)", re.IGNORECASE
    )

    def repl(match: re.Match) -> str:
        letter, num = match.group(1), match.group(2).lower()
        value = int(num) if num.isdigit() else ONES.get(num, 0)
        if not 1 <= value <= VERTEBRA_MAX[letter.lower()]:
            return match.group(0)
        return f"{letter.upper()}{value}"

    # "see five" / "el four" are left to the lexicon; here the letter forms.
    text = pattern.sub(repl, text)
    # adjacent levels: "L4 L5" / "L4 to L5" / "L5, S1" -> "L4-L5"
    return re.sub(r"\b([CTLS]\d{1,2})(?:,?\s+|\s*-\s*|\s+to\s+)([CTLS]\d{1,2})\b", r"\1-\2", text)


def convert_spoken_punctuation(text: str) -> str:
    """'... effusion comma no pneumothorax period' -> '... effusion, no pneumothorax.'"""
    names = sorted(SPOKEN_PUNCTUATION, key=len, reverse=True)
    pattern = re.compile(
        r"[,.;:]?\s*\b(" + "|".join(re.escape(n) for n in names) + r")\b(?!\s+of\b)[,.;:!?]?",
        re.IGNORECASE,
    )

    def repl(match: re.Match) -> str:
        mark = SPOKEN_PUNCTUATION[re.sub(r"\s+", " ", match.group(1).lower())]
        return mark if mark in ".,;:?)\n" or mark == "\n\n" else " " + mark

    # "a period of" is English, not punctuation (the lookahead keeps it).
    text = pattern.sub(repl, text)
    text = re.sub(r"\(\s+", "(", text)
    return text


def tidy_sentences(text: str) -> str:
    """Spaces, sentence capitals and a final period; keeps newlines."""
    lines = []
    for line in text.split("\n"):
        line = re.sub(r"[ \t]+", " ", line).strip()
        line = re.sub(r"\s+([,.;:?%)])", r"\1", line)
        line = re.sub(r"([,;:])(?=[A-Za-z])", r"\1 ", line)
        line = re.sub(r"([.?])\1+", r"\1", line)
        line = re.sub(r",\s*\.", ".", line)
        line = re.sub(r"^[,.;:]\s*", "", line)
        if line:
            line = re.sub(
                r"(^|[.?!]\s+)([a-z])", lambda m: m.group(1) + m.group(2).upper(), line
            )
            if line[-1] not in ".?!:;":
                line += "."
        lines.append(line)
    return "\n".join(lines).strip("\n ") if any(lines) else ""


_A_CUTE = re.compile(r"\b(?:a[ \t-]+)?cute\b", re.IGNORECASE)


def rejoin_acute(text: str) -> str:
    """'a cute subdural' -> 'acute subdural'.

    Whisper often splits a spoken "acute" into "a cute" (or drops the clipped "a": "Cute
    infarct"). "cute" has no use in a radiology report, so every "a cute" and every lone "cute"
    is the word "acute"; the letter case of the first letter is kept.
    """

    def repl(match: re.Match) -> str:
        said = match.group(0)
        if said.isupper() and len(said) > 1:
            return "ACUTE"
        return "Acute" if said[:1].isupper() else "acute"

    return _A_CUTE.sub(repl, text)


def normalize_report_text(text: str) -> str:
    """The full normalization for dictated report text."""
    text = rejoin_acute(text)
    text = convert_spoken_punctuation(text)
    text = _convert_numbers(text)
    text = _convert_units(text)
    text = _convert_vertebrae(text)
    return tidy_sentences(text)
