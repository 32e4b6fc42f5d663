"""Scale-out: two listeners and two workers, each its own process, over one PostgreSQL database and
one storage root (issue 21).

The end-to-end test sends 40 small head CTs, each study's instances split across both listeners
from two threads at once (after a one-image primer study per listener, so that both associations
are up before the first split study), kills one worker with SIGKILL while it holds a triage job,
and then checks what an operator would: every acknowledged instance has its row and its file,
every study was completed once (after its quiet period, counted from its last instance at either
listener) and triaged, and each triage job is one row, done.

Three short tests before it make the races of study completion certain on PostgreSQL, the way
tests/test_postgres.py does (another transaction holds the study's row lock until every racer is
blocked on it): two listeners' monitors completing one study; a monitor whose read is older than
an instance that another listener has just stored; and two listeners committing a study's
instances out of order (the quiet period runs from the newest).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from pydicom import dcmread
from sqlalchemy import func, select

from readingroom import dicom_net as scu
from readingroom.db import Database
from readingroom.schema import Instance, Job, Series, Study, utcnow
from readingroom.settings import load_settings
from triage.studies import TRIAGE_JOB, complete_due_studies
from models.phantoms import ct_series, head_phantom
from tests.conftest import free_port
from tests.integration.helpers import readingroom, start, stop, wait_for_echo
from tests.postgres import fresh_database
from tests.races import blocked_behind, join_all, run_all
from tests.report_helpers import add_study

pytestmark = [pytest.mark.integration, pytest.mark.slow]

STUDIES = 40
SLICES = 4                 # per study; 64 x 64 pixels: small, so the test measures coordination, not CPU
SIZE = 64
QUIET_S = 3.0              # per site: a study is complete 3 s after its last instance at any listener
LEASE_S = 8                # a dead worker's job is taken up again after this (longer than one triage)
SITE = "Scale Hospital"
CALLING_AE = "SCALE_SCU"


# --- the races, made certain -------------------------------------------------------------------------------
def _open_study(db: Database, received_ago_s: float) -> str:
    """A study still receiving, its last instance ``received_ago_s`` ago."""
    uid = add_study(db, uid="1.2.826.0.1.3680043.8.498.77")
    with db.session() as s:
        study = s.scalar(select(Study).where(Study.study_uid == uid))
        study.status, study.completed_at = "receiving", None
        study.last_received_at = utcnow() - timedelta(seconds=received_ago_s)
    return uid


def test_two_monitors_completing_one_study_at_once_complete_it_once(pg_db, pg_settings, pg_queue):
    """Each listener runs a study monitor; both find the study due at the same moment."""
    uid = _open_study(pg_db, received_ago_s=60)
    results: list[list[str]] = []
    with blocked_behind(pg_db, "SELECT id FROM studies WHERE study_uid = :uid FOR UPDATE", {"uid": uid}, 2):
        threads = run_all(lambda _n: results.append(complete_due_studies(pg_db, pg_queue, pg_settings)), [1, 2])
    join_all(threads)
    assert sorted(results) == [[], [uid]], "both monitors completed the study"
    with pg_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind == TRIAGE_JOB)) == 1
        assert s.scalar(select(Study.status)) == "new"


def test_an_instance_stored_at_another_listener_during_completion_keeps_the_study_open(pg_db, pg_settings,
                                                                                       pg_queue):
    """The monitor reads the study as quiet; before it writes, another listener stores an instance of it
    (the intake's UPDATE of last_received_at, holding the row). The quiet period starts again."""
    uid = _open_study(pg_db, received_ago_s=60)
    arrived = utcnow()
    results: list[list[str]] = []
    touch = ("UPDATE studies SET last_received_at = :now, completed_at = NULL WHERE study_uid = :uid "
             "RETURNING id")
    with blocked_behind(pg_db, touch, {"now": arrived, "uid": uid}, 1, commit=True):
        threads = run_all(lambda _n: results.append(complete_due_studies(pg_db, pg_queue, pg_settings,
                                                                       now=arrived + timedelta(seconds=0.1))), [1])
    join_all(threads)
    assert results == [[]], "the study was completed 0.1 s after an instance arrived"
    with pg_db.reader() as s:
        study = s.scalar(select(Study))
        assert (study.status, study.completed_at, study.last_received_at) == ("receiving", None, arrived)
        assert s.scalar(select(func.count()).select_from(Job)) == 0
    later = arrived + timedelta(seconds=pg_settings.quiet_period_for("Test Hospital") + 0.1)
    assert complete_due_studies(pg_db, pg_queue, pg_settings, now=later) == [uid]


def test_an_instance_committed_late_with_an_older_time_does_not_move_the_quiet_period_back(pg_db, pg_settings,
                                                                                         monkeypatch):
    """Two listeners store a study's instances at once; the one that read the clock first commits last.
    The quiet period still runs from the newest instance."""
    import triage.intake as intake_module
    from triage.intake import Intake

    series = ct_series(head_phantom(2, size=32), key="late-commit", accession="LATECOMMIT")
    newer = utcnow()
    for ds, at in ((series[0], newer), (series[1], newer - timedelta(seconds=1))):
        monkeypatch.setattr(intake_module, "utcnow", lambda at=at: at)
        assert Intake(pg_settings, pg_db).store(ds, calling_ae="TEST_SCU").ok
    with pg_db.reader() as s:
        assert s.scalar(select(Study.last_received_at)) == newer


# --- two listeners, two workers, one database, one storage root ------------------------------------------------
def _studies() -> list[tuple[list, list]]:
    """(instances for listener 1, instances for listener 2) per study: 1 to 3 to the first, the rest to
    the second, so that either listener may create a study's rows first."""
    out = []
    for i in range(STUDIES):
        series = ct_series(head_phantom(SLICES, size=SIZE, seed=i), key=f"scale-out-{i}",
                           patient_id=f"SCALE{i:03d}", accession=f"SCALE{i:03d}")
        k = 1 + i % (SLICES - 1)
        out.append((series[:k], series[k:]))
    return out


def _primer(n: int):
    """A one-image study of its own that a sender sends first: once both senders have it acknowledged,
    both associations are up, and the split studies start at both listeners together."""
    return ct_series(head_phantom(1, size=SIZE, seed=1000 + n), key=f"scale-out-primer-{n}",
                     patient_id=f"PRIMER{n}", accession=f"PRIMER{n}")[0]


def _sender(port: int, primer, parts: list[list], barrier: threading.Barrier, acked: list[str],
            statuses: list[int], errors: list[str]) -> threading.Thread:
    """One association to ``port``: the primer, then every study's part; after the primer and after each
    study's part, wait for the other sender to get there too (a study's instances arrive together, as from
    a PACS pushing on two links)."""
    items = [primer] + [ds for part in parts for ds in part]
    ends = {0}
    count = 1
    for part in parts:
        count += len(part)
        ends.add(count - 1)

    def on_status(index: int, status: int) -> None:
        statuses.append(status)
        if status == 0:
            acked.append(items[index].SOPInstanceUID)
        if index in ends:
            barrier.wait(60)

    def run() -> None:
        try:
            scu.send(items, "127.0.0.1", port, calling_ae=CALLING_AE, on_status=on_status)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            barrier.abort()
            errors.append(f"sender to {port}: {exc!r}")

    return threading.Thread(target=run, name=f"sender-{port}", daemon=True)


def _jobs(db: Database) -> list[Job]:
    with db.reader() as s:
        return list(s.scalars(select(Job)))


def _running_job_of(db: Database, worker_prefix: str) -> dict[int, int]:
    """job id -> attempts, of the jobs the worker holds."""
    return {j.id: j.attempts for j in _jobs(db)
            if j.status == "running" and (j.locked_by or "").startswith(worker_prefix)}


def _stop_while_holding_a_job(db: Database, worker, prefix: str, deadline: float) -> dict[int, int]:
    """SIGSTOP the worker at a moment it holds a running job (else let it go on and try again); returns
    the jobs it holds, frozen (id -> attempts)."""
    while time.monotonic() < deadline:
        os.kill(worker.pid, signal.SIGSTOP)
        held = _running_job_of(db, prefix)
        if held:
            return held
        os.kill(worker.pid, signal.SIGCONT)
        time.sleep(0.05)
    pytest.fail("the worker never held a job when stopped")


def _wait_for(predicate, deadline: float, what: str) -> None:
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_two_listeners_and_two_workers_over_one_postgres_lose_nothing_and_triage_each_study_once(
        postgres_url, tmp_path):
    t0 = time.monotonic()
    studies = _studies()
    primers = [_primer(1), _primer(2)]
    home = tmp_path / "home"
    with fresh_database(postgres_url, prefix="scale") as url:
        env = {"READINGROOM_DATABASE__URL": url,
               "READINGROOM_SITES": json.dumps([{"name": SITE, "ae_titles": [CALLING_AE, "TEST_SCU"],
                                                 "quiet_period_s": QUIET_S}]),
               "READINGROOM_INTAKE__RESCAN_INTERVAL_S": "0.5",
               "READINGROOM_JOBS__LEASE_S": str(LEASE_S)}
        # The schema once, before the nodes start (docs/deploy.md): each node then finds it at head.
        migrated = readingroom("db", "upgrade", home=home, **env)
        assert migrated.returncode == 0, migrated.stderr
        # `readingroom receive` runs the listener and the study monitor only, no job workers (triage/cli.py);
        # each worker process runs one worker thread.
        ports = (free_port(), free_port())
        listeners = [start("receive", "--port", str(p), home=home, log=tmp_path / f"listener-{n}.log", **env)
                     for n, p in enumerate(ports, 1)]
        workers = [start("worker", home=home, log=tmp_path / f"worker-{n}.log", READINGROOM_JOBS__WORKERS="1", **env)
                   for n in (1, 2)]
        victim, survivor = workers
        settings = load_settings(environ={}, overrides={"home": str(home), "database": {"url": url}})
        db = Database(settings)
        try:
            for port, proc in zip(ports, listeners):
                wait_for_echo(port, proc)
            acked: list[str] = []
            statuses: list[int] = []
            errors: list[str] = []
            barrier = threading.Barrier(2)
            senders = [_sender(port, primers[n], [parts[n] for parts in studies], barrier, acked, statuses, errors)
                       for n, port in enumerate(ports)]
            for sender in senders:
                sender.start()

            # Halfway: once the victim has finished two triage jobs, and at least ten are done in all,
            # kill -9 it at a moment it holds one.
            prefix = f"{socket.gethostname()}:{victim.pid}:"
            deadline = time.monotonic() + 150

            def halfway() -> bool:
                done = [j for j in _jobs(db) if j.kind == TRIAGE_JOB and j.status == "done"]
                return len(done) >= 10 and sum((j.locked_by or "").startswith(prefix) for j in done) >= 2

            _wait_for(halfway, deadline, "ten triage jobs done, two by the first worker")
            orphaned = _stop_while_holding_a_job(db, victim, prefix, deadline)
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(10)
            for sender in senders:
                sender.join(60)
            assert not errors, errors
            assert not any(s.is_alive() for s in senders), "a sender hung"

            def all_triaged() -> bool:
                with db.reader() as s:
                    pending = s.scalar(select(func.count()).select_from(Study).where(Study.ai_status == "pending"))
                    total = s.scalar(select(func.count()).select_from(Study))
                return total == STUDIES + len(primers) and pending == 0 and all(
                    j.status in ("done", "dead") for j in _jobs(db))

            _wait_for(all_triaged, deadline + LEASE_S, "every study triaged and every job finished")
            assert survivor.poll() is None, "the surviving worker exited"
        finally:
            for proc in [*listeners, *workers]:
                if proc.poll() is not None:
                    continue
                os.kill(proc.pid, signal.SIGCONT)
                stop(proc)

        sent = primers + [ds for parts in studies for part in parts for ds in part]
        assert len(statuses) == len(sent) and set(statuses) == {0}, Counter(statuses)
        assert sorted(acked) == sorted(ds.SOPInstanceUID for ds in sent)

        with db.reader() as s:
            rows = {i.sop_uid: i for i in s.scalars(select(Instance))}
            studies_rows = list(s.scalars(select(Study)))
            series_per_study = dict(s.execute(select(Series.study_id, func.count()).group_by(Series.study_id)).all())
            last_instance = dict(s.execute(select(Series.study_id, func.max(Instance.received_at))
                                           .join(Instance, Instance.series_id == Series.id)
                                           .group_by(Series.study_id)).all())
        jobs = _jobs(db)
        db.dispose()

    # Every acknowledged instance: its row, and its whole file on the shared storage root.
    missing = [uid for uid in acked if uid not in rows]
    assert not missing, f"{len(missing)} acknowledged instances have no row"
    assert len(rows) == len(sent)
    for uid in acked:
        path = home / rows[uid].path
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == rows[uid].sha256, path
        assert dcmread(path).SOPInstanceUID == uid
    assert not list((home / "dicom").rglob(".*.tmp")), "temporary files left behind"

    # One study row per StudyInstanceUID, one series each; complete once, after its quiet period counted
    # from its last instance at either listener; triaged by the shipped head CT model.
    expected = {parts[0][0].StudyInstanceUID for parts in studies} | {ds.StudyInstanceUID for ds in primers}
    assert len(expected) == STUDIES + 2
    assert sorted(st.study_uid for st in studies_rows) == sorted(expected)
    for st in studies_rows:
        assert series_per_study[st.id] == 1
        assert st.last_received_at == last_instance[st.id]
        assert st.completed_at is not None and st.completed_at - st.last_received_at >= timedelta(seconds=QUIET_S)
        assert st.status == "triaged", (st.study_uid, st.status)
        assert (st.ai_status, st.ai_reason) == ("done", ""), (st.study_uid, st.ai_status, st.ai_reason)
        assert st.triaged_at is not None and st.triaged_at >= st.completed_at
    completions = Counter()
    for n in (1, 2):
        text_ = (tmp_path / f"listener-{n}.log").read_text(errors="replace")
        completions.update(re.findall(r"study (\S+) complete; triage queued", text_))
    assert completions == Counter({uid: 1 for uid in expected}), "a study was completed twice, or never"

    # One triage job per study, done; none dead; the work was shared; the dead worker's job was taken
    # up by the other one once its lease ran out.
    triage = [j for j in jobs if j.kind == TRIAGE_JOB]
    assert Counter(j.payload["study_uid"] for j in triage) == Counter({uid: 1 for uid in expected})
    assert {j.status for j in jobs} == {"done"}, Counter(j.status for j in jobs)
    by_worker = Counter((j.locked_by or "").rsplit(":", 1)[0] for j in triage)
    survivor_prefix = f"{socket.gethostname()}:{survivor.pid}"
    assert set(by_worker) == {prefix[:-1], survivor_prefix}, by_worker
    taken_over = [j for j in triage if j.id in orphaned]
    assert taken_over and all(j.attempts == orphaned[j.id] + 1 and j.locked_by.startswith(survivor_prefix)
                              for j in taken_over), [(j.id, j.attempts, j.locked_by) for j in taken_over]
    elapsed = time.monotonic() - t0
    print(f"scale-out: {len(sent)} instances, {len(expected)} studies in {elapsed:.1f} s")
