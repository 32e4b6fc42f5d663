"""Text analysis for the pre-sign checks: the finding concepts, sentences, a small NegEx, sides.

``mentions(text)`` finds every concept mention with its polarity and acuity: a concept is negated
by a trigger before it in its clause ("no", "without", "negative for"...) or after it ("is not
seen", "has resolved"); "no change in" and "cannot be excluded" do not negate; "chronic", "old",
"healed" make a finding non-acute. The underscored names are shared with the other check modules
of this package, and with nothing outside it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

log = logging.getLogger(__name__)


# --- concepts -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Concept:
    name: str
    label: str
    patterns: tuple[str, ...]
    critical: str = "never"   # always (unless chronic), acute (only with acute/new), never


CONCEPTS: tuple[Concept, ...] = (
    Concept("hemorrhage", "hemorrhage", (r"h(?:a)?emorrhag\w*", r"bleed(?:ing)?", r"\bICH\b", r"\bSAH\b", r"\bIVH\b"),
            "always"),
    Concept("intracranial_hematoma", "intracranial hematoma",
            (r"(?:subdural|epidural|extradural|extra-?axial|intraparenchymal|intracerebral|retroperitoneal)"
             r"\s+(?:h(?:a)?ematomas?|collections?)", r"\bSDH\b", r"\bEDH\b"), "always"),
    Concept("hematoma", "hematoma", (r"h(?:a)?ematomas?",)),
    Concept("pneumothorax", "pneumothorax", (r"pneumothora(?:x|ces)", r"\bPTX\b"), "always"),
    Concept("aortic_dissection", "aortic dissection", (r"(?:aortic\s+)?dissection", r"intramural h(?:a)?ematoma"),
            "always"),
    Concept("pulmonary_embolism", "pulmonary embolism", (r"pulmonary\s+embol\w*", r"\bPE\b",
                                                         r"filling defects? (?:with)?in the \w+ pulmonary arter\w*"),
            "always"),
    Concept("pneumoperitoneum", "pneumoperitoneum", (r"pneumoperitoneum", r"free (?:intraperitoneal )?air"), "always"),
    Concept("midline_shift", "midline shift", (r"midline shift",), "always"),
    Concept("brain_herniation", "brain herniation",
            (r"(?:uncal|subfalcine|tonsillar|transtentorial|brain|cerebral)\s+herniation",), "always"),
    Concept("infarct", "infarct", (r"infarcts?\b", r"infarction", r"stroke"), "acute"),
    Concept("vessel_occlusion", "large vessel occlusion", (r"(?:large vessel|arterial|M1|basilar)\s+occlusion",),
            "always"),
    Concept("cord_compression", "cord compression", (r"cord compression",), "always"),
    Concept("torsion", "torsion", (r"torsion",), "always"),
    Concept("ectopic_pregnancy", "ectopic pregnancy", (r"ectopic pregnancy",), "always"),
    Concept("rupture", "rupture", (r"ruptur\w*",), "always"),
    Concept("bowel_obstruction", "bowel obstruction", (r"(?:small |large )?bowel obstruction", r"\bSBO\b"), "acute"),
    Concept("fracture", "fracture", (r"fractur\w*", r"\bfx\b")),
    Concept("dislocation", "dislocation", (r"dislocat\w*", r"subluxation")),
    Concept("effusion", "effusion", (r"effusions?",)),
    Concept("consolidation", "consolidation", (r"consolidat\w*", r"airspace (?:disease|opacit\w+)")),
    Concept("pneumonia", "pneumonia", (r"pneumonia",)),
    Concept("infiltrate", "infiltrate", (r"infiltrat\w*",)),
    Concept("opacity", "opacity", (r"opacit(?:y|ies)",)),
    Concept("congestion", "pulmonary congestion", (r"(?:vascular )?congestion", r"pulmonary (?:o)?edema",
                                                  r"interstitial (?:o)?edema")),
    Concept("atelectasis", "atelectasis", (r"atelecta\w*",)),
    Concept("cardiomegaly", "cardiomegaly", (r"cardiomegaly", r"enlarged (?:cardiac silhouette|heart)",
                                              r"cardiac silhouette is enlarged")),
    Concept("mass_effect", "mass effect", (r"mass effect",)),
    Concept("mass", "mass", (r"\bmass(?:es)?\b(?!\s+effect)", r"tumou?rs?\b", r"neoplasm\w*")),
    Concept("nodule", "nodule", (r"nodul\w*",)),
    Concept("foreign_body", "foreign body", (r"foreign (?:body|bodies|object)",)),
    Concept("hydrocephalus", "hydrocephalus", (r"hydrocephalus", r"ventriculomegaly")),
    Concept("appendicitis", "appendicitis", (r"appendicitis",)),
    Concept("diverticulitis", "diverticulitis", (r"diverticulitis",)),
    Concept("cholecystitis", "cholecystitis", (r"cholecystitis",)),
    Concept("abscess", "abscess", (r"abscess\w*",)),
    Concept("urolithiasis", "urinary tract stone", (r"(?:renal|ureteral|ureteric|kidney|bladder) (?:stones?|calcul\w+)",
                                                   r"(?:nephro|uro)lithiasis")),
    Concept("hydronephrosis", "hydronephrosis", (r"hydronephrosis", r"hydroureter\w*")),
    Concept("aneurysm", "aneurysm", (r"aneurysm\w*",)),
    Concept("lymphadenopathy", "lymphadenopathy", (r"lymphadenopath\w*",)),
    Concept("tear", "tear", (r"\btears?\b",)),
)
_CONCEPT = {c.name: c for c in CONCEPTS}
_COMPILED = {c.name: re.compile(r"(?<![\w-])(?:" + "|".join(c.patterns) + r")", re.IGNORECASE) for c in CONCEPTS}
# Concepts that mention each other: an impression naming any of them covers the findings.
RELATED = {
    "hemorrhage": {"intracranial_hematoma", "hematoma"},
    "intracranial_hematoma": {"hemorrhage", "hematoma"},
    "hematoma": {"hemorrhage", "intracranial_hematoma"},
    "consolidation": {"pneumonia", "infiltrate", "opacity"},
    "pneumonia": {"consolidation", "infiltrate", "opacity"},
    "infiltrate": {"consolidation", "pneumonia", "opacity"},
    "opacity": {"consolidation", "pneumonia", "infiltrate", "atelectasis", "nodule", "mass"},
    "mass": {"nodule"}, "nodule": {"mass"},
    "dislocation": {"fracture"},
    "mass_effect": {"midline_shift", "brain_herniation"},
    "midline_shift": {"mass_effect"},
}
# AI finding (findings.yaml) -> the concepts that mention it.
AI_CONCEPTS = {
    "ich": ("hemorrhage", "intracranial_hematoma"),
    "pneumothorax": ("pneumothorax",),
    "effusion": ("effusion",),
    "consolidation": ("consolidation", "pneumonia", "infiltrate", "opacity"),
    "infiltrate": ("infiltrate", "consolidation", "pneumonia", "opacity"),
    "congestion": ("congestion",),
    "atelectasis": ("atelectasis",),
    "cardiomegaly": ("cardiomegaly",),
    "mass": ("mass", "nodule"),
    "foreign_object": ("foreign_body",),
}

# --- negation (NegEx-like) -----------------------------------------------------------------------
_PSEUDO = re.compile(r"\b(?:no (?:significant |interval )?(?:change|increase|decrease)(?: in)?|not only|"
                     r"cannot be (?:excluded|ruled out)|can ?not (?:exclude|rule out)|"
                     r"not (?:been )?(?:excluded|ruled out)|"
                     r"without (?:significant |interval )?change(?: in)?)\b", re.IGNORECASE)
_PRE_NEG = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|absent|resolved|resolution of|"
                      r"ruled? out|rules out|denies|neither|nor|never)\b", re.IGNORECASE)
_POST_NEG = re.compile(r"^[\w\s,/-]{0,40}?\b(?:(?:is|are|was|were)\s+)?"
                       r"(?:not\s+(?:seen|identified|present|demonstrated|"
                       r"visualized|evident|appreciated|detected|noted)|"
                       r"no longer (?:seen|visible|present|identified|evident)|"
                       r"(?:has|have)\s+resolved|resolved|absent|"
                       r"(?:is|are|was|were)\s+excluded|ruled out)\b|^\s*:\s*(?:none|absent|negative|no|normal)\b",
                       re.IGNORECASE)
_BREAK = re.compile(r"\b(?:but|however|although|though|except|aside from|apart from|which|whereas|"
                    r"there (?:is|are))\b|[;:]", re.IGNORECASE)
_NOT_ACUTE = re.compile(r"\b(?:chronic|old|remote|healed|healing|history of|status post|s/p|prior|previous|"
                        r"sequelae of|known|stable|unchanged)\b", re.IGNORECASE)
_ACUTE = re.compile(r"\b(?:acute|new|hyperacute|subacute|early|evolving|acute-appearing)\b", re.IGNORECASE)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+|(?<=;)\s*")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCES.split(text or "") if s and s.strip()]


@dataclass(frozen=True)
class Mention:
    concept: str
    sentence: str
    start: int
    end: int
    negated: bool
    acute: bool       # acute/new wording before it
    chronic: bool     # chronic/old/healed wording before it


def _last_match(pattern: re.Pattern, text: str) -> re.Match | None:
    """The last match of ``pattern`` in ``text``, or None."""
    last = None
    for m in pattern.finditer(text):
        last = m
    return last


def _clause_prefix(sentence: str, start: int) -> str:
    prefix = sentence[:start]
    last = _last_match(_BREAK, prefix)
    return prefix[last.end():] if last else prefix


def _clause_suffix(sentence: str, end: int) -> str:
    suffix = sentence[end:]
    brk = _BREAK.search(suffix)
    if brk and brk.group(0) != ":":
        suffix = suffix[: brk.start()]
    return suffix


def mentions(text: str) -> list[Mention]:
    """Every concept mention in ``text``, with its polarity and acuity."""
    out: list[Mention] = []
    for sentence in sentences(text):
        for concept in CONCEPTS:
            for m in _COMPILED[concept.name].finditer(sentence):
                prefix = _clause_prefix(sentence, m.start())
                cleaned = _PSEUDO.sub(" ", prefix)
                suffix = _clause_suffix(sentence, m.end())
                negated = bool(_PRE_NEG.search(cleaned)) or (
                    bool(_POST_NEG.search(suffix)) and not _PSEUDO.search(suffix[:60]))
                near = " ".join(prefix.split()[-4:])
                out.append(Mention(concept.name, sentence, m.start(), m.end(), negated,
                                   bool(_ACUTE.search(near)), bool(_NOT_ACUTE.search(near))))
    return out


def positive_concepts(text: str) -> set[str]:
    return {m.concept for m in mentions(text) if not m.negated}


# --- sides ----------------------------------------------------------------------------------------
_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?|both)\b", re.IGNORECASE)


def sides(text: str) -> set[str]:
    found = set()
    for m in _SIDE.finditer(text):
        word = m.group(1).lower()
        found |= {"left", "right"} if word.startswith(("bilateral", "both")) else {word}
    return found
