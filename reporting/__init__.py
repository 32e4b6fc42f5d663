"""Reporting: the structured report, from the first dictated word to the hospital (steps 6-7).

- ``report``: the report document: sections, template fields with normal defaults, the cursor,
  and the edits (``Command``) that dictation and the page apply to it;
- ``checks``: the pre-sign checks (laterality, contradictions, measurements, template fields,
  AI findings not addressed, critical communication), pure functions over the report text;
- ``signoff``: the sign-off gate: the checks with the study's context, overrides, acknowledgements,
  the critical-communication requirement; whether a version may be signed (pure);
- ``versions``: signed versions: the signed text, the content hash, ``verify_signature``, the views;
- ``lifecycle``: ``ReportService``: draft -> preliminary -> final -> addendum, storage, the audit
  trail; it asks the gate before signing (errors in ``errors``);
- ``delivery/``: the durable outbox and its builders (HL7 ORU^R01, FHIR DiagnosticReport,
  DICOM SR, PDF);
- ``report_cli``: ``readingroom report``.

Every output says it is not for clinical use; AI results are UNVERIFIED. See docs/reporting.md.
"""

from reporting.checks import CheckContext, Issue, run_checks
from reporting.errors import ChecksNotResolved, ReportError
from reporting.lifecycle import ReportService
from reporting.report import SECTION_ORDER, SECTION_TITLES, Command, Report, Template, load_template, split_headers
from reporting.signoff import CheckResult
from reporting.versions import ReportView, VersionView, content_hash, verify_signature

__all__ = ["SECTION_ORDER", "SECTION_TITLES", "CheckContext", "CheckResult", "ChecksNotResolved", "Command", "Issue",
           "Report", "ReportError", "ReportService", "ReportView", "Template", "VersionView", "content_hash",
           "load_template", "run_checks", "split_headers", "verify_signature"]
