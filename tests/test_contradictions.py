"""Contradictions, units without a number, the critical-result communication, and 'insert normal'
that never inserts a contradiction. Pure: report dicts and dictation Reports, no database."""

from __future__ import annotations

import pytest

from reporting.checks import (SEVERITIES, check_contradictions, check_units, communication_mismatches,
                              contradicting_sentences, number_value, ruled_out, run_checks, sentences)
from dictation.commands import Command
from reporting.report import Report, load_template, render_markup
from readingroom.settings import CONFIG_DIR

TEMPLATES = CONFIG_DIR / "templates"
SUBDURAL = "acute right frontal subdural hematoma measuring 8 mm with 3 mm midline shift"


def contradiction_keys(findings: str, impression: str = "") -> list[str]:
    return sorted(i.key for i in check_contradictions({"findings": findings, "impression": impression}))


@pytest.mark.parametrize("findings, impression, key", [
    ("No pneumothorax. Small left pneumothorax.", "", "contradiction:pneumothorax"),
    ("Small left pneumothorax.", "No pneumothorax.", "contradiction:pneumothorax"),   # across sections
    ("The lungs are clear. Right lower lobe consolidation.", "", "contradiction:consolidation"),
    ("No acute fracture. Fracture of the left fifth rib.", "", "contradiction:fracture"),
    (f"No acute intracranial hemorrhage. {SUBDURAL}.", "", "contradiction:intracranial_hematoma"),
    (f"No mass effect or midline shift. {SUBDURAL}.", "", "contradiction:midline_shift"),
    # template field lines, with and without their labels
    ("Hemorrhage: No acute intracranial hemorrhage.\nExtra-axial spaces: Acute left subdural hematoma.", "",
     "contradiction:intracranial_hematoma"),
    ("Pleura: No pleural effusion or pneumothorax.\nLungs: Small left apical pneumothorax.", "",
     "contradiction:pneumothorax"),
    ("Right pleural effusion.", "Interval resolution of the right pleural effusion.", "contradiction:effusion"),
    ("No pneumothorax.", "Stable small right pneumothorax.", "contradiction:pneumothorax"),  # stable is still there
    ("No hydronephrosis.", "Mild left hydronephrosis.", "contradiction:hydronephrosis"),
])
def test_a_negative_against_a_positive_is_blocking(findings, impression, key):
    issues = check_contradictions({"findings": findings, "impression": impression})
    assert key in [i.key for i in issues]
    issue = next(i for i in issues if i.key == key)
    assert issue.check == "contradiction" and issue.severity == "blocking" and issue.severity in SEVERITIES
    quoted = [s for text in (findings, impression) for s in sentences(text) if f"'{s}'" in issue.message]
    assert len(quoted) == 2, issue.message          # both sentences are quoted
    assert "Remove or correct one of them, or override with a reason" in issue.message


@pytest.mark.parametrize("findings, impression", [
    ("Small pneumothorax; no pleural effusion.", "Small pneumothorax."),
    ("No left pneumothorax. Right pneumothorax.", "Right pneumothorax."),               # disjoint sides
    ("No new fracture. Healed old rib fracture.", ""),                                  # new vs old
    ("No change in the small pneumothorax.", "No change in the small pneumothorax."),   # pseudo-negation
    ("No acute intracranial hemorrhage. Chronic left subdural hematoma.", "Chronic left subdural hematoma."),
    ("Left subdural hematoma, unchanged.", "No acute intracranial abnormality."),
    ("No pericardial effusion. Small left pleural effusion.", "Small left pleural effusion."),  # other site
    ("No rib fracture. Nondisplaced fracture of the left distal radius.", ""),
    ("The calvarium is intact. Fracture of the left fifth rib.", ""),                   # not the skull
    ("No acute osseous abnormality. Old healed left rib fracture.", ""),
    ("The lungs are clear. Small right pneumothorax. Small left pleural effusion.", ""),  # lungs clear: airspace
    ("No extra-axial collection. Subarachnoid hemorrhage in the left sylvian fissure.", ""),
    ("Gray-white differentiation is preserved. Old lacunar infarct in the right basal ganglia.", ""),
    ("Small left pleural effusion without pneumothorax. Small right pneumothorax.", ""),  # the left side only
    ("No pneumothorax, but cannot exclude a tiny apical one.", ""),                     # one sentence
    ("Right lower lobe consolidation. Otherwise, the lungs are clear.", "Right lower lobe pneumonia."),
    ("Nondisplaced fracture of the left fifth rib. No other fracture.", ""),
    ("Small left pneumothorax. No pneumothorax elsewhere.", ""),
    ("A 5 mm left frontal scalp hematoma. No acute intracranial hemorrhage.", "Left frontal scalp hematoma."),
])
def test_consistent_reports_do_not_fire(findings, impression):
    assert contradiction_keys(findings, impression) == []


