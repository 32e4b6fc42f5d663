"""The web page over HTTPS (issue 19, finding 6): `readingroom run` with web.tls_certfile and
web.tls_keyfile serves HTTPS with HSTS and a Secure session cookie; off loopback it refuses to
start without TLS, and --demo refuses anything but loopback."""

from __future__ import annotations

import http.cookiejar
import signal
import ssl
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import free_port
from tests.integration.helpers import readingroom, start, stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _self_signed(folder) -> tuple[str, str]:
    cert, key = folder / "web.crt", folder / "web.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return str(cert), str(key)


def test_https_with_hsts_and_a_secure_cookie(tmp_path):
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = start("run", "--demo", "--port", str(free_port()), "--web-port", str(port), home=tmp_path / "home",
                 log=tmp_path / "run.log", READINGROOM_WEB__TLS_CERTFILE=cert, READINGROOM_WEB__TLS_KEYFILE=key,
                 READINGROOM_DEMO__SEED="false", READINGROOM_MODELS__ENABLED="false")
    context = ssl.create_default_context(cafile=cert)
    url = f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(url + "/healthz", context=context, timeout=5) as answer:
                    assert answer.headers["Strict-Transport-Security"].startswith("max-age=")
                    assert answer.headers["X-Content-Type-Options"] == "nosniff"
                    break
            except OSError:
                assert time.monotonic() < deadline, "no HTTPS answer"
                time.sleep(0.5)
        with pytest.raises(OSError):                 # plain HTTP is not served on that port
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read()
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context),
                                             urllib.request.HTTPCookieProcessor(jar))
        opener.open(url + "/login", data=urllib.parse.urlencode({"username": "demo", "password": "demo"}).encode(),
                    timeout=10).read()
        (cookie,) = list(jar)
        assert cookie.name == "rr_session" and cookie.secure
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        finally:
            stop(proc)
    assert "https://127.0.0.1" in (tmp_path / "run.log").read_text()


def test_off_loopback_without_tls_and_demo_off_loopback_refuse_to_start(tmp_path):
    plain = readingroom("run", "--port", str(free_port()), "--web-port", str(free_port()), home=tmp_path / "a",
                        READINGROOM_WEB__HOST="0.0.0.0")
    assert plain.returncode == 2 and "web.tls_certfile" in plain.stderr, plain.stderr[-2000:]
    demo = readingroom("run", "--demo", "--port", str(free_port()), "--web-port", str(free_port()),
                       home=tmp_path / "b", READINGROOM_DICOM__HOST="0.0.0.0")
    assert demo.returncode == 2 and "dicom.host=0.0.0.0" in demo.stderr and "loopback" in demo.stderr, \
        demo.stderr[-2000:]
