"""Pre-sign checks benchmark: recall on reports with injected errors, false alarms on clean reports.

    python bench/checks.py [--clean 150] [--per-type 20] [--seed 7] [--show-misses]

A seeded generator writes clean reports of five kinds (CT head, chest radiograph, CT abdomen and
pelvis, extremity radiograph with an ordered side, CT chest) from phrase pools with varied
negation ("no", "there is no evidence of", "negative for", "... is not identified", "has
resolved", chronic findings), positive findings echoed in the impression, and concordant AI
findings. Then it injects one error per report copy, of eleven kinds, and runs
``reporting.checks.run_checks`` on every report.

- recall: an injected error counts as found when an issue of the expected check fires;
- false alarms: a clean report counts as a false alarm when any issue (other than the
  model-QA info) fires.

Targets (issue 7): recall >= 95 %, false alarms <= 5 %. The phrase pools were written by the same
engineer as the checks, so these figures are an upper bound for real reports.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reporting.checks import AIResult, CheckContext, run_checks

SIDES = ("left", "right")


@dataclass
class Case:
    kind: str
    report: dict[str, str]
    context: CheckContext
    error: str = ""            # the injected error kind, "" for a clean report
    expected: str = ""         # the check that should fire
    sided: list[str] = field(default_factory=list)   # positive findings with a side (for flips)


def pick(rng: random.Random, pool: list[str], k: int) -> list[str]:
    return rng.sample(pool, min(k, len(pool)))


def without(sentences: list[str], *words: str) -> list[str]:
    """The sentences that name none of ``words``: a clean report must not negate what it describes
    (the contradiction check would rightly flag "No hydronephrosis." beside "mild hydronephrosis")."""
    return [s for s in sentences if not any(w in s.lower() for w in words)]


def head(rng: random.Random) -> Case:
    side = rng.choice(SIDES)
    negatives = ["No acute intracranial hemorrhage.", "There is no evidence of acute intracranial hemorrhage.",
                 "Negative for intracranial hemorrhage.", "No midline shift or mass effect.",
                 "Gray-white differentiation is preserved.", "The ventricles and basal cisterns are normal in size.",
                 "No extra-axial collection is identified.", "The calvarium is intact without fracture.",
                 "The visualized paranasal sinuses and mastoid air cells are clear.",
                 f"A chronic subdural hematoma along the {side} convexity is unchanged.",
                 f"Old lacunar infarct in the {side} basal ganglia.", "Herniation is not seen.",
                 "No hydrocephalus.", "Mild chronic small vessel ischemic changes.",
                 "Interval resolution of the previously seen subarachnoid hemorrhage.",
                 "No intracranial mass, hemorrhage or acute territorial infarct.",
                 "There is no acute hemorrhage, although evaluation of the posterior fossa is limited by artifact."]
    findings = pick(rng, negatives, rng.randint(4, 7))
    if any("chronic subdural" in f for f in findings):
        findings = without(findings, "extra-axial", "negative for intracranial", "no intracranial mass, hemorrhage")
    impression = [rng.choice(["No acute intracranial abnormality.", "No acute intracranial process.",
                              "No CT evidence of acute intracranial pathology."])]
    sided = []
    if rng.random() < 0.4:
        n = rng.randint(5, 30)
        findings.append(f"A {n} mm {side} frontal scalp hematoma without underlying fracture.")
        impression.append(f"{side.capitalize()} frontal scalp hematoma.")
        sided.append(side)
    ai = (AIResult("ich", False, round(rng.uniform(0.01, 0.3), 2), "ich-net", "1.0"),)
    return Case("ct_head", {"clinical_information": "Headache.", "technique": "Noncontrast CT of the head.",
                            "findings": " ".join(findings), "impression": " ".join(impression)},
                CheckContext(patient_sex=rng.choice("MF"), patient_age_years=rng.randint(20, 90), ai_findings=ai),
                sided=sided)


def chest(rng: random.Random) -> Case:
    side = rng.choice(SIDES)
    negatives = ["No pneumothorax.", "No pleural effusion.", "No focal consolidation.",
                 "The cardiomediastinal silhouette is within normal limits.", "Heart size is normal.",
                 f"The previously seen {side} pneumothorax has resolved.",
                 "Lungs are clear without consolidation, effusion or pneumothorax.",
                 "There is no evidence of pulmonary edema.", "Pneumothorax is not identified.",
                 "Degenerative changes of the thoracic spine.", "The previously described nodule is no longer seen.",
                 "Interval resolution of the right pleural effusion.", "No new consolidation.",
                 "Pneumothorax: none."]
    findings = pick(rng, negatives, rng.randint(3, 5))
    impression, ai, sided = [], [], []
    choice = rng.random()
    if choice < 0.3:
        findings = without(findings, "lungs are clear", "focal consolidation")
        findings.append(f"{side.capitalize()} lower lobe consolidation.")
        impression.append(f"{side.capitalize()} lower lobe pneumonia.")
        ai.append(AIResult("consolidation", True, 0.81, "cxr-net", "2.1"))
        sided.append(side)
    elif choice < 0.55:
        findings = without(findings, "lungs are clear", "no pleural effusion", f"resolution of the {side}")
        findings.append(f"Small {side} pleural effusion.")
        impression.append(f"Small {side} pleural effusion.")
        ai.append(AIResult("effusion", True, 0.77, "cxr-net", "2.1"))
        sided.append(side)
    elif choice < 0.7:
        findings = without(findings, "silhouette is within normal limits", "heart size is normal")
        findings.append("The cardiac silhouette is enlarged.")
        impression.append("Mild cardiomegaly.")
        ai.append(AIResult("cardiomegaly", True, 0.7, "cxr-net", "2.1"))
    else:
        impression.append(rng.choice(["No acute cardiopulmonary process.", "No acute cardiopulmonary abnormality."]))
    ai.append(AIResult("pneumothorax", False, 0.04, "cxr-net", "2.1"))
    return Case("chest", {"clinical_information": "Cough.", "technique": "PA and lateral chest radiographs.",
                          "findings": " ".join(findings), "impression": " ".join(impression)},
                CheckContext(patient_sex=rng.choice("MF"), patient_age_years=rng.randint(18, 95),
                             ai_findings=tuple(ai)), sided=sided)


def abdomen(rng: random.Random) -> Case:
    sex, side = rng.choice("MF"), rng.choice(SIDES)
    organs = ("The uterus and ovaries are unremarkable." if sex == "F" else "The prostate is normal in size.")
    negatives = ["No free intraperitoneal air.", "No bowel obstruction.", "The appendix is normal.",
                 "No hydronephrosis.", "The liver, spleen and pancreas are unremarkable.",
                 "There is no abdominal or pelvic lymphadenopathy.", f"Simple {side} renal cyst.",
                 "No abscess is identified.", "Negative for acute appendicitis.",
                 "The appendix is not visualized; no secondary signs of appendicitis.",
                 "Kidneys enhance symmetrically without hydronephrosis or stones."]
    findings = [*pick(rng, negatives, rng.randint(3, 6)), organs]
    impression, sided = [], []
    choice = rng.random()
    if choice < 0.35:
        n = rng.randint(3, 9)
        findings = without(findings, "hydronephrosis")
        findings.append(f"A {n} mm obstructing stone in the {side} proximal ureter with mild {side} hydronephrosis.")
        impression.append(f"Obstructing {n} mm {side} ureteral stone with mild hydronephrosis.")
        sided.append(side)
    elif choice < 0.6:
        findings.append("Sigmoid diverticulitis without abscess or free air.")
        impression.append("Uncomplicated sigmoid diverticulitis.")
    else:
        impression.append("No acute abdominal or pelvic abnormality.")
    return Case("ct_abdomen", {"clinical_information": "Abdominal pain.", "technique": "CT abdomen and pelvis "
                               "with IV contrast.", "findings": " ".join(findings),
                               "impression": " ".join(impression)},
                CheckContext(patient_sex=sex, patient_age_years=rng.randint(20, 85)), sided=sided)


def extremity(rng: random.Random, child: bool | None = None) -> Case:
    side = rng.choice(SIDES)
    part = rng.choice(["knee", "wrist", "ankle", "elbow", "shoulder", "hand"])
    child = rng.random() < 0.3 if child is None else child
    findings = pick(rng, ["No acute fracture or dislocation.", "Joint spaces are preserved.",
                          "Soft tissues are unremarkable.", "Bone mineralization is normal.",
                          "No radiopaque foreign body.", "No evidence of acute fracture, dislocation or joint effusion.",
                          "Fracture is not identified."], rng.randint(2, 4))
    if child:
        findings.append("The physes are open.")
    impression = []
    if rng.random() < 0.5:
        bone = {"knee": "proximal tibia", "wrist": "distal radius", "ankle": "distal fibula", "elbow": "radial head",
                "shoulder": "humeral neck", "hand": "fifth metacarpal"}[part]
        findings = without(findings, "fracture")
        findings.append(f"Nondisplaced fracture of the {side} {bone}.")
        impression.append(f"Nondisplaced {side} {bone} fracture.")
    else:
        impression.append(f"No acute osseous abnormality of the {side} {part}.")
    if part == "knee" and rng.random() < 0.5:
        findings = without(findings, "joint effusion")
        findings.append(f"Small {side} knee joint effusion.")
        impression.append("Small joint effusion.")
    age = rng.randint(6, 14) if child else rng.randint(25, 85)
    return Case("extremity", {"clinical_information": "Fall.", "technique": f"Three views of the {side} {part}.",
                              "findings": " ".join(findings), "impression": " ".join(impression)},
                CheckContext(patient_sex=rng.choice("MF"), patient_age_years=age, ordered_side=side),
                sided=[side])


def ct_chest(rng: random.Random) -> Case:
    side = rng.choice(SIDES)
    findings = pick(rng, ["No pulmonary embolism.", "There is no filling defect in the pulmonary arteries.",
                          "No aortic dissection.", "The thoracic aorta is normal in caliber.", "No pneumothorax.",
                          "No pericardial effusion.", "Mild emphysema.",
                          "Negative for pulmonary embolism to the subsegmental level.",
                          "No mediastinal or hilar lymphadenopathy."], rng.randint(3, 5))
    impression = []
    if rng.random() < 0.5:
        n = rng.randint(4, 12)
        lobe = rng.choice(["upper", "lower"])
        findings.append(f"A {n} mm solid nodule in the {side} {lobe} lobe.")
        impression.append(f"{n} mm {side} {lobe} lobe nodule; follow-up CT in 6 to 12 months is recommended.")
        sided = [side]
    else:
        impression.append("No pulmonary embolism or other acute thoracic abnormality.")
        sided = []
    return Case("ct_chest", {"clinical_information": "Chest pain.", "technique": "CT pulmonary angiogram.",
                             "findings": " ".join(findings), "impression": " ".join(impression)},
                CheckContext(patient_sex=rng.choice("MF"), patient_age_years=rng.randint(25, 90)), sided=sided)


KINDS = (head, chest, abdomen, extremity, ct_chest)


def flip(text: str, sides: set[str] | None = None) -> str:
    def swap(m: re.Match) -> str:
        word = m.group(0)
        new = "right" if word.lower() == "left" else "left"
        return new.capitalize() if word[0].isupper() else new
    return re.sub(r"\b(?:[Ll]eft|[Rr]ight)\b", swap, text)


CRITICAL_PAIRS = [
    ("Acute {side} subdural hematoma measuring 6 mm with 3 mm of midline shift.", "Acute {side} subdural hematoma."),
    ("Large {side} pneumothorax.", "Large {side} pneumothorax."),
    ("Filling defects in the {side} lower lobe pulmonary arteries consistent with pulmonary embolism.",
     "Acute {side} lower lobe pulmonary embolism."),
    ("Free intraperitoneal air under the diaphragm.", "Pneumoperitoneum, concerning for perforation."),
    ("Acute infarct in the {side} MCA territory.", "Acute {side} MCA infarct."),
    ("Subarachnoid hemorrhage in the {side} sylvian fissure.", "Acute subarachnoid hemorrhage."),
]
# (positive finding, a statement that contradicts it)
CONTRADICTIONS = [
    ("Small {side} pneumothorax.", "No pneumothorax."),
    ("{Side} lower lobe consolidation.", "The lungs are clear."),
    ("Nondisplaced fracture of the {side} fifth rib.", "No acute fracture."),
    ("Acute {side} frontal subdural hematoma measuring 8 mm with 3 mm midline shift.",
     "No acute intracranial hemorrhage."),
    ("Mild {side} hydronephrosis.", "No hydronephrosis."),
]
UNITLESS = ["measuring millimeters", "measuring 3 x cm", "which measures cm", "of centimeters"]
PLACEHOLDERS = ["[preserved|indistinct]", "___", "XXX", "[ ]", "<measurement>"]


def inject(case: Case, error: str, rng: random.Random) -> Case | None:
    """A copy of ``case`` with one error of kind ``error``, or None when this case cannot take it."""
    r = dict(case.report)
    ctx = case.context
    side = rng.choice(SIDES)
    if error == "laterality_order":
        if ctx.ordered_side not in SIDES:
            return None
        r = {k: flip(v) for k, v in r.items()}
        expected = "laterality"
    elif error == "laterality_impression":
        if not case.sided or not re.search(r"\b(?:left|right)\b", r["impression"], re.I):
            return None
        r["impression"] = flip(r["impression"])
        expected = "laterality"
    elif error == "sex":
        if case.kind != "ct_abdomen":
            return None
        ctx = replace(ctx, patient_sex="M" if ctx.patient_sex == "F" else "F")
        expected = "sex_age"
    elif error == "age":
        if case.kind != "extremity" or "physes are open" not in r["findings"]:
            return None
        ctx = replace(ctx, patient_age_years=rng.randint(30, 80))
        expected = "sex_age"
    elif error == "findings_impression":
        positive = [s for s in re.split(r"(?<=\.)\s+", r["findings"])
                    if re.search(r"fracture of|lobe consolidation\.|pleural effusion\.|stone in|diverticulitis without|"
                                 r"nodule in|scalp hematoma|enlarged|joint effusion", s)
                    and not re.match(r"No |Interval resolution|The previously", s)]
        if not positive:
            return None
        normal = {"ct_head": "No acute intracranial abnormality.", "chest": "No acute cardiopulmonary process.",
                  "ct_abdomen": "No acute abdominal or pelvic abnormality.", "extremity": "No acute abnormality.",
                  "ct_chest": "No acute thoracic abnormality."}[case.kind]
        r["impression"] = normal
        expected = "findings_impression"
    elif error == "critical":
        finding, impression = rng.choice(CRITICAL_PAIRS)
        r["findings"] = r["findings"] + " " + finding.format(side=side)
        r["impression"] = impression.format(side=side) + " " + r["impression"]
        expected = "critical"
    elif error == "ai_discordance":
        if case.kind == "ct_head":
            ai = (AIResult("ich", True, 0.91, "ich-net", "1.0"),)
        elif case.kind == "chest" and "No pneumothorax" in r["findings"] + r["impression"] or case.kind == "chest":
            ai = (*[a for a in ctx.ai_findings if a.finding != "pneumothorax"],
                  AIResult("pneumothorax", True, 0.88, "cxr-net", "2.1"))
        else:
            return None
        ctx = replace(ctx, ai_findings=ai)
        expected = "ai_discordance"
    elif error == "contradiction":
        positive, negative = (t.format(side=side, Side=side.capitalize()) for t in rng.choice(CONTRADICTIONS))
        r["findings"] = f"{negative} {r['findings']} {positive}"
        r["impression"] = f"{positive} {r['impression']}"
        expected = "contradiction"
    elif error == "unit_without_number":
        r["findings"] = r["findings"] + f" A {side} adrenal nodule {rng.choice(UNITLESS)}."
        expected = "units"
    elif error == "placeholder":
        section = rng.choice(["findings", "impression"])
        r[section] = r[section] + f" The value is {rng.choice(PLACEHOLDERS)}."
        expected = "template"
    elif error == "empty_impression":
        r["impression"] = ""
        expected = "template"
    else:
        raise ValueError(error)
    return Case(case.kind, r, ctx, error, expected, case.sided)


ERRORS = ("laterality_order", "laterality_impression", "sex", "age", "findings_impression", "critical",
          "ai_discordance", "placeholder", "empty_impression", "contradiction", "unit_without_number")


def build(n_clean: int, per_type: int, seed: int) -> tuple[list[Case], list[Case]]:
    rng = random.Random(seed)
    clean = [KINDS[i % len(KINDS)](rng) for i in range(n_clean)]
    errors: list[Case] = []
    for error in ERRORS:
        made = 0
        while made < per_type:
            kind = rng.choice(KINDS)
            base = extremity(rng, child=True) if error == "age" else kind(rng)
            case = inject(base, error, rng)
            if case is not None:
                errors.append(case)
                made += 1
    return clean, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clean", type=int, default=150)
    parser.add_argument("--per-type", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--show-misses", action="store_true")
    args = parser.parse_args(argv)
    clean, errors = build(args.clean, args.per_type, args.seed)
    start = time.perf_counter()
    false_alarms, alarm_checks = 0, Counter()
    for case in clean:
        issues = [i for i in run_checks(case.report, case.context) if i.severity != "info"]
        if issues:
            false_alarms += 1
            alarm_checks.update(i.check for i in issues)
            if args.show_misses:
                print("FALSE ALARM", case.kind, [i.key for i in issues], case.report)
    found_by_type: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for case in errors:
        issues = run_checks(case.report, case.context)
        hit = any(i.check == case.expected for i in issues)
        found_by_type[case.error][0] += hit
        found_by_type[case.error][1] += 1
        if not hit and args.show_misses:
            print("MISSED", case.error, case.kind, [i.key for i in issues], case.report)
    elapsed_ms = (time.perf_counter() - start) * 1000 / (len(clean) + len(errors))
    found = sum(v[0] for v in found_by_type.values())
    total = sum(v[1] for v in found_by_type.values())
    print(f"pre-sign checks on {len(clean)} clean and {total} reports with one injected error (seed {args.seed})")
    for error in ERRORS:
        hit, n = found_by_type[error]
        print(f"  {error:<22} found {hit:>3}/{n:<3} ({100 * hit / n:5.1f} %)")
    recall = 100 * found / total
    alarm_rate = 100 * false_alarms / len(clean)
    print(f"recall: {recall:.1f} % ({found}/{total})   target >= 95 %")
    print(f"false alarms: {alarm_rate:.1f} % of clean reports ({false_alarms}/{len(clean)})   target <= 5 %"
          + (f"   by check: {dict(alarm_checks)}" if alarm_checks else ""))
    print(f"time per report: {elapsed_ms:.2f} ms")
    return 0 if recall >= 95 and alarm_rate <= 5 else 1


if __name__ == "__main__":
    sys.exit(main())
