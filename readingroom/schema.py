"""The database schema: one SQLAlchemy metadata for every table, migrated by Alembic.

Times are naive UTC (``utcnow()``), the same on SQLite and PostgreSQL.
Change a table here, then add a migration under readingroom/migrations/versions/;
``tests/test_db.py`` fails when the two disagree.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    """Now, as naive UTC (what every DateTime column holds)."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Site(Base):
    """A hospital that sends studies; mirrored from the settings at start-up."""

    __tablename__ = "sites"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


# Study workflow states, in order. "receiving" until the quiet period has passed.
STUDY_STATUSES = ("receiving", "new", "triaged", "in_progress", "preliminary", "final")
# State of the AI triage of a study.
AI_STATUSES = ("pending", "done", "unavailable", "failed")


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_uid: Mapped[str] = mapped_column(String(64), unique=True)
    site_id: Mapped[int | None] = mapped_column(ForeignKey("sites.id"))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    accession: Mapped[str] = mapped_column(String(64), default="", index=True)
    study_date: Mapped[str] = mapped_column(String(8), default="")
    study_time: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(200), default="")
    referring_physician: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), default="receiving", index=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # NULL while instances may still arrive; set when the quiet period has passed.
    completed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True, index=True)
    ai_status: Mapped[str] = mapped_column(String(16), default="pending")
    # Why there is no AI result (ai_status "unavailable"): shown to the radiologist. Issue 3.
    ai_reason: Mapped[str] = mapped_column(String(255), default="")
    triaged_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # STAT, URGENT, ROUTINE... from the order or DICOM Requested Procedure Priority (0040,1003).
    order_priority: Mapped[str] = mapped_column(String(16), default="")
    # A radiologist's claim: nobody else opens the study until it is released or expires.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    site: Mapped[Site | None] = relationship()
    series: Mapped[list["Series"]] = relationship(back_populates="study", order_by="Series.series_number")
    findings: Mapped[list["AIFinding"]] = relationship(back_populates="study")


class Series(Base):
    __tablename__ = "series"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    body_part: Mapped[str] = mapped_column(String(64), default="")

    study: Mapped[Study] = relationship(back_populates="series")
    instances: Mapped[list["Instance"]] = relationship(back_populates="series", order_by="Instance.instance_number")


class Instance(Base):
    __tablename__ = "instances"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sop_uid: Mapped[str] = mapped_column(String(64), unique=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("series.id"), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64), default="")
    instance_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    columns: Mapped[int | None] = mapped_column(Integer, nullable=True)
    number_of_frames: Mapped[int] = mapped_column(Integer, default=1)
    # Path relative to the data folder: dicom/<study>/<series>/<sop>.dcm
    path: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    series: Mapped[Series] = relationship(back_populates="instances")


class AIFinding(Base):
    """One model output for one study. UNVERIFIED: never a diagnosis."""

    __tablename__ = "ai_findings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    finding: Mapped[str] = mapped_column(String(64))
    probability: Mapped[float] = mapped_column(Float)
    positive: Mapped[bool] = mapped_column(Boolean)
    model: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # Issue 3: the operating threshold used, the series analysed and its heatmap (.npy, float16,
    # 0..1, relative to the home folder; docs/models.md describes the grid).
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    series_uid: Mapped[str] = mapped_column(String(64), default="")
    heatmap_path: Mapped[str] = mapped_column(String(255), default="")

    study: Mapped[Study] = relationship(back_populates="findings")


