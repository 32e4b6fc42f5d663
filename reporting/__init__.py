"""Reporting: the structured report, from the first dictated word to the hospital (steps 6-7).

- ``report``: the report document: sections, template fields with normal defaults, the cursor,
  and the edits (``Command``) that dictation and the page apply to it;
- ``checks``: the pre-sign checks (laterality, contradictions, measurements, template fields,
  AI findings not addressed, critical communication), pure functions over the report text;
- ``lifecycle``: ``ReportService``: draft -> preliminary -> final -> addendum, stored versions,
  signatures, the audit trail;
- ``delivery/``: the durable outbox and its builders (HL7 ORU^R01, FHIR DiagnosticReport,
  DICOM SR, PDF);
- ``report_cli``: ``readingroom report``.

Every output says it is not for clinical use; AI results are UNVERIFIED. See docs/reporting.md.
"""

from reporting.checks import CheckContext, Issue, run_checks
from reporting.lifecycle import ChecksNotResolved, ReportError, ReportService
from reporting.report import SECTION_ORDER, SECTION_TITLES, Command, Report, Template, load_template, split_headers

__all__ = ["SECTION_ORDER", "SECTION_TITLES", "CheckContext", "ChecksNotResolved", "Command", "Issue", "Report",
           "ReportError", "ReportService", "Template", "load_template", "run_checks", "split_headers"]
