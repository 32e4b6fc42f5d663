"""The audit log: an append-only record of who did what to which study, and when.

Actions: ``view``, ``edit``, ``create``, ``sign``, ``override``, ``acknowledge``,
``communicate``, ``export``, ``deliver``, ``delivery_failed``, ``retry``, ``model_qa``, ``login_failed``.
Rows are only ever inserted: the database refuses UPDATE and DELETE (triggers in migration 0004).
Each row carries the SHA-256 of its content and of the row before it (a hash chain, migration
0007): ``verify`` (``readingroom audit verify``) finds a changed or removed row, and a dropped
trigger. Keep the head it prints somewhere else to detect a rewritten or truncated tail too.

    record(session, "dr_lee", "sign", study_uid="1.2.3", report_id=7, detail={"version": 2})
    query(db, user="dr_lee", action="sign", since=datetime(2026, 11, 29))
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from readingroom.db import Database
from readingroom.schema import AuditEntry, utcnow

log = logging.getLogger(__name__)

ACTIONS = ("view", "edit", "create", "sign", "override", "acknowledge", "communicate", "export",
           "deliver", "delivery_failed", "retry", "model_qa", "login_failed")


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


TRIGGERS = {"sqlite": {"audit_log_no_update", "audit_log_no_delete"},
            "postgresql": {"audit_log_append_only", "audit_log_no_truncate"}}
_CHAIN_LOCK = 190419   # PostgreSQL advisory lock: one writer at a time extends the chain


def entry_hash(prev: str, at: datetime, user: str, action: str, study_uid: str, report_id: int | None,
               detail: dict[str, Any]) -> str:
    """The chain hash of one entry: SHA-256 over the previous hash and the entry's canonical JSON."""
    body = json.dumps([prev, at.isoformat(timespec="microseconds"), user, action, study_uid, report_id, detail],
                      sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


def record(session: Session, user: str, action: str, *, study_uid: str = "", report_id: int | None = None,
           detail: dict[str, Any] | None = None) -> None:
    """Append one entry inside the caller's transaction (it commits with the action it records)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}; valid: {', '.join(ACTIONS)}")
    if session.get_bind().dialect.name == "postgresql":   # SQLite writers are serial (BEGIN IMMEDIATE)
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CHAIN_LOCK})
    prev = session.scalar(select(AuditEntry.hash).order_by(AuditEntry.id.desc()).limit(1)) or ""
    entry = dict(at=utcnow(), user=user or "system", action=action, study_uid=study_uid or "",
                 report_id=report_id, detail=json.loads(json.dumps(detail or {}, default=str)))
    session.add(AuditEntry(**entry, prev_hash=prev, hash=entry_hash(prev, **entry)))
    log.debug("audit: %s %s study=%s report=%s", user, action, study_uid, report_id)


def record_access(db: Database, user: str, action: str, *, study_uid: str = "", what: str = "",
                  source: str = "", detail: dict[str, Any] | None = None) -> None:
    """Append one entry in its own transaction: a view or export of patient data (who, what, from where)."""
    with db.session() as session:
        record(session, user, action, study_uid=study_uid,
               detail={"what": what, "from": source, **(detail or {})})


class AccessLog:
    """Audits repeated reads of the same thing (a viewer's slices of one series) once per
    ``window_s`` per user, so every access is accounted for without a row per slice."""

    def __init__(self, db: Database, window_s: float = 600.0) -> None:
        import threading

        self.db, self.window_s = db, window_s
        self._seen: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()

    def view(self, user: str, study_uid: str, what: str, source: str) -> None:
        import time

        now, key = time.monotonic(), (user, study_uid, what)
        with self._lock:
            if now - self._seen.get(key, -1e18) < self.window_s:
                return
            self._seen[key] = now
            if len(self._seen) > 10000:
                self._seen = {k: t for k, t in self._seen.items() if now - t < self.window_s}
        record_access(self.db, user, "view", study_uid=study_uid, what=what, source=source)


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


@dataclass
class ChainCheck:
    """What ``verify`` found: how many entries, the head hash, and every problem (none: intact)."""
    entries: int = 0
    head: str = ""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(db: Database) -> ChainCheck:
    """Walk the whole chain: every entry must hash to its stored hash and name the one before it,
    and the triggers that make the table append-only must be in place."""
    check = ChainCheck()
    with db.reader() as session:
        dialect = session.get_bind().dialect.name
        if dialect == "sqlite":
            found = set(session.scalars(text("SELECT name FROM sqlite_master WHERE type = 'trigger' "
                                             "AND tbl_name = 'audit_log'")))
        else:
            found = set(session.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal "
                                             "AND tgrelid = 'audit_log'::regclass")))
        for missing in sorted(TRIGGERS.get(dialect, set()) - found):
            check.problems.append(f"trigger {missing} is missing: the audit log can be changed; "
                                  "restore it (readingroom db upgrade does not) and find out who dropped it")
        prev = ""
        for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(1000):
            check.entries += 1
            if e.prev_hash != prev:
                check.problems.append(f"entry {e.id}: the chain breaks before it (an entry was removed or replaced)")
            if e.hash != entry_hash(e.prev_hash, e.at, e.user, e.action, e.study_uid, e.report_id, e.detail or {}):
                check.problems.append(f"entry {e.id}: its content was changed after it was written")
            prev = e.hash
        check.head = prev
    return check