# Job states. "dead" is the dead-letter state: out of attempts, shown to the admin.
JOB_STATUSES = ("queued", "running", "done", "dead")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_claim", "status", "run_after"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    dedupe_key: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=5)
    run_after: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="radiologist")   # radiologist, admin, site
    # Names of the sites this user is credentialed for; ["*"] means every site. A new user has
    # none until an admin gives them (`readingroom users sites`); a "site" account has exactly one.
    sites: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # A disabled user cannot log in, and their sessions end (readingroom.auth.set_disabled).
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class WebSession(Base):
    """A login to the web page, kept on the server: revoked by deleting the row (log out, new
    password, disabled user). Only the SHA-256 of the token is stored, never the token itself."""

    __tablename__ = "web_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class Notification(Base):
    """An event for the UI and the webhook, e.g. a critical AI finding (UNVERIFIED)."""

    __tablename__ = "notifications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    study_uid: Mapped[str] = mapped_column(String(64), index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class KeyValue(Base):
    """Small facts about this installation (for example: the demo has been seeded)."""

    __tablename__ = "kv"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


# ---- Orders (issue 6: orders) -------------------------------------------------------------
# Order workflow states. "new" until the teleradiologist approves, rejects or asks a question;
# "cancelled" when the site cancels it. Only "approved" orders with a protocol reach the worklist.
ORDER_STATUSES = ("new", "question", "approved", "rejected", "cancelled")


class Order(Base):
    """An imaging order (HL7 ORM/OMI or FHIR ServiceRequest): the request the teleradiologist reviews."""

    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    accession: Mapped[str] = mapped_column(String(64), unique=True)
    placer_order: Mapped[str] = mapped_column(String(64), default="")
    filler_order: Mapped[str] = mapped_column(String(64), default="")
    site_name: Mapped[str] = mapped_column(String(128), default="", index=True)
    source: Mapped[str] = mapped_column(String(16), default="hl7")          # hl7, fhir, demo
    sending_application: Mapped[str] = mapped_column(String(64), default="")
    sending_facility: Mapped[str] = mapped_column(String(64), default="")
    hl7_version: Mapped[str] = mapped_column(String(8), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="", index=True)
    patient_name: Mapped[str] = mapped_column(String(200), default="")
    patient_birth_date: Mapped[str] = mapped_column(String(8), default="")
    patient_sex: Mapped[str] = mapped_column(String(16), default="")
    visit_number: Mapped[str] = mapped_column(String(64), default="")
    patient_class: Mapped[str] = mapped_column(String(16), default="")     # E emergency, I inpatient, O outpatient
    ordering_physician: Mapped[str] = mapped_column(String(200), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")
    procedure_description: Mapped[str] = mapped_column(String(200), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    priority: Mapped[str] = mapped_column(String(16), default="")          # STAT, ASAP, URGENT, ROUTINE...
    laterality: Mapped[str] = mapped_column(String(16), default="")        # LEFT, RIGHT, BILATERAL
    indication: Mapped[str] = mapped_column(Text, default="")
    contrast_allergy: Mapped[str] = mapped_column(String(200), default="")
    egfr: Mapped[float | None] = mapped_column(Float, nullable=True)       # mL/min/1.73 m²
    scheduled_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    # Study Instance UID given to the modality in the worklist, so that the images link back.
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default="new", index=True)
    hints: Mapped[list[str]] = mapped_column(JSON, default=list)           # appropriateness hints
    protocol_name: Mapped[str] = mapped_column(String(64), default="")
    protocol: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)   # as chosen/edited
    review_note: Mapped[str] = mapped_column(Text, default="")             # rejection reason or question
    reviewed_by: Mapped[str] = mapped_column(String(64), default="")
    reviewed_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OrderMessage(Base):
    """Every order message received, kept as received, with what we answered (nothing is dropped)."""

    __tablename__ = "order_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    source: Mapped[str] = mapped_column(String(16), default="hl7")          # hl7, fhir
    peer: Mapped[str] = mapped_column(String(128), default="")
    message_type: Mapped[str] = mapped_column(String(32), default="")
    control_id: Mapped[str] = mapped_column(String(64), default="", index=True)  # resends are found by it
    accession: Mapped[str] = mapped_column(String(64), default="")
    raw: Mapped[str] = mapped_column(Text)
    ack_code: Mapped[str] = mapped_column(String(2), default="")            # AA, AE, AR
    error: Mapped[str] = mapped_column(Text, default="")                    # empty when accepted
    order_id: Mapped[int | None] = mapped_column(ForeignKey("orders.id"), nullable=True, index=True)


