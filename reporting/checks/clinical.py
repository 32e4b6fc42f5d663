"""The individual pre-sign checks over the report and its context.

Laterality (ordered side against the report; findings against impression), sex and age (uterus
in a male, prostate in a female, open physes in an adult...), findings against impression (a
positive finding missing from the impression), critical findings, AI discordance, and template
completeness (empty sections and fields, unreplaced placeholders).
"""

from __future__ import annotations

import logging
import re
from typing import Iterable

from reporting.checks.issues import AIResult, Issue
from reporting.checks.text import (_COMPILED, _CONCEPT, _PRE_NEG, _PSEUDO, AI_CONCEPTS, CONCEPTS, RELATED, Mention,
                                   _clause_prefix, mentions, sentences, sides)

log = logging.getLogger(__name__)


# --- laterality ----------------------------------------------------------------------------------
ANATOMY = ("kidney", "renal", "lung", "lobe", "hemithorax", "hemisphere", "frontal", "parietal", "temporal",
           "occipital", "cerebellar", "knee", "hip", "shoulder", "ankle", "wrist", "elbow", "hand", "foot",
           "femur", "femoral", "tibia", "tibial", "fibula", "humerus", "humeral", "radius", "radial", "ulna",
           "clavicle", "rib", "ribs", "breast", "ovary", "ovarian", "adnexa", "adnexal", "testis", "testicular",
           "ureter", "ureteral", "adrenal", "pleural", "basal ganglia", "thalamus", "orbit", "maxillary", "mastoid",
           "convexity", "parotid", "thyroid", "carotid", "vertebral", "acetabulum", "scapula", "patella",
           "calcaneus", "meniscus")
_ANATOMY = re.compile(r"\b(" + "|".join(ANATOMY) + r")\b", re.IGNORECASE)

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
