"""A durable job queue in the database, and an in-process worker pool.

A job is a row: it survives a crash and a restart. A worker *claims* a job by taking a lease
(``locked_until``); a job whose worker died is taken up again when its lease runs out. A job that
raises is retried with exponential backoff; after ``max_attempts`` it goes to the dead-letter
state ("dead"), where the admin sees it and can retry it.

``JobQueue`` is the interface: a distributed engine (Celery, Ray) can implement it later and the
rest of ReadingRoom does not change.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from readingroom.db import Database
from readingroom.schema import Job, utcnow
from readingroom.settings import JobSettings

log = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    attempt: int


class JobQueue(ABC):
    """What the rest of ReadingRoom needs from a job queue."""

    @abstractmethod
    def enqueue(self, kind: str, payload: dict[str, Any], *, dedupe_key: str | None = None,
                session: Session | None = None) -> int:
        """Queue a job; with ``dedupe_key``, a job with that key still waiting is reused."""

    @abstractmethod
    def claim(self, worker_id: str, kinds: Iterable[str]) -> ClaimedJob | None:
        """Take the next due job of one of ``kinds``, or None."""

    @abstractmethod
    def complete(self, job_id: int, worker_id: str) -> None: ...

    @abstractmethod
    def fail(self, job_id: int, worker_id: str, error: str) -> None:
        """Retry later with backoff, or move to the dead-letter state when out of attempts."""

    @abstractmethod
    def retry_dead(self, job_id: int) -> bool:
        """Put a dead job back in the queue with fresh attempts (admin action)."""


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before try ``attempt + 1``: base * 2^(attempt-1), capped."""
    return min(max_s, base_s * (2 ** max(0, attempt - 1)))


class DatabaseJobQueue(JobQueue):
    """The embedded default: jobs are rows in the ``jobs`` table (SQLite or PostgreSQL)."""

    def __init__(self, db: Database, settings: JobSettings) -> None:
        self.db = db
        self.settings = settings

    def enqueue(self, kind: str, payload: dict[str, Any], *, dedupe_key: str | None = None,
                session: Session | None = None) -> int:
        if session is None:
            with self.db.session() as own:
                return self.enqueue(kind, payload, dedupe_key=dedupe_key, session=own)
        if dedupe_key is not None:
            waiting = session.scalar(
                select(Job).where(Job.dedupe_key == dedupe_key, Job.status == "queued", Job.attempts == 0)
            )
            if waiting is not None:
                waiting.payload = payload
                waiting.run_after = utcnow()
                log.debug("job %s (%s) already queued; reused", waiting.id, dedupe_key)
                return waiting.id
        job = Job(kind=kind, payload=payload, dedupe_key=dedupe_key, status="queued",
                  max_attempts=self.settings.max_attempts, run_after=utcnow())
        session.add(job)
        session.flush()
        log.info("queued job %s: %s %s", job.id, kind, payload)
        return job.id

    def claim(self, worker_id: str, kinds: Iterable[str]) -> ClaimedJob | None:
        kinds = list(kinds)
        now = utcnow()
        with self.db.session() as session:
            due = or_(
                (Job.status == "queued") & (Job.run_after <= now),
                # A running job whose worker stopped renewing its lease: the worker died.
                (Job.status == "running") & (Job.locked_until < now),
            )
            job = session.scalar(
                select(Job).where(due, Job.kind.in_(kinds)).order_by(Job.run_after, Job.id).limit(1)
            )
            if job is None:
                return None
            if job.status == "running":
                log.warning("job %s (%s): worker %s stopped without finishing; taking it up again",
                            job.id, job.kind, job.locked_by)
                if job.attempts >= job.max_attempts:
                    self._bury(session, job, job.last_error or "worker died on the last attempt")
                    return None
            # Optimistic lock: the row changes only if nobody claimed it in between.
            claimed = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts)
                .values(status="running", attempts=job.attempts + 1, locked_by=worker_id,
                        locked_until=now + timedelta(seconds=self.settings.lease_s))
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
            if claimed != 1:
                return None
            return ClaimedJob(job.id, job.kind, dict(job.payload or {}), job.attempts + 1)

    def complete(self, job_id: int, worker_id: str) -> None:
        with self.db.session() as session:
            session.execute(
                update(Job).where(Job.id == job_id, Job.locked_by == worker_id)
                .values(status="done", finished_at=utcnow(), locked_until=None, last_error=None)
            )

    def fail(self, job_id: int, worker_id: str, error: str) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.locked_by != worker_id:
                return
            if job.attempts >= job.max_attempts:
                self._bury(session, job, error)
                return
            delay = backoff_s(job.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s)
            job.status = "queued"
            job.run_after = utcnow() + timedelta(seconds=delay)
            job.locked_until = None
            job.last_error = error
            log.warning("job %s (%s) failed on attempt %d/%d, retrying in %.0f s: %s",
                        job.id, job.kind, job.attempts, job.max_attempts, delay, error.splitlines()[-1])

    @staticmethod
    def _bury(session: Session, job: Job, error: str) -> None:
        job.status = "dead"
        job.last_error = error
        job.locked_until = None
        job.finished_at = utcnow()
        log.error("job %s (%s) is dead after %d attempts; see `readingroom jobs list --status dead`: %s",
                  job.id, job.kind, job.attempts, error.splitlines()[-1] if error else "")

    def retry_dead(self, job_id: int) -> bool:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.status != "dead":
                return False
            job.status, job.attempts, job.run_after, job.finished_at = "queued", 0, utcnow(), None
            return True

    def list(self, status: str | None = None, limit: int = 100) -> list[Job]:
        with self.db.session() as session:
            query = select(Job).order_by(Job.id.desc()).limit(limit)
            if status:
                query = query.where(Job.status == status)
            return list(session.scalars(query))


class WorkerPool:
    """Threads that claim jobs and run the handler registered for their kind."""

    def __init__(self, queue: JobQueue, settings: JobSettings, handlers: dict[str, Handler] | None = None) -> None:
        self.queue = queue
        self.settings = settings
        self.handlers: dict[str, Handler] = dict(handlers or {})
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    def register(self, kind: str, handler: Handler) -> None:
        self.handlers[kind] = handler

    def wake(self) -> None:
        """Tell idle workers that a job was just queued (saves a poll interval)."""
        self._wake.set()

    def start(self) -> None:
        base = f"{socket.gethostname()}:{os.getpid()}"
        for n in range(self.settings.workers):
            thread = threading.Thread(target=self._loop, args=(f"{base}:{n}",), name=f"worker-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("started %d job worker(s) for %s", self.settings.workers, ", ".join(sorted(self.handlers)))

    def stop(self, timeout_s: float = 10) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads.clear()

    def run_once(self, worker_id: str = "inline") -> bool:
        """Claim and run one job; False when none was due. (Tests and the CLI use it.)"""
        job = self.queue.claim(worker_id, self.handlers)
        if job is None:
            return False
        handler = self.handlers[job.kind]
        try:
            handler(job.payload)
        except Exception:  # noqa: BLE001 - a job's failure must never stop the worker
            self.queue.fail(job.id, worker_id, traceback.format_exc(limit=5))
        else:
            self.queue.complete(job.id, worker_id)
            log.info("job %s (%s) done", job.id, job.kind)
        return True

    def _loop(self, worker_id: str) -> None:
        while not self._stop.is_set():
            try:
                worked = self.run_once(worker_id)
            except Exception:  # e.g. the database is briefly locked
                log.exception("worker %s could not reach the job queue; retrying", worker_id)
                worked = False
            if not worked:
                self._wake.wait(self.settings.poll_interval_s)
                self._wake.clear()