# Every sentence of the three templates' normals, defaults and macros, and what it rules out. A new
# template normal fails test_every_template_normal_is_mapped until it is added here (and, when it
# rules something out, to NORMAL_STATEMENTS or the concepts).
TEMPLATE_NORMALS = {
    "No acute intracranial hemorrhage.": {"hemorrhage", "intracranial_hematoma"},
    "Gray-white differentiation is preserved.": {"infarct"},
    "No mass effect or midline shift.": {"mass_effect", "midline_shift", "brain_herniation"},
    "The ventricles and basal cisterns are normal in size.": {"hydrocephalus"},
    "The ventricles are normal in size.": {"hydrocephalus"},
    "No extra-axial collection.": {"intracranial_hematoma", "hemorrhage"},
    "The calvarium is intact.": {"fracture"},
    "The visualized paranasal sinuses and mastoid air cells are clear.": set(),
    "No acute intracranial abnormality.": {"hemorrhage", "intracranial_hematoma", "midline_shift", "mass_effect",
                                           "infarct", "brain_herniation"},
    "No acute intracranial hemorrhage, mass effect or territorial infarct.": {
        "hemorrhage", "intracranial_hematoma", "mass_effect", "midline_shift", "brain_herniation", "infarct"},
    "Mild chronic small vessel ischemic disease.": set(),
    "Noncontrast axial CT of the head with coronal and sagittal reformats.": set(),
    "None.": set(),
    "The lungs are clear.": {"consolidation", "pneumonia", "infiltrate", "opacity"},
    "No focal consolidation.": {"consolidation", "pneumonia", "infiltrate"},
    "No pleural effusion or pneumothorax.": {"effusion", "pneumothorax"},
    "The cardiomediastinal silhouette is within normal limits.": {"cardiomegaly"},
    "No acute osseous abnormality.": {"fracture", "dislocation"},
    "No acute cardiopulmonary process.": {"pneumothorax", "consolidation", "pneumonia", "infiltrate", "congestion"},
    "Frontal and lateral views of the chest.": set(),
    "Lines and tubes in satisfactory position.": set(),
    "The lung bases are clear.": {"consolidation", "pneumonia", "infiltrate", "opacity"},
    "The liver is normal in size and attenuation.": set(),
    "The gallbladder is unremarkable.": {"cholecystitis"},
    "No biliary ductal dilatation.": set(),
    "The pancreas is unremarkable.": {"mass", "abscess"},
    "The spleen is normal in size.": set(),
    "The adrenal glands are unremarkable.": {"mass", "nodule"},
    "The kidneys enhance symmetrically.": set(),
    "No hydronephrosis.": {"hydronephrosis"},
    "No bowel obstruction.": {"bowel_obstruction"},
    "The appendix is normal.": {"appendicitis"},
    "No free fluid or free air.": {"pneumoperitoneum"},
    "No abdominal aortic aneurysm.": {"aneurysm"},
    "No lymphadenopathy.": {"lymphadenopathy"},
    "The urinary bladder and pelvic organs are unremarkable.": set(),
    "No acute abnormality in the abdomen or pelvis.": {"pneumoperitoneum", "bowel_obstruction", "appendicitis",
                                                       "diverticulitis", "cholecystitis", "abscess"},
    "The solid organs are unremarkable.": set(),
    "No bowel obstruction, free fluid or free air.": {"bowel_obstruction", "pneumoperitoneum"},
    "Axial CT of the abdomen and pelvis with intravenous contrast, with multiplanar reformats.": set(),
}


def template_sentences(name: str) -> list[str]:
    t = load_template(name, TEMPLATES)
    texts = [f.normal for s in t.sections.values() for f in s.fields]
    texts += [s.default for s in t.sections.values() if s.default] + list(t.macros.values())
    return [s for text in texts for s in sentences(render_markup(text))]


@pytest.mark.parametrize("template", ["ct_head", "chest_radiograph", "ct_abdomen_pelvis"])
def test_every_template_normal_is_mapped(template):
    for sentence in template_sentences(template):
        assert sentence in TEMPLATE_NORMALS, f"{template}: map {sentence!r} in TEMPLATE_NORMALS"
        assert ruled_out(sentence) == TEMPLATE_NORMALS[sentence], sentence


