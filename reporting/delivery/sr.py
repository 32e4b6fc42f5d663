"""DICOM Comprehensive SR of a signed report, TID 2000 (Basic Diagnostic Imaging Report), with highdicom.

The root container (LOINC 18748-4, template 2000) holds the observer (person), then one section
container per report section (CID 7001 headings: History, Current Procedure Descriptions, Prior
Procedure Descriptions, Findings, Impressions, Recommendations) with the section's text, an
Addendum section when there is one, and a Summary section with the communication statements,
the signature and the not-for-clinical-use note. It references the study's instances as evidence.
Series and SOP Instance UIDs derive from the version, so a resend is the same object.
"""

from __future__ import annotations

import logging
import ssl

from highdicom.sr import (CodedConcept, ComprehensiveSR, ContainerContentItem, PnameContentItem,
                          RelationshipTypeValues, TextContentItem)
from pydicom import Dataset
from pydicom.uid import generate_uid

from readingroom import NOT_FOR_CLINICAL_USE, __version__

from reporting.delivery.document import DeliveryDoc, DeliveryError

log = logging.getLogger(__name__)

DCM = "DCM"
# section -> (container heading code, text item code), from CID 7001/7002 (DCM codes).
SECTIONS = {
    "clinical_information": (("121060", "History"), ("121060", "History")),
    "technique": (("121064", "Current Procedure Descriptions"), ("121065", "Procedure Description")),
    "comparison": (("121066", "Prior Procedure Descriptions"), ("121065", "Procedure Description")),
    "findings": (("121070", "Findings"), ("121071", "Finding")),
    "impression": (("121072", "Impressions"), ("121073", "Impression")),
    "recommendations": (("121074", "Recommendations"), ("121075", "Recommendation")),
}
ADDENDUM = ("121078", "Addendum")
SUMMARY = ("121111", "Summary")
MAX_TEXT = 1024  # a long text goes into several TEXT items (UT holds more, but viewers prefer short)


def person_name(name: str) -> str:
    """A user name as a DICOM PN: 'Jane Lee' -> 'Lee^Jane'; 'dr_lee' -> 'dr_lee^' (one component)."""
    name = (name or "unknown").strip()
    if "^" in name:
        return name
    parts = name.split()
    return f"{parts[-1]}^{' '.join(parts[:-1])}" if len(parts) > 1 else name + "^"


def _code(pair: tuple[str, str]) -> CodedConcept:
    return CodedConcept(value=pair[0], scheme_designator=DCM, meaning=pair[1])


def _texts(code: tuple[str, str], text: str) -> list[TextContentItem]:
    chunks = [text[i:i + MAX_TEXT] for i in range(0, len(text), MAX_TEXT)] or [""]
    return [TextContentItem(name=_code(code), value=chunk, relationship_type=RelationshipTypeValues.CONTAINS)
            for chunk in chunks if chunk.strip()]


def _section(heading: tuple[str, str], items: list[TextContentItem]) -> ContainerContentItem:
    container = ContainerContentItem(name=_code(heading), relationship_type=RelationshipTypeValues.CONTAINS)
    container.ContentSequence = items
    return container


def evidence_datasets(doc: DeliveryDoc) -> list[Dataset]:
    """Minimal datasets of the study's instances (from the database), as SR evidence."""
    out = []
    for ref in doc.instances:
        ds = Dataset()
        ds.PatientName = doc.patient_name
        ds.PatientID = doc.patient_id
        ds.PatientBirthDate = doc.patient_birth_date
        ds.PatientSex = doc.patient_sex[:1] if doc.patient_sex[:1] in ("M", "F", "O") else ""
        ds.StudyInstanceUID = doc.study_uid
        ds.StudyID = ""
        ds.StudyDate = doc.study_date
        ds.StudyTime = (doc.study_time or "").split(".")[0]
        ds.AccessionNumber = doc.accession
        ds.ReferringPhysicianName = doc.referring_physician
        ds.SeriesInstanceUID = ref.series_uid
        ds.SOPClassUID = ref.sop_class_uid
        ds.SOPInstanceUID = ref.sop_uid
        ds.Modality = ref.modality or "OT"
        out.append(ds)
    return out


def sr_uids(study_uid: str, version_id: int, sha256: str) -> tuple[str, str]:
    """Series and SOP Instance UIDs of a version's SR: derived from it, so a resend is the same object."""
    seed = [study_uid, str(version_id), sha256]
    return generate_uid(entropy_srcs=[*seed, "series"]), generate_uid(entropy_srcs=[*seed, "sop"])


