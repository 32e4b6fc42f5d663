"""What every output format needs from one signed report version, read once from the database."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from readingroom.errors import ReadingRoomError
from readingroom.schema import ReportVersion

log = logging.getLogger(__name__)


class DeliveryError(ReadingRoomError):
    """A destination refused or did not acknowledge a report; the job queue retries it."""


@dataclass(frozen=True)
class InstanceRef:
    study_uid: str
    series_uid: str
    sop_class_uid: str
    sop_uid: str
    modality: str


@dataclass(frozen=True)
class DeliveryDoc:
    """One signed version and its study: plain data for the pure builders (hl7, fhir, sr, pdf)."""

    report_id: int
    version_id: int
    version: int
    status: str                     # preliminary, final, addendum, corrected
    text: str                       # the whole signed text, statements and disclaimer included
    sections: dict[str, str]        # section name -> text (with field labels)
    body: str                       # the report text without statements (addenda included)
    communications: list[str]
    sha256: str
    signed_by: str
    signed_at: datetime
    reason: str
    study_uid: str
    accession: str
    patient_id: str
    patient_name: str
    patient_birth_date: str
    patient_sex: str
    study_date: str
    study_time: str
    description: str
    referring_physician: str
    site: str
    ai_findings: list[dict[str, Any]] = field(default_factory=list)
    instances: list[InstanceRef] = field(default_factory=list)
    # Earlier signed versions of the same report: (version id, sha256), oldest first.
    previous: list[tuple[int, str]] = field(default_factory=list)

    @property
    def modality(self) -> str:
        return next((i.modality for i in self.instances if i.modality), "OT")

    @property
    def impression(self) -> str:
        return self.sections.get("impression", "")


def load_document(session: Session, version_id: int) -> DeliveryDoc:
    version = session.get(ReportVersion, version_id)
    if version is None:
        raise DeliveryError(f"report version {version_id} does not exist")
    record = version.report
    study = record.study
    content = dict(version.content)
    instances = [InstanceRef(study.study_uid, s.series_uid, i.sop_class_uid, i.sop_uid, s.modality)
                 for s in study.series for i in s.instances]
    return DeliveryDoc(
        report_id=record.id, version_id=version.id, version=version.number, status=version.status,
        text=version.text, sections=dict(content.get("sections", {})), body=content.get("body", ""),
        communications=list(content.get("communications", [])), sha256=version.sha256,
        signed_by=version.signed_by, signed_at=version.signed_at, reason=version.reason,
        study_uid=study.study_uid, accession=study.accession, patient_id=study.patient_id,
        patient_name=study.patient_name, patient_birth_date=study.patient_birth_date,
        patient_sex=study.patient_sex, study_date=study.study_date, study_time=study.study_time,
        description=study.description, referring_physician=study.referring_physician,
        site=study.site.name if study.site else "", ai_findings=list(content.get("ai_findings", [])),
        instances=instances,
        previous=[(v.id, v.sha256) for v in record.versions if v.number < version.number],
    )
