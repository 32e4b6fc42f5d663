"""The Celery engine (jobs.engine: celery): jobs on a real Redis broker, run by real worker processes,
recorded in the jobs table exactly as the database engine records them.

A throwaway ``redis-server`` per session (tests/redis_server.py), a SQLite database in the test's
folder that the workers open too, workers started as processes: ``readingroom worker --queues
triage`` with the real triage handler (``models.enabled: false``, so a job takes a moment), and,
for the redelivery tests, a worker that runs a test handler which sleeps and writes down each run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from readingroom.db import Database, sync_sites
from readingroom.errors import ConfigError
from readingroom.jobs import DatabaseJobQueue, kinds_for_queues, open_queue, select_queues
from readingroom.schema import Job, Study
from readingroom.settings import PROJECT_ROOT, load_settings
from tests.conftest import TEST_SITES, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SLEEP_JOB = "test_sleep"   # the test handler's job kind, on the triage queue
# A worker that serves the triage queue with the test handler: it writes "start N" and "end N" to
# the file in argv[1], and sleeps payload["sleep_s"] on the first run of job N only.
SLEEP_WORKER = """
import sys, time
from pathlib import Path
from readingroom.celery_queue import run_worker
from readingroom.cli import Context
from readingroom.jobs import open_queue

runs = Path(sys.argv[1])

def sleeper(payload):
    n = payload["n"]
    first = f"start {n}\\n" not in (runs.read_text() if runs.exists() else "")
    with runs.open("a") as f:
        f.write(f"start {n}\\n")
    time.sleep(payload.get("sleep_s", 0) if first else 0)
    with runs.open("a") as f:
        f.write(f"end {n}\\n")

ctx = Context()
sys.exit(run_worker(open_queue(ctx.db, ctx.settings.jobs), {"test_sleep": sleeper}, ["triage"],
                    concurrency=int(sys.argv[2])))
"""
JOBS = {"max_attempts": 3, "backoff_base_s": 0.1, "backoff_max_s": 0.5, "lease_s": 2,
        "queues": {SLEEP_JOB: "triage"}}


@pytest.fixture
def broker(redis_url):
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def celery_db(tmp_path, redis_url, broker):
    """Settings on the Celery engine and their migrated SQLite database (which the workers open too)."""
    settings = make_settings(tmp_path / "home", jobs={"engine": "celery", "broker_url": redis_url, **JOBS})
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    yield settings, db
    db.dispose()


def worker_env(settings, **jobs) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
    env.update({"READINGROOM_HOME": str(settings.home), "READINGROOM_SITES": json.dumps(TEST_SITES),
                "READINGROOM_MODELS__ENABLED": "false", "READINGROOM_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
                "READINGROOM_JOBS__ENGINE": "celery", "READINGROOM_JOBS__BROKER_URL": settings.jobs.broker_url,
                "READINGROOM_JOBS__QUEUES__TEST_SLEEP": "triage"})
    for key, value in {**JOBS, **jobs}.items():
        if key != "queues":
            env[f"READINGROOM_JOBS__{key.upper()}"] = str(value)
    return env


def start_worker(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("ab") as handle:
        return subprocess.Popen([sys.executable, *args], env=env, cwd=PROJECT_ROOT, stdout=handle,
                                stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)     # Celery's warm shutdown
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_for(check, what: str, logs: list[Path], timeout_s: float = 40) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name}:\n{p.read_text(errors='replace')[-3000:]}" for p in logs if p.exists())
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}\n{tails}")
        time.sleep(0.1)


def job_row(db: Database, job_id: int) -> Job:
    with db.reader() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def queued_messages(broker, queue: str) -> int:
    return int(broker.llen(queue))


# --- no worker: settings, queue selection, publishing after the commit ---------------------------------

def test_the_default_engine_is_the_database_and_needs_no_broker(tmp_path):
    settings = make_settings(tmp_path / "home")
    assert settings.jobs.engine == "database"
    db = Database(settings)
    try:
        assert type(open_queue(db, settings.jobs)) is DatabaseJobQueue
    finally:
        db.dispose()


def test_bad_job_settings_say_what_to_do(tmp_path):
    with pytest.raises(ConfigError, match=r"redis://HOST:PORT/DB"):
        load_settings(environ={}, overrides={"home": str(tmp_path), "jobs": {"broker_url": "amqp://x"}})
    with pytest.raises(ConfigError, match="jobs.engine"):
        load_settings(environ={}, overrides={"home": str(tmp_path), "jobs": {"engine": "ray"}})
    jobs = make_settings(tmp_path / "home").jobs
    assert select_queues(jobs) == ["asr", "delivery", "triage"]
    assert select_queues(jobs, ["triage", "asr", "triage"]) == ["triage", "asr"]
    with pytest.raises(ConfigError, match="the queues are asr, delivery, triage"):
        select_queues(jobs, ["gpu"])
    handlers = ["triage_study", "order_hl7_out", "report_delivery", "unmapped"]
    assert kinds_for_queues(jobs, handlers, ["delivery"]) == ["order_hl7_out", "report_delivery"]


def test_a_job_is_published_after_its_transaction_commits_and_not_on_rollback(celery_db, broker):
    settings, db = celery_db
    queue = open_queue(db, settings.jobs)
    with db.session() as session:
        job_id = queue.enqueue("triage_study", {"study_uid": "1.2"}, session=session)
        assert queued_messages(broker, "triage") == 0, "published before the row was committed"
    assert queued_messages(broker, "triage") == 1
    assert job_row(db, job_id).status == "queued"

    with pytest.raises(RuntimeError):
        with db.session() as session:
            queue.enqueue("triage_study", {"study_uid": "1.3"}, session=session)
            raise RuntimeError("the caller's transaction fails")
    assert queued_messages(broker, "triage") == 1, "a rolled-back job was published"

    queue.enqueue("report_delivery", {"outbox_id": 1})           # its own transaction
    assert queued_messages(broker, "delivery") == 1
    with pytest.raises(ConfigError, match="add it to jobs.queues"):
        queue.enqueue("unmapped_kind", {})
    with db.reader() as session:
        assert session.scalars(select(Job.kind).order_by(Job.id)).all() == ["triage_study", "report_delivery"]


# --- real workers ------------------------------------------------------------------------------------

def test_a_celery_worker_runs_the_jobs_once_and_the_table_records_done_and_dead(celery_db, tmp_path):
    """(1) jobs enqueued on the Celery engine are run by `readingroom worker --queues triage` and are
    done once; (4) a job that fails max_attempts times is dead; a job queued by a database-engine
    process (no message) is published by the worker's sweep and done too."""
    settings, db = celery_db
    with db.session() as session:
        session.add_all([Study(study_uid="1.2.840.1"), Study(study_uid="1.2.840.2")])
    queue = open_queue(db, settings.jobs)
    good = queue.enqueue("triage_study", {"study_uid": "1.2.840.1"})
    bad = queue.enqueue("triage_study", {"study_uid": "9.9.9"})            # no such study: it raises
    unpublished = DatabaseJobQueue(db, settings.jobs).enqueue("triage_study", {"study_uid": "1.2.840.2"})
    log = tmp_path / "worker.log"
    worker = start_worker(["-m", "app", "worker", "--queues", "triage"], worker_env(settings), log)
    try:
        finished = lambda: all(job_row(db, j).status in ("done", "dead") for j in (good, bad, unpublished))
        wait_for(finished, "the three jobs to be done or dead", [log])
    finally:
        stop(worker)
    assert worker.returncode == 0, log.read_text()[-3000:]
    for job_id in (good, unpublished):
        job = job_row(db, job_id)
        assert (job.status, job.attempts, job.last_error) == ("done", 1, None)
    dead = job_row(db, bad)
    assert (dead.status, dead.attempts) == ("dead", settings.jobs.max_attempts)
    assert "study 9.9.9 is not in the database" in dead.last_error
    with db.reader() as session:
        assert set(session.scalars(select(Study.ai_status))) == {"unavailable"}   # models are off


