"""Nothing acknowledged is lost: kill -9 the listener in the middle of a send, then restart."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
from pydicom import dcmread
from sqlalchemy import select

from readingroom import dicom_net as scu
from readingroom.db import Database
from readingroom.schema import Instance, Job, Study
from readingroom.settings import load_settings
from tests.conftest import free_port
from tests.integration.helpers import readingroom, start, stop, wait_for_echo
from models.phantoms import ct_series, head_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_kill_9_mid_send_loses_no_acknowledged_instance_and_the_study_is_triaged(tmp_path):
    home, port = tmp_path / "home", free_port()
    series = ct_series(head_phantom(150, size=256, seed=3), key="kill9")
    acked: list[str] = []
    listener = start("receive", "--port", str(port), home=home, log=tmp_path / "listener1.log")
    try:
        wait_for_echo(port, listener)

        def on_status(index: int, status: int) -> None:
            if status == 0:
                acked.append(series[index].SOPInstanceUID)

        sender = threading.Thread(target=lambda: scu.send(series, "127.0.0.1", port, calling_ae="TEST_SCU",
                                                          on_status=on_status), daemon=True)
        sender.start()
        deadline = time.monotonic() + 60
        while len(acked) < 40 and time.monotonic() < deadline:
            time.sleep(0.005)
        os.kill(listener.pid, signal.SIGKILL)          # no chance to clean up
        listener.wait(10)
        sender.join(30)
    finally:
        stop(listener)
    assert 40 <= len(acked) < len(series), "the kill must land in the middle of the send"

    # Restart: the listener cleans half-written temporary files and serves again.
    listener = start("receive", "--port", str(port), home=home, log=tmp_path / "listener2.log")
    try:
        wait_for_echo(port, listener)
        settings = load_settings(environ={}, overrides={"home": str(home)})
        db = Database(settings)
        with db.reader() as s:
            rows = {i.sop_uid: i.path for i in s.scalars(select(Instance))}
        missing = [uid for uid in acked if uid not in rows]
        assert not missing, f"{len(missing)} acknowledged instances lost"
        for uid in acked:
            assert dcmread(home / rows[uid]).SOPInstanceUID == uid   # whole, readable files
        assert not list((home / "dicom").rglob("*.tmp"))
        # The restarted listener completes the study left open by the crash and queues its triage.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with db.reader() as s:
                if s.scalar(select(Job).where(Job.kind == "triage_study")) is not None:
                    break
            time.sleep(0.1)
        else:
            pytest.fail("no triage job was queued after the restart")
    finally:
        stop(listener)

    # A worker started later runs the queued job.
    run = readingroom("worker", "--once", home=home)
    assert run.returncode == 0, run.stderr
    assert "ran 1 job" in run.stdout
    with db.reader() as s:
        study = s.scalar(select(Study))
        assert study.ai_status == "done" and study.triaged_at is not None     # the shipped ICH model ran
        assert s.scalar(select(Job)).status == "done"
    db.dispose()


def test_a_job_whose_worker_died_is_run_by_the_next_worker(tmp_path):
    """Import queues triage; a worker claims the job and dies; the next worker runs it."""
    from readingroom.jobs import DatabaseJobQueue

    home = tmp_path / "home"
    series = ct_series(head_phantom(3, size=64), key="job-restart")
    folder = tmp_path / "in"
    folder.mkdir()
    for ds in series:
        ds.save_as(folder / f"{ds.InstanceNumber}.dcm", enforce_file_format=True)
    assert readingroom("import", str(folder), "--quiet", home=home).returncode == 0
    jobs = json.loads(readingroom("jobs", "list", "--json", home=home).stdout)
    assert [(j["kind"], j["status"]) for j in jobs] == [("triage_study", "queued")]

    # A worker claims the job with a short lease, then vanishes without a word. (The lease is
    # long enough for the next worker process to start while it holds: ~1.5 s on a busy CPU.)
    lease_s = 8
    settings = load_settings(environ={}, overrides={"home": str(home), "jobs": {"lease_s": lease_s}})
    db = Database(settings)
    claimed_at = time.monotonic()
    assert DatabaseJobQueue(db, settings.jobs).claim("doomed-worker", ["triage_study"]) is not None
    db.dispose()
    assert "ran 0 job" in readingroom("worker", "--once", home=home).stdout     # still leased
    assert time.monotonic() - claimed_at < lease_s, "the check above ran after the lease ended"
    time.sleep(max(0.0, claimed_at + lease_s + 0.3 - time.monotonic()))
    assert "ran 1 job" in readingroom("worker", "--once", home=home).stdout
    jobs = json.loads(readingroom("jobs", "list", "--json", home=home).stdout)
    assert (jobs[0]["status"], jobs[0]["attempts"]) == ("done", 2)
    worklist = json.loads(readingroom("worklist", "--json", home=home).stdout)
    assert worklist[0]["ai_status"] == "done"
