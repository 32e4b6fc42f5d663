"""Jobs on Celery with Redis as the broker (``jobs.engine: celery``); the jobs table stays the record.

Every job is still a row in ``jobs`` (status, tries, last error, dead letters), written as the
database engine writes it. Celery only carries the job's id, on the queue of its kind of work
(``jobs.queues``: triage, asr, delivery), to the workers that serve that queue
(``readingroom worker --queues triage``), which may run on other machines:

- ``enqueue`` writes the row, then publishes the id once the row is committed (with the caller's
  session: when that session's transaction commits; a rollback publishes nothing);
- the task claims the row by id under a lease, runs the handler registered for its kind and
  records done, retry (published again with the backoff as its countdown) or dead in the row;
- a message for a job that is done, dead, not due or running under another worker's live lease
  runs nothing, so a message delivered twice runs its job once; for a live lease it looks again
  when the lease ends, in case that worker died;
- acknowledgement is late (after the job), and a worker takes one message at a time: a worker
  killed mid-job leaves its message unacknowledged, and Redis gives it to another worker after
  ``jobs.visibility_timeout_s``;
- each worker sweeps the table every ``jobs.sweep_interval_s`` and publishes the due jobs that no
  message carries (queued by a process on the database engine, put back by ``jobs retry``, lost
  with a Redis restart, or held by a worker that died).

A queued row's ``locked_until`` is, on this engine, when the sweep may publish it again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from datetime import timedelta
from typing import Any, Iterable, Mapping

from celery import Celery
from celery.concurrency import get_implementation
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy import event, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction

from readingroom.db import Database
from readingroom.errors import ConfigError, ReadingRoomError
from readingroom.jobs import DatabaseJobQueue, Handler, kinds_for_queues, run_job
from readingroom.schema import Job, utcnow
from readingroom.settings import JobSettings

log = logging.getLogger(__name__)

TASK_NAME = "readingroom.run_job"
_PENDING = "readingroom.celery.pending"    # session.info: (queue, job id, kind) to publish on commit
SWEEP_BATCH = 500


def celery_app(settings: JobSettings) -> Celery:
    """A Celery app on the broker of ``settings``: late acknowledgement, one message at a time."""
    app = Celery("readingroom", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,                  # acknowledged after the job: a dead worker's job is redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,         # a worker holds no more messages than it runs
        task_ignore_result=True,              # the jobs table is the result
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            # Look for messages of dead workers a few times per visibility timeout (at most every 10 s).
            "unacked_restore_interval": max(1.0, min(10.0, settings.visibility_timeout_s / 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_publish_retry_policy={"max_retries": 3, "interval_start": 0, "interval_step": 0.5,
                                   "interval_max": 1},
        worker_cancel_long_running_tasks_on_connection_loss=False,   # the job finishes and records itself
        worker_hijack_root_logger=False,      # the CLI configured logging
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app


class CeleryJobQueue(DatabaseJobQueue):
    """The database queue whose jobs are carried to the workers by Celery on Redis."""

    def __init__(self, db: Database, settings: JobSettings, app: Celery | None = None) -> None:
        super().__init__(db, settings)
        self.app = app or celery_app(settings)
        self.broker = maybe_sanitize_url(settings.broker_url)

    def queue_for(self, kind: str) -> str:
        queue = self.settings.queues.get(kind)
        if not queue:
            raise ConfigError(f"job kind {kind!r} has no Celery queue: add it to jobs.queues in the settings "
                              f"(e.g. {kind}: triage); the queues now are "
                              f"{', '.join(sorted(set(self.settings.queues.values()))) or 'none'}")
        return queue

    def enqueue(self, kind: str, payload: dict[str, Any], *, dedupe_key: str | None = None,
                session: Session | None = None) -> int:
        self.queue_for(kind)                  # a kind without a queue fails before its row is written
        if session is None:
            with self.db.session() as own:
                job_id = self._write(kind, payload, dedupe_key, own)
            self.publish(job_id, kind)
            return job_id
        job_id = self._write(kind, payload, dedupe_key, session)
        _publish_on_commit(session, self, job_id, kind)
        return job_id

    def _write(self, kind: str, payload: dict[str, Any], dedupe_key: str | None, session: Session) -> int:
        job_id = super().enqueue(kind, payload, dedupe_key=dedupe_key, session=session)
        job = session.get(Job, job_id)
        if job is not None:                   # published now: the sweep leaves it to the broker
            job.locked_until = utcnow() + timedelta(seconds=self.settings.visibility_timeout_s)
        return job_id

    def publish(self, job_id: int, kind: str, countdown: float | None = None) -> bool:
        """Send the job's id to its queue; False (logged) when the broker cannot be reached: the
        row stays queued and a worker's sweep publishes it later."""
        try:
            queue = self.queue_for(kind)
            self.app.send_task(TASK_NAME, args=[job_id], queue=queue, routing_key=queue,
                               countdown=countdown if countdown and countdown > 0 else None)
        except Exception as exc:  # noqa: BLE001 - the row is the record; publishing again is the sweep's
            log.error("job %s (%s) is queued in the database but could not be sent to the broker %s: %s. "
                      "A Celery worker's sweep sends it once the broker is back (jobs.sweep_interval_s); "
                      "check that Redis runs there (jobs.broker_url)", job_id, kind, self.broker, exc)
            return False
        log.debug("job %s (%s) published to queue %s", job_id, kind, queue)
        return True

    def fail(self, job_id: int, worker_id: str, error: str) -> None:
        super().fail(job_id, worker_id, error)
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.status != "queued" or job.locked_by != worker_id:
                return                        # dead, or no longer ours
            delay = max(0.0, (job.run_after - utcnow()).total_seconds())
            job.locked_until = job.run_after + timedelta(seconds=self.settings.visibility_timeout_s)
            kind = job.kind
        self.publish(job_id, kind, countdown=delay)

    def retry_dead(self, job_id: int) -> bool:
        if not super().retry_dead(job_id):
            return False
        with self.db.reader() as session:
            kind = session.scalar(select(Job.kind).where(Job.id == job_id))
        if kind:
            self.publish(job_id, kind)
        return True

    def sweep(self, kinds: Iterable[str]) -> int:
        """Publish the due jobs of ``kinds`` that no message carries: queued ones whose mark ran
        out, and running ones whose worker died (put back in the queue, or dead when out of tries)."""
        kinds = list(kinds)
        now = utcnow()
        hold = now + timedelta(seconds=self.settings.visibility_timeout_s)
        due = []
        with self.db.session() as session:
            rows = session.scalars(
                select(Job).where(Job.kind.in_(kinds), or_(
                    (Job.status == "queued") & (Job.run_after <= now)
                    & (Job.locked_until.is_(None) | (Job.locked_until < now)),
                    (Job.status == "running") & (Job.locked_until < now),
                )).order_by(Job.run_after, Job.id).limit(SWEEP_BATCH)
            ).all()
            for job in rows:
                if job.status == "running" and job.attempts >= job.max_attempts:
                    self._bury(session, job, job.last_error or "worker died on the last attempt")
                    continue
                if job.status == "running":
                    log.warning("job %s (%s): worker %s stopped without finishing; queueing it again",
                                job.id, job.kind, job.locked_by)
                mark = Job.locked_until.is_(None) if job.locked_until is None else Job.locked_until == job.locked_until
                changed = session.execute(
                    update(Job).where(Job.id == job.id, Job.status == job.status, Job.attempts == job.attempts, mark)
                    .values(status="queued", run_after=min(job.run_after, now), locked_until=hold,
                            **({"locked_by": None} if job.status == "running" else {}))
                    .execution_options(synchronize_session=False)
                ).rowcount  # type: ignore[attr-defined]  # an UPDATE's CursorResult
                if changed == 1:
                    due.append((job.id, job.kind))
        for job_id, kind in due:
            self.publish(job_id, kind)
        if due:
            log.info("sweep: published %d job(s) that no message carried", len(due))
        return len(due)

    def check_broker(self, timeout_s: float = 5) -> None:
        """ReadingRoomError, saying what to do, when the broker cannot be reached."""
        try:
            with self.app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=3, interval_start=0, interval_step=0.5,
                                             timeout=timeout_s)
        except Exception as exc:  # noqa: BLE001 - any failure to connect is reported the same way
            raise ReadingRoomError(f"cannot reach the Redis broker at {self.broker} ({exc}): start Redis there "
                                   "(e.g. `redis-server --port 6379`), fix jobs.broker_url, or set "
                                   "jobs.engine: database") from None


