"""The DICOM listener against real clients (pynetdicom SCU, dcmtk) and every pydicom-data file."""

from __future__ import annotations

import subprocess
import warnings

import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import ImplicitVRLittleEndian
from pynetdicom import AE
from sqlalchemy import func, select

from readingroom import dicom_net as scu
from readingroom.schema import Instance
from tests.conftest import DCMTK
from models.phantoms import ct_series, head_phantom

pytestmark = pytest.mark.integration


def _indexed(db) -> set[str]:
    with db.reader() as s:
        return set(s.scalars(select(Instance.sop_uid)))


def _on_disk(settings) -> list:
    return sorted(p for p in settings.dicom_dir.rglob("*") if p.is_file())


def _decodable(path) -> str | None:
    """The SOP Instance UID of a file pydicom reads and decodes as it is, else None."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = dcmread(path)
            if "PixelData" in ds:
                ds.pixel_array  # noqa: B018
            return str(ds.SOPInstanceUID)
        except Exception:  # noqa: BLE001
            return None


def _send_as_a_sender_would(path, port) -> int | str:
    """Send the file as it is; if the SCU cannot read it that way, send what can be read of it."""
    try:
        status = scu.send([path], "127.0.0.1", port, calling_ae="TEST_SCU")[0]
        if status != -1:
            return status
    except (AttributeError, ValueError, KeyError, InvalidDicomError):
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta = meta
    meta.setdefault("TransferSyntaxUID", ImplicitVRLittleEndian)
    for element, meta_element in (("SOPClassUID", "MediaStorageSOPClassUID"),
                                  ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        if element not in ds and meta_element in meta:
            setattr(ds, element, meta[meta_element].value)
    if "SOPClassUID" not in ds:
        return "not sendable"
    return scu.send([ds], "127.0.0.1", port, calling_ae="TEST_SCU")[0]


def test_every_sample_file_is_stored_or_refused_cleanly(listener, settings, db, samples):
    files = sorted(p for p in samples.iterdir() if p.suffix == ".dcm")
    assert len(files) >= 60
    # One association per file, like a PACS sending object by object.
    results = {path.name: _send_as_a_sender_would(path, listener.listener.port) for path in files}
    indexed = _indexed(db)
    for path in files:
        uid = _decodable(path)
        status = results[path.name]
        if uid is not None:  # pydicom reads and decodes it as it is: it must be stored
            assert status == 0x0000, f"{path.name} was refused: {status}"
            assert uid in indexed, f"{path.name} acknowledged but not indexed"
        else:
            assert status != 0x0000 or path.name == "OT-PAL-8-face.dcm", path.name
    # The truncated file reaches the listener and gets a failure status, not Success.
    bad = results["emri_small_jpeg_2k_lossless_too_short.dcm"]
    assert isinstance(bad, int) and (0xA700 <= bad <= 0xA7FF or 0xC000 <= bad <= 0xCFFF), bad
    # Every file on disk is indexed, decodes, and no temporary file is left.
    paths = _on_disk(settings)
    assert not [p for p in paths if p.suffix != ".dcm"]
    with db.reader() as s:
        rows = set(s.scalars(select(Instance.path)))
        assert {p.relative_to(settings.home).as_posix() for p in paths} == rows
        assert s.scalar(select(func.count(Instance.id))) == len(indexed)
    for path in paths:
        stored = dcmread(path)
        if "PixelData" in stored:
            assert stored.pixel_array.size > 0


def test_compressed_transfer_syntaxes_arrive_as_sent(listener, settings, db, samples):
    names = ["693_J2KR.dcm", "JPEG-LL.dcm", "OBXXXX1A_rle.dcm", "emri_small_jpeg_ls_lossless.dcm",
             "color3d_jpeg_baseline.dcm", "SC_rgb_expb.dcm"]
    assert len({dcmread(samples / n).SOPInstanceUID for n in names}) == len(names)  # no duplicates
    statuses = scu.send([samples / n for n in names], "127.0.0.1", listener.listener.port, calling_ae="TEST_SCU")
    assert statuses == [0] * len(names)
    with db.reader() as s:
        for name in names:
            original = dcmread(samples / name)
            row = s.scalar(select(Instance).where(Instance.sop_uid == original.SOPInstanceUID))
            assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
            stored = dcmread(settings.home / row.path)
            assert stored.PixelData == original.PixelData


def test_dcmtk_storescu_sends_a_series(listener, settings, db, tmp_path):
    series = ct_series(head_phantom(12, size=128), key="dcmtk-series")
    for ds in series:
        ds.save_as(tmp_path / f"{ds.InstanceNumber:03d}.dcm", enforce_file_format=True)
    files = sorted(str(p) for p in tmp_path.glob("*.dcm"))
    run = subprocess.run([str(DCMTK / "storescu"), "-aet", "STORESCU", "-aec", settings.dicom.ae_title,
                          "127.0.0.1", str(listener.listener.port), *files], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert {ds.SOPInstanceUID for ds in series} <= _indexed(db)


def test_dcmtk_storescu_sends_compressed_files(listener, db, samples, settings):
    # A sender configured to send compressed data proposes that transfer syntax; we must accept it.
    for name, propose in [("693_J2KR.dcm", "-xv"), ("JPEG-LL.dcm", "-xs"), ("OBXXXX1A_rle.dcm", "-xr"),
                          ("emri_small_jpeg_ls_lossless.dcm", "-xt")]:
        run = subprocess.run([str(DCMTK / "storescu"), propose, "-R", "-nh", "-aet", "STORESCU", "-aec",
                              settings.dicom.ae_title, "127.0.0.1", str(listener.listener.port), str(samples / name)],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0 and "Failed" not in run.stderr, f"{name}: {run.stderr}"
        original = dcmread(samples / name)
        with db.reader() as s:
            row = s.scalar(select(Instance).where(Instance.sop_uid == original.SOPInstanceUID))
        assert row is not None, f"{name} was not stored: {run.stderr}"
        assert row.transfer_syntax_uid == original.file_meta.TransferSyntaxUID


def test_echo_and_unknown_caller_is_rejected(listener, settings):
    port = str(listener.listener.port)
    ok = subprocess.run([str(DCMTK / "echoscu"), "-aet", "ECHOSCU", "-aec", settings.dicom.ae_title,
                         "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([str(DCMTK / "echoscu"), "-aet", "INTRUDER", "-aec", settings.dicom.ae_title,
                          "127.0.0.1", port], capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0
    assert "Rejected" in bad.stderr or "rejected" in bad.stderr.lower()
    assert scu.echo("127.0.0.1", listener.listener.port, calling_ae="TEST_SCU")  # still serving


def test_bad_instances_do_not_end_the_association(listener, settings, db, samples):
    good = ct_series(head_phantom(3, size=64), key="mixed")
    no_study = ct_series(head_phantom(1, size=64), key="mixed-bad")[0]
    del no_study.StudyInstanceUID
    truncated = ct_series(head_phantom(1, size=64), key="mixed-trunc")[0]
    truncated.PixelData = truncated.PixelData[:100]
    statuses = scu.send([good[0], no_study, good[1], truncated, good[2]], "127.0.0.1",
                        listener.listener.port, calling_ae="TEST_SCU")
    assert statuses[0] == statuses[2] == statuses[4] == 0
    assert statuses[1] == 0xC211 and statuses[3] == 0xC212
    assert _indexed(db) == {ds.SOPInstanceUID for ds in good}
    assert len(_on_disk(settings)) == 3


def test_resend_is_idempotent_over_the_network(listener, db, settings):
    series = ct_series(head_phantom(4, size=64), key="resend")
    port = listener.listener.port
    assert scu.send(series, "127.0.0.1", port, calling_ae="TEST_SCU") == [0] * 4
    assert scu.send(series, "127.0.0.1", port, calling_ae="TEST_SCU") == [0] * 4
    assert len(_indexed(db)) == 4 and len(_on_disk(settings)) == 4


def test_two_senders_at_once(listener, db):
    import threading

    a = ct_series(head_phantom(10, size=64), key="parallel-a")
    b = ct_series(head_phantom(10, size=64), key="parallel-b")
    out = {}
    threads = [threading.Thread(target=lambda k, s, ae: out.__setitem__(k, scu.send(s, "127.0.0.1",
                                listener.listener.port, calling_ae=ae)), args=args)
               for args in (("a", a, "TEST_SCU"), ("b", b, "OTHER_PACS"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == {"a": [0] * 10, "b": [0] * 10}
    assert len(_indexed(db)) == 20


def test_study_is_completed_and_triage_queued_after_the_quiet_period(listener, db, queue, settings):
    import time

    from triage.studies import TRIAGE_JOB

    series = ct_series(head_phantom(3, size=64), key="quiet-net")
    scu.send(series, "127.0.0.1", listener.listener.port, calling_ae="TEST_SCU")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not queue.list(status="queued"):
        time.sleep(0.05)
    jobs = queue.list(status="queued")
    assert [(j.kind, j.payload) for j in jobs] == [(TRIAGE_JOB, {"study_uid": series[0].StudyInstanceUID})]


def test_pdu_limit_and_association_limit_are_applied(settings):
    from triage.scp import build_ae

    ae = build_ae(settings)
    assert ae.maximum_pdu_size == settings.dicom.max_pdu_bytes
    assert ae.maximum_associations == settings.dicom.max_associations
    assert "TEST_SCU" in ae.require_calling_aet
    assert isinstance(ae, AE)
