"""The outbox worker: deliver one report version to one destination, exactly once.

``Deliverer`` is the job handler registered for ``report_delivery`` jobs (see
``app.build_workers``). A row that is already delivered is skipped, so a job that runs
twice (its worker died after the ACK) sends nothing the second time; a row is marked delivered
only after the destination acknowledged it. A failure is recorded on the row and raised, so the
job queue retries it with backoff; when the attempts are spent the row is ``failed`` and shows in
``delivery_status`` (the admin view) until ``retry`` queues it again.
"""

from __future__ import annotations

import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import select

from readingroom import audit, mllp
from readingroom.db import Database
from readingroom.jobs import JobQueue
from readingroom.schema import Job, OutboxItem, ReportRecord, ReportVersion, utcnow
from readingroom.settings import Settings, SiteDestinations
from readingroom.storage import atomic_write
from readingroom.tls import peer_context

from reporting.delivery.document import DeliveryDoc, DeliveryError, load_document

log = logging.getLogger(__name__)

# The job kind of a delivery. The builders (hl7apy, fhir.resources, highdicom, fpdf2) are imported
# when a delivery runs, so that registering the handler keeps `readingroom worker` quick to start.
DELIVERY_JOB = "report_delivery"
DESTINATIONS = ("hl7", "fhir", "dicom", "pdf")
FORMATS = {"hl7": "hl7", "fhir": "fhir", "sr": "dicom", "pdf": "pdf"}


def site_destinations(settings: Settings, site_name: str | None) -> SiteDestinations:
    for site in settings.sites:
        if site.name == site_name:
            return site.destinations
    return SiteDestinations()


def destinations_for(settings: Settings, site_name: str | None) -> list[str]:
    """The destinations the site has configured, in delivery order."""
    d = site_destinations(settings, site_name)
    configured = {"hl7": d.hl7 is not None, "fhir": bool(d.fhir_url or d.fhir_folder),
                  "dicom": d.dicom is not None, "pdf": bool(d.pdf_folder)}
    return [name for name in DESTINATIONS if configured[name]]


# How a row's state is worded for a radiologist: "pending" means queued for the workers.
DELIVERY_STATE = {"pending": "queued", "delivered": "delivered", "failed": "failed"}
DESTINATION_NAMES = {"hl7": "RIS (HL7 ORU over MLLP)", "fhir": "FHIR DiagnosticReport", "dicom": "PACS (DICOM SR)",
                     "pdf": "PDF report"}


def report_site(db: Database, report_id: int) -> str:
    """The name of the site of a report's study, or "" when the study has no site."""
    with db.reader() as session:
        record = session.get(ReportRecord, report_id)
        study = record.study if record is not None else None
        return study.site.name if study is not None and study.site is not None else ""


def delivery_summary(site: str, version: int, rows: list[dict[str, Any]],
                     sites_file: str = "configs/sites.yaml") -> str:
    """What happened to one signed version, in one sentence: which destinations it goes to and
    the state of each (queued, delivered, failed), or plainly that nothing was sent because the
    site has no destination. ``rows`` are ``delivery_status`` rows; those of other versions are ignored."""
    mine = sorted((r for r in rows if r["version"] == version), key=lambda r: r["id"])
    if not mine:
        if not site:
            return "The study has no site, so there is no delivery destination: nothing was sent."
        return f"Site {site} has no delivery destination configured in {sites_file}: nothing was sent."
    parts = []
    for r in mine:
        state = DELIVERY_STATE.get(r["status"], r["status"])
        detail = f" (last try: {r['last_error']})" if r["status"] != "delivered" and r.get("last_error") else ""
        parts.append(f"{DESTINATION_NAMES.get(r['destination'], r['destination'])} {state}{detail}")
    return f"Delivery to {site or 'the site'}: " + "; ".join(parts) + "."


def sign_message(status: str, version: int, site: str, rows: list[dict[str, Any]],
                 sites_file: str = "configs/sites.yaml") -> str:
    """``Signed final (version 1).`` and the delivery summary: what the CLI and the page say after signing."""
    return f"Signed {status} (version {version}). " + delivery_summary(site, version, rows, sites_file)


def sites_file_label(settings: Settings) -> str:
    """Where the sites are configured, as a path a person recognises (configs/sites.yaml)."""
    from readingroom.settings import PROJECT_ROOT

    path = settings.config_dir / settings.sites_file
    try:
        return str(path.resolve().relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)


def file_stem(doc: DeliveryDoc) -> str:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in (doc.accession or doc.study_uid))
    return f"{safe}-r{doc.report_id}-v{doc.version}-{doc.status}"


