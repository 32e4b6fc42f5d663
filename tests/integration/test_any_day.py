"""Tests that hold on any day: the date-sensitive tests again, on another day, hour and time zone.

libfaketime (Debian ``faketime``, installed by ``make``) moves the clock of a child pytest to
08:00 on 1 January 2032 in Pacific/Kiritimati (UTC+14), where the local date is a day and a
year ahead of the UTC date. A test that compares with a fixed calendar date, mixes local and UTC
time, or assumes the hour fails here. Timing tests (quiet periods, worker races) are left out:
libfaketime's timed waits are not exact enough for them, and they do not read the calendar.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
ROOT = Path(__file__).resolve().parents[2]
DATE_SENSITIVE = [
    "tests/test_orders.py", "tests/test_orders_hl7.py", "tests/test_orders_fhir.py", "tests/test_orders_linking.py",
    "tests/test_reports.py", "tests/test_report_delivery.py", "tests/test_worklist.py", "tests/test_ai_decision.py",
    "tests/integration/test_worklist_mwl.py",
]


def _child_env(fake: str, zone: str) -> dict[str, str]:
    return {**os.environ, "LD_PRELOAD": str(LIBFAKETIME), "FAKETIME": fake, "TZ": zone,
            "FAKETIME_DONT_FAKE_MONOTONIC": "0"}


def test_libfaketime_moves_the_clock_of_a_child():
    assert LIBFAKETIME.exists(), "libfaketime is missing: run `make install` (Debian package faketime)"
    out = subprocess.run([sys.executable, "-c", "import datetime; print(datetime.date.today().isoformat())"],
                         env=_child_env("@2032-01-01 08:00:00", "Pacific/Kiritimati"),
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "2032-01-01", out.stderr


@pytest.mark.timeout(1200)
def test_the_date_sensitive_tests_pass_on_new_years_day_2032_at_utc_plus_14():
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", *DATE_SENSITIVE],
                         cwd=ROOT, env=_child_env("@2032-01-01 08:00:00", "Pacific/Kiritimati"),
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