def test_a_message_delivered_twice_runs_its_job_once(celery_db, tmp_path):
    """(2) the same job id published twice: the second message finds the job running under the
    first one's lease, looks again when the lease ends, finds it done and runs nothing."""
    settings, db = celery_db
    runs, log = tmp_path / "runs.txt", tmp_path / "worker.log"
    worker = start_worker(["-c", SLEEP_WORKER, str(runs), "2"], worker_env(settings), log)
    try:
        queue = open_queue(db, settings.jobs)
        job_id = queue.enqueue(SLEEP_JOB, {"n": 1, "sleep_s": 1})
        assert queue.publish(job_id, SLEEP_JOB)                             # the duplicate
        wait_for(lambda: f"job {job_id}: nothing to do, already done" in log.read_text(),
                 "the duplicate message to find the job done", [log, runs])
    finally:
        stop(worker)
    assert runs.read_text().splitlines() == ["start 1", "end 1"]
    job = job_row(db, job_id)
    assert (job.status, job.attempts) == ("done", 1)


def test_a_worker_killed_mid_job_its_message_goes_to_another_worker_and_the_job_is_done_once(celery_db, tmp_path):
    """(3) kill -9 during the job: the message was not acknowledged (late ack), so Redis delivers it
    to a second worker once the visibility timeout has passed; the lease has run out, so that worker
    takes the job up (attempt 2) and it is done once. The sweep is off: this is the broker's doing."""
    settings, db = celery_db
    runs = tmp_path / "runs.txt"
    env = worker_env(settings, visibility_timeout_s=3, sweep_interval_s=0)
    first = start_worker(["-c", SLEEP_WORKER, str(runs), "1"], env, tmp_path / "first.log")
    second = None
    logs = [tmp_path / "first.log", tmp_path / "second.log", runs]
    try:
        job_id = open_queue(db, settings.jobs).enqueue(SLEEP_JOB, {"n": 7, "sleep_s": 60})
        wait_for(lambda: runs.exists() and "start 7" in runs.read_text(), "the first worker to start the job", logs)
        second = start_worker(["-c", SLEEP_WORKER, str(runs), "1"], env, tmp_path / "second.log")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        assert job_row(db, job_id).status == "running"
        wait_for(lambda: job_row(db, job_id).status == "done", "the second worker to finish the job", logs)
    finally:
        stop(first)
        if second is not None:
            stop(second)
    assert runs.read_text().splitlines() == ["start 7", "start 7", "end 7"]
    job = job_row(db, job_id)
    assert (job.status, job.attempts) == ("done", 2)
    assert f"job {job_id} (test_sleep): attempt 2" in (tmp_path / "second.log").read_text()
