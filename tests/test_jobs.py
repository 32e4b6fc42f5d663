import threading
import time
from datetime import timedelta

from sqlalchemy import update

from readingroom.jobs import WorkerPool, backoff_s
from readingroom.schema import Job, utcnow


def test_backoff_doubles_and_is_capped():
    assert [backoff_s(n, 2, 10) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_a_job_runs_once_and_is_done(queue, settings):
    seen = []
    pool = WorkerPool(queue, settings.jobs, {"echo": lambda p: seen.append(p["n"])})
    job_id = queue.enqueue("echo", {"n": 1})
    assert pool.run_once() is True
    assert pool.run_once() is False
    assert seen == [1]
    assert queue.list()[0].status == "done" and queue.list()[0].id == job_id


def test_failures_retry_with_backoff_then_go_to_dead_letter(queue, settings, db):
    calls = []

    def flaky(payload):
        calls.append(time.monotonic())
        raise RuntimeError("model server unreachable")

    pool = WorkerPool(queue, settings.jobs, {"flaky": flaky})
    queue.enqueue("flaky", {})
    assert pool.run_once()
    job = queue.list()[0]
    assert job.status == "queued" and job.attempts == 1 and "model server unreachable" in job.last_error
    assert job.run_after > utcnow()            # not due before its backoff
    assert pool.run_once() is False
    deadline = time.monotonic() + 10
    while len(calls) < settings.jobs.max_attempts and time.monotonic() < deadline:
        pool.run_once()
        time.sleep(0.02)
    job = queue.list()[0]
    assert job.status == "dead" and job.attempts == settings.jobs.max_attempts
    assert len(calls) == settings.jobs.max_attempts
    assert [j.id for j in queue.list(status="dead")] == [job.id]
    assert queue.retry_dead(job.id) and queue.list()[0].status == "queued"
    assert queue.retry_dead(job.id) is False   # only dead jobs


def test_a_job_of_a_dead_worker_is_taken_up_after_its_lease(queue, settings, db):
    queue.enqueue("work", {})
    assert queue.claim("worker-that-dies", ["work"]) is not None
    assert queue.claim("other", ["work"]) is None            # leased
    with db.session() as s:                                  # the lease runs out
        s.execute(update(Job).values(locked_until=utcnow() - timedelta(seconds=1)))
    again = queue.claim("other", ["work"])
    assert again is not None and again.attempt == 2


def test_dedupe_reuses_a_waiting_job(queue):
    first = queue.enqueue("triage_study", {"study_uid": "1.2"}, dedupe_key="t:1.2")
    assert queue.enqueue("triage_study", {"study_uid": "1.2"}, dedupe_key="t:1.2") == first
    queue.claim("w", ["triage_study"])
    assert queue.enqueue("triage_study", {"study_uid": "1.2"}, dedupe_key="t:1.2") != first


def test_concurrent_workers_never_run_a_job_twice(queue, settings):
    n_jobs = 40
    for n in range(n_jobs):
        queue.enqueue("count", {"n": n})
    ran, lock = [], threading.Lock()

    def handler(payload):
        with lock:
            ran.append(payload["n"])

    pool = WorkerPool(queue, settings.jobs.model_copy(update={"workers": 4}), {"count": handler})
    pool.start()
    deadline = time.monotonic() + 20
    while len(queue.list(status="done", limit=1000)) < n_jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    pool.stop()
    assert sorted(ran) == list(range(n_jobs))
