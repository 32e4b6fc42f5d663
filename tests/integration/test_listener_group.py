"""`readingroom receive --processes 2`: two listener processes on one port (triage/listener_group.py).

As an operator would run it: the kernel spreads the associations over both processes, every
acknowledged instance is stored once, a process killed with SIGKILL is replaced while the other
keeps serving, and SIGTERM stops them all.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from models.phantoms import ct_series, head_phantom
from readingroom import dicom_net as scu
from tests.conftest import free_port
from tests.integration.helpers import start, stop, wait_for_echo

pytestmark = [pytest.mark.integration]

ASSOCIATIONS = 16


def _children(pid: int) -> list[int]:
    """The pids of the processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def _listeners(pid: int) -> list[int]:
    """The supervisor's listener processes (multiprocessing's resource tracker is a child too)."""
    return [child for child in _children(pid)
            if b"multiprocessing.spawn" in Path(f"/proc/{child}/cmdline").read_bytes()
            and b"resource_tracker" not in Path(f"/proc/{child}/cmdline").read_bytes()]


def _established_on(port: int) -> dict[str, int]:
    """inode -> 1 for each ESTABLISHED TCP socket whose local port is ``port``."""
    inodes = {}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":
            inodes[fields[9]] = 1
    return inodes


def _connections_of(pid: int, port: int) -> int:
    sockets = _established_on(port)
    count = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in sockets:
            count += 1
    return count


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _stored(home: Path) -> set[str]:
    with sqlite3.connect(home / "readingroom.db") as conn:
        return {row[0] for row in conn.execute("SELECT sop_uid FROM instances")}


def test_two_listener_processes_share_one_port_and_replace_a_killed_one(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = start("receive", "--port", str(port), "--processes", "2", home=home, log=tmp_path / "receive.log",
                 READINGROOM_DICOM__MAX_ASSOCIATIONS_PER_ADDRESS=str(ASSOCIATIONS),
                 READINGROOM_INTAKE__QUIET_PERIOD_S="60")
    try:
        wait_for_echo(port, proc)
        _wait(lambda: "(2 processes); Ctrl-C to stop" in (tmp_path / "receive.log").read_text(), 120,
              "both listener processes")
        first = _listeners(proc.pid)
        assert len(first) == 2, first

        # Sixteen associations held open at once: the kernel gives each process some of them.
        ae = AE(ae_title="TEST_SCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        held = [ae.associate("127.0.0.1", port, ae_title="READINGROOM") for _ in range(ASSOCIATIONS)]
        try:
            assert all(a.is_established for a in held)
            per_process = {pid: _connections_of(pid, port) for pid in first}
            assert sum(per_process.values()) == ASSOCIATIONS and all(per_process.values()), per_process
        finally:
            for assoc in held:
                assoc.release()

        # Four senders at once, 40 instances: every one acknowledged and stored once.
        series = ct_series(head_phantom(40, size=32), key="listener-group", accession="GROUP1")
        statuses: list[int] = []

        def send(part) -> None:
            scu.send(part, "127.0.0.1", port, calling_ae="TEST_SCU", on_status=lambda _i, s: statuses.append(s))

        threads = [threading.Thread(target=send, args=(series[n::4],)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert statuses == [0] * 40
        assert _stored(home) == {ds.SOPInstanceUID for ds in series}

        # kill -9 one process: the other keeps serving, and the supervisor starts another.
        victim, other = first
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_listeners(proc.pid)) == 2 and victim not in _listeners(proc.pid), 60,
              "a new listener process")
        assert other in _listeners(proc.pid)
        assert "died with status -9" in (tmp_path / "receive.log").read_text()
        more = ct_series(head_phantom(8, size=32, seed=7), key="listener-group-2", accession="GROUP2")
        _wait(lambda: all(_connections_of(pid, port) == 0 for pid in _listeners(proc.pid)), 30, "idle listeners")
        for _ in range(40):            # until the new process listens too, a connection may reach either
            if scu.echo("127.0.0.1", port, calling_ae="TEST_SCU"):
                break
        sent: list[int] = []
        scu.send(more, "127.0.0.1", port, calling_ae="TEST_SCU", on_status=lambda _i, s: sent.append(s))
        assert sent == [0] * 8
        assert _stored(home) == {ds.SOPInstanceUID for ds in [*series, *more]}
        listeners = _listeners(proc.pid)
    finally:
        stop(proc)
    assert proc.returncode == 0
    assert not [pid for pid in listeners if Path(f"/proc/{pid}").exists()], "a listener process outlived SIGTERM"