def _publish_on_commit(session: Session, queue: CeleryJobQueue, job_id: int, kind: str) -> None:
    """Publish when the session's transaction commits; forget it when the transaction rolls back."""
    if not event.contains(session, "after_commit", _after_commit):
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_transaction_end", _after_transaction_end)
    session.info.setdefault(_PENDING, []).append((queue, job_id, kind))


def _after_commit(session: Session) -> None:
    for queue, job_id, kind in session.info.pop(_PENDING, []):
        queue.publish(job_id, kind)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:            # the outer transaction ended without a commit: nothing to send
        session.info.pop(_PENDING, None)


class TaskRunner:
    """The body of the Celery task: claim the job by id, run its handler, record the outcome."""

    def __init__(self, queue: CeleryJobQueue, handlers: Mapping[str, Handler]) -> None:
        self.queue = queue
        self.handlers = dict(handlers)
        self.node = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, job_id: int) -> str:
        worker_id = f"{self.node}:{threading.current_thread().name}"
        claim = self.queue.claim_id(job_id, worker_id, self.handlers)
        if claim.job is None:
            if claim.later_s is not None:
                log.info("job %s: %s; looking again in %.1f s", job_id, claim.why, claim.later_s)
                self.queue.publish(job_id, claim.kind, countdown=claim.later_s)
                return "later"
            log.info("job %s: nothing to do, %s", job_id, claim.why)
            return "nothing"
        log.info("job %s (%s): attempt %d by %s", job_id, claim.job.kind, claim.job.attempt, worker_id)
        return "done" if run_job(self.queue, self.handlers[claim.job.kind], claim.job, worker_id) else "failed"


