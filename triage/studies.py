"""When is a study complete? After a quiet period with no new instance; then triage is queued.

``complete_due_studies()`` is the core: one transaction marks every due study complete and
queues its triage job, so a crash can never complete a study without queuing its job.
``StudyMonitor`` calls it at the earliest deadline it knows of (told by the intake as instances
arrive) and also rescans the database regularly, for studies stored by another process and for
those left incomplete by a crash.
"""

from __future__ import annotations

import heapq
import logging
import threading
from datetime import datetime, timedelta
from typing import Callable

from sqlalchemy import case, select, update

from readingroom.db import Database
from readingroom.jobs import JobQueue
from readingroom.schema import Site, Study, utcnow
from readingroom.settings import Settings

log = logging.getLogger(__name__)

TRIAGE_JOB = "triage_study"


def triage_dedupe_key(study_uid: str) -> str:
    return f"{TRIAGE_JOB}:{study_uid}"


def complete_due_studies(db: Database, queue: JobQueue, settings: Settings,
                         now: datetime | None = None, only: set[str] | None = None,
                         ignore_quiet_period: bool = False) -> list[str]:
    """Mark complete every study whose quiet period has passed; queue its triage. Returns UIDs.

    Several processes may run this at once on one database (every listener has a monitor, and
    a study's instances may arrive at several listeners). Each study is completed by a
    conditional UPDATE, "still open and still quiet", so exactly one caller completes it and
    queues its triage; a caller that lost the race, or whose read is older than an instance
    that another listener stored meanwhile, changes nothing (PostgreSQL re-checks the WHERE on
    the row's newest version; on SQLite, BEGIN IMMEDIATE serialises the callers anyway)."""
    now = now or utcnow()
    done: list[str] = []
    with db.session() as session:
        query = (select(Study.id, Study.study_uid, Study.last_received_at, Site.name)
                 .outerjoin(Site, Study.site_id == Site.id).where(Study.completed_at.is_(None)))
        if only is not None:
            query = query.where(Study.study_uid.in_(only))
        for study_id, study_uid, last_received_at, site_name in session.execute(query).all():
            quiet = timedelta(seconds=settings.quiet_period_for(site_name))
            if not ignore_quiet_period and last_received_at + quiet > now:
                continue
            still_due = [Study.id == study_id, Study.completed_at.is_(None)]
            if not ignore_quiet_period:
                still_due.append(Study.last_received_at <= now - quiet)
            completed = session.execute(
                update(Study).where(*still_due)
                .values(completed_at=now, status=case((Study.status == "receiving", "new"), else_=Study.status))
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            if completed != 1:
                log.debug("study %s was completed or received an instance meanwhile; left as it is", study_uid)
                continue
            queue.enqueue(TRIAGE_JOB, {"study_uid": study_uid},
                          dedupe_key=triage_dedupe_key(study_uid), session=session)
            done.append(study_uid)
    for uid in done:
        log.info("study %s complete; triage queued", uid)
    return done


class StudyMonitor:
    """A thread that completes studies on time. ``note_instance`` is the intake's callback."""

    def __init__(self, db: Database, queue: JobQueue, settings: Settings,
                 on_complete: Callable[[list[str]], None] | None = None) -> None:
        self.db, self.queue, self.settings = db, queue, settings
        self.on_complete = on_complete
        self._deadlines: list[tuple[datetime, str]] = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None

    def note_instance(self, study_uid: str, site_name: str | None, received_at: datetime) -> None:
        deadline = received_at + timedelta(seconds=self.settings.quiet_period_for(site_name))
        with self._cond:
            heapq.heappush(self._deadlines, (deadline, study_uid))
            self._cond.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="study-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread:
            self._thread.join(10)

    def _loop(self) -> None:
        rescan = self.settings.intake.rescan_interval_s
        next_scan = utcnow()
        while True:
            with self._cond:
                if self._stop:
                    return
                now = utcnow()
                due = now >= next_scan or (self._deadlines and self._deadlines[0][0] <= now)
                if not due:
                    wake_at = min([next_scan] + [d for d, _ in self._deadlines[:1]])
                    self._cond.wait(max(0.0, (wake_at - now).total_seconds()) + 0.005)
                    continue
                full_scan = now >= next_scan
                only = None
                if not full_scan:
                    only = set()
                    while self._deadlines and self._deadlines[0][0] <= now:
                        only.add(heapq.heappop(self._deadlines)[1])
            try:
                done = complete_due_studies(self.db, self.queue, self.settings, only=only)
            except Exception:  # keep monitoring; the next scan retries
                log.exception("could not complete due studies; will retry")
                done = []
            if full_scan:
                next_scan = utcnow() + timedelta(seconds=rescan)
            if done and self.on_complete:
                self.on_complete(done)
