"""The intake core: what is stored, what is refused, and that a refusal leaves nothing behind."""

import copy

import pytest
from pydicom import dcmread
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from readingroom.schema import Instance, Series, Study
from triage import intake as intake_mod
from triage.intake import Intake
from models.phantoms import ct_series, head_phantom


@pytest.fixture
def ct(samples):
    return dcmread(samples / "693_UNCR.dcm")


@pytest.fixture
def intake(settings, db):
    return Intake(settings, db)


def _files(settings):
    return sorted(p for p in settings.dicom_dir.rglob("*") if p.is_file()) if settings.dicom_dir.exists() else []


def _count(db, model):
    with db.reader() as s:
        return s.scalar(select(func.count(model.id)))


def test_store_writes_the_file_and_indexes_it(intake, settings, db, ct):
    result = intake.store(ct, calling_ae="TEST_SCU")
    assert (result.status, result.outcome) == (0x0000, "stored")
    path = settings.home / "dicom" / ct.StudyInstanceUID / ct.SeriesInstanceUID / f"{ct.SOPInstanceUID}.dcm"
    assert dcmread(path).SOPInstanceUID == ct.SOPInstanceUID
    with db.reader() as s:
        study = s.scalar(select(Study))
        assert study.patient_id == ct.PatientID and study.status == "receiving"
        assert study.site.name == "Test Hospital"
        inst = s.scalar(select(Instance))
        assert inst.path == path.relative_to(settings.home).as_posix() and inst.rows == 512


def test_resending_is_idempotent(intake, db, ct):
    assert intake.store(ct, calling_ae="TEST_SCU").outcome == "stored"
    again = intake.store(copy.deepcopy(ct), calling_ae="TEST_SCU")
    assert (again.status, again.outcome) == (0x0000, "duplicate")
    assert _count(db, Instance) == 1


def test_same_sop_uid_in_another_study_is_a_conflict(intake, db, ct):
    intake.store(ct, calling_ae="TEST_SCU")
    other = copy.deepcopy(ct)
    other.StudyInstanceUID = "1.2.3.4"
    assert intake.store(other, calling_ae="TEST_SCU").status == 0xC213
    assert _count(db, Study) == 1


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"])
def test_missing_uid_is_refused_with_nothing_left(intake, settings, db, ct, keyword):
    delattr(ct, keyword)
    result = intake.store(ct, calling_ae="TEST_SCU")
    assert result.status == 0xC211 and keyword in result.reason
    assert _files(settings) == [] and _count(db, Instance) == 0


def test_malformed_uid_cannot_escape_the_data_folder(intake, settings, ct):
    ct.StudyInstanceUID = "../../../etc"
    assert intake.store(ct, calling_ae="TEST_SCU").status == 0xC211
    assert _files(settings) == []