class OrderEvent(Base):
    """The history of an order: created, changed, cancelled, approved, rejected, asked, linked."""

    __tablename__ = "order_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    user: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# The order a study was acquired for (NULL: not linked; the worklist flags it). Declared here, after
# the orders table, so that this block stays in one piece; declarative maps a column added later.
Study.order_id = mapped_column(Integer, ForeignKey("orders.id"), nullable=True, index=True)
# ---- end of orders ---------------------------------------------------------------------------------


# --- Reports: lifecycle, signatures, checks, critical communication, delivery, audit (issue 7) ---
# A report has one mutable draft (the working text, autosaved) and immutable signed versions.
# Report states, in order; "addendum" and "corrected" follow "final".
REPORT_STATUSES = ("draft", "preliminary", "final", "addendum", "corrected")
# Delivery states of one report version to one destination.
OUTBOX_STATUSES = ("pending", "delivered", "failed")


class ReportRecord(Base):
    """The report of one study: template, working text (the draft) and its current state."""

    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id"), index=True)
    template: Mapped[str] = mapped_column(String(64), default="free")
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    # Working text: {section: free text} and {section: {field: text}} (reporting.report.Report).
    sections: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    fields: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # Bumped by every save; a save that names an older revision is refused (two tabs, one report).
    revision: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    study: Mapped[Study] = relationship()
    versions: Mapped[list["ReportVersion"]] = relationship(back_populates="report", order_by="ReportVersion.number")


class ReportVersion(Base):
    """One signed version: never updated or deleted. The signature is who, when and a SHA-256."""

    __tablename__ = "report_versions"
    __table_args__ = (Index("ix_report_versions_number", "report_id", "number", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # preliminary, final, addendum, corrected
    # The signed content: canonical JSON (study, sections, text...); sha256 is its hash.
    content: Mapped[dict[str, Any]] = mapped_column(JSON)
    text: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    signed_by: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime)
    reason: Mapped[str] = mapped_column(Text, default="")  # why a corrected version was made

    report: Mapped[ReportRecord] = relationship(back_populates="versions")


class CriticalCommunication(Base):
    """A critical result told to a clinician: who, how, when, and whether it was read back."""

    __tablename__ = "critical_communications"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    finding: Mapped[str] = mapped_column(String(200), default="")
    recipient: Mapped[str] = mapped_column(String(200))
    method: Mapped[str] = mapped_column(String(32))
    communicated_at: Mapped[datetime] = mapped_column(DateTime)
    read_back: Mapped[bool] = mapped_column(Boolean)
    recorded_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class CheckOverride(Base):
    """A pre-sign check overridden (with a reason) or a warning acknowledged, by whom."""

    __tablename__ = "check_overrides"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    report_id: Mapped[int] = mapped_column(ForeignKey("reports.id"), index=True)
    check_key: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text, default="")
    user: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class OutboxItem(Base):
    """One report version for one destination (hl7, fhir, dicom, pdf): delivered exactly once."""

    __tablename__ = "report_outbox"
    __table_args__ = (Index("ix_report_outbox_version_destination", "version_id", "destination", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("report_versions.id"))
    destination: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    job_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    acknowledgement: Mapped[str | None] = mapped_column(Text, nullable=True)  # ACK text, C-STORE status, path
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)

    version: Mapped[ReportVersion] = relationship()


class AuditEntry(Base):
    """Append-only: who viewed, edited, signed, overrode, communicated or exported what, and when."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(32), index=True)
    study_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    report_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # The hash chain (readingroom.audit.verify): the previous entry's hash, and this one's.
    prev_hash: Mapped[str] = mapped_column(String(64), default="")
    hash: Mapped[str] = mapped_column(String(64), default="")
# --- end of issue 7 tables ---
