"""The command line as an operator uses it: import, worklist, receive, bad settings."""

from __future__ import annotations

import json
import subprocess
import warnings

import pytest
from pydicom import dcmread

from tests.conftest import DCMTK, free_port
from tests.integration.helpers import readingroom, start, stop

pytestmark = pytest.mark.integration


def _unique_decodable_sop_uids(folder) -> set[str]:
    uids = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for path in folder.glob("*.dcm"):
            try:
                ds = dcmread(path)
                if "PixelData" in ds:
                    ds.pixel_array  # noqa: B018
                uids.add(str(ds.SOPInstanceUID))
            except Exception:  # noqa: BLE001
                pass
    return uids


def test_import_the_sample_folder_then_list_the_worklist(tmp_path, samples):
    home = tmp_path / "home"
    run = readingroom("import", str(samples), "--quiet", home=home)
    assert run.returncode == 2, run.stderr          # some files are rejected: exit 2, with reasons
    expected = _unique_decodable_sop_uids(samples)
    total = len(list(samples.glob("*.dcm")))
    summary = run.stdout.splitlines()[0]
    stored = int(summary.split("stored ")[1].split(",")[0])
    duplicates = int(summary.split("duplicates ")[1].split(",")[0])
    rejected = int(summary.split("rejected ")[1].split(",")[0])
    assert stored == len(expected)
    assert stored + duplicates + rejected == total
    assert "OT-PAL-8-face.dcm: 0xC210 not a DICOM file" in run.stdout
    assert "emri_small_jpeg_2k_lossless_too_short.dcm: 0xC211" in run.stdout

    listed = json.loads(readingroom("worklist", "--json", home=home).stdout)
    assert sum(item["num_instances"] for item in listed) == stored
    for item in listed:
        assert {"study_uid", "accession", "patient_id", "patient_name", "modality", "description", "site",
                "received_at", "status", "num_instances", "priority", "ai"} <= set(item)
        assert item["status"] == "new"                 # imported studies are complete at once
    table = readingroom("worklist", home=home).stdout
    assert "PRIORITY" in table and listed[0]["patient_name"][:10] in table

    again = readingroom("import", str(samples / "693_UNCR.dcm"), "--quiet", home=home)
    assert again.returncode == 0 and "stored 0, duplicates 1" in again.stdout


def test_import_of_a_missing_folder_says_so(tmp_path):
    run = readingroom("import", str(tmp_path / "nowhere"), home=tmp_path / "home")
    assert run.returncode != 0
    assert "neither a file nor a folder" in run.stderr


def test_bad_setting_stops_start_up_with_its_name(tmp_path):
    run = readingroom("worklist", home=tmp_path / "home", READINGROOM_DICOM__PORT="eleven")
    assert run.returncode == 2
    assert "dicom.port" in run.stderr and "valid integer" in run.stderr


def test_receive_with_its_own_port_and_ae_title(tmp_path):
    port = free_port()
    proc = start("receive", "--port", str(port), "--ae-title", "NIGHTREAD", home=tmp_path / "home",
                 log=tmp_path / "receive.log")
    try:
        wait_for_echo_as(port, proc, "NIGHTREAD")
        wrong = subprocess.run([str(DCMTK / "echoscu"), "-aet", "TEST_SCU", "-aec", "READINGROOM", "127.0.0.1",
                                str(port)], capture_output=True, text=True, timeout=30)
        assert wrong.returncode != 0                    # called AE title must match
    finally:
        stop(proc)
    assert proc.returncode == 0                         # SIGTERM: clean shutdown


def wait_for_echo_as(port, proc, called_ae):
    import time

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ok = subprocess.run([str(DCMTK / "echoscu"), "-aet", "TEST_SCU", "-aec", called_ae, "127.0.0.1",
                             str(port)], capture_output=True, text=True, timeout=30)
        if ok.returncode == 0:
            return
        assert proc.poll() is None, "the listener exited"
        time.sleep(0.3)
    pytest.fail("the listener never answered")