def register_task(app: Celery, runner: TaskRunner) -> Any:
    """The ``readingroom.run_job`` task on ``app``, run by ``runner``; a database error is retried."""

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job_task(task: Any, job_id: int) -> str:
        try:
            return runner(int(job_id))
        except SQLAlchemyError as exc:
            log.warning("job %s: the database could not be reached (%s); trying again in 5 s", job_id, exc)
            raise task.retry(exc=exc, countdown=5, max_retries=None) from None

    return run_job_task


def _sweep_loop(queue: CeleryJobQueue, kinds: list[str], interval_s: float, stop: threading.Event) -> None:
    while True:
        try:
            queue.sweep(kinds)
        except Exception:  # e.g. the database is briefly locked: sweep again later (logged)
            log.exception("sweep of the jobs table failed; trying again in %.0f s", interval_s)
        if stop.wait(interval_s):
            return


def run_worker(queue: CeleryJobQueue, handlers: Mapping[str, Handler], queues: list[str],
               concurrency: int | None = None, loglevel: str = "INFO") -> int:
    """Run a Celery worker in this process on ``queues`` until it is stopped (Ctrl-C, SIGTERM).

    It runs the jobs whose kind has a handler here and a queue among ``queues``, ``concurrency``
    at a time (threads; default jobs.workers), and sweeps the table for jobs no message carries."""
    settings = queue.settings
    kinds = kinds_for_queues(settings, handlers, queues)
    if not kinds:
        raise ConfigError(f"no job kind goes to the queue(s) {', '.join(queues)}: jobs.queues maps "
                          f"{', '.join(f'{k}: {q}' for k, q in settings.queues.items()) or 'nothing'}")
    queue.check_broker()
    register_task(queue.app, TaskRunner(queue, {kind: handlers[kind] for kind in kinds}))
    stop = threading.Event()
    sweeper = None
    if settings.sweep_interval_s > 0:
        sweeper = threading.Thread(target=_sweep_loop, args=(queue, kinds, settings.sweep_interval_s, stop),
                                   name="job-sweep", daemon=True)
        sweeper.start()
    threads = concurrency or max(1, settings.workers)
    log.info("Celery worker on %s, queues %s (jobs %s), %d at a time", queue.broker, ", ".join(queues),
             ", ".join(kinds), threads)
    worker = queue.app.Worker(
        queues=queues, pool_cls=get_implementation("threads"), concurrency=threads, loglevel=loglevel,
        hostname=f"readingroom-{os.getpid()}@{socket.gethostname()}",
        without_mingle=True, without_gossip=True, without_heartbeat=True, quiet=True,
    )
    try:
        worker.start()
    finally:
        stop.set()
        if sweeper is not None:
            sweeper.join(5)
    return int(worker.exitcode or 0)