def test_undecodable_pixel_data_is_refused(intake, settings, db, ct):
    ct.PixelData = ct.PixelData[: len(ct.PixelData) // 3]
    result = intake.store(ct, calling_ae="TEST_SCU")
    assert result.status == 0xC212 and "cannot be decoded" in result.reason
    assert _files(settings) == [] and _count(db, Instance) == 0


def test_disk_full_is_out_of_resources_with_no_row(intake, settings, db, ct, monkeypatch):
    from readingroom.errors import StorageError

    def full(*_a, **_k):
        raise StorageError("cannot write: the disk is full")

    monkeypatch.setattr(intake_mod, "write_pending", full)
    result = intake.store(ct, calling_ae="TEST_SCU")
    assert result.status == 0xA700 and "disk is full" in result.reason
    assert _count(db, Instance) == 0 and _count(db, Study) == 0


def test_database_error_takes_the_file_back(intake, settings, db, ct, monkeypatch):
    def broken(*_a, **_k):
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    monkeypatch.setattr(intake, "_insert_rows", broken)
    result = intake.store(ct, calling_ae="TEST_SCU")
    assert result.status == 0xA701 and "try again later" in result.reason
    assert _files(settings) == []
    monkeypatch.undo()
    assert intake.store(ct, calling_ae="TEST_SCU").outcome == "stored"   # the retry works


def test_one_instance_sent_twice_at_once_is_stored_once_with_no_temporary_file_left(intake, settings, db, ct,
                                                                                    monkeypatch):
    """Two associations deliver the same new instance at the same moment: both write their file
    before the lock (write_pending), one indexes it, the other finds it indexed and drops its own."""
    import threading

    both_written = threading.Barrier(2, timeout=10)
    real = intake_mod.write_pending

    def write_then_wait(*args, **kwargs):
        pending = real(*args, **kwargs)
        both_written.wait()
        return pending

    monkeypatch.setattr(intake_mod, "write_pending", write_then_wait)
    results = []
    copies = [ct, copy.deepcopy(ct)]
    threads = [threading.Thread(target=lambda ds=ds: results.append(intake.store(ds, calling_ae="TEST_SCU")))
               for ds in copies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(r.outcome for r in results) == ["duplicate", "stored"]
    assert {r.status for r in results} == {0x0000}
    files = _files(settings)
    assert [p.name for p in files] == [f"{ct.SOPInstanceUID}.dcm"]
    assert dcmread(files[0]).SOPInstanceUID == ct.SOPInstanceUID
    assert _count(db, Instance) == 1


def _store_while_locked(intake, datasets):
    """Store ``datasets`` from one thread each, all queued behind the intake's lock before it opens."""
    import threading
    import time

    results = []
    with intake._write_lock:
        threads = [threading.Thread(target=lambda ds=ds: results.append(intake.store(ds, calling_ae="TEST_SCU")))
                   for ds in datasets]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 20
        while len(intake._queue) < len(datasets):
            assert time.monotonic() < deadline, "the stores did not queue"
            time.sleep(0.01)
    for t in threads:
        t.join(30)
    return results


def test_instances_waiting_for_the_lock_are_indexed_in_one_commit(intake, settings, db):
    from sqlalchemy import event

    series = ct_series(head_phantom(4, size=32), key="group-commit")
    commits = []
    event.listen(db.engine, "commit", lambda _conn: commits.append(1))
    results = _store_while_locked(intake, series)
    assert sorted(r.outcome for r in results) == ["stored"] * 4
    assert len(commits) == 1, "four instances waiting together should share one commit"
    assert sorted(p.name for p in _files(settings)) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in series)
    assert (_count(db, Study), _count(db, Series), _count(db, Instance)) == (1, 1, 4)


def test_a_failed_group_commit_indexes_each_instance_on_its_own(intake, settings, db, monkeypatch):
    """The batch's transaction fails (here its first insert): every file goes back to its temporary
    name, and each instance is indexed again on its own, file renamed into place again."""
    calls = []
    real = intake._insert_rows

    def fails_first(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        return real(*args, **kwargs)

    monkeypatch.setattr(intake, "_insert_rows", fails_first)
    series = ct_series(head_phantom(3, size=32), key="group-commit-fails")
    results = _store_while_locked(intake, series)
    assert len(calls) == 1 + 3
    assert sorted(r.outcome for r in results) == ["stored"] * 3
    assert sorted(p.name for p in _files(settings)) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in series)
    assert _count(db, Instance) == 3
    for ds in series:
        assert dcmread(settings.home / "dicom" / ds.StudyInstanceUID / ds.SeriesInstanceUID
                       / f"{ds.SOPInstanceUID}.dcm").SOPInstanceUID == ds.SOPInstanceUID


def test_unknown_caller_lands_in_unknown_site_when_allowed(tmp_path, ct):
    from readingroom.db import Database
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, sites=[])
    db = Database(settings)
    db.upgrade()
    assert Intake(settings, db).store(ct, calling_ae="ANYONE").ok
    with db.reader() as s:
        assert s.scalar(select(Study)).site.name == intake_mod.UNKNOWN_SITE
    db.dispose()


def test_series_and_instances_are_grouped(intake, db):
    for ds in ct_series(head_phantom(4, size=64), key="grouping"):
        assert intake.store(ds, calling_ae="TEST_SCU").outcome == "stored"
    assert (_count(db, Study), _count(db, Series), _count(db, Instance)) == (1, 1, 4)


def test_instance_callback_gets_site_and_time(settings, db, ct):
    seen = []
    Intake(settings, db, on_instance=lambda *args: seen.append(args)).store(ct, calling_ae="TEST_SCU")
    assert seen and seen[0][0] == ct.StudyInstanceUID and seen[0][1] == "Test Hospital"
