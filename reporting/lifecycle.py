"""The report lifecycle: draft -> preliminary -> final -> addendum / corrected, in the database.

A report has one working draft (sections and template fields of ``reporting.report.Report``),
saved as often as the UI likes, and immutable signed versions (``reporting.versions``). Signing
asks the sign-off gate (``reporting.signoff``), which runs the pre-sign checks (``reporting.checks``)
with the study's context: blocking issues must be resolved or overridden with a reason, AI
warnings acknowledged, and a final report with a critical finding needs a communication record.
The signature stores who, when and the SHA-256 of the signed content. A signed version is queued
for delivery (``reporting.delivery``) in the same transaction, so that it cannot be lost. This
module is the boundary: it reads and writes the database and the audit trail, the gate decides.

This is the Python API the UI calls::

    service = ReportService(db, settings, queue)
    r = service.create(study_uid, user="dr_lee", template="ct_head")
    r = service.save_draft(r.id, "dr_lee", sections={"impression": "..."}, revision=r.revision)
    issues = service.run_checks(r.id)                 # list[CheckResult]: issue + resolved?
    service.override(r.id, issue.key, "dr_lee", "reason")   /  service.acknowledge(...)
    service.record_communication(r.id, "dr_lee", recipient="Dr Smith", method="phone", read_back=True)
    v = service.sign(r.id, "dr_lee", final=True)
    service.addendum(r.id, "dr_lee", "text");  service.correct(r.id, "dr_lee", sections, reason)
    service.delivery_status(r.id);  service.audit(study_uid=...)
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select
from sqlalchemy.orm import Session

from readingroom import audit
from readingroom.db import Database
from readingroom.jobs import JobQueue
from readingroom.schema import (AIFinding, AuditEntry, CheckOverride, CriticalCommunication, Instance, Job,
                                OutboxItem, ReportRecord, ReportVersion, Series, Study, utcnow)
from readingroom.settings import Settings

from reporting import checks, signoff
from reporting.delivery.outbox import DELIVERY_JOB
from reporting.errors import ReportError
from reporting.report import SECTION_ORDER, Report, load_template
from reporting.signoff import CheckResult
from reporting.versions import (ReportView, VersionView, ai_summary, communication_statement, content_hash,
                                signed_text)

log = logging.getLogger(__name__)

__all__ = ["METHODS", "SIGNED", "ReportService"]

# The states a signed version can have, and how a critical result may be communicated.
SIGNED = ("final", "addendum", "corrected")
METHODS = ("phone", "in person", "secure message", "page", "video call")


class ReportService:
    """The report lifecycle over the database. Thread-safe (each call is its own transaction)."""

    def __init__(self, db: Database, settings: Settings, queue: JobQueue | None = None,
                 wake: Callable[[], None] | None = None) -> None:
        self.db = db
        self.settings = settings
        self.queue = queue
        self.wake = wake
        self.templates_dir = settings.config_dir / "templates"

    # --- reading ----------------------------------------------------------------------------
    def _record(self, session: Session, report_id: int, lock: bool = False) -> ReportRecord:
        # lock: SELECT ... FOR UPDATE on PostgreSQL (SQLite writers are serialised by BEGIN IMMEDIATE)
        record = session.get(ReportRecord, report_id, with_for_update=lock or None)
        if record is None:
            raise ReportError(f"no report {report_id}; list a study's report with `readingroom report show` "
                              "or create one with `readingroom report new STUDY_UID`")
        return record

    def _report(self, record: ReportRecord) -> Report:
        """The draft as a dictation Report (template, sections, fields)."""
        report = Report(template=load_template(record.template, self.templates_dir))
        for name, text in (record.sections or {}).items():
            if name in report.sections:
                report.sections[name] = text or ""
        for name, values in (record.fields or {}).items():
            for key, value in (values or {}).items():
                if key in report.fields.get(name, {}):
                    report.fields[name][key] = value or ""
        return report

    def _view(self, session: Session, record: ReportRecord) -> ReportView:
        study = record.study
        report = self._report(record)
        versions = [VersionView(v.id, v.number, v.status, v.text, v.sha256, v.signed_by, v.signed_at, v.reason,
                                dict(v.content)) for v in record.versions]
        comms = session.scalars(select(CriticalCommunication).where(CriticalCommunication.report_id == record.id)
                                .order_by(CriticalCommunication.id))
        overrides = session.scalars(select(CheckOverride).where(CheckOverride.report_id == record.id)
                                    .order_by(CheckOverride.id))
        return ReportView(
            record.id, study.study_uid, study.accession, study.patient_id, study.patient_name, record.template,
            record.status, dict(report.sections), {k: dict(v) for k, v in report.fields.items()}, record.revision,
            report.render(), record.updated_at, versions,
            [{"id": c.id, "finding": c.finding, "recipient": c.recipient, "method": c.method,
              "communicated_at": c.communicated_at.isoformat(timespec="seconds") + "Z", "read_back": c.read_back,
              "recorded_by": c.recorded_by, "statement": communication_statement(c)} for c in comms],
            [{"key": o.check_key, "reason": o.reason, "user": o.user,
              "at": o.created_at.isoformat(timespec="seconds") + "Z"} for o in overrides],
        )

    def get(self, report_id: int, user: str | None = None) -> ReportView:
        """The report; with ``user``, the view is audited (once per interval)."""
        if user:
            with self.db.session() as session:
                record = self._record(session, report_id)
                self._audit_coalesced(session, user, "view", record)
                return self._view(session, record)
        with self.db.reader() as session:
            return self._view(session, self._record(session, report_id))

    def find(self, study_uid: str) -> ReportView | None:
        """The newest report of a study, or None."""
        with self.db.reader() as session:
            record = session.scalar(select(ReportRecord).join(Study).where(Study.study_uid == study_uid)
                                    .order_by(ReportRecord.id.desc()).limit(1))
            return self._view(session, record) if record else None

    def list_reports(self, *, status: str | None = None, user: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
        """Reports, newest change first: id, study, patient, status, who created it, last change."""
        stmt = (select(ReportRecord, Study).join(Study, ReportRecord.study_id == Study.id)
                .order_by(ReportRecord.updated_at.desc(), ReportRecord.id.desc()).limit(limit))
        if status:
            stmt = stmt.where(ReportRecord.status == status)
        if user:
            stmt = stmt.where(ReportRecord.created_by == user)
        with self.db.reader() as session:
            return [{"id": r.id, "study_uid": s.study_uid, "accession": s.accession, "patient_name": s.patient_name,
                     "description": s.description, "status": r.status, "template": r.template,
                     "created_by": r.created_by, "revision": r.revision,
                     "updated_at": r.updated_at.isoformat(timespec="seconds") + "Z"}
                    for r, s in session.execute(stmt)]

    def dictation_report(self, report_id: int) -> Report:
        """The draft as a ``reporting.report.Report``, to continue dictating into it."""
        with self.db.reader() as session:
            return self._report(self._record(session, report_id))

    # --- drafting -----------------------------------------------------------------------------
    def create(self, study_uid: str, user: str, template: str | None = None) -> ReportView:
        """A new draft for the study, or its existing report (one report per study)."""
        tmpl = load_template(template or "free", self.templates_dir)  # a bad name fails here, clearly
        with self.db.session() as session:
            # The study's row lock makes "find its report, else create one" one step on PostgreSQL
            # (SQLite's write transactions are serial already): one report per study, even when
            # several radiologists open it at once.
            study = session.scalar(select(Study).where(Study.study_uid == study_uid).with_for_update())
            if study is None:
                raise ReportError(f"no study {study_uid!r}; see `readingroom worklist` for the study UIDs")
            record = session.scalar(select(ReportRecord).where(ReportRecord.study_id == study.id)
                                    .order_by(ReportRecord.id.desc()).limit(1))
            if record is not None:
                return self._view(session, record)
            draft = Report(template=tmpl)
            record = ReportRecord(study_id=study.id, template=tmpl.name, status="draft", sections=draft.sections,
                                  fields=draft.fields, revision=0, created_by=user, created_at=utcnow(),
                                  updated_at=utcnow())
            session.add(record)
            session.flush()
            if study.status in ("new", "triaged"):
                study.status = "in_progress"
            audit.record(session, user, "create", study_uid=study_uid, report_id=record.id,
                         detail={"template": tmpl.name})
            log.info("report %d created for study %s by %s (template %s)", record.id, study_uid, user, tmpl.name)
            return self._view(session, record)

    def save_draft(self, report_id: int, user: str, *, sections: dict[str, str] | None = None,
                   fields: dict[str, dict[str, str]] | None = None, revision: int | None = None,
                   report: Report | None = None) -> ReportView:
        """Autosave: replace the given sections/fields (or take them from a dictation ``report``).

        With ``revision``, the save is refused when someone saved in between (no silent loss).
        """
        if report is not None:
            sections, fields = dict(report.sections), {k: dict(v) for k, v in report.fields.items()}
        with self.db.session() as session:
            record = self._record(session, report_id, lock=True)
            if record.status in SIGNED:
                raise ReportError(f"report {report_id} is {record.status} and cannot change; add an addendum "
                                  f"(`readingroom report addendum {report_id} --user NAME --text ...`) or a "
                                  "corrected version")
            if revision is not None and revision != record.revision:
                raise ReportError(f"report {report_id} was saved by someone else (revision {record.revision}, "
                                  f"yours {revision}); reload it and apply your change again")
            unknown = sorted(set(sections or {}) - set(SECTION_ORDER))
            if unknown:
                raise ReportError(f"unknown section(s) {unknown}; valid: {', '.join(SECTION_ORDER)}")
            new_sections = {**(record.sections or {}), **(sections or {})}
            new_fields = {k: dict(v) for k, v in (record.fields or {}).items()}
            for name, values in (fields or {}).items():
                known = new_fields.get(name)
                bad = sorted(set(values) - set(known or {}))
                if known is None or bad:
                    raise ReportError(f"template {record.template!r} has no field(s) {bad or list(values)} in "
                                      f"section {name!r}; its fields: { {k: list(v) for k, v in new_fields.items()} }")
                known.update(values)
            if new_sections == record.sections and new_fields == record.fields:
                return self._view(session, record)
            record.sections, record.fields = new_sections, new_fields
            record.revision += 1
            record.updated_at = utcnow()
            self._audit_coalesced(session, user, "edit", record)
            return self._view(session, record)

    def change_template(self, report_id: int, user: str, template: str) -> ReportView:
        """Switch a draft to another template: section texts stay, template fields start empty."""
        tmpl = load_template(template, self.templates_dir)
        with self.db.session() as session:
            record = self._record(session, report_id, lock=True)
            if record.status != "draft":
                raise ReportError(f"report {report_id} is {record.status}; the template of a signed report "
                                  "cannot change")
            if record.template == tmpl.name:
                return self._view(session, record)
            record.template = tmpl.name
            record.fields = Report(template=tmpl).fields
            record.revision += 1
            record.updated_at = utcnow()
            audit.record(session, user, "edit", study_uid=record.study.study_uid, report_id=record.id,
                         detail={"template": tmpl.name})
            return self._view(session, record)

    def set_section(self, report_id: int, user: str, section: str, text: str) -> ReportView:
        """Replace one section's free text (``section`` is a name or a title: "impression")."""
        key = section.strip().lower().replace(" ", "_")
        if key not in SECTION_ORDER:
            raise ReportError(f"unknown section {section!r}; valid: {', '.join(SECTION_ORDER)}")
        return self.save_draft(report_id, user, sections={key: text})

    def _audit_coalesced(self, session: Session, user: str, action: str, record: ReportRecord) -> None:
        last = session.scalar(select(AuditEntry).where(AuditEntry.report_id == record.id, AuditEntry.user == user)
                              .order_by(AuditEntry.id.desc()).limit(1))
        interval = self.settings.reports.edit_audit_interval_s
        if last is not None and last.action == action and (utcnow() - last.at).total_seconds() < interval:
            return
        audit.record(session, user, action, study_uid=record.study.study_uid, report_id=record.id,
                     detail={"revision": record.revision} if action == "edit" else {})

    # --- checks ---------------------------------------------------------------------------------
    def check_input(self, session: Session, record: ReportRecord) -> tuple[dict[str, str], checks.CheckContext]:
        """The report text without field labels, and the context the checks compare it with."""
        report = self._report(record)
        study = record.study
        ai = [checks.AIResult(f.finding, bool(f.positive), float(f.probability), f.model, f.version)
              for f in session.scalars(select(AIFinding).where(AIFinding.study_id == study.id))]
        # What was told in the critical-result communications, compared with the report's own sides and sizes.
        told = session.scalars(select(CriticalCommunication.finding)
                               .where(CriticalCommunication.report_id == record.id)
                               .order_by(CriticalCommunication.id))
        context = signoff.check_context(
            report, patient_sex=study.patient_sex, patient_birth_date=study.patient_birth_date,
            study_date=study.study_date, ordered_side=self.ordered_side(study), ai_findings=ai, communications=told)
        return report.check_sections(), context

    def ordered_side(self, study: Study) -> str | None:
        """The ordered side: from the order when there is one, else DICOM Laterality, else the description.

        (Issue 6 links orders to studies; when it lands, read the order's side here first.)
        """
        from sqlalchemy.orm import object_session

        session = object_session(study)
        path = session.scalar(select(Instance.path).join(Series).where(Series.study_id == study.id)
                              .order_by(Series.series_number, Instance.instance_number).limit(1)) if session else None
        laterality = signoff.dicom_laterality(self.settings.home / path) if path else ""
        return checks.ordered_side_from(study.description, laterality)

    def _resolve(self, session: Session, record: ReportRecord, issues: list[checks.Issue]) -> list[CheckResult]:
        """The sign-off gate's verdict on ``issues``, with the report's stored overrides and communications."""
        overrides = {o.check_key: signoff.Override(o.user, o.reason) for o in session.scalars(
            select(CheckOverride).where(CheckOverride.report_id == record.id))}
        comms = [signoff.Communication(c.recipient, c.method) for c in session.scalars(
            select(CriticalCommunication).where(CriticalCommunication.report_id == record.id))]
        return signoff.resolve(issues, overrides, comms)

    def run_checks(self, report_id: int) -> list[CheckResult]:
        """The pre-sign checks over the current draft, each with whether it is resolved."""
        with self.db.reader() as session:
            record = self._record(session, report_id)
            text, context = self.check_input(session, record)
            return self._resolve(session, record, checks.run_checks(text, context))

    def override(self, report_id: int, key: str, user: str, reason: str) -> None:
        """Override a blocking check; the reason is required and audited."""
        signoff.require_override_reason(reason)
        self._resolve_issue(report_id, key, user, reason, "override")

    def acknowledge(self, report_id: int, key: str, user: str, note: str = "") -> None:
        """Acknowledge a warning (AI discordance)."""
        self._resolve_issue(report_id, key, user, note, "acknowledge")

    def _resolve_issue(self, report_id: int, key: str, user: str, reason: str, action: str) -> None:
        with self.db.session() as session:
            record = self._record(session, report_id)
            text, context = self.check_input(session, record)
            issue = signoff.issue_to_resolve(report_id, checks.run_checks(text, context), key, action)
            session.add(CheckOverride(report_id=record.id, check_key=key, reason=reason.strip(), user=user))
            audit.record(session, user, action, study_uid=record.study.study_uid, report_id=record.id,
                         detail={"check": key, "reason": reason.strip(), "message": issue.message})

    def record_communication(self, report_id: int, user: str, *, recipient: str, method: str,
                             read_back: bool, communicated_at: datetime | None = None,
                             finding: str = "") -> dict[str, Any]:
        """Record a critical-result communication; its statement is added to the signed report.

        ``finding`` is what was told ("8 mm right subdural hematoma"); a side or a size in it that
        differs from the report's own blocks signing (check ``communication_mismatch``).
        """
        if not recipient.strip():
            raise ReportError("a critical-result communication needs the recipient (name and role)")
        if method not in METHODS:
            raise ReportError(f"unknown communication method {method!r}; valid: {', '.join(METHODS)}")
        with self.db.session() as session:
            record = self._record(session, report_id)
            c = CriticalCommunication(report_id=record.id, finding=finding.strip(), recipient=recipient.strip(),
                                      method=method, communicated_at=communicated_at or utcnow(),
                                      read_back=bool(read_back), recorded_by=user)
            session.add(c)
            session.flush()
            audit.record(session, user, "communicate", study_uid=record.study.study_uid, report_id=record.id,
                         detail={"recipient": c.recipient, "method": method, "read_back": c.read_back,
                                 "finding": c.finding, "at": c.communicated_at.isoformat(timespec="seconds")})
            return {"id": c.id, "statement": communication_statement(c)}

    # --- signing ---------------------------------------------------------------------------------
    def sign(self, report_id: int, user: str, final: bool = True) -> VersionView:
        """Sign the draft as preliminary or final; queue it for delivery. Raises ChecksNotResolved."""
        with self.db.session() as session:
            record = self._record(session, report_id, lock=True)
            if record.status in SIGNED:
                raise ReportError(f"report {report_id} is already {record.status}; add an addendum or a "
                                  "corrected version instead of signing again")
            status = "final" if final else "preliminary"
            results = self._open_checks(session, record, final)
            body = self._report(record).render()
            version = self._new_version(session, record, user, status, body, results)
        self._wake_workers()
        return version

    def addendum(self, report_id: int, user: str, text: str) -> VersionView:
        """Add an addendum to a final report: a new signed version; the earlier ones stay."""
        if not text.strip():
            raise ReportError("an addendum needs text")
        with self.db.session() as session:
            record = self._record(session, report_id, lock=True)
            if record.status not in SIGNED:
                raise ReportError(f"report {report_id} is {record.status}; an addendum follows a final report. "
                                  "Edit the draft and sign it instead")
            previous = record.versions[-1]
            stamp = utcnow().strftime("%Y-%m-%d %H:%M")
            body = f"{previous.content['body']}\n\nADDENDUM ({stamp} UTC, {user}):\n{text.strip()}"
            signoff.require_addendum_signable(report_id,
                                              self._resolve(session, record, signoff.addendum_issues(text)))
            version = self._new_version(session, record, user, "addendum", body, [])
        self._wake_workers()
        return version

    def correct(self, report_id: int, user: str, sections: dict[str, str], reason: str) -> VersionView:
        """A corrected version of a final report (new text, a reason); checked like a final report."""
        if not reason.strip():
            raise ReportError("a corrected report needs a reason")
        with self.db.session() as session:
            record = self._record(session, report_id, lock=True)
            if record.status not in SIGNED:
                raise ReportError(f"report {report_id} is {record.status}; edit the draft and sign it instead")
            unknown = sorted(set(sections) - set(SECTION_ORDER))
            if unknown:
                raise ReportError(f"unknown section(s) {unknown}; valid: {', '.join(SECTION_ORDER)}")
            record.sections = {**(record.sections or {}), **sections}
            record.revision += 1
            record.updated_at = utcnow()
            session.flush()
            results = self._open_checks(session, record, final=True)
            body = self._report(record).render()
            version = self._new_version(session, record, user, "corrected", body, results, reason=reason.strip())
        self._wake_workers()
        return version


    def _open_checks(self, session: Session, record: ReportRecord, final: bool) -> list[CheckResult]:
        """The check results of the draft when the gate lets it be signed; else ChecksNotResolved."""
        text, context = self.check_input(session, record)
        results = self._resolve(session, record, checks.run_checks(text, context))
        return signoff.require_signable(record.id, results, final)

    def _new_version(self, session: Session, record: ReportRecord, user: str, status: str, body: str,
                     results: list[CheckResult], reason: str = "") -> VersionView:
        study = record.study
        comms = list(session.scalars(select(CriticalCommunication)
                                     .where(CriticalCommunication.report_id == record.id)
                                     .order_by(CriticalCommunication.id)))
        statements = [communication_statement(c) for c in comms]
        ai = ai_summary(session.scalars(select(AIFinding).where(AIFinding.study_id == study.id)))
        number = len(record.versions) + 1
        signed_at = utcnow().replace(microsecond=0)
        text = signed_text(body, statements=statements, reason=reason, user=user, signed_at=signed_at,
                           status=status, ai=ai)
        content = {
            "report_id": record.id, "version": number, "status": status, "template": record.template,
            "study_uid": study.study_uid, "accession": study.accession, "patient_id": study.patient_id,
            "patient_name": study.patient_name, "body": body, "sections": self._report(record).as_dict(),
            "communications": statements, "reason": reason, "text": text, "signed_by": user,
            "signed_at": signed_at.isoformat() + "Z", "ai_findings": ai,
        }
        version = ReportVersion(report_id=record.id, number=number, status=status, content=content, text=text,
                                sha256=content_hash(content), signed_by=user, signed_at=signed_at, reason=reason)
        session.add(version)
        session.flush()
        record.status = status
        record.updated_at = utcnow()
        study.status = "preliminary" if status == "preliminary" else "final"
        audit.record(session, user, "sign", study_uid=study.study_uid, report_id=record.id,
                     detail={"version": number, "status": status, "sha256": version.sha256,
                             "overridden": signoff.overridden_keys(results)})
        for r in signoff.model_qa(results):
            audit.record(session, user, "model_qa", study_uid=study.study_uid, report_id=record.id,
                         detail={"check": r.issue.key, "message": r.issue.message})
        queued = self._queue_delivery(session, study, version)
        if queued:
            log.info("report %d v%d signed %s by %s (sha256 %s...); queued for delivery to %s", record.id, number,
                     status, user, version.sha256[:12], ", ".join(queued))
        else:
            log.warning("report %d v%d signed %s by %s (sha256 %s...); nothing was sent: the site has no delivery "
                        "destination (add one to configs/sites.yaml)", record.id, number, status, user,
                        version.sha256[:12])
        return VersionView(version.id, number, status, text, version.sha256, user, signed_at, reason, content)

    def _wake_workers(self) -> None:
        """Tell the worker pool a delivery was queued (after the commit; saves a poll interval)."""
        if self.wake is not None:
            try:
                self.wake()
            except Exception:  # waking is an optimisation only
                log.debug("wake callback failed", exc_info=True)

    # --- delivery ----------------------------------------------------------------------------------
    def _queue_delivery(self, session: Session, study: Study, version: ReportVersion) -> list[str]:
        from reporting.delivery.outbox import destinations_for

        names = destinations_for(self.settings, study.site.name if study.site else None)
        if names and self.queue is None:
            raise ReportError("no job queue to deliver the signed report with; build ReportService with a queue")
        for name in names:
            item = OutboxItem(version_id=version.id, destination=name, status="pending")
            session.add(item)
            session.flush()
            item.job_id = self.queue.enqueue(DELIVERY_JOB, {"outbox_id": item.id},
                                             dedupe_key=f"report-outbox:{item.id}", session=session)
            job = session.get(Job, item.job_id)
            job.max_attempts = self.settings.reports.delivery_max_attempts
        return names

    def delivery_status(self, report_id: int | None = None, status: str | None = None,
                        limit: int = 200) -> list[dict[str, Any]]:
        """Outbox rows (newest first) with their job state; ``status='failed'`` lists the problems."""
        from reporting.delivery.outbox import delivery_status

        return delivery_status(self.db, report_id=report_id, status=status, limit=limit)

    def retry_delivery(self, outbox_id: int, user: str) -> None:
        from reporting.delivery.outbox import retry

        retry(self.db, self.queue, outbox_id, user)
        self._wake_workers()

    def export(self, report_id: int, fmt: str, out: Path, user: str = "cli") -> Path:
        """Write the newest signed version as hl7, fhir, sr or pdf to ``out`` (audited)."""
        from reporting.delivery.outbox import export

        return export(self.db, self.settings, report_id, fmt, out, user)

    def audit(self, **filters: Any) -> list[audit.AuditRow]:
        """The audit log (see ``readingroom.audit.query`` for the filters)."""
        return audit.query(self.db, **filters)
