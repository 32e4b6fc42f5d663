"""FHIR R4 DiagnosticReport (built and validated with fhir.resources, R4B models).

Contained Observations carry the impression items (LOINC 19005-8); ``presentedForm`` carries the
PDF; ``conclusion`` the impression; the narrative states that AI results are UNVERIFIED.
DiagnosticReport.status: preliminary, final, appended (addendum), corrected.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import re
from typing import Any

from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from readingroom import NOT_FOR_CLINICAL_USE

from reporting.delivery.document import DeliveryDoc

log = logging.getLogger(__name__)

FHIR_STATUS = {"preliminary": "preliminary", "final": "final", "addendum": "appended", "corrected": "corrected"}
OBS_STATUS = {"preliminary": "preliminary", "final": "final", "addendum": "amended", "corrected": "corrected"}


def impression_items(impression: str) -> list[str]:
    """'1. A. 2. B.' or one item per line -> ['A.', 'B.']; one paragraph -> its sentences."""
    text = impression.strip()
    if not text:
        return []
    numbered = [p.strip() for p in re.split(r"(?:^|\s)\d+[.)]\s+", text) if p.strip()]
    if len(numbered) > 1:
        return numbered
    lines = [line.strip(" -•\t") for line in text.splitlines() if line.strip(" -•\t")]
    if len(lines) > 1:
        return lines
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if s.strip()]


def _instant(doc: DeliveryDoc) -> str:
    return doc.signed_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def _effective(doc: DeliveryDoc) -> str | None:
    d, t = doc.study_date, (doc.study_time or "").split(".")[0]
    if len(d) != 8:
        return None
    if len(t) >= 4:
        return f"{d[:4]}-{d[4:6]}-{d[6:8]}T{t[:2]}:{t[2:4]}:{(t[4:6] or '00')}Z"
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}"


def build_diagnostic_report(doc: DeliveryDoc, pdf: bytes | None = None) -> dict[str, Any]:
    """The DiagnosticReport as a JSON-ready dict, validated by fhir.resources."""
    subject = {"identifier": {"system": f"urn:readingroom:site:{doc.site or 'unknown'}", "value": doc.patient_id or
                              "unknown"}, "display": doc.patient_name.replace("^", " ") or "unknown"}
    observations = []
    for n, item in enumerate(impression_items(doc.impression), start=1):
        observations.append({
            "resourceType": "Observation", "id": f"impression-{n}", "status": OBS_STATUS[doc.status],
            "code": {"coding": [{"system": "http://loinc.org", "code": "19005-8",
                                 "display": "Radiology Imaging study [Impression] (narrative)"}], "text": "Impression"},
            "subject": subject, "issued": _instant(doc), "valueString": item,
        })
    narrative = "".join(f"<p>{html.escape(p)}</p>" for p in doc.text.split("\n\n") if p.strip())
    resource: dict[str, Any] = {
        "resourceType": "DiagnosticReport",
        "id": f"readingroom-{doc.report_id}-v{doc.version}",
        "text": {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{narrative}'
                                                f"<p><b>{html.escape(NOT_FOR_CLINICAL_USE)}</b></p></div>"},
        "contained": observations,
        "identifier": [{"system": "urn:readingroom:report", "value": f"{doc.report_id}-v{doc.version}"},
                       {"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "ACSN"}]}, "value": doc.accession or "unknown"}],
        "status": FHIR_STATUS[doc.status],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD",
                                  "display": "Radiology"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic imaging study"}],
                 "text": doc.description or "Imaging study"},
        "subject": subject,
        "issued": _instant(doc),
        "resultsInterpreter": [{"display": doc.signed_by}],
        "imagingStudy": [{"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{doc.study_uid}"}}],
        "result": [{"reference": f"#{o['id']}"} for o in observations],
        "conclusion": (doc.impression or "See the presented form.") + " " + NOT_FOR_CLINICAL_USE,
    }
    effective = _effective(doc)
    if effective:
        resource["effectiveDateTime"] = effective
    if pdf is not None:
        resource["presentedForm"] = [{"contentType": "application/pdf", "language": "en",
                                      "data": base64.b64encode(pdf).decode("ascii"),
                                      "title": f"Report {doc.accession or doc.report_id} v{doc.version}",
                                      "creation": _instant(doc)}]
    DiagnosticReport.model_validate(resource)  # raises pydantic.ValidationError on a bad resource
    return resource


def to_json(resource: dict[str, Any]) -> str:
    return json.dumps(resource, indent=2, ensure_ascii=False)
