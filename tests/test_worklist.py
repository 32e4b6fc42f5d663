"""The live worklist: policy order, credentialing, filters, claims, triage results, notifications."""

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from readingroom.auth import ensure_user
from readingroom.schema import Study, User, utcnow
from triage.intake import Intake
from triage.notify import Notifier, events_since
from triage.pipeline import ModelOutput, TriagePipeline, record_results
from triage.studies import complete_due_studies
from models.phantoms import ct_series, head_phantom
from triage.worklist import ClaimError, Filters, claim, format_table, open_studies, release

FIELDS = {"study_uid", "accession", "patient_id", "patient_name", "modality", "description", "site",
          "received_at", "status", "num_instances", "priority", "ai"}


def _store_studies(settings, db, n, priorities=None):
    intake = Intake(settings, db)
    uids = []
    for k in range(n):
        series = ct_series(head_phantom(k + 1, size=32), key=f"wl{k}", accession=f"ACC{k}", patient_id=f"P{k}")
        for ds in series:
            if priorities:
                ds.RequestedProcedurePriority = priorities[k]
            intake.store(ds, calling_ae="TEST_SCU" if k % 2 == 0 else "OTHER_PACS")
        uids.append(series[0].StudyInstanceUID)
    return uids


def _uids(items):
    return [i["study_uid"] for i in items]


def test_worklist_is_in_arrival_order_with_every_field(settings, db):
    uids = _store_studies(settings, db, 3)
    items = open_studies(db, settings)
    assert _uids(items) == uids
    assert FIELDS <= set(items[0])
    assert [i["num_instances"] for i in items] == [1, 2, 3]
    assert items[1]["site"] == "Other Hospital" and items[0]["modality"] == "CT"
    assert {"label", "score", "reason"} <= set(items[0]["priority"])
    assert items[0]["ai"] == [] and items[0]["sla"]["target_min"] == 240
    assert "ACC2" in format_table(items)


def test_stat_order_from_dicom_goes_first(settings, db):
    uids = _store_studies(settings, db, 3, priorities=["ROUTINE", "ROUTINE", "STAT"])
    items = open_studies(db, settings)
    assert _uids(items)[0] == uids[2]
    assert items[0]["priority"]["label"] == "critical" and "STAT order" in items[0]["priority"]["reason"]


def test_a_stored_triage_result_reorders_at_once_and_notifies(settings, db, queue):
    uids = _store_studies(settings, db, 3)
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=5))
    positive = record_results(db, settings, Notifier(db, settings), uids[2],
                              [ModelOutput("ich", 0.93, "ich-net", "1.0"),
                               ModelOutput("effusion", 0.1, "ich-net", "1.0")])
    assert positive == ["ich"]
    items = open_studies(db, settings)
    assert _uids(items)[0] == uids[2]
    top = items[0]
    assert top["status"] == "triaged" and top["ai_status"] == "done"
    assert {"finding": "ich", "probability": 0.93, "positive": True, "threshold": 0.5, "urgency": "critical",
            "model": "ich-net", "version": "1.0", "verification": "UNVERIFIED"} in top["ai"]
    assert "ich 0.93 ≥ 0.50 → critical" in top["priority"]["reason"]
    events = events_since(db)
    assert [(e.kind, e.study_uid, e.payload["finding"]) for e in events] == [("critical_finding", uids[2], "ich")]
    assert events[0].payload["verification"] == "UNVERIFIED"


def test_urgent_findings_do_not_notify(settings, db):
    uids = _store_studies(settings, db, 1)
    record_results(db, settings, Notifier(db, settings), uids[0], [ModelOutput("effusion", 0.8, "cxr", "1")])
    assert events_since(db) == []
    assert open_studies(db, settings)[0]["priority"]["label"] == "urgent"


def test_the_upper_limit_moves_a_long_waiting_study_up(settings, db):
    uids = _store_studies(settings, db, 2)
    record_results(db, settings, None, uids[1], [ModelOutput("effusion", 0.8, "cxr", "1")])
    assert _uids(open_studies(db, settings)) == [uids[1], uids[0]]
    later = utcnow() + timedelta(minutes=125)
    items = open_studies(db, settings, now=later)
    assert items[0]["study_uid"] == uids[0] and items[0]["priority"]["promoted"]


def test_credentialing_and_filters(settings, db):
    uids = _store_studies(settings, db, 4)
    ensure_user(db, "ana", "pw")
    with db.session() as s:
        s.scalar(select(User).where(User.username == "ana")).sites = ["Test Hospital"]
    assert {i["site"] for i in open_studies(db, settings, user="ana")} == {"Test Hospital"}
    assert len(open_studies(db, settings, filters=Filters(site="Other Hospital"))) == 2
    assert len(open_studies(db, settings, filters=Filters(modality="CT"))) == 4
    assert open_studies(db, settings, filters=Filters(modality="MR")) == []
    assert len(open_studies(db, settings, filters=Filters(priority="routine"))) == 4
    with pytest.raises(ClaimError, match="not credentialed"):
        claim(db, settings, uids[1], "ana")