@pytest.mark.parametrize("normal, positive, fires", [
    ("The lungs are clear.", "Right lower lobe pneumonia.", True),
    ("The lungs are clear.", "Small right pneumothorax.", False),
    ("No acute intracranial abnormality.", "Uncal herniation on the left.", True),
    ("No acute intracranial abnormality.", "Acute infarct in the left MCA territory.", True),
    ("No acute intracranial abnormality.", "Mild mass effect on the left lateral ventricle.", True),
    ("No acute intracranial abnormality.", "Old lacunar infarct in the right thalamus.", False),
    ("The calvarium is intact.", "Nondisplaced fracture of the right parietal bone.", True),
    ("No extra-axial collection.", "Small right epidural hematoma.", True),
    ("The cardiomediastinal silhouette is within normal limits.", "The cardiac silhouette is enlarged.", True),
    ("No acute cardiopulmonary process.", "Small left pneumothorax.", True),
    ("No acute cardiopulmonary process.", "Small left pleural effusion.", False),
    ("Gray-white differentiation is preserved.", "Acute left MCA infarct.", True),
    ("The appendix is normal.", "Acute appendicitis with a 12 mm appendix.", True),
    ("The gallbladder is unremarkable.", "Acute calculous cholecystitis.", True),
    ("The pancreas is unremarkable.", "A 2 cm mass in the pancreatic head.", True),
    ("The pancreas is unremarkable.", "A 2 cm mass in the right kidney.", False),
    ("No free fluid or free air.", "Free intraperitoneal air under the diaphragm.", True),
    ("No acute abnormality in the abdomen or pelvis.", "Sigmoid diverticulitis.", True),
    ("No abdominal aortic aneurysm.", "Infrarenal abdominal aortic aneurysm measuring 5 cm.", True),
    ("No abdominal aortic aneurysm.", "A 1 cm splenic artery aneurysm.", False),
])
def test_what_each_normal_rules_out(normal, positive, fires):
    assert bool(contradiction_keys(positive, normal)) is fires
    assert bool(contradicting_sentences(normal, {"findings": positive})) is fires


def test_contradicting_sentences_names_only_the_bad_sentence():
    normal = "Gray-white differentiation is preserved. No mass effect or midline shift."
    assert contradicting_sentences(normal, {"findings": SUBDURAL}) == ["No mass effect or midline shift."]
    assert contradicting_sentences(normal, {"findings": "Small right maxillary sinus retention cyst."}) == []
    # the other direction: a positive being inserted beside a negative already dictated
    assert contradicting_sentences("Small left pneumothorax.", {"impression": "No pneumothorax."}) != []


def ct_head_with_subdural() -> Report:
    report = Report(load_template("ct_head", TEMPLATES))
    report.apply(Command("goto_section", "findings"))
    report.dictate(SUBDURAL + ".")
    return report


def test_insert_normal_leaves_out_what_the_dictation_contradicts():
    report = ct_head_with_subdural()
    report.apply(Command("insert_normal"))
    report.apply(Command("goto_section", "impression"))
    report.apply(Command("insert_normal"))
    fields = report.fields["findings"]
    assert report.sections["findings"] == "Acute right frontal subdural hematoma measuring 8 mm with 3 mm " \
                                          "midline shift."
    assert fields["hemorrhage"] == "" and fields["extra_axial"] == ""
    assert fields["brain"] == "Gray-white differentiation is preserved."    # the midline sentence left out
    assert fields["ventricles"] == "The ventricles and basal cisterns are normal in size."
    assert fields["sinuses"] == "The visualized paranasal sinuses and mastoid air cells are clear."
    assert fields["bones"] == "The calvarium is intact."
    text = report.render()
    assert "No acute intracranial hemorrhage" not in text and "No mass effect or midline shift" not in text
    assert "No acute intracranial abnormality" not in text
    issues = run_checks(report.check_sections())
    assert not [i for i in issues if i.check == "contradiction"]
    assert {"critical:intracranial_hematoma", "critical:midline_shift"} <= {i.key for i in issues}


def test_insert_normal_fills_a_clean_report_completely():
    report = Report(load_template("ct_head", TEMPLATES))
    report.apply(Command("goto_section", "findings"))
    report.apply(Command("insert_normal"))
    assert all(report.fields["findings"].values())
    assert report.fields["findings"]["hemorrhage"] == "No acute intracranial hemorrhage."


def test_insert_normal_in_a_chest_report_keeps_what_fits():
    report = Report(load_template("chest_radiograph", TEMPLATES))
    report.apply(Command("goto_section", "findings"))
    report.dictate("small left apical pneumothorax.")
    report.apply(Command("insert_normal"))
    report.apply(Command("goto_section", "impression"))
    report.apply(Command("insert_normal"))
    assert report.fields["findings"]["pleura"] == ""                       # "No ... pneumothorax" left out
    assert report.fields["findings"]["lungs"] == "The lungs are clear. No focal consolidation."
    assert report.sections["impression"] == ""                             # "No acute cardiopulmonary process"
    assert not [i for i in run_checks(report.check_sections()) if i.check == "contradiction"]


