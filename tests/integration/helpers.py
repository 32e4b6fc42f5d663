"""Run ReadingRoom commands as real processes, as an operator would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from readingroom import dicom_net as scu

SITES = [{"name": "Test Hospital", "ae_titles": ["TEST_SCU", "STORESCU"], "quiet_period_s": 0.5}]


def env_for(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a ReadingRoom process: test sites unless READINGROOM_SITES="" (shipped sites)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
    env.update({"READINGROOM_HOME": str(home), "READINGROOM_SITES": json.dumps(SITES),
                "READINGROOM_JOBS__POLL_INTERVAL_S": "0.1", "PYTHONUNBUFFERED": "1",
                "READINGROOM_HL7__PORT": "0"})  # the HL7 order listener on any free port
    env.update(extra)
    if env["READINGROOM_SITES"] == "":
        del env["READINGROOM_SITES"]
    return env


def readingroom(*args: str, home: Path, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", *args], env=env_for(home, **extra),
                          capture_output=True, text=True, timeout=timeout)


def start(*args: str, home: Path, log: Path, **extra: str) -> subprocess.Popen:
    handle = open(log, "ab")
    return subprocess.Popen([sys.executable, "-m", "app", *args], env=env_for(home, **extra),
                            stdout=handle, stderr=subprocess.STDOUT)


def wait_for_echo(port: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the listener exited with {proc.returncode}")
        try:
            if scu.echo("127.0.0.1", port, calling_ae="TEST_SCU"):
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    raise TimeoutError(f"no C-ECHO answer on port {port} after {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def visible_studies(url: str, user: str = "demo", password: str = "demo") -> int:
    """How many studies ``user`` sees on a running web server (``/healthz`` only says it is alive)."""
    import http.cookiejar
    import urllib.parse
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"username": user, "password": password}).encode()
    opener.open(url + "/login", data=form, timeout=10).read()
    with opener.open(url + "/api/status", timeout=10) as response:
        return int(json.loads(response.read())["studies"])
