"""Pre-sign checks: pure functions over the report text, the patient, the order and the AI findings.

``run_checks(text, context)`` returns a list of ``Issue``. Each issue has a stable ``key`` (an
override or an acknowledgement names it) and a severity:

- ``blocking``: resolve it, or override it with a reason (audited) before signing;
- ``warn``: acknowledge it before signing (AI discordance);
- ``critical``: a critical finding; a final report needs a critical-result communication record;
- ``info``: not shown as a problem; logged for model QA (report critical, AI negative).

The checks: laterality (ordered side against the report; findings against impression), sex and
age (uterus in a male, prostate in a female, open physes in an adult...), findings against
impression (a positive finding missing from the impression), critical findings with negation
handling ("no acute hemorrhage" is not critical, "acute subdural hematoma" is), AI discordance,
empty template fields and unreplaced placeholders, contradictions (a negative or normal statement
against a positive finding of the same report: "no pneumothorax" and "small left pneumothorax";
the table NORMAL_STATEMENTS says which findings a template normal rules out), a measurement unit
without a number ("measuring millimeters"), and a critical-result communication whose side or size
differs from the report's.

Text handling is a small NegEx: a concept is negated by a trigger before it in its clause ("no",
"without", "negative for"...) or after it ("is not seen", "has resolved"); "no change in" and
"cannot be excluded" do not negate; "chronic", "old", "healed" make a finding non-acute.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Iterable

log = logging.getLogger(__name__)

SEVERITIES = ("blocking", "warn", "critical", "info")


@dataclass(frozen=True)
class Issue:
    key: str          # stable id: "laterality:order:right", "critical:pneumothorax"...
    check: str        # laterality, sex_age, findings_impression, critical, ai_discordance, ai_qa, template
    severity: str     # blocking, warn, critical, info
    message: str
    section: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass(frozen=True)
class AIResult:
    """An AI finding of the study (UNVERIFIED): name as in findings.yaml (ich, pneumothorax...)."""

    finding: str
    positive: bool
    probability: float = 0.0
    model: str = ""
    version: str = ""


@dataclass(frozen=True)
class CheckContext:
    """Everything outside the report text that the checks compare it with. All optional."""

    patient_sex: str = ""                 # M, F, O or ""
    patient_age_years: float | None = None
    ordered_side: str | None = None       # left, right, bilateral or None
    indication: str = ""
    ai_findings: tuple[AIResult, ...] = ()
    # Fields of the template: {section: {field label: value}}; an empty value is an issue.
    template_fields: dict[str, dict[str, str]] = field(default_factory=dict)
    # The findings told in the critical-result communications ("8 mm right subdural hematoma").
    communications: tuple[str, ...] = ()


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
                     r"cannot be (?:excluded|ruled out)|can ?not (?:exclude|rule out)|not (?:been )?(?:excluded|ruled out)|"
                     r"without (?:significant |interval )?change(?: in)?)\b", re.IGNORECASE)
_PRE_NEG = re.compile(r"\b(?:no|not|without|negative for|free of|absence of|absent|resolved|resolution of|"
                      r"ruled? out|rules out|denies|neither|nor|never)\b", re.IGNORECASE)
_POST_NEG = re.compile(r"^[\w\s,/-]{0,40}?\b(?:(?:is|are|was|were)\s+)?(?:not\s+(?:seen|identified|present|demonstrated|"
                       r"visualized|evident|appreciated|detected|noted)|no longer (?:seen|visible|present|identified|evident)|"
                       r"(?:has|have)\s+resolved|resolved|absent|"
                       r"(?:is|are|was|were)\s+excluded|ruled out)\b|^\s*:\s*(?:none|absent|negative|no|normal)\b",
                       re.IGNORECASE)
_BREAK = re.compile(r"\b(?:but|however|although|though|except|aside from|apart from|which|whereas|there (?:is|are))\b|[;:]",
                    re.IGNORECASE)
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


def _clause_prefix(sentence: str, start: int) -> str:
    prefix = sentence[:start]
    last = None
    for last in _BREAK.finditer(prefix):
        pass
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


# --- laterality ----------------------------------------------------------------------------------
_SIDE = re.compile(r"\b(left|right|bilateral(?:ly)?|both)\b", re.IGNORECASE)
ANATOMY = ("kidney", "renal", "lung", "lobe", "hemithorax", "hemisphere", "frontal", "parietal", "temporal",
           "occipital", "cerebellar", "knee", "hip", "shoulder", "ankle", "wrist", "elbow", "hand", "foot",
           "femur", "femoral", "tibia", "tibial", "fibula", "humerus", "humeral", "radius", "radial", "ulna", "clavicle",
           "rib", "ribs", "breast", "ovary", "ovarian", "adnexa", "adnexal", "testis", "testicular", "ureter", "ureteral",
           "adrenal", "pleural", "basal ganglia", "thalamus", "orbit", "maxillary", "mastoid", "convexity", "parotid",
           "thyroid", "carotid", "vertebral", "acetabulum", "scapula", "patella", "calcaneus", "meniscus")
_ANATOMY = re.compile(r"\b(" + "|".join(ANATOMY) + r")\b", re.IGNORECASE)


def sides(text: str) -> set[str]:
    found = set()
    for m in _SIDE.finditer(text):
        word = m.group(1).lower()
        found |= {"left", "right"} if word.startswith(("bilateral", "both")) else {word}
    return found


def ordered_side_from(description: str = "", dicom_laterality: str = "") -> str | None:
    """The ordered side from DICOM Laterality (L/R/B) or words in the study description."""
    code = (dicom_laterality or "").strip().upper()
    if code in ("L", "R", "B"):
        return {"L": "left", "R": "right", "B": "bilateral"}[code]
    words = set(re.findall(r"[A-Za-z]+", (description or "").upper()))
    if words & {"BILATERAL", "BILAT", "BIL", "BOTH"}:
        return "bilateral"
    left, right = bool(words & {"LEFT", "LT", "LFT"}), bool(words & {"RIGHT", "RT", "RGT"})
    if left != right:
        return "left" if left else "right"
    return None


def _topics(sentence: str) -> set[str]:
    topics = {m.group(1).lower() for m in _ANATOMY.finditer(sentence)}
    topics |= {c.name for c in CONCEPTS if _COMPILED[c.name].search(sentence)}
    return topics


def _all_negated(sentence: str) -> bool:
    found = mentions(sentence)
    return bool(found) and all(m.negated for m in found)


def check_laterality(report: dict[str, str], ordered_side: str | None) -> list[Issue]:
    issues: list[Issue] = []
    body = " ".join(report.get(s, "") for s in ("technique", "findings", "impression", "recommendations"))
    mentioned = sides(body)
    if ordered_side in ("left", "right") and mentioned:
        other = "right" if ordered_side == "left" else "left"
        if other in mentioned and ordered_side not in mentioned:
            issues.append(Issue(f"laterality:order:{other}", "laterality", "blocking",
                                f"The order is for the {ordered_side.upper()} side, but the report describes only "
                                f"the {other.upper()} side. Correct the side, or override with a reason.", "findings"))
    # The impression is compared with the findings and the technique ("Three views of the left knee").
    findings = sentences(report.get("findings", "")) + sentences(report.get("technique", ""))
    for sentence in sentences(report.get("impression", "")):
        imp_sides = sides(sentence)
        if len(imp_sides) != 1:
            continue
        side = next(iter(imp_sides))
        for topic in sorted(_topics(sentence)):
            # findings that describe something there ("resolved right effusion" does not count)
            matching = [s for s in findings if topic in _topics(s) and sides(s) and not _all_negated(s)]
            if matching and all(side not in sides(s) for s in matching):
                other = sorted(sides(matching[0]))[0]
                issues.append(Issue(f"laterality:impression:{topic}", "laterality", "blocking",
                                    f"The impression says {side.upper()} for '{topic}', the findings or technique say "
                                    f"{other.upper()}. Correct the side, or override with a reason.", "impression"))
                break
    return issues


# --- sex and age ---------------------------------------------------------------------------------
_FEMALE_ONLY = re.compile(r"\b(uter(?:us|ine)|endometri\w*|ovar(?:y|ies|ian)|adnexa\w*|cervix|fallopian|"
                          r"vagina\w*|intrauterine|postmenopausal)\b", re.IGNORECASE)
_MALE_ONLY = re.compile(r"\b(prostat\w*|seminal vesicles?|testis|testes|testic\w+|scrot\w+|penile|penis|"
                        r"epididym\w*)\b", re.IGNORECASE)
_OPEN_PHYSES = re.compile(r"\b(open|unfused) (?:growth plates?|physes|physis|epiphyses)\b|"
                          r"\b(?:growth plates?|physes) (?:are|is) open\b", re.IGNORECASE)
_PREGNANCY = re.compile(r"\b(pregnan\w*|gestational|intrauterine gestation|fetal|fetus)\b", re.IGNORECASE)


def check_sex_age(text: str, sex: str, age: float | None) -> list[Issue]:
    issues: list[Issue] = []
    sex = (sex or "").strip().upper()[:1]
    wrong = {"M": _FEMALE_ONLY, "F": _MALE_ONLY}.get(sex)
    if wrong is not None:
        found = sorted({m.group(1).lower() for m in wrong.finditer(text)})
        if found:
            who = "male" if sex == "M" else "female"
            issues.append(Issue(f"sex:{sex}:{found[0]}", "sex_age", "blocking",
                                f"The patient is {who}, but the report mentions {', '.join(found)}. Check the "
                                "patient and the template, or override with a reason."))
    if age is not None:
        if age >= 25 and _OPEN_PHYSES.search(text):
            issues.append(Issue("age:open_physes", "sex_age", "blocking",
                                f"Open growth plates are described in a patient aged {age:.0f}. Check the patient, "
                                "or override with a reason."))
        if age < 30 and re.search(r"\bpostmenopausal\b", text, re.IGNORECASE):
            issues.append(Issue("age:postmenopausal", "sex_age", "blocking",
                                f"'Postmenopausal' in a patient aged {age:.0f}. Check the patient, or override."))
        if (age < 9 or age > 60 or sex == "M") and any(not m_neg for m_neg in _pregnancy_mentions(text)):
            issues.append(Issue("age:pregnancy", "sex_age", "blocking",
                                f"Pregnancy is described in a patient aged {age:.0f} ({sex or 'sex unknown'}). "
                                "Check the patient, or override with a reason."))
    return issues


def _pregnancy_mentions(text: str) -> Iterable[bool]:
    for sentence in sentences(text):
        for m in _PREGNANCY.finditer(sentence):
            yield bool(_PRE_NEG.search(_PSEUDO.sub(" ", _clause_prefix(sentence, m.start()))))


# --- findings against impression, critical findings, AI --------------------------------------------
def check_findings_impression(report: dict[str, str]) -> list[Issue]:
    impression = report.get("impression", "")
    if not impression.strip():
        return []
    in_impression = {m.concept for m in mentions(impression)}
    covered = set(in_impression)
    for name in in_impression:
        covered |= RELATED.get(name, set())
    issues: list[Issue] = []
    seen: set[str] = set()
    for m in mentions(report.get("findings", "")):
        if m.negated or m.chronic or m.concept in covered or m.concept in seen:
            continue
        seen.add(m.concept)
        label = _CONCEPT[m.concept].label
        issues.append(Issue(f"findings_impression:{m.concept}", "findings_impression", "blocking",
                            f"The findings describe {label} ('{m.sentence[:80]}'), but the impression does not "
                            "mention it. Add it to the impression, or override with a reason.", "impression"))
    return issues


def critical_mentions(text: str) -> list[Mention]:
    out = []
    for m in mentions(text):
        rule = _CONCEPT[m.concept].critical
        if m.negated or m.chronic or rule == "never" or (rule == "acute" and not m.acute):
            continue
        out.append(m)
    return out


def check_critical(report: dict[str, str]) -> list[Issue]:
    text = "\n".join(report.get(s, "") for s in ("findings", "impression", "recommendations"))
    issues, seen = [], set()
    for m in critical_mentions(text):
        if m.concept in seen:
            continue
        seen.add(m.concept)
        issues.append(Issue(f"critical:{m.concept}", "critical", "critical",
                            f"Critical finding: {_CONCEPT[m.concept].label} ('{m.sentence[:80]}'). Record the "
                            "communication to the referring clinician (recipient, method, time, read-back) "
                            "before the report is final.", "impression"))
    return issues


def _ai_concepts(finding: str) -> tuple[str, ...]:
    return AI_CONCEPTS.get(finding, (finding,) if finding in _CONCEPT else ())


def check_ai(report: dict[str, str], ai: Iterable[AIResult]) -> list[Issue]:
    text = "\n".join(report.get(s, "") for s in ("findings", "impression"))
    found = mentions(text)
    positive = {m.concept for m in found if not m.negated}
    # A chronic mention ("chronic subdural hematoma") does not answer an AI finding of an acute,
    # critical kind (ich, pneumothorax): the radiologist must still look and acknowledge.
    acute_positive = {m.concept for m in found if not m.negated and not m.chronic}
    negated = {m.concept for m in found if m.negated} - positive
    critical = {m.concept for m in critical_mentions(text)}
    issues: list[Issue] = []
    for result in ai:
        concepts = _ai_concepts(result.finding)
        words = result.finding.replace("_", " ")
        if not concepts:  # a finding we have no words for: match its name
            concepts_positive = bool(re.search(rf"\b{re.escape(words)}", text, re.IGNORECASE))
        elif any(_CONCEPT[c].critical != "never" for c in concepts):
            concepts_positive = bool(acute_positive & set(concepts))
        else:
            concepts_positive = bool(positive & set(concepts))
        who = f"AI (UNVERIFIED; {result.model} {result.version}, p={result.probability:.2f})"
        if result.positive and not concepts_positive:
            how = "negates it" if set(concepts) & negated else "does not mention it"
            issues.append(Issue(f"ai:{result.finding}", "ai_discordance", "warn",
                                f"{who} flagged {words}; the report {how}. Acknowledge to sign."))
        elif not result.positive and set(concepts) & critical:
            issues.append(Issue(f"ai_qa:{result.finding}", "ai_qa", "info",
                                f"The report describes critical {words}; {who} was negative. Logged for model QA."))
    return issues


# --- template completeness -------------------------------------------------------------------------
_PLACEHOLDER = re.compile(r"\[[^\[\]\n]*\|[^\[\]\n]*\]|\[\s*(?:\.\.\.|_+|x+|blank|placeholder|\?+)?\s*\]|_{3,}|"
                          r"\bX{3,}\b|\*{3,}|\?{3,}|<[^<>\n]{1,40}>|\{\{[^{}]*\}\}", re.IGNORECASE)


def check_template(report: dict[str, str], fields: dict[str, dict[str, str]]) -> list[Issue]:
    issues: list[Issue] = []
    for section in ("findings", "impression"):
        if not report.get(section, "").strip():
            issues.append(Issue(f"template:empty:{section}", "template", "blocking",
                                f"The {section} section is empty. Dictate it before signing.", section))
    for section, values in fields.items():
        for label, value in values.items():
            if not (value or "").strip():
                issues.append(Issue(f"template:field:{section}:{label}", "template", "blocking",
                                    f"Template field '{label}' ({section}) is empty. Dictate it, say 'insert "
                                    "normal', or override with a reason.", section))
    for section, text in report.items():
        for m in _PLACEHOLDER.finditer(text or ""):
            issues.append(Issue(f"template:placeholder:{section}:{m.group(0)[:40]}", "template", "blocking",
                                f"Unreplaced placeholder {m.group(0)!r} in {section}. Choose or type the value.",
                                section))
    return issues


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
    last = None
    for last in _PRE_NEG.finditer(cleaned):
        pass
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


def _facts(text: str) -> dict[str, _Facts]:
    """Positive concept -> the sides and measurements written next to it (each word goes to the
    nearest positive mention of its sentence; a sentence without any goes to '*')."""
    facts: dict[str, _Facts] = {}
    found = [m for m in mentions(text) if not m.negated]
    for sentence in sentences(text):
        here = [m for m in found if m.sentence == sentence]

        def owners(pos: int) -> list[str]:
            if not here:
                return ["*"]
            distance: dict[str, int] = {}
            for m in here:
                d = min(abs(pos - m.start), abs(pos - m.end))
                distance[m.concept] = min(d, distance.get(m.concept, d))
            best = min(distance.values())
            return [c for c, d in distance.items() if d == best]

        for side in _SIDE.finditer(sentence):
            for owner in owners(side.start()):
                facts.setdefault(owner, _Facts()).sides |= sides(side.group(0))
        for pos, dimension, value, shown in _measurements(sentence):
            for owner in owners(pos):
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


def run_checks(report: dict[str, str], context: CheckContext | None = None) -> list[Issue]:
    """All checks over ``report`` ({section: text, without field labels}) in a fixed order."""
    context = context or CheckContext()
    text = "\n".join(report.get(s, "") for s in ("technique", "findings", "impression", "recommendations"))
    issues = [
        *check_template(report, context.template_fields),
        *check_laterality(report, context.ordered_side),
        *check_sex_age(text, context.patient_sex, context.patient_age_years),
        *check_findings_impression(report),
        *check_critical(report),
        *check_ai(report, context.ai_findings),
        *check_contradictions(report),
        *check_units(report),
        *check_communications(report, context.communications),
    ]
    unique: dict[str, Issue] = {}
    for issue in issues:
        unique.setdefault(issue.key, issue)
    return list(unique.values())
