"""Consistency: a negative or normal statement against a positive finding of the same report.

"No pneumothorax" and "small left pneumothorax"; the table ``NORMAL_STATEMENTS`` says which
findings a template normal rules out, ``SITES`` where a finding is. ``rules_out`` is the one
contradiction rule, used by the check and by "insert normal" (``contradicting_sentences``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from reporting.checks.issues import Issue
from reporting.checks.text import (_ACUTE, _CONCEPT, _PRE_NEG, _PSEUDO, Mention, _clause_prefix, _clause_suffix,
                                   _last_match, mentions, sentences, sides)

log = logging.getLogger(__name__)


# --- contradictions ------------------------------------------------------------------------------
# A negated concept also rules out these (directional: "no hemorrhage" rules out a subdural
# hematoma, "no subdural hematoma" does not rule out a subarachnoid hemorrhage).
RULES_OUT: dict[str, tuple[str, ...]] = {
    "hemorrhage": ("intracranial_hematoma",),
    "mass_effect": ("midline_shift", "brain_herniation"),
    "consolidation": ("pneumonia", "infiltrate"),
    "infiltrate": ("consolidation", "pneumonia"),
}


@dataclass(frozen=True)
class NormalStatement:
    """A normal sentence of a template (or its usual variants) and the findings it rules out.

    ``scope``: "any" rules out every positive mention; "acute" only those not called chronic
    ("No acute intracranial abnormality" and a chronic subdural hematoma agree); "new" only those
    called acute or new. ``where``: the positive sentence must name this site ("The calvarium is
    intact" rules out a skull fracture, not a rib fracture).
    """

    pattern: str
    rules_out: tuple[str, ...]
    scope: str = "any"
    where: str = ""


NORMAL_STATEMENTS: tuple[NormalStatement, ...] = (
    # chest radiograph
    NormalStatement(r"\blungs?(?:\s+bases?)?\s+(?:(?:are|is|remain)\s+)?clear\b",
                    ("consolidation", "pneumonia", "infiltrate", "opacity")),
    NormalStatement(r"\b(?:cardiomediastinal|cardiac)\s+silhouette\s+is\s+(?:within\s+normal\s+limits|normal)\b|"
                    r"\bheart\s+(?:size\s+)?is\s+normal\b", ("cardiomegaly",)),
    NormalStatement(r"\bno\s+acute\s+cardiopulmonary\s+(?:process|abnormality|disease|findings?)\b",
                    ("pneumothorax", "consolidation", "pneumonia", "infiltrate", "congestion"), "acute"),
    NormalStatement(r"\bno\s+acute\s+(?:osseous|bony|skeletal)\s+(?:abnormalit(?:y|ies)|findings?|injury)\b",
                    ("fracture", "dislocation"), "acute"),
    # CT head
    NormalStatement(r"\bno\s+(?:(?:CT\s+)?evidence\s+of\s+)?acute\s+intracranial\s+"
                    r"(?:abnormalit(?:y|ies)|process|pathology|findings?|injury)\b",
                    ("hemorrhage", "intracranial_hematoma", "midline_shift", "mass_effect", "infarct",
                     "brain_herniation"), "acute"),
    NormalStatement(r"\bgr[ae]y[- ]white(?:\s+matter)?\s+differentiation\s+is\s+(?:preserved|maintained|normal)\b",
                    ("infarct",), "new"),
    NormalStatement(r"\bventricles\b(?:\s+and\s+basal\s+cisterns)?\s+are\s+normal(?:\s+in\s+size)?\b",
                    ("hydrocephalus",)),
    NormalStatement(r"\bno\s+extra-?axial\s+(?:fluid\s+)?collections?\b", ("intracranial_hematoma", "hemorrhage"),
                    where=r"\b(?:subdural|epidural|extradural|extra-?axial|SDH|EDH)\b"),
    NormalStatement(r"\b(?:calvarium|skull|cranial\s+vault)\s+(?:is|appears)\s+intact\b", ("fracture",),
                    where=r"\b(?:skull|calvari\w*|cranial\s+vault|(?:frontal|parietal|temporal|occipital|sphenoid)"
                          r"\s+bones?)\b"),
    # CT abdomen and pelvis
    NormalStatement(r"\bno\s+acute\s+(?:abnormalit(?:y|ies)|process|findings?)\s+in\s+the\s+abdomen\b|"
                    r"\bno\s+acute\s+(?:abdominal|abdominopelvic|intra-?abdominal)(?:\s+or\s+pelvic)?\s+"
                    r"(?:abnormalit(?:y|ies)|process|pathology|findings?)\b",
                    ("pneumoperitoneum", "bowel_obstruction", "appendicitis", "diverticulitis", "cholecystitis",
                     "abscess"), "acute"),
    NormalStatement(r"\bappendix\s+is\s+(?:normal|unremarkable)\b", ("appendicitis",)),
    NormalStatement(r"\bgallbladder\s+is\s+(?:normal|unremarkable)\b", ("cholecystitis",)),
    NormalStatement(r"\bpancreas\s+is\s+(?:normal|unremarkable)\b", ("mass", "abscess"), where=r"\bpancrea\w*"),
    NormalStatement(r"\badrenal\s+glands\s+are\s+(?:normal|unremarkable)\b", ("mass", "nodule"),
                    where=r"\badrenals?\b"),
)
_NORMALS = [(re.compile(n.pattern, re.IGNORECASE), n, re.compile(n.where, re.IGNORECASE) if n.where else None)
            for n in NORMAL_STATEMENTS]
# Where a finding is: two mentions at different sites do not contradict ("no pericardial
# effusion", "small left pleural effusion"). Umbrella words (intracranial, extra-axial) are not sites.
SITES: dict[str, str] = {
    "pleural": r"pleural", "pericardial": r"peri-?cardial", "joint": r"joints?|intra-?articular",
    "skull": r"skull|calvari\w*|(?:frontal|parietal|temporal|occipital|sphenoid) bones?",
    "face": r"nasal|facial|orbital|orbits?|zygom\w*|maxill\w*|mandib\w*", "rib": r"ribs?",
    "spine": r"spin\w*|vertebra\w*|cervical|thoracic|lumbar|sacr(?:al|um)|coccy\w*|[CTL]\d{1,2}",
    "pelvis": r"pelvi[cs]|acetabul\w*|iliac|pubic|pubis", "hip": r"hips?|femoral neck|intertrochanteric",
    "femur": r"femurs?|femoral", "tibia": r"tibi\w*", "fibula": r"fibul\w*", "knee": r"knees?|patell\w*",
    "ankle": r"ankles?|malleol\w*", "foot": r"feet|foot|metatars\w*|calcane\w*|toes?", "radius": r"radius|radial",
    "ulna": r"ulna\w*", "wrist": r"wrists?|scaphoid|carpal", "hand": r"hands?|metacarp\w*|fingers?|phalan\w*",
    "humerus": r"humer\w*", "shoulder": r"shoulders?|glenoid", "clavicle": r"clavic\w*", "scapula": r"scapul\w*",
    "elbow": r"elbows?|olecran\w*", "aorta": r"aort\w*", "spleen": r"splen\w*|spleen", "liver": r"hepat\w*|liver",
    "kidney": r"renal|kidneys?", "pancreas": r"pancrea\w*", "adrenal": r"adrenals?", "scalp": r"scalp|subgaleal",
    "soft_tissue": r"soft[- ]tissues?", "subdural": r"subdural|SDH", "epidural": r"epidural|extradural|EDH",
    "subarachnoid": r"subarachnoid|SAH", "parenchymal": r"intraparenchymal|intracerebral|parenchymal",
    "ventricular": r"intraventricular|IVH", "retroperitoneal": r"retroperitone\w*", "upper_lobe": r"upper lobes?",
    "middle_lobe": r"middle lobe", "lower_lobe": r"lower lobes?", "lingula": r"lingula\w*",
    "mediastinum": r"mediastin\w*", "hilum": r"hil(?:ar|um)", "axilla": r"axill\w*", "bladder": r"bladder",
    "thyroid": r"thyroid", "breast": r"breasts?",
}
_SITES = [(name, re.compile(rf"(?<![\w-])(?:{pattern})(?![\w-])", re.IGNORECASE)) for name, pattern in SITES.items()]
_WINDOW_STOP = re.compile(r",|\b(?:and|or|with|without|no|not|of|in|measuring|measures)\b", re.IGNORECASE)
_AFTER_SITE = re.compile(r"^\s*(?:of|in|at|along|within|involving|over)\b([^,;]*)", re.IGNORECASE)
_NEW = re.compile(r"\b(?:new|newly|interval|further)\b", re.IGNORECASE)
# "Otherwise, the lungs are clear", "no other fracture": the statement sets aside what was described.
_OTHERWISE = re.compile(r"\b(?:otherwise|elsewhere|other|another|remainder|remaining|rest of|additional)\b",
                        re.IGNORECASE)
_CHRONIC_AFTER = re.compile(r"\b(?:chronic|old|remote|healed|unchanged|stable)\b", re.IGNORECASE)
CONTRADICTION_SECTIONS = ("findings", "impression")


@dataclass(frozen=True)
class RuleOut:
    """A sentence that says concepts are absent: a negated mention, or a normal statement."""

    section: str
    sentence: str
    concepts: frozenset[str]
    scope: str                     # any, acute, new (see NormalStatement)
    sides: frozenset[str]
    sites: frozenset[str]
    where: re.Pattern | None = None


@dataclass(frozen=True)
class Positive:
    """A finding the report says is there."""

    section: str
    sentence: str
    concept: str
    sides: frozenset[str]
    sites: frozenset[str]
    chronic: bool
    acute: bool                    # called acute or new


@dataclass(frozen=True)
class Contradiction:
    rule_out: RuleOut
    positive: Positive


def _site_names(text: str) -> frozenset[str]:
    return frozenset(name for name, pattern in _SITES if pattern.search(text))


def _clause(sentence: str, start: int, end: int) -> str:
    return _clause_prefix(sentence, start) + sentence[start:end] + _clause_suffix(sentence, end)


def _site_window(sentence: str, m: Mention, spans: list[tuple[int, int]]) -> str:
    """The words that say where this mention is: its own words, the few before it (up to a
    coordinator, a negation or another finding) and an 'of the left fifth rib' after it."""
    before = _clause_prefix(sentence, m.start)
    offset = m.start - len(before)
    cut = max([s.end() for s in _WINDOW_STOP.finditer(before)] +
              [e - offset for s, e in spans if e <= m.start and e - offset > 0] + [0])
    window = " ".join(before[cut:].split()[-4:]) + " " + sentence[m.start:m.end]
    after = _AFTER_SITE.match(_clause_suffix(sentence, m.end))
    if after:
        window += " " + " ".join(_WINDOW_STOP.split(after.group(1))[0].split()[:6])
    return window


def _scope(sentence: str, m: Mention) -> str:
    """What a negation rules out: 'no new fracture' only new ones, 'no acute fracture' all but old ones."""
    prefix = _clause_prefix(sentence, m.start)
    cleaned = _PSEUDO.sub(" ", prefix)
    last = _last_match(_PRE_NEG, cleaned)
    words = cleaned[last.end():] if last else " ".join(prefix.split()[-4:])
    return "new" if _NEW.search(words) else "acute" if _ACUTE.search(words) else "any"


def _statements(section: str, text: str) -> tuple[list[RuleOut], list[Positive]]:
    """What ``text`` rules out and what it says is there, sentence by sentence."""
    rule_outs: list[RuleOut] = []
    positives: list[Positive] = []
    found = mentions(text)
    for sentence in dict.fromkeys(m.sentence for m in found):
        spans = [(m.start, m.end) for m in found if m.sentence == sentence]
        for m in (m for m in found if m.sentence == sentence):
            clause = _clause(sentence, m.start, m.end)
            if m.negated and _OTHERWISE.search(clause):
                continue
            sides_ = frozenset(sides(clause))
            sites = _site_names(_site_window(sentence, m, spans))
            if m.negated:
                concepts = frozenset({m.concept, *RULES_OUT.get(m.concept, ())})
                rule_outs.append(RuleOut(section, sentence, concepts, _scope(sentence, m), sides_, sites))
            else:
                chronic = m.chronic or bool(_CHRONIC_AFTER.search(_clause_suffix(sentence, m.end)))
                near = " ".join(_clause_prefix(sentence, m.start).split()[-4:])
                positives.append(Positive(section, sentence, m.concept, sides_, sites, chronic,
                                          bool(_ACUTE.search(near))))
    for sentence in sentences(text):
        for pattern, normal, where in _NORMALS:
            match = pattern.search(sentence)
            clause = _clause(sentence, match.start(), match.end()) if match else ""
            if match and not _OTHERWISE.search(clause):
                rule_outs.append(RuleOut(section, sentence, frozenset(normal.rules_out), normal.scope,
                                         frozenset(sides(clause)), frozenset(), where))
    return rule_outs, positives


def ruled_out(text: str) -> set[str]:
    """The concepts ``text`` says are absent ("The lungs are clear." -> consolidation, pneumonia...)."""
    return {c for r in _statements("", text)[0] for c in r.concepts}


def rules_out(r: RuleOut, p: Positive) -> bool:
    """True when ``r`` says ``p`` is absent: the one contradiction rule (checks and 'insert normal')."""
    if p.concept not in r.concepts or (r.section, r.sentence) == (p.section, p.sentence):
        return False
    if (r.scope == "acute" and p.chronic) or (r.scope == "new" and not p.acute):
        return False
    if r.sides and not (r.sides & p.sides):      # "no left pneumothorax", "right pneumothorax"
        return False
    if r.sites and not (r.sites & p.sites):      # "no pericardial effusion", "pleural effusion"
        return False
    return r.where is None or bool(r.where.search(p.sentence))


def contradictions(report: dict[str, str]) -> list[Contradiction]:
    """Every (rule-out, positive) pair of the findings and impression that contradict each other."""
    rule_outs: list[RuleOut] = []
    positives: list[Positive] = []
    for section in CONTRADICTION_SECTIONS:
        r, p = _statements(section, report.get(section, "") or "")
        rule_outs += r
        positives += p
    return [Contradiction(r, p) for p in positives for r in rule_outs if rules_out(r, p)]


def contradicting_sentences(text: str, report: dict[str, str]) -> list[str]:
    """The sentences of ``text`` (a normal to insert) that contradict the findings or impression of
    ``report``, in either direction."""
    new_r, new_p = _statements("\0new", text)
    old_r: list[RuleOut] = []
    old_p: list[Positive] = []
    for section in CONTRADICTION_SECTIONS:
        r, p = _statements(section, report.get(section, "") or "")
        old_r += r
        old_p += p
    bad = {r.sentence for r in new_r for p in old_p if rules_out(r, p)}
    bad |= {p.sentence for p in new_p for r in old_r if rules_out(r, p)}
    return [s for s in sentences(text) if s in bad]


def _quote(sentence: str) -> str:
    return sentence if len(sentence) <= 120 else sentence[:117] + "..."


def check_contradictions(report: dict[str, str]) -> list[Issue]:
    """A negative or normal statement that contradicts a positive finding of the same report."""
    issues: list[Issue] = []
    seen_concepts: set[str] = set()
    seen_pairs: set[tuple[str, str]] = set()
    for c in contradictions(report):
        r, p = c.rule_out, c.positive
        if p.concept in seen_concepts or (r.sentence, p.sentence) in seen_pairs:
            continue
        seen_concepts.add(p.concept)
        seen_pairs.add((r.sentence, p.sentence))
        label = _CONCEPT[p.concept].label
        issues.append(Issue(
            f"contradiction:{p.concept}", "contradiction", "blocking",
            f"The report contradicts itself about {label}: '{_quote(r.sentence)}' ({r.section}) but "
            f"'{_quote(p.sentence)}' ({p.section}). Remove or correct one of them, or override with a reason.",
            p.section))
    return issues