def test_insert_normal_never_replaces_dictated_text():
    report = ct_head_with_subdural()
    report.apply(Command("goto_section", "technique"))
    report.dictate("noncontrast CT with 5 mm slices.")
    report.apply(Command("insert_normal"))
    assert report.sections["technique"] == "Noncontrast CT with 5 mm slices."
    report.apply(Command("goto_section", "findings"))
    report.apply(Command("next_field"))                # the cursor on the hemorrhage field
    report.dictate("small left parietal subarachnoid hemorrhage.")
    report.apply(Command("insert_normal"))
    assert report.fields["findings"]["hemorrhage"] == "Small left parietal subarachnoid hemorrhage."
    assert report.fields["findings"]["brain"] == ""    # only the active field


# --- units without a number ----------------------------------------------------------------------
@pytest.mark.parametrize("text, phrase", [
    ("A nodule measuring millimeters.", "nodule measuring millimeters"),
    ("A mass of 3 x cm in the liver.", "3 x cm"),
    ("The collection measures cm.", "collection measures cm"),
    ("Attenuation of HU.", "Attenuation of HU"),
    ("A cyst of milliliters.", "cyst of milliliters"),
])
def test_a_unit_without_a_number_is_blocking(text, phrase):
    issues = check_units({"findings": text})
    assert len(issues) == 1
    issue = issues[0]
    assert issue.key == f"unit_without_number:findings:{phrase.lower()}" and issue.severity == "blocking"
    assert "without a number" in issue.message and f"'{phrase}'" in issue.message


@pytest.mark.parametrize("text", [
    "A nine millimeter nodule.", "Two point five centimeters.", "A 3 x 4 x 5 cm mass.", "Measures 1.2 x 0.8 cm.",
    "A 5-mm nodule.", "Blood pressure 120 mm Hg.", "Axial images with 5 mm slices.", "Measures 1.5cm.",
    "Density of -20 HU.", "A few millimeters of displacement.", "One and a half centimeters.",
    "Seventeen mm.", "A 200 mL collection.", "A history of MM.", "Measures ___ mm.",
])
def test_numbers_before_units_do_not_fire(text):
    assert check_units({"findings": text, "technique": "Noncontrast axial CT with 5 mm slices."}) == []


@pytest.mark.parametrize("words, value", [
    ("8", 8.0), ("2.5", 2.5), ("nine", 9.0), ("two point five", 2.5), ("twenty one", 21.0),
    ("one and a half", 1.5), ("zero point eight", 0.8), ("lesion", None),
])
def test_number_words(words, value):
    assert number_value(words) == value


# --- the critical-result communication -------------------------------------------------------------
REPORT = {"findings": "Acute right frontal subdural hematoma measuring 8 mm with 3 mm midline shift.",
          "impression": "Acute right subdural hematoma with midline shift."}


@pytest.mark.parametrize("told", [
    "8 mm right subdural hematoma with 3 mm midline shift", "acute subdural hematoma",
    "right subdural hematoma, 0.8 cm", "right-sided bleed, eight millimeters", "critical finding on the right",
    "",
])
def test_a_communication_that_agrees_with_the_report(told):
    assert communication_mismatches(REPORT, told) == []


def test_a_communication_of_the_other_side_is_blocking():
    issues = communication_mismatches(REPORT, "left subdural hematoma")
    assert [i.key for i in issues] == ["communication_mismatch:intracranial_hematoma:side"]
    assert issues[0].severity == "blocking" and "LEFT" in issues[0].message and "RIGHT" in issues[0].message


def test_a_communication_of_another_size_names_both_values():
    issues = communication_mismatches(REPORT, "10 mm right subdural hematoma with 3 mm midline shift")
    assert [i.key for i in issues] == ["communication_mismatch:intracranial_hematoma:length"]
    assert "says 10 mm for intracranial hematoma; the report says 8 mm." in issues[0].message
    # the midline shift is compared with the report's midline shift
    issues = communication_mismatches(REPORT, "8 mm right subdural hematoma with 5 mm midline shift")
    assert [i.key for i in issues] == ["communication_mismatch:midline_shift:length"]
    assert "says 5 mm for midline shift; the report says 3 mm." in issues[0].message


def test_run_checks_compares_the_communications_of_the_context():
    from reporting.checks import CheckContext

    keys = [i.key for i in run_checks(REPORT, CheckContext(communications=("left subdural hematoma",)))]
    assert "communication_mismatch:intracranial_hematoma:side" in keys
    keys = [i.key for i in run_checks(REPORT, CheckContext(communications=("right subdural hematoma",)))]
    assert not [k for k in keys if k.startswith("communication_mismatch")]