def test_claims_lock_expire_and_release(settings, db, queue):
    uids = _store_studies(settings, db, 1)
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=5))
    ensure_user(db, "ana", "pw", sites=["*"])
    ensure_user(db, "ben", "pw", sites=["*"])
    claim(db, settings, uids[0], "ana")
    assert open_studies(db, settings)[0]["status"] == "in_progress"
    assert open_studies(db, settings)[0]["claimed_by"] == "ana"
    with pytest.raises(ClaimError, match="being read by ana"):
        claim(db, settings, uids[0], "ben")
    claim(db, settings, uids[0], "ana")                                  # renewing is fine
    later = utcnow() + timedelta(minutes=settings.worklist.claim_ttl_min + 1)
    assert open_studies(db, settings, now=later)[0]["status"] == "new"   # expired
    claim(db, settings, uids[0], "ben", now=later)                       # and can be taken
    assert release(db, uids[0], "ana") is False
    assert release(db, uids[0], "ben") is True
    assert open_studies(db, settings)[0]["claimed_by"] is None


def test_two_radiologists_racing_for_one_study_never_both_get_it(settings, db):
    uids = _store_studies(settings, db, 1)
    users = [f"r{n}" for n in range(8)]
    for user in users:
        ensure_user(db, user, "pw", sites=["*"])
    won, barrier = [], threading.Barrier(len(users))

    def race(user):
        barrier.wait()
        try:
            claim(db, settings, uids[0], user)
            won.append(user)
        except ClaimError:
            pass

    threads = [threading.Thread(target=race, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1
    with db.reader() as s:
        assert s.scalar(select(Study.claimed_by)) == won[0]


def test_final_studies_leave_the_worklist(settings, db):
    uids = _store_studies(settings, db, 2)
    with db.session() as s:
        s.scalar(select(Study).where(Study.study_uid == uids[0])).status = "final"
    assert _uids(open_studies(db, settings)) == [uids[1]]


def test_triage_without_models_marks_ai_unavailable_and_keeps_arrival_order(settings, db, queue, tmp_path):
    uids = _store_studies(settings, db, 2)
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=5))
    TriagePipeline(db, settings, weights_dir=tmp_path / "no-models")({"study_uid": uids[1]})
    items = open_studies(db, settings)
    assert _uids(items) == uids
    assert items[1]["ai_status"] == "unavailable"
    assert "AI unavailable" in items[1]["priority"]["reason"]
    assert items[0]["ai_status"] == "pending" and "AI pending" in items[0]["priority"]["reason"]


def test_critical_finding_reaches_the_webhook_within_a_second(tmp_path):
    import json
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    from readingroom.db import Database
    from tests.conftest import free_port, make_settings

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    port = free_port()
    server = HTTPServer(("127.0.0.1", port), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings = make_settings(tmp_path / "home", notifications={"webhook_url": f"http://127.0.0.1:{port}/hook"})
    db = Database(settings)
    db.upgrade()
    try:
        uid = _store_studies(settings, db, 1)[0]
        start = time.monotonic()
        record_results(db, settings, Notifier(db, settings), uid, [ModelOutput("pneumothorax", 0.88, "cxr", "2")])
        while not received and time.monotonic() - start < 5:
            time.sleep(0.01)
        assert received, "the webhook got nothing"
        arrived, body = received[0]
        assert arrived - start < 1.0
        assert body["kind"] == "critical_finding" and body["finding"] == "pneumothorax"
        assert body["study_uid"] == uid and body["verification"] == "UNVERIFIED"
    finally:
        server.shutdown()
        db.dispose()


def test_event_ids_let_a_new_page_skip_old_events(settings, db):
    from triage.notify import latest_event_id

    assert latest_event_id(db) == 0
    uid = _store_studies(settings, db, 1)[0]
    record_results(db, settings, Notifier(db, settings), uid, [ModelOutput("ich", 0.9, "m", "1")])
    newest = latest_event_id(db)
    assert newest == events_since(db)[-1].id and events_since(db, newest) == []


def test_dead_jobs_show_their_last_error_line(settings, db):
    from workstation.tab_admin import dead_job_rows
    from readingroom.jobs import DatabaseJobQueue, WorkerPool

    def boom(_payload):
        raise RuntimeError("model file is corrupt")

    queue = DatabaseJobQueue(db, settings.jobs.model_copy(update={"max_attempts": 1}))
    pool = WorkerPool(queue, settings.jobs, {"boom": boom})
    queue.enqueue("boom", {})
    pool.run_once()
    rows = dead_job_rows(db, settings)
    assert rows[0][1] == "boom" and rows[0][4] == "RuntimeError: model file is corrupt"