def render(doc: DeliveryDoc, fmt: str, settings: Settings, destinations: SiteDestinations | None = None) -> bytes:
    """The bytes of one output format: hl7 (ER7), fhir (JSON), sr (DICOM Part 10), pdf."""
    from reporting.delivery import fhir, hl7, pdf, sr

    if fmt == "hl7":
        peer = destinations.hl7 if destinations else None
        return hl7.build_oru(doc, sending_application=settings.hl7.application,
                             sending_facility=settings.hl7.facility,
                             receiving_application=peer.application if peer else "",
                             receiving_facility=peer.facility if peer else "").encode("utf-8")
    if fmt == "fhir":
        return fhir.to_json(fhir.build_diagnostic_report(doc, pdf.build_pdf(doc))).encode("utf-8")
    if fmt == "pdf":
        return pdf.build_pdf(doc)
    if fmt == "sr":
        from io import BytesIO

        buffer = BytesIO()
        sr.build_sr(doc, organization=settings.hl7.facility).save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    raise DeliveryError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


class Deliverer:
    """Job handler: ``payload = {"outbox_id": N}``."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def __call__(self, payload: dict[str, Any]) -> None:
        outbox_id = int(payload["outbox_id"])
        with self.db.session() as session:
            item = session.get(OutboxItem, outbox_id)
            if item is None:
                log.warning("outbox row %d is gone; nothing to deliver", outbox_id)
                return
            if item.status == "delivered":
                log.info("outbox %d (%s) was already delivered; not sending it again", outbox_id, item.destination)
                return
            item.attempts += 1
            destination, version_id = item.destination, item.version_id
            doc = load_document(session, version_id)
            site = doc.site
        try:
            ack = self.deliver(doc, destination, site_destinations(self.settings, site))
        except Exception as exc:
            self._failed(outbox_id, doc, destination, exc)
            raise
        with self.db.session() as session:
            item = session.get(OutboxItem, outbox_id)
            item.status, item.acknowledgement, item.delivered_at, item.last_error = "delivered", ack, utcnow(), None
            audit.record(session, "system", "deliver", study_uid=doc.study_uid, report_id=doc.report_id,
                         detail={"version": doc.version, "destination": destination, "ack": ack[:200]})
        log.info("report %d v%d delivered to %s: %s", doc.report_id, doc.version, destination, ack[:80])

    def _failed(self, outbox_id: int, doc: DeliveryDoc, destination: str, exc: Exception) -> None:
        error = f"{type(exc).__name__}: {exc}"
        with self.db.session() as session:
            item = session.get(OutboxItem, outbox_id)
            item.last_error = error
            job = session.get(Job, item.job_id) if item.job_id else None
            if job is not None and job.attempts >= job.max_attempts:
                item.status = "failed"
                audit.record(session, "system", "delivery_failed", study_uid=doc.study_uid, report_id=doc.report_id,
                             detail={"version": doc.version, "destination": destination, "error": error[:300]})
        log.warning("report %d v%d to %s failed (attempt %s): %s", doc.report_id, doc.version, destination,
                    item.attempts, error)

    def deliver(self, doc: DeliveryDoc, destination: str, dest: SiteDestinations) -> str:
        """Send to one destination; return its acknowledgement, or raise."""
        from reporting.delivery import hl7, pdf, sr

        home = self.settings.home
        if destination == "hl7":
            if dest.hl7 is None:
                raise DeliveryError(f"site {doc.site!r} has no hl7 destination any more; set it in sites.yaml")
            message = render(doc, "hl7", self.settings, dest).decode("utf-8")
            reply = mllp.send(dest.hl7.host, dest.hl7.port, message, timeout_s=dest.hl7.timeout_s,
                              ssl_context=peer_context(dest.hl7, f"sites[{doc.site}].destinations.hl7"))
            code = hl7.check_ack(reply, hl7.control_id(doc))
            return f"{code} {hl7.control_id(doc)} from {dest.hl7.host}:{dest.hl7.port}"
        if destination == "fhir":
            body = render(doc, "fhir", self.settings, dest)
            if dest.fhir_url:
                return _post_fhir(dest.fhir_url, body)
            path = (home / dest.fhir_folder / f"{file_stem(doc)}.json").resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, body)
            return f"written {path}"
        if destination == "dicom":
            if dest.dicom is None:
                raise DeliveryError(f"site {doc.site!r} has no dicom destination any more; set it in sites.yaml")
            ds = sr.build_sr(doc, organization=self.settings.hl7.facility)
            status = sr.store(ds, dest.dicom.host, dest.dicom.port, dest.dicom.ae_title, self.settings.dicom.ae_title,
                              ssl_context=peer_context(dest.dicom, f"sites[{doc.site}].destinations.dicom"))
            return f"C-STORE 0x{status:04X} {ds.SOPInstanceUID} at {dest.dicom.ae_title}"
        if destination == "pdf":
            path = (home / dest.pdf_folder / f"{file_stem(doc)}.pdf").resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, pdf.build_pdf(doc))
            return f"written {path}"
        raise DeliveryError(f"unknown destination {destination!r}; valid: {', '.join(DESTINATIONS)}")


def _post_fhir(url: str, body: bytes, timeout_s: float = 10) -> str:
    request = urllib.request.Request(url.rstrip("/") + "/DiagnosticReport" if not url.rstrip("/").endswith(
        "DiagnosticReport") else url, data=body, method="POST",
        headers={"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return f"HTTP {response.status} {response.headers.get('Location', '')}".strip()
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"the FHIR server at {url} answered HTTP {exc.code}: {exc.read()[:200]!r}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DeliveryError(f"cannot reach the FHIR server at {url} ({exc}); check fhir_url in sites.yaml") from None


def delivery_status(db: Database, report_id: int | None = None, status: str | None = None,
                    limit: int = 200) -> list[dict[str, Any]]:
    """Outbox rows, newest first: destination, state, attempts, last error, acknowledgement, job."""
    stmt = (select(OutboxItem, ReportVersion, Job).join(ReportVersion, OutboxItem.version_id == ReportVersion.id)
            .outerjoin(Job, Job.id == OutboxItem.job_id).order_by(OutboxItem.id.desc()).limit(limit))
    if report_id is not None:
        stmt = stmt.where(ReportVersion.report_id == report_id)
    if status:
        stmt = stmt.where(OutboxItem.status == status)
    rows = []
    with db.reader() as session:
        for item, version, job in session.execute(stmt):
            rows.append({
                "id": item.id, "report_id": version.report_id, "version": version.number,
                "report_status": version.status, "study_uid": version.content.get("study_uid", ""),
                "destination": item.destination, "status": item.status, "attempts": item.attempts,
                "job_id": item.job_id, "job_status": job.status if job else None,
                "next_try": job.run_after.isoformat(timespec="seconds") + "Z"
                if job is not None and job.status == "queued" else None,
                "last_error": ((item.last_error or "").strip().splitlines() or [""])[-1],
                "acknowledgement": item.acknowledgement or "",
                "created_at": item.created_at.isoformat(timespec="seconds") + "Z",
                "delivered_at": item.delivered_at.isoformat(timespec="seconds") + "Z" if item.delivered_at else None,
            })
    return rows


def retry(db: Database, queue: JobQueue | None, outbox_id: int, user: str) -> None:
    """Queue a failed (or stuck) delivery again with fresh attempts (admin action, audited)."""
    if queue is None:
        raise DeliveryError("no job queue to retry the delivery with")
    with db.session() as session:
        item = session.get(OutboxItem, outbox_id)
        if item is None:
            raise DeliveryError(f"no outbox row {outbox_id}; see `readingroom report outbox`")
        if item.status == "delivered":
            raise DeliveryError(f"outbox row {outbox_id} was delivered at {item.delivered_at}; nothing to retry")
        job = session.get(Job, item.job_id) if item.job_id else None
        if job is not None and job.status in ("queued", "running"):
            job.run_after = utcnow()
        else:
            item.job_id = queue.enqueue(DELIVERY_JOB, {"outbox_id": item.id}, session=session)
        item.status = "pending"
        version = item.version
        audit.record(session, user, "retry", study_uid=version.content.get("study_uid", ""),
                     report_id=version.report_id, detail={"outbox_id": outbox_id, "destination": item.destination})


def export(db: Database, settings: Settings, report_id: int, fmt: str, out: Path, user: str) -> Path:
    """Write the newest signed version of a report in one format (audited)."""
    if fmt not in FORMATS:
        raise DeliveryError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    with db.session() as session:
        record = session.get(ReportRecord, report_id)
        if record is None:
            raise DeliveryError(f"no report {report_id}")
        if not record.versions:
            raise DeliveryError(f"report {report_id} is a draft; sign it first (`readingroom report sign "
                                f"{report_id} --user NAME`)")
        doc = load_document(session, record.versions[-1].id)
        dest = site_destinations(settings, doc.site)
        data = render(doc, fmt, settings, dest)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, data, durable=False)
        audit.record(session, user, "export", study_uid=doc.study_uid, report_id=report_id,
                     detail={"format": fmt, "version": doc.version, "path": str(out)})
    return out