def _predecessors(doc: DeliveryDoc) -> list[Dataset]:
    """The SRs of the earlier versions (addendum, corrected), as Predecessor Documents."""
    out = []
    for version_id, sha256 in doc.previous:
        series_uid, sop_uid = sr_uids(doc.study_uid, version_id, sha256)
        ds = Dataset()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = doc.study_uid, series_uid, sop_uid
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
        out.append(ds)
    return out


def build_sr(doc: DeliveryDoc, institution: str = "", organization: str = "ReadingRoom") -> Dataset:
    evidence = evidence_datasets(doc)
    if not evidence:
        raise DeliveryError(f"study {doc.study_uid} has no stored instances to reference; a DICOM SR needs them")
    root = ContainerContentItem(name=CodedConcept("18748-4", "LN", "Diagnostic Imaging Report"), template_id="2000")
    content = [PnameContentItem(name=CodedConcept("121008", DCM, "Person Observer Name"),
                                value=person_name(doc.signed_by),
                                relationship_type=RelationshipTypeValues.HAS_OBS_CONTEXT)]
    for name, (heading, item) in SECTIONS.items():
        text = doc.sections.get(name, "").strip()
        if text:
            content.append(_section(heading, _texts(item, text)))
    if "ADDENDUM (" in doc.body:
        content.append(_section(ADDENDUM, _texts(ADDENDUM, doc.body[doc.body.index("ADDENDUM ("):])))
    summary = [*doc.communications]
    if doc.reason:
        summary.append(f"Corrected report. Reason: {doc.reason}")
    summary.append(f"Electronically signed by {doc.signed_by} on {doc.signed_at:%Y-%m-%d %H:%M} UTC "
                   f"({doc.status}); content SHA-256 {doc.sha256}.")
    if doc.ai_findings:
        summary.append("AI triage results (UNVERIFIED, not for clinical use): " + "; ".join(
            f"{f['finding']} {'positive' if f['positive'] else 'negative'} (p={f['probability']:.2f})"
            for f in doc.ai_findings))
    summary.append(NOT_FOR_CLINICAL_USE)
    content.append(_section(SUMMARY, [t for s in summary for t in _texts(SUMMARY, s)]))
    root.ContentSequence = content
    series_uid, sop_uid = sr_uids(doc.study_uid, doc.version_id, doc.sha256)
    sr = ComprehensiveSR(
        evidence=evidence, content=root, previous_versions=_predecessors(doc) or None,
        series_instance_uid=series_uid, series_number=900 + doc.version,
        sop_instance_uid=sop_uid, instance_number=1,
        manufacturer="ReadingRoom", is_complete=True, is_final=doc.status != "preliminary",
        is_verified=doc.status != "preliminary", institution_name=(institution or doc.site)[:64] or None,
        verifying_observer_name=person_name(doc.signed_by) if doc.status != "preliminary" else None,
        verifying_organization=organization if doc.status != "preliminary" else None,
        series_description=f"ReadingRoom report v{doc.version} ({doc.status})",
        software_versions=f"ReadingRoom {__version__}",
    )
    sr.SpecificCharacterSet = "ISO_IR 192"  # UTF-8: names and report text may hold any character
    sr.ContentDate = doc.signed_at.strftime("%Y%m%d")
    sr.ContentTime = doc.signed_at.strftime("%H%M%S")
    return sr


def store(ds: Dataset, host: str, port: int, called_ae: str, calling_ae: str, timeout_s: float = 30,
          ssl_context: ssl.SSLContext | None = None) -> int:
    """C-STORE ``ds`` to a DICOM peer with the kernel's SCU (``readingroom.dicom_net``), over TLS
    with ``ssl_context``; returns the status (0x0000 success, or a 0xBxxx warning) or raises
    DeliveryError."""
    from readingroom.dicom_net import AssociationError, StoreError, store as c_store

    pacs = f"the PACS {called_ae}@{host}:{port}"
    try:
        return c_store(ds, host, port, called_ae, calling_ae, timeout_s=timeout_s, ssl_context=ssl_context)
    except AssociationError:
        tls = (" and, over TLS, its certificate (destinations.dicom.tls_ca_file) and ours (tls_certfile)"
               if ssl_context is not None else "")
        raise DeliveryError(f"{pacs} did not accept an association from {calling_ae}; "
                            f"check its host, port and AE titles{tls} and that it is running") from None
    except StoreError as exc:
        if exc.status < 0:
            raise DeliveryError(f"{pacs} did not answer the C-STORE") from None
        raise DeliveryError(f"{pacs} refused the SR with status 0x{exc.status:04X}") from None
