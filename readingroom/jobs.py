"""A durable job queue in the database, and an in-process worker pool.

A job is a row: it survives a crash and a restart. A worker *claims* a job by taking a lease
(``locked_until``); a job whose worker died is taken up again when its lease runs out. A job that
raises is retried with exponential backoff; after ``max_attempts`` it goes to the dead-letter
state ("dead"), where the admin sees it and can retry it.

``JobQueue`` is the interface, with two engines (``jobs.engine``, docs/jobs.md): this one, where
workers poll the table, and ``readingroom.celery_queue``, where Celery on Redis carries the job ids
to workers on other machines and the table stays the record. ``open_queue`` picks the engine.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import traceback
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable

from sqlalchemy import or_, select, text, update
from sqlalchemy.orm import Session

from readingroom.db import Database
from readingroom.errors import ConfigError
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


@dataclass(frozen=True)
class Claim:
    """What ``claim_id`` found: a job to run, or why not (and, with ``later_s``, when to look again)."""
    job: ClaimedJob | None = None
    why: str = ""
    later_s: float | None = None
    kind: str = ""


# The Celery queues, one per kind of work; jobs.queues maps each job kind to one of them.
STANDARD_QUEUES = ("triage", "asr", "delivery")


def select_queues(settings: JobSettings, names: Iterable[str] | None = None) -> list[str]:
    """The queues a worker serves: ``names`` (checked), or every queue that jobs.queues names."""
    mapped = sorted(set(settings.queues.values()))
    if names is None:
        return mapped
    chosen = [name.strip() for name in names if name.strip()]
    known = set(mapped) | set(STANDARD_QUEUES)
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise ConfigError(f"unknown queue(s) {', '.join(unknown) or '(none given)'}: the queues are "
                          f"{', '.join(sorted(known))} (jobs.queues maps each job kind to one)")
    return list(dict.fromkeys(chosen))


def kinds_for_queues(settings: JobSettings, kinds: Iterable[str], queues: Iterable[str]) -> list[str]:
    """The job kinds among ``kinds`` whose queue (jobs.queues) is one of ``queues``."""
    wanted = set(queues)
    return [kind for kind in kinds if settings.queues.get(kind) in wanted]


def open_queue(db: Database, settings: JobSettings) -> "DatabaseJobQueue":
    """The job queue of the configured engine (jobs.engine): the database, or Celery on Redis."""
    if settings.engine == "database":
        return DatabaseJobQueue(db, settings)
    try:
        from readingroom.celery_queue import CeleryJobQueue
    except ImportError as exc:
        raise ConfigError(f"jobs.engine is celery, but Celery cannot be imported ({exc}): install it with "
                          "`make install` (pip install -e '.[celery]'), or set jobs.engine: database") from None
    return CeleryJobQueue(db, settings)


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
            if session.get_bind().dialect.name == "postgresql":   # one enqueuer per key at a time
                session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": dedupe_key})
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
            return self._take(session, job, worker_id, now)

    def claim_id(self, job_id: int, worker_id: str, kinds: Iterable[str] | None = None) -> Claim:
        """Claim one job by its id (a message that carries only the id), as ``claim`` would:
        nothing to do when it is done, dead or unknown; ``later_s`` when it is not due yet or runs
        under another worker's live lease (look again then: that worker may die)."""
        now = utcnow()
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return Claim(why="no such job in the jobs table")
            if kinds is not None and job.kind not in set(kinds):
                return Claim(why=f"this worker has no handler for {job.kind!r} jobs")
            if job.status not in ("queued", "running"):
                return Claim(why=f"already {job.status}")
            if job.status == "queued" and job.run_after > now:
                return Claim(why="not due yet", later_s=(job.run_after - now).total_seconds(), kind=job.kind)
            if job.status == "running" and job.locked_until is not None and job.locked_until >= now:
                return Claim(why=f"running under the lease of {job.locked_by}",
                             later_s=(job.locked_until - now).total_seconds() + 0.5, kind=job.kind)
            claimed = self._take(session, job, worker_id, now)
            return Claim(job=claimed, kind=job.kind) if claimed else Claim(why="taken by another worker, or dead")

    def _take(self, session: Session, job: Job, worker_id: str, now: datetime) -> ClaimedJob | None:
        """Lease a due job (queued, or running under an expired lease) to ``worker_id``."""
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


def run_job(queue: JobQueue, handler: Handler, job: ClaimedJob, worker_id: str) -> bool:
    """Run a claimed job's handler and record the outcome: done, or failed (retry or dead)."""
    try:
        handler(job.payload)
    except Exception:  # noqa: BLE001 - a job's failure must never stop the worker
        queue.fail(job.id, worker_id, traceback.format_exc(limit=5))
        return False
    queue.complete(job.id, worker_id)
    log.info("job %s (%s) done", job.id, job.kind)
    return True


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
        run_job(self.queue, self.handlers[job.kind], job, worker_id)
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
