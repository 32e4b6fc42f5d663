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

from sqlalchemy import select

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
    """Mark complete every study whose quiet period has passed; queue its triage. Returns UIDs."""
    now = now or utcnow()
    done: list[str] = []
    with db.session() as session:
        query = select(Study, Site.name).outerjoin(Site, Study.site_id == Site.id).where(Study.completed_at.is_(None))
        if only is not None:
            query = query.where(Study.study_uid.in_(only))
        for study, site_name in session.execute(query).all():
            quiet = timedelta(seconds=settings.quiet_period_for(site_name))
            if not ignore_quiet_period and study.last_received_at + quiet > now:
                continue
            study.completed_at = now
            if study.status == "receiving":
                study.status = "new"
            queue.enqueue(TRIAGE_JOB, {"study_uid": study.study_uid},
                          dedupe_key=triage_dedupe_key(study.study_uid), session=session)
            done.append(study.study_uid)
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
