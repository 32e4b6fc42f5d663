"""The PostgreSQL paths of the kernel and the features, on a real throwaway server (tests/postgres.py).

SQLite serialises writers (BEGIN IMMEDIATE); PostgreSQL runs them at once, so the code has its own
paths there: the append-only triggers, the audit chain's advisory lock and trigger check, the job
queue's optimistic claim, the report row lock while signing, the worklist's conditional claim and
intake's duplicate handling. The races are made certain, not likely: another transaction holds the
row lock the racers need, the test waits until every racer is blocked on it, then lets go.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, func, select, text, update
from sqlalchemy.exc import DBAPIError

from readingroom import audit
from readingroom.auth import ensure_user
from readingroom.db import Database, alembic_config, upgrade
from readingroom.schema import AuditEntry, Base, Instance, Job, ReportRecord, ReportVersion, Study, utcnow
from reporting.errors import ReportError
from reporting.lifecycle import ReportService
from triage.intake import Intake
from triage.worklist import ClaimError, claim
from models.phantoms import ct_series, head_phantom
from tests.conftest import make_settings
from tests.races import blocked_behind, join_all, run_all
from tests.postgres import fresh_database
from tests.report_helpers import add_study
from tests.test_reports import draft
from tests.test_worklist import _store_studies

APPEND_ONLY = ("report_versions", "audit_log")


# --- migrations ------------------------------------------------------------------------------------
def test_migrations_take_an_empty_database_to_head_and_build_exactly_the_models(postgres_url):
    with fresh_database(postgres_url) as url:
        engine = create_engine(url)
        try:
            upgrade(engine)
            upgrade(engine)   # idempotent
            head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
            with engine.connect() as conn:
                assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head
                diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
                triggers = set(conn.scalars(text("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")))
            assert diff == [], f"schema.py and the migrations disagree on PostgreSQL; add a migration: {diff}"
            assert triggers == {f"{t}_{kind}" for t in APPEND_ONLY for kind in ("append_only", "no_truncate")}
        finally:
            engine.dispose()


def test_the_audit_chain_migration_fills_in_the_hashes_of_older_entries(postgres_url, tmp_path):
    with fresh_database(postgres_url) as url:
        engine = create_engine(url)
        try:
            upgrade(engine, "0006")
            with engine.begin() as conn:
                for n, action in enumerate(("create", "sign")):
                    conn.execute(text('INSERT INTO audit_log (at, "user", action, study_uid, report_id, detail) '
                                      "VALUES (:at, 'dr_old', :action, '1.2.3', 1, :detail)"),
                                 {"at": utcnow() - timedelta(minutes=2 - n, microseconds=123), "action": action,
                                  "detail": '{"version": 1, "z": "\u00e9", "a": [1, 2]}'})
            upgrade(engine)
        finally:
            engine.dispose()
        db = Database(make_settings(tmp_path / "home", database={"url": url}))
        try:
            check = audit.verify(db)
            assert check.ok, check.problems
            assert check.entries == 2 and len(check.head) == 64
        finally:
            db.dispose()


# --- append-only tables ------------------------------------------------------------------------------
@pytest.fixture
def signed(pg_db, pg_settings, pg_queue):
    """A PostgreSQL database with one signed report (report_versions and audit_log have rows)."""
    service = ReportService(pg_db, pg_settings, pg_queue)
    view = draft(service, pg_db)
    service.sign(view.id, "dr_lee", final=True)
    return pg_db


@pytest.mark.parametrize("table", APPEND_ONLY)
@pytest.mark.parametrize("statement", ["UPDATE {table} SET id = id", "DELETE FROM {table}"], ids=["update", "delete"])
def test_append_only_tables_refuse_update_and_delete(signed, table, statement):
    with signed.engine.connect() as conn:
        before = conn.scalar(text(f"SELECT count(*) FROM {table}"))
    assert before > 0
    with pytest.raises(DBAPIError, match=f"{table} is append-only"):
        with signed.engine.begin() as conn:
            conn.execute(text(statement.format(table=table)))
    with signed.engine.connect() as conn:
        assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == before


@pytest.mark.parametrize("table", APPEND_ONLY)
def test_append_only_tables_refuse_truncate(signed, table):
    refused = ""
    try:
        with signed.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {table} CASCADE"))
    except DBAPIError as exc:
        refused = str(exc)
    assert f"{table} is append-only" in refused


# --- the audit chain ---------------------------------------------------------------------------------
def test_audit_verify_passes_an_intact_chain_and_reports_a_dropped_trigger_and_a_changed_row(pg_db):
    for n in range(5):
        audit.record_access(pg_db, "dr_lee", "view", study_uid=f"1.2.{n}", what="series 1", source="test",
                            detail={"n": n, "note": "\u00e9"})
    check = audit.verify(pg_db)
    assert check.ok, check.problems
    assert check.entries == 5

    with pg_db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))
    check = audit.verify(pg_db)
    assert check.entries == 5
    assert len(check.problems) == 1 and "trigger audit_log_append_only is missing" in check.problems[0]

    with pg_db.engine.begin() as conn:   # nothing stops this now; verify sees it
        conn.execute(text("UPDATE audit_log SET \"user\" = 'mallory' WHERE id = (SELECT min(id) FROM audit_log)"))
    assert any("its content was changed" in p for p in audit.verify(pg_db).problems)


def test_concurrent_audit_writers_extend_one_unbroken_chain(pg_db):
    writers, per_writer = 4, 25
    barrier, errors = threading.Barrier(writers), []

    def write(w):
        barrier.wait()
        try:
            for n in range(per_writer):
                audit.record_access(pg_db, f"user{w}", "view", study_uid=f"1.2.{w}.{n}", what="series",
                                    source="test")
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    join_all(run_all(write, list(range(writers))))
    assert errors == []
    check = audit.verify(pg_db)
    assert check.ok, check.problems[:5]
    assert check.entries == writers * per_writer


# --- the job queue -----------------------------------------------------------------------------------
def test_concurrent_workers_never_claim_the_same_job_twice(pg_db, pg_queue):
    jobs, workers = 40, 6
    ids = [pg_queue.enqueue("triage", {"n": n}) for n in range(jobs)]
    claimed, barrier = [], threading.Barrier(workers)

    def work(w):
        barrier.wait()
        deadline = time.monotonic() + 20
        while len(claimed) < jobs and time.monotonic() < deadline:
            job = pg_queue.claim(f"w{w}", ["triage"])   # None also when another worker won this one
            if job is not None:
                claimed.append((job.id, f"w{w}"))

    join_all(run_all(work, list(range(workers))))
    assert sorted(i for i, _ in claimed) == sorted(ids)
    with pg_db.reader() as s:
        rows = {j.id: (j.status, j.attempts, j.locked_by) for j in s.scalars(select(Job))}
    assert rows == {i: ("running", 1, w) for i, w in claimed}


def test_concurrent_enqueues_with_one_dedupe_key_queue_one_job(pg_db, pg_queue):
    racers, ids = 6, []
    hold = "SELECT 1 FROM (SELECT pg_advisory_xact_lock(hashtext(:k))) AS held"   # the enqueuers' lock
    with blocked_behind(pg_db, hold, {"k": "study:1.2"}, racers):
        threads = run_all(lambda n: ids.append(pg_queue.enqueue("triage", {"n": n}, dedupe_key="study:1.2")),
                           list(range(racers)))
    join_all(threads)
    with pg_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(Job)) == 1
    assert len(ids) == racers and len(set(ids)) == 1


def test_an_expired_lease_hands_the_job_to_exactly_one_other_worker(pg_db, pg_queue):
    job_id = pg_queue.enqueue("triage", {"study_uid": "1.2.3"})
    first = pg_queue.claim("worker-that-dies", ["triage"])
    assert first is not None and first.id == job_id and first.attempt == 1
    assert pg_queue.claim("w-early", ["triage"]) is None   # the lease is live
    with pg_db.session() as s:   # the lease runs out (no clock is involved: its end moves into the past)
        s.execute(update(Job).where(Job.id == job_id).values(locked_until=utcnow() - timedelta(seconds=1)))

    racers, got = 6, []
    with blocked_behind(pg_db, "SELECT id FROM jobs WHERE id = :id FOR UPDATE", {"id": job_id}, racers):
        threads = run_all(lambda w: got.append((w, pg_queue.claim(w, ["triage"]))),
                           [f"w{n}" for n in range(racers)])
    join_all(threads)
    winners = [(w, job) for w, job in got if job is not None]
    assert len(got) == racers and len(winners) == 1
    winner, job = winners[0]
    assert job.id == job_id and job.attempt == 2

    pg_queue.complete(job_id, "worker-that-dies")   # the old worker comes back: it no longer holds the job
    with pg_db.reader() as s:
        assert s.get(Job, job_id).status == "running"
    pg_queue.complete(job_id, winner)
    with pg_db.reader() as s:
        row = s.get(Job, job_id)
        assert (row.status, row.locked_by, row.attempts) == ("done", winner, 2)


# --- reports -----------------------------------------------------------------------------------------
def test_concurrent_signing_makes_one_version_and_tells_the_others(pg_db, pg_settings, pg_queue):
    service = ReportService(pg_db, pg_settings, pg_queue)
    view = draft(service, pg_db)
    racers, signed, refused = 4, [], []

    def sign(user):
        try:
            signed.append(service.sign(view.id, user, final=True))
        except ReportError as exc:
            refused.append(str(exc))

    with blocked_behind(pg_db, "SELECT id FROM reports WHERE id = :id FOR UPDATE", {"id": view.id}, racers):
        threads = run_all(sign, [f"dr_{n}" for n in range(racers)])
    join_all(threads)
    assert len(signed) == 1 and len(refused) == racers - 1
    assert all(f"report {view.id} is already final" in msg for msg in refused)
    with pg_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(ReportVersion)) == 1
        assert s.get(ReportRecord, view.id).status == "final"
        assert s.scalar(select(func.count()).select_from(AuditEntry).where(AuditEntry.action == "sign")) == 1
    assert audit.verify(pg_db).ok


def test_concurrent_create_makes_one_report_per_study(pg_db, pg_settings, pg_queue):
    service = ReportService(pg_db, pg_settings, pg_queue)
    uid = add_study(pg_db)
    racers, ids, errors = 4, [], []

    def create(user):
        try:
            ids.append(service.create(uid, user, "ct_head").id)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    # The new report's foreign key waits for the study row: every racer has looked for a report by then.
    with blocked_behind(pg_db, "SELECT id FROM studies WHERE study_uid = :uid FOR UPDATE", {"uid": uid}, racers):
        threads = run_all(create, [f"dr_{n}" for n in range(racers)])
    join_all(threads)
    assert errors == []
    with pg_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(ReportRecord)) == 1
    assert len(set(ids)) == 1


# --- the worklist and intake ---------------------------------------------------------------------------
def test_radiologists_racing_for_one_study_never_both_get_it(pg_db, pg_settings):
    uid = _store_studies(pg_settings, pg_db, 1)[0]
    users = [f"r{n}" for n in range(8)]
    for user in users:
        ensure_user(pg_db, user, "pw", sites=["*"])
    won, lost = [], []

    def race(user):
        try:
            claim(pg_db, pg_settings, uid, user)
            won.append(user)
        except ClaimError as exc:
            lost.append(str(exc))

    with blocked_behind(pg_db, "SELECT id FROM studies WHERE study_uid = :uid FOR UPDATE", {"uid": uid},
                         len(users)):
        threads = run_all(race, users)
    join_all(threads)
    assert len(won) == 1 and len(lost) == len(users) - 1
    assert all(f"is being read by {won[0]}" in msg for msg in lost)
    with pg_db.reader() as s:
        assert s.scalar(select(Study.claimed_by)) == won[0]


def _race_two_intakes(pg_db, pg_settings, datasets):
    """Two processes' intakes store ``datasets`` (one each) at once; returns their results."""
    results = []
    intakes = [Intake(pg_settings, pg_db), Intake(pg_settings, pg_db)]
    with blocked_behind(pg_db, "SELECT id FROM sites WHERE name = 'Test Hospital' FOR UPDATE", {}, 2):
        threads = run_all(lambda k: results.append(intakes[k].store(datasets[k], calling_ae="TEST_SCU")), [0, 1])
    join_all(threads)
    return results


def test_two_intakes_storing_the_same_instance_at_once_store_it_once(pg_db, pg_settings):
    ds = ct_series(head_phantom(1, size=32), key="pgdup", accession="PGDUP")[0]
    results = _race_two_intakes(pg_db, pg_settings, [ds, ds])
    assert sorted(r.outcome for r in results) == ["duplicate", "stored"]
    assert all(r.status == 0 for r in results)
    with pg_db.reader() as s:
        path = s.scalar(select(Instance.path))
        assert s.scalar(select(func.count()).select_from(Instance)) == 1
    assert (pg_settings.home / path).is_file()


def test_two_intakes_storing_two_instances_of_a_new_study_at_once_store_both(pg_db, pg_settings):
    series = ct_series(head_phantom(2, size=32), key="pgnew", accession="PGNEW")
    results = _race_two_intakes(pg_db, pg_settings, series[:2])
    assert [r.outcome for r in results] == ["stored", "stored"], [r.reason for r in results]
    with pg_db.reader() as s:
        assert s.scalar(select(func.count()).select_from(Instance)) == 2
