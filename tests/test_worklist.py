"""Worklist order and fields; the triage job's fallback when no model is installed."""

from datetime import timedelta

from sqlalchemy import select

from readingroom.schema import AIFinding, Study, utcnow
from triage.intake import Intake
from triage.pipeline import TriagePipeline
from triage.studies import complete_due_studies
from triage.synthetic import ct_series, head_phantom
from triage.worklist import format_table, open_studies

FIELDS = {"study_uid", "accession", "patient_id", "patient_name", "modality", "description", "site",
          "received_at", "status", "num_instances", "priority", "ai"}


def _store_studies(settings, db, n):
    intake = Intake(settings, db)
    uids = []
    for k in range(n):
        series = ct_series(head_phantom(k + 1, size=32), key=f"wl{k}", accession=f"ACC{k}", patient_id=f"P{k}")
        for ds in series:
            intake.store(ds, calling_ae="TEST_SCU" if k % 2 == 0 else "OTHER_PACS")
        uids.append(series[0].StudyInstanceUID)
    return uids


def test_worklist_is_in_arrival_order_with_every_field(settings, db):
    uids = _store_studies(settings, db, 3)
    items = open_studies(db)
    assert [i["study_uid"] for i in items] == uids
    assert FIELDS <= set(items[0])
    assert [i["num_instances"] for i in items] == [1, 2, 3]
    assert items[1]["site"] == "Other Hospital" and items[0]["modality"] == "CT"
    assert set(items[0]["priority"]) == {"label", "score", "reason"}
    assert items[0]["ai"] == []
    assert "ACC2" in format_table(items)


def test_priority_score_moves_a_study_up_and_findings_are_listed(settings, db):
    uids = _store_studies(settings, db, 3)
    with db.session() as s:
        study = s.scalar(select(Study).where(Study.study_uid == uids[2]))
        study.priority_score, study.priority_label = 10.0, "critical"
        s.add(AIFinding(study_id=study.id, finding="ich", probability=0.93, positive=True, model="m", version="1"))
    items = open_studies(db)
    assert items[0]["study_uid"] == uids[2]
    assert items[0]["ai"] == [{"finding": "ich", "probability": 0.93, "positive": True, "model": "m", "version": "1"}]


def test_final_studies_leave_the_worklist(settings, db):
    uids = _store_studies(settings, db, 2)
    with db.session() as s:
        s.scalar(select(Study).where(Study.study_uid == uids[0])).status = "final"
    assert [i["study_uid"] for i in open_studies(db)] == [uids[1]]


def test_triage_without_models_marks_ai_unavailable_and_keeps_arrival_order(settings, db, queue, tmp_path):
    uids = _store_studies(settings, db, 2)
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=5))
    pipeline = TriagePipeline(db, weights_dir=tmp_path / "no-models")
    pipeline({"study_uid": uids[1]})
    items = open_studies(db)
    assert [i["study_uid"] for i in items] == uids
    assert items[1]["ai_status"] == "unavailable"
    assert "AI unavailable" in items[1]["priority"]["reason"] and "CT" in items[1]["priority"]["reason"]
    assert items[0]["ai_status"] == "pending"
