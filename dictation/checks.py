"""Pre-sign checks: pure functions over the report text, the patient, the order and the AI findings.

``run_checks(text, context)`` returns a list of ``Issue``. Each issue has a stable ``key`` (an
override or an acknowledgement names it) and a severity:

- ``block``: resolve it, or override it with a reason (audited) before signing;
- ``warn``: acknowledge it before signing (AI discordance);
- ``critical``: a critical finding; a final report needs a critical-result communication record;
- ``info``: not shown as a problem; logged for model QA (report critical, AI negative).

The checks: laterality (ordered side against the report; findings against impression), sex and
age (uterus in a male, prostate in a female, open physes in an adult...), findings against
impression (a positive finding missing from the impression), critical findings with negation
handling ("no acute hemorrhage" is not critical, "acute subdural hematoma" is), AI discordance,
empty template fields and unreplaced placeholders.

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

SEVERITIES = ("block", "warn", "critical", "info")


@dataclass(frozen=True)
class Issue:
    key: str          # stable id: "laterality:order:right", "critical:pneumothorax"...
    check: str        # laterality, sex_age, findings_impression, critical, ai_discordance, ai_qa, template
    severity: str     # block, warn, critical, info
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
            issues.append(Issue(f"laterality:order:{other}", "laterality", "block",
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
                issues.append(Issue(f"laterality:impression:{topic}", "laterality", "block",
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
            issues.append(Issue(f"sex:{sex}:{found[0]}", "sex_age", "block",
                                f"The patient is {who}, but the report mentions {', '.join(found)}. Check the "
                                "patient and the template, or override with a reason."))
    if age is not None:
        if age >= 25 and _OPEN_PHYSES.search(text):
            issues.append(Issue("age:open_physes", "sex_age", "block",
                                f"Open growth plates are described in a patient aged {age:.0f}. Check the patient, "
                                "or override with a reason."))
        if age < 30 and re.search(r"\bpostmenopausal\b", text, re.IGNORECASE):
            issues.append(Issue("age:postmenopausal", "sex_age", "block",
                                f"'Postmenopausal' in a patient aged {age:.0f}. Check the patient, or override."))
        if (age < 9 or age > 60 or sex == "M") and any(not m_neg for m_neg in _pregnancy_mentions(text)):
            issues.append(Issue("age:pregnancy", "sex_age", "block",
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
        issues.append(Issue(f"findings_impression:{m.concept}", "findings_impression", "block",
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
            issues.append(Issue(f"template:empty:{section}", "template", "block",
                                f"The {section} section is empty. Dictate it before signing.", section))
    for section, values in fields.items():
        for label, value in values.items():
            if not (value or "").strip():
                issues.append(Issue(f"template:field:{section}:{label}", "template", "block",
                                    f"Template field '{label}' ({section}) is empty. Dictate it, say 'insert "
                                    "normal', or override with a reason.", section))
    for section, text in report.items():
        for m in _PLACEHOLDER.finditer(text or ""):
            issues.append(Issue(f"template:placeholder:{section}:{m.group(0)[:40]}", "template", "block",
                                f"Unreplaced placeholder {m.group(0)!r} in {section}. Choose or type the value.",
                                section))
    return issues


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
    ]
    unique: dict[str, Issue] = {}
    for issue in issues:
        unique.setdefault(issue.key, issue)
    return list(unique.values())
