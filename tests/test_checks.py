"""Pre-sign checks: pure functions, one behaviour per test."""

import pytest

from reporting.checks import (AIResult, CheckContext, check_ai, check_critical, check_findings_impression,
                              check_laterality, check_sex_age, check_template, critical_mentions, mentions,
                              ordered_side_from, run_checks)


def keys(issues):
    return sorted(i.key for i in issues)


@pytest.mark.parametrize("text, critical", [
    ("No acute intracranial hemorrhage.", []),
    ("Acute subdural hematoma along the left convexity.", ["intracranial_hematoma"]),
    ("No hemorrhage, mass effect or midline shift.", []),
    ("There is no evidence of pneumothorax.", []),
    ("Pneumothorax is not seen.", []),
    ("The previously seen pneumothorax has resolved.", []),
    ("Small left pleural effusion without pneumothorax.", []),
    ("Cannot exclude a small apical pneumothorax.", ["pneumothorax"]),
    ("Chronic subdural hematoma, unchanged.", []),
    ("Acute infarct in the left MCA territory.", ["infarct"]),
    ("Old lacunar infarct in the right basal ganglia.", []),
    ("No fracture, but there is a large left pneumothorax.", ["pneumothorax"]),
    ("Free intraperitoneal air under the diaphragm.", ["pneumoperitoneum"]),
    ("Hemorrhage: none.", []),
    ("The previously seen pneumothorax is no longer seen.", []),
    ("Interval resolution of the subarachnoid hemorrhage.", []),
])
def test_critical_findings_with_negation(text, critical):
    assert sorted({m.concept for m in critical_mentions(text)}) == critical


def test_disc_herniation_and_mass_effect_are_not_brain_herniation_or_mass():
    found = {m.concept for m in mentions("Small disc herniation at L4-L5. Mild mass effect on the thecal sac.")}
    assert "brain_herniation" not in found and "mass" not in found and "mass_effect" in found


def test_critical_issue_names_the_finding():
    issues = check_critical({"findings": "Acute subdural hematoma.", "impression": "Acute subdural hematoma."})
    assert keys(issues) == ["critical:intracranial_hematoma"]
    assert issues[0].severity == "critical" and "communication" in issues[0].message


def test_ordered_side_from_dicom_then_description():
    assert ordered_side_from("XR KNEE 3 VIEWS", "L") == "left"
    assert ordered_side_from("XR KNEE RIGHT 3 VIEWS") == "right"
    assert ordered_side_from("XR KNEES BILAT") == "bilateral"
    assert ordered_side_from("CT HEAD") is None
    assert ordered_side_from("LEFT AND RIGHT HANDS") is None


def test_report_of_the_other_side_than_ordered_blocks():
    report = {"technique": "Three views of the right knee.", "findings": "Right knee joint effusion.",
              "impression": "Right knee joint effusion."}
    assert keys(check_laterality(report, "left")) == ["laterality:order:right"]
    assert check_laterality(report, "right") == []
    assert check_laterality(report, None) == []


def test_impression_side_against_findings_side():
    report = {"findings": "Small left pleural effusion. The right lung is clear.",
              "impression": "Small right pleural effusion."}
    issues = check_laterality(report, None)
    assert [i.check for i in issues] == ["laterality"] and issues[0].key.startswith("laterality:impression:")
    assert check_laterality({**report, "impression": "Small left pleural effusion."}, None) == []
    # the technique names the side too; a resolved finding on the other side does not count
    assert check_laterality({"technique": "Three views of the right knee.", "findings": "No fracture.",
                             "impression": "No acute abnormality of the left knee."}, None) != []
    assert check_laterality({"findings": "Resolved right pleural effusion. Small left pleural effusion.",
                             "impression": "Small right pleural effusion."}, None) != []


def test_sex_mismatch_and_age():
    assert keys(check_sex_age("The uterus is normal in size.", "M", 50)) == ["sex:M:uterus"]
    assert keys(check_sex_age("The prostate is enlarged.", "F", 50)) == ["sex:F:prostate"]
    assert check_sex_age("The prostate is enlarged.", "M", 70) == []
    assert check_sex_age("The prostate is enlarged.", "", 70) == []
    assert keys(check_sex_age("The physes are open.", "F", 62)) == ["age:open_physes"]
    assert check_sex_age("The physes are open.", "F", 12) == []
    assert keys(check_sex_age("Single intrauterine pregnancy.", "F", 72)) == ["age:pregnancy"]
    assert check_sex_age("No intrauterine pregnancy.", "F", 72) == []


def test_positive_finding_missing_from_impression():
    report = {"findings": "Acute fracture of the left distal radius. No dislocation. Small joint effusion.",
              "impression": "Acute left distal radius fracture."}
    assert keys(check_findings_impression(report)) == ["findings_impression:effusion"]
    # negated, chronic and related findings do not count
    report = {"findings": "No fracture. Old healed rib fracture. Right lower lobe consolidation.",
              "impression": "Right lower lobe pneumonia."}
    assert check_findings_impression(report) == []


def test_ai_discordance_and_model_qa():
    ai = [AIResult("pneumothorax", True, 0.93, "cxr", "1"), AIResult("ich", False, 0.1, "head", "2")]
    report = {"findings": "No pneumothorax.", "impression": "No acute cardiopulmonary abnormality."}
    issues = check_ai(report, ai)
    assert keys(issues) == ["ai:pneumothorax"] and "negates" in issues[0].message and "UNVERIFIED" in issues[0].message
    report = {"findings": "Left apical pneumothorax.", "impression": "Left pneumothorax."}
    assert check_ai(report, ai) == []
    report = {"findings": "Acute subarachnoid hemorrhage.", "impression": "Acute subarachnoid hemorrhage."}
    qa = [i for i in check_ai(report, ai) if i.check == "ai_qa"]
    assert keys(qa) == ["ai_qa:ich"] and qa[0].severity == "info"


def test_empty_fields_and_placeholders():
    report = {"findings": "Gray-white differentiation is [preserved|indistinct]. Measures ___ mm.",
              "impression": ""}
    issues = check_template(report, {"findings": {"Hemorrhage": "", "Brain": "ok"}})
    found = keys(issues)
    assert "template:empty:impression" in found
    assert "template:field:findings:Hemorrhage" in found
    assert sum(k.startswith("template:placeholder:findings") for k in found) == 2


def test_blocking_is_the_severity_of_what_must_be_resolved_before_signing():
    from reporting.checks import SEVERITIES

    assert SEVERITIES == ("blocking", "warn", "critical", "info")
    report = {"findings": "No pneumothorax. Small left pneumothorax. A nodule measuring millimeters.",
              "impression": ""}
    issues = run_checks(report, CheckContext(patient_sex="M"))
    assert {i.severity for i in issues} <= set(SEVERITIES)
    assert {i.severity for i in issues if i.check in ("template", "contradiction", "units")} == {"blocking"}
    assert {i.check for i in issues} >= {"template", "contradiction", "units"}


def test_clean_report_has_no_issues():
    report = {"clinical_information": "Headache.", "technique": "Noncontrast CT of the head.",
              "findings": "No acute intracranial hemorrhage. No mass effect or midline shift. The ventricles are "
                          "normal in size. No fracture.",
              "impression": "No acute intracranial abnormality."}
    context = CheckContext(patient_sex="F", patient_age_years=40, ai_findings=(AIResult("ich", False, 0.05),))
    assert run_checks(report, context) == []
