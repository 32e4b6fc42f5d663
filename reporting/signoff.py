"""The sign-off gate: may this report version be signed? Pure functions over plain data.

The pre-sign checks (``reporting.checks``) find issues; the gate decides which of them are
resolved and whether the version may be signed:

- a ``blocking`` issue needs an override with a reason (audited);
- a ``warn`` issue (AI discordance) needs an acknowledgement;
- a ``critical`` issue needs a critical-result communication record before a *final* report
  (a preliminary one may be signed without it);
- an ``info`` issue is never a problem; it is logged for model QA when the version is signed.

``ReportService`` (``reporting.lifecycle``) reads the study, the overrides and the
communications from the database and hands them here as plain values::

    context = check_context(report, patient_sex="F", patient_birth_date="19800101", study_date="20261129",
                            ordered_side="left", ai_findings=(...), communications=("8 mm left SDH",))
    results = resolve(checks.run_checks(report.check_sections(), context), overrides, communications)
    require_signable(report_id, results, final=True)     # raises ChecksNotResolved
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from reporting import checks
from reporting.errors import ChecksNotResolved, ReportError
from reporting.report import Report

log = logging.getLogger(__name__)

# How an action may resolve a check: the severities it applies to.
RESOLVES = {"override": ("blocking",), "acknowledge": ("warn", "blocking")}


@dataclass(frozen=True)
class CheckResult:
    issue: checks.Issue
    resolved: bool
    resolution: str = ""   # "override: reason (user)", "acknowledged (user)", "communicated ..."

    def as_dict(self) -> dict[str, Any]:
        return {**self.issue.as_dict(), "resolved": self.resolved, "resolution": self.resolution}


@dataclass(frozen=True)
class Override:
    """A stored override (blocking) or acknowledgement (warn) of one check."""

    user: str
    reason: str = ""


@dataclass(frozen=True)
class Communication:
    """A recorded critical-result communication: who was told, and how."""

    recipient: str
    method: str


# --- the study's context -------------------------------------------------------------------------
def age_years(birth_date: str, on: str) -> float | None:
    """Age in years from DICOM dates (YYYYMMDD); None when either is missing or malformed."""
    try:
        born = datetime.strptime(birth_date.strip(), "%Y%m%d").date()
        day = datetime.strptime(on.strip(), "%Y%m%d").date() if on.strip() else date.today()
    except ValueError:
        return None
    return (day - born).days / 365.25


def dicom_laterality(path: Path) -> str:
    """(0020,0060) Laterality or (0020,0062) Image Laterality of one stored file, or ''."""
    try:
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Laterality", "ImageLaterality"])
        return str(ds.get("Laterality", "") or ds.get("ImageLaterality", "") or "")
    except Exception:  # noqa: BLE001 - a missing file only means no laterality from DICOM
        return ""


def check_context(report: Report, *, patient_sex: str, patient_birth_date: str, study_date: str,
                  ordered_side: str | None, ai_findings: Iterable[checks.AIResult],
                  communications: Iterable[str]) -> checks.CheckContext:
    """What the checks compare the report text with: the patient, the order, AI, what was told."""
    labels = {s: {f.name: f.label for f in spec.fields} for s, spec in report.template.sections.items()}
    template_fields = {s: {labels[s][k]: v for k, v in values.items()} for s, values in report.fields.items()
                       if values}
    return checks.CheckContext(
        patient_sex=patient_sex, patient_age_years=age_years(patient_birth_date, study_date),
        ordered_side=ordered_side, indication=report.sections.get("clinical_information", ""),
        ai_findings=tuple(ai_findings), template_fields=template_fields,
        communications=tuple(f for f in communications if (f or "").strip()))


# --- resolving issues ------------------------------------------------------------------------------
def resolve(issues: Iterable[checks.Issue], overrides: Mapping[str, Override],
            communications: Sequence[Communication]) -> list[CheckResult]:
    """Each issue with whether it is resolved, and how (the newest communication is named)."""
    out = []
    for issue in issues:
        o = overrides.get(issue.key)
        if issue.severity == "critical":
            done = bool(communications)
            last = communications[-1] if communications else None
            how = f"communicated to {last.recipient} by {last.method}" if last else ""
            out.append(CheckResult(issue, done, how))
        elif issue.severity == "info":
            out.append(CheckResult(issue, True, "logged for model QA"))
        elif o is not None:
            verb = "acknowledged" if issue.severity == "warn" else "overridden"
            out.append(CheckResult(issue, True, f"{verb} by {o.user}" + (f": {o.reason}" if o.reason else "")))
        else:
            out.append(CheckResult(issue, False))
    return out


def require_override_reason(reason: str) -> None:
    """An override needs a reason; raises ReportError without one."""
    if not reason.strip():
        raise ReportError("an override needs a reason (e.g. --reason 'side confirmed with the technologist')")


def issue_to_resolve(report_id: int, issues: Iterable[checks.Issue], key: str, action: str) -> checks.Issue:
    """The open issue ``key`` that ``action`` (override, acknowledge) may resolve; else ReportError."""
    issue = next((i for i in issues if i.key == key), None)
    if issue is None:
        raise ReportError(f"report {report_id} has no open check {key!r}; run "
                          f"`readingroom report check {report_id}` for the current keys")
    if issue.severity not in RESOLVES[action]:
        raise ReportError(f"check {key!r} is {issue.severity}: "
                          + ("record the critical-result communication instead"
                             if issue.severity == "critical" else "it cannot be resolved that way"))
    return issue


# --- deciding -----------------------------------------------------------------------------------------
def open_issues(results: Iterable[CheckResult], final: bool) -> list[CheckResult]:
    """What still stops signing: unresolved issues; a critical one only stops a final report."""
    return [r for r in results if not r.resolved and (final or r.issue.severity != "critical")]


def require_signable(report_id: int, results: list[CheckResult], final: bool) -> list[CheckResult]:
    """``results`` when the version may be signed (final or preliminary); else ChecksNotResolved."""
    open_ = open_issues(results, final)
    if open_:
        raise ChecksNotResolved(report_id, open_)
    return results


def addendum_issues(text: str) -> list[checks.Issue]:
    """The checks an addendum's own text gets: a critical finding in it needs a communication."""
    return checks.check_critical({"findings": text, "impression": text})


def require_addendum_signable(report_id: int, results: Iterable[CheckResult]) -> None:
    """Raises ChecksNotResolved while a critical finding of the addendum is not communicated."""
    open_ = [r for r in results if not r.resolved and r.issue.check == "critical"]
    if open_:
        raise ChecksNotResolved(report_id, open_)


def overridden_keys(results: Iterable[CheckResult]) -> list[str]:
    """The checks a signed version went out with overridden (for the audit)."""
    return [r.issue.key for r in results if r.resolution.startswith("overridden")]


def model_qa(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The results logged for model QA when the version is signed (report critical, AI negative)."""
    return [r for r in results if r.issue.severity == "info"]
