"""`readingroom run --demo`: the demo is seeded through the listener, the page needs a login and
lists the worklist, and Ctrl-C stops everything cleanly."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import pytest

from tests.conftest import free_port
from tests.integration.helpers import readingroom, start, stop, visible_studies

pytestmark = [pytest.mark.integration, pytest.mark.slow]
DEMO_STUDIES = 10


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_for_studies(url: str, proc, n: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, "readingroom run exited"
        try:
            last = visible_studies(url)
            if last >= n:
                return last
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the demo did not arrive: {last} studies")


def test_run_demo_serves_the_worklist_behind_a_login_and_stops_on_ctrl_c(tmp_path):
    from gradio_client import Client

    home, dicom_port, web_port = tmp_path / "home", free_port(), free_port()
    args = ("run", "--demo", "--port", str(dicom_port), "--web-port", str(web_port))
    url = f"http://127.0.0.1:{web_port}"
    # The demo sites; the triage models off, so that the order is the policy's without AI
    # (tests/test_models.py runs the models through the same job handler).
    proc = start(*args, home=home, log=tmp_path / "run.log", READINGROOM_SITES="", READINGROOM_MODELS__ENABLED="false")
    try:
        _wait_for_studies(url, proc, DEMO_STUDIES)
        # /healthz needs no login, so it says only that the server is alive.
        assert _get_json(url + "/healthz") == {"status": "ok"}

        # Without a login the worklist is not served.
        with pytest.raises(Exception):  # noqa: B017 - gradio_client raises ValueError or an httpx error, by version
            Client(url, verbose=False).predict(api_name="/refresh")
        with pytest.raises(Exception):  # noqa: B017 - refused login: the type differs by gradio_client version
            Client(url, auth=("demo", "wrong"), verbose=False)

        client = Client(url, auth=("demo", "demo"), verbose=False)
        deadline = time.monotonic() + 30
        while True:   # the demo studies complete after their quiet period
            worklist = client.predict("", "", "", api_name="/refresh")    # filters: site, modality, status
            rows = worklist["data"]
            if len(rows) == DEMO_STUDIES and all(r[3] == "new" for r in rows) or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert len(rows) == DEMO_STUDIES
        patients = [row[6] for row in rows]
        labels = [row[1] for row in rows]
        # The STAT head CT first, then the two HIGH-priority orders, then routine in arrival order.
        assert patients[:3] == ["DOE^JOHN", "OKAFOR^GRACE", "SYNTHETIC^HEAD^TWO"]
        assert labels == ["critical", "urgent", "urgent"] + ["routine"] * (DEMO_STUDIES - 3)
        assert patients[3:] == ["RIVERA^ANA", "NGUYEN^PAUL", "SMITH^LUCY", "KOWALSKI^ADAM", "MEYER^EVA",
                                "BROWN^OLIVER", "SYNTHETIC^HEAD"]
        modalities = {row[4] for row in rows}
        assert {"CT", "CR", "MR", "US", "NM"} <= modalities
        assert all("AI unavailable" in row[12] for row in rows)
        # the modality filter
        only_ct = client.predict("", "CT", "", api_name="/refresh")["data"]
        assert only_ct and {row[4] for row in only_ct} == {"CT"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)        # what Ctrl-C sends
        try:
            proc.wait(30)
        finally:
            stop(proc)
    log = (tmp_path / "run.log").read_text()
    assert proc.returncode == 0, log[-2000:]
    assert "ReadingRoom stopped." in log
    assert "demo / demo" in log and "admin / admin" in log and f"http://127.0.0.1:{web_port}" in log

    # The demo is seeded once: a second start does not send it again.
    listed = json.loads(readingroom("worklist", "--json", home=home, READINGROOM_SITES="").stdout)
    assert len(listed) == DEMO_STUDIES
    proc = start(*args, home=home, log=tmp_path / "run2.log", READINGROOM_SITES="")
    try:
        _wait_for_studies(url, proc, DEMO_STUDIES)
        time.sleep(3)
        assert visible_studies(url) == DEMO_STUDIES
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


def test_run_web_only_serves_the_page_without_listeners_or_workers(tmp_path):
    """A web node of a larger deployment (docs/deploy.md): the page, and nothing on the DICOM or HL7 ports."""
    import socket

    home, dicom_port, hl7_port, web_port = tmp_path / "home", free_port(), free_port(), free_port()
    url = f"http://127.0.0.1:{web_port}"
    log = tmp_path / "run.log"
    proc = start("run", "--web-only", "--port", str(dicom_port), "--web-port", str(web_port), home=home, log=log,
                 READINGROOM_HL7__PORT=str(hl7_port), READINGROOM_ADMIN_PASSWORD="web-only-admin-Pw1")
    try:
        deadline = time.monotonic() + 120
        while "Web node only" not in log.read_text(errors="replace"):
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "no banner"
            time.sleep(0.2)
        assert _get_json(url + "/healthz") == {"status": "ok"}
        for port in (dicom_port, hl7_port):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port), timeout=2).close()
        text = log.read_text(errors="replace")
        assert "web node only: the jobs it queues" in text and "job worker(s) for" not in text
        assert "DICOM listener" not in text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0


def test_run_demo_and_web_only_together_are_refused(tmp_path):
    done = readingroom("run", "--demo", "--web-only", "--web-port", str(free_port()), home=tmp_path / "home")
    assert done.returncode != 0
    assert "--web-only does not start" in done.stderr + done.stdout
