"""Study completion after the quiet period, and re-triage after a late instance."""

from datetime import timedelta

from sqlalchemy import select

from readingroom.schema import Job, Study, utcnow
from triage.intake import Intake
from triage.studies import TRIAGE_JOB, complete_due_studies
from models.phantoms import ct_series, head_phantom


def _study(db):
    with db.reader() as s:
        return s.scalar(select(Study))


def _jobs(db):
    with db.reader() as s:
        return list(s.scalars(select(Job).where(Job.kind == TRIAGE_JOB)))


def test_complete_after_quiet_period_queues_one_triage(settings, db, queue):
    series = ct_series(head_phantom(3, size=32), key="quiet")
    intake = Intake(settings, db)
    for ds in series[:2]:
        intake.store(ds, calling_ae="TEST_SCU")
    assert complete_due_studies(db, queue, settings) == []               # still in its quiet period
    later = utcnow() + timedelta(seconds=1)
    assert complete_due_studies(db, queue, settings, now=later) == [series[0].StudyInstanceUID]
    assert _study(db).status == "new" and _study(db).completed_at is not None
    assert len(_jobs(db)) == 1
    assert complete_due_studies(db, queue, settings, now=later) == []      # only once


def test_late_instance_reopens_and_queues_again(settings, db, queue):
    series = ct_series(head_phantom(3, size=32), key="late")
    intake = Intake(settings, db)
    intake.store(series[0], calling_ae="TEST_SCU")
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=1))
    queue.claim("w", [TRIAGE_JOB])                    # the first triage is under way
    with db.session() as s:
        s.scalar(select(Study)).status = "triaged"
    intake.store(series[1], calling_ae="TEST_SCU")
    study = _study(db)
    assert study.status == "receiving" and study.completed_at is None
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=1))
    assert _study(db).status == "new"
    assert len(_jobs(db)) == 2


def test_monitor_completes_on_time(settings, db, queue):
    import time

    from triage.studies import StudyMonitor

    completed = []
    monitor = StudyMonitor(db, queue, settings, on_complete=completed.extend)
    intake = Intake(settings, db, on_instance=monitor.note_instance)
    monitor.start()
    try:
        ds = ct_series(head_phantom(1, size=32), key="monitor")[0]
        intake.store(ds, calling_ae="TEST_SCU")
        start = time.monotonic()
        while not completed and time.monotonic() - start < 5:
            time.sleep(0.01)
        elapsed = time.monotonic() - start
    finally:
        monitor.stop()
    assert completed == [ds.StudyInstanceUID]
    assert settings.quiet_period_for("Test Hospital") - 0.05 <= elapsed < 2.0
