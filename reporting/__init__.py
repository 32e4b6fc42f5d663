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

# The submodules are imported where they are used (``from reporting.report import Report``), so
# that dictation, which fills the report, does not load the database layer with it.
__all__ = ["checks", "delivery", "errors", "lifecycle", "report", "report_cli", "signoff", "versions"]
