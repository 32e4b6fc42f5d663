"""The audit log: an append-only record of who did what to which study, and when.

Actions: ``view``, ``edit``, ``create``, ``sign``, ``override``, ``acknowledge``,
``communicate``, ``export``, ``deliver``, ``delivery_failed``, ``retry``, ``model_qa``.
Rows are only ever inserted: the database refuses UPDATE and DELETE (triggers in migration 0004).

    record(session, "dr_lee", "sign", study_uid="1.2.3", report_id=7, detail={"version": 2})
    query(db, user="dr_lee", action="sign", since=datetime(2026, 11, 29))
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from readingroom.db import Database
from readingroom.schema import AuditEntry, utcnow

log = logging.getLogger(__name__)

ACTIONS = ("view", "edit", "create", "sign", "override", "acknowledge", "communicate", "export",
           "deliver", "delivery_failed", "retry", "model_qa")


@dataclass(frozen=True)
class AuditRow:
    id: int
    at: datetime
    user: str
    action: str
    study_uid: str
    report_id: int | None
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at.isoformat(timespec="seconds") + "Z", "user": self.user,
                "action": self.action, "study_uid": self.study_uid, "report_id": self.report_id,
                "detail": self.detail}


def record(session: Session, user: str, action: str, *, study_uid: str = "", report_id: int | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Append one entry inside the caller's transaction (it commits with the action it records)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; valid: {', '.join(ACTIONS)}")
    session.add(AuditEntry(at=utcnow(), user=user or "system", action=action, study_uid=study_uid or "",
                           report_id=report_id, detail=detail or {}))
    log.debug("audit: %s %s study=%s report=%s", user, action, study_uid, report_id)


def query(db: Database, *, user: str | None = None, action: str | None = None, study_uid: str | None = None,
          report_id: int | None = None, since: datetime | None = None, until: datetime | None = None,
          limit: int = 200) -> list[AuditRow]:
    """Entries matching every given filter, newest first (times are naive UTC)."""
    stmt = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if user:
        stmt = stmt.where(AuditEntry.user == user)
    if action:
        stmt = stmt.where(AuditEntry.action == action)
    if study_uid:
        stmt = stmt.where(AuditEntry.study_uid == study_uid)
    if report_id is not None:
        stmt = stmt.where(AuditEntry.report_id == report_id)
    if since:
        stmt = stmt.where(AuditEntry.at >= since)
    if until:
        stmt = stmt.where(AuditEntry.at < until)
    with db.reader() as session:
        return [AuditRow(e.id, e.at, e.user, e.action, e.study_uid, e.report_id, dict(e.detail or {}))
                for e in session.scalars(stmt)]
