"""The start-up reconcile (security issue #19, finding 9): an instance acknowledged with Success
whose row was lost (the database's locks were broken under the server) is on disk without a row.
When the listener starts again it indexes that file, and moves a file it cannot read to
<home>/quarantine/ with a reason file, before it listens."""

from __future__ import annotations

import sqlite3

import pytest
from pydicom import dcmread
from sqlalchemy import select

from readingroom import dicom_net as scu
from readingroom.db import Database
from readingroom.schema import Instance, Series, Site, Study
from readingroom.settings import load_settings
from tests.conftest import free_port
from tests.integration.helpers import start, stop, wait_for_echo
from models.phantoms import ct_series, head_phantom

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def rows(home) -> dict[str, tuple[str, str, str]]:
    """sop_uid -> (path, sha256, site name of its study) of every Instance row."""
    db = Database(load_settings(environ={}, overrides={"home": str(home)}))
    try:
        with db.reader() as s:
            query = (select(Instance.sop_uid, Instance.path, Instance.sha256, Site.name)
                     .join(Series, Instance.series_id == Series.id).join(Study, Series.study_id == Study.id)
                     .outerjoin(Site, Study.site_id == Site.id))
            return {uid: (path, digest, site) for uid, path, digest, site in s.execute(query)}
    finally:
        db.dispose()


def test_a_file_without_its_row_is_indexed_again_and_junk_is_quarantined_at_start(tmp_path):
    home, port = tmp_path / "home", free_port()
    series = ct_series(head_phantom(4, size=64, seed=5), key="reconcile")
    listener = start("receive", "--port", str(port), home=home, log=tmp_path / "listener1.log")
    try:
        wait_for_echo(port, listener)
        assert scu.send(series, "127.0.0.1", port, calling_ae="TEST_SCU") == [0] * len(series)
    finally:
        stop(listener)
    before = rows(home)
    assert set(before) == {ds.SOPInstanceUID for ds in series}
    assert "start-up reconcile" in (tmp_path / "listener1.log").read_text()   # nothing to do: INFO

    # The loss: an acknowledged instance's row is gone, its file is still there. And junk.
    lost = series[2].SOPInstanceUID
    lost_path, lost_sha, site = before[lost]
    with sqlite3.connect(home / "readingroom.db") as conn:
        assert conn.execute("DELETE FROM instances WHERE sop_uid = ?", (lost,)).rowcount == 1
    assert lost not in rows(home) and (home / lost_path).is_file()
    junk = (home / lost_path).parent / "junk.dcm"
    junk.write_bytes(b"not a DICOM file at all")

    listener = start("receive", "--port", str(port), home=home, log=tmp_path / "listener2.log")
    try:
        wait_for_echo(port, listener)             # the reconcile runs before the listener listens
        log = (tmp_path / "listener2.log").read_text()
        after = rows(home)
    finally:
        stop(listener)

    assert after[lost] == (lost_path, lost_sha, site) and site == "Test Hospital"   # its study's site
    assert set(after) == set(before)
    assert dcmread(home / lost_path).SOPInstanceUID == lost
    assert not junk.exists()
    moved = home / "quarantine" / junk.relative_to(home)
    assert moved.read_bytes() == b"not a DICOM file at all"
    reason = moved.with_name("junk.dcm.reason.txt").read_text()
    assert "cannot be read as a DICOM file" in reason
    line = next(line for line in log.splitlines() if "start-up reconcile" in line)
    assert "WARNING" in line and "indexed 1, quarantined 1" in line, line
    assert f"indexed {lost_path}" in log and "quarantined" in log


def test_reconcile_of_an_unknown_study_leaves_it_unassigned_and_is_quiet_when_nothing_is_missing(
        settings, db, queue, caplog):
    """In-process: a stored file of a study the database does not know is indexed with no site;
    a second start finds nothing to do (INFO); a file the intake refuses is quarantined."""
    import copy
    import logging

    from triage.intake import Intake
    from triage.service import IntakeService

    series = ct_series(head_phantom(2, size=64, seed=6), key="reconcile-unknown")
    intake = Intake(settings, db)
    assert all(intake.store(ds, calling_ae="TEST_SCU").ok for ds in series)
    with db.session() as s:                       # the whole study is gone from the database
        for row in s.scalars(select(Instance)):
            s.delete(row)
        s.flush()
        for row in s.scalars(select(Series)):
            s.delete(row)
        s.flush()
        for row in s.scalars(select(Study)):
            s.delete(row)
    bad = copy.deepcopy(series[0])
    bad.SOPInstanceUID = "1.2.3.4.5.6"
    del bad.StudyInstanceUID                       # readable, but the intake refuses it
    folder = settings.dicom_dir / "odd"
    folder.mkdir(parents=True)
    bad.save_as(folder / "no-study.dcm", enforce_file_format=True)

    service = IntakeService(settings, db, queue)
    with caplog.at_level(logging.INFO, logger="triage.service"):
        summary = service.reconcile()
    assert summary is not None and (summary.indexed, summary.quarantined, summary.files) == (2, 1, 3)
    assert any(r.levelno == logging.WARNING and "indexed 2, quarantined 1" in r.getMessage() for r in caplog.records)
    with db.reader() as s:
        studies = s.execute(select(Study.study_uid, Study.site_id)).all()
    assert studies == [(series[0].StudyInstanceUID, None)]
    assert "StudyInstanceUID is missing" in (settings.home / "quarantine" / "dicom" / "odd" /
                                             "no-study.dcm.reason.txt").read_text()

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="triage.service"):
        again = service.reconcile()
    assert again is not None and (again.indexed, again.quarantined, again.files) == (0, 0, 2)
    assert any(r.levelno == logging.INFO and "indexed 0, quarantined 0" in r.getMessage() for r in caplog.records)
