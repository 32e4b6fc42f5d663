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

The package: ``issues`` (Issue, CheckContext), ``text`` (concepts, sentences, negation, sides),
``clinical`` (laterality, sex and age, findings against impression, critical, AI, template),
``consistency`` (contradictions, the normal-statement table), ``measurements`` (units, the
critical-result communication) and ``run_checks`` here. Import the names from ``reporting.checks``.
"""

from __future__ import annotations

import logging

from reporting.checks.clinical import (ANATOMY, check_ai, check_critical, check_findings_impression, check_laterality,
                                       check_sex_age, check_template, critical_mentions, ordered_side_from)
from reporting.checks.consistency import (CONTRADICTION_SECTIONS, NORMAL_STATEMENTS, RULES_OUT, SITES, Contradiction,
                                          NormalStatement, Positive, RuleOut, check_contradictions,
                                          contradicting_sentences, contradictions, ruled_out, rules_out)
from reporting.checks.issues import SEVERITIES, AIResult, CheckContext, Issue
from reporting.checks.measurements import (UNITS, check_communications, check_units, communication_mismatches,
                                          number_value)
from reporting.checks.text import (AI_CONCEPTS, CONCEPTS, RELATED, Concept, Mention, mentions, positive_concepts,
                                   sentences, sides)

log = logging.getLogger(__name__)

__all__ = ["AI_CONCEPTS", "ANATOMY", "CONCEPTS", "CONTRADICTION_SECTIONS", "NORMAL_STATEMENTS", "RELATED", "RULES_OUT",
           "SEVERITIES", "SITES", "UNITS", "AIResult", "CheckContext", "Concept", "Contradiction", "Issue", "Mention",
           "NormalStatement", "Positive", "RuleOut", "check_ai", "check_communications", "check_contradictions",
           "check_critical", "check_findings_impression", "check_laterality", "check_sex_age", "check_template",
           "check_units", "communication_mismatches", "contradicting_sentences", "contradictions", "critical_mentions",
           "mentions", "number_value", "ordered_side_from", "positive_concepts", "ruled_out", "rules_out",
           "run_checks", "sentences", "sides"]


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
