"""Abuse benchmark: can bad peers keep a real sender off the DICOM and HL7 ports (security
issue #19, findings 7 and 8)?

It starts the real listener (``readingroom receive``, its own process and data folder, default
settings: configs/default.yaml and configs/sites.yaml) and runs each attack against it, then a
real sender while the attack is on:

* DICOM: 16 connections that send 10 bytes of an A-ASSOCIATE-RQ and then nothing, from 16
  loopback addresses and from the sender's own address; 16 idle associations of a known AE
  (STMARY_PACS), from one address and from 16; a PDU header that announces 0xFFFFFFFF bytes,
  followed by 256 MiB;
* HL7 (MLLP): 200 connections that send half a frame; one 50 MB message.

The real senders are dcmtk's ``echoscu`` (AE RR_BENCH, from 127.0.0.1) and one ORM^O01 over
MLLP; each is retried every 0.2 s until it gets through. For each case it prints whether the
sender got through, how long it waited, and what the attack cost the listener: its resident
memory (VmRSS) and thread count from /proc, sampled every 20 ms, and when the attackers were
closed. Run it from the repository root (Linux: the attackers bind 127.0.0.2 and up)::

    .venv/bin/python bench/abuse.py [--json] [--keep]

Exit status: 0 every sender got through within 10 s; 1 SENDER KEPT OUT; 2 the benchmark itself
failed (the listener did not start).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/dictation.py would shadow the
# dictation package: put the project folder first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from readingroom.settings import ENV_PREFIX, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = PROJECT_ROOT / "var" / "bench"
ECHOSCU = "/usr/bin/echoscu"    # dcmtk's, by absolute path: .venv/bin holds pynetdicom's app of that name
HOST = "127.0.0.1"
SENDER_AE = "RR_BENCH"          # listed in configs/sites.yaml (site "Benchmark")
IDLE_AE = "STMARY_PACS"         # a known AE title too (site "St. Mary's Hospital")
CALLED_AE = "READINGROOM"
TARGET_S = 10.0                 # a real sender must be through within this
GIVE_UP_S = 90.0
MiB = 1 << 20


class BenchError(RuntimeError):
    """The benchmark could not measure what it should."""


@dataclass
class CaseResult:
    case: str
    through: bool
    waited_s: float
    figure: str
    rss_growth_mb: float
    threads_before: int
    threads_max: int


# -- the listener process -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def proc_status(pid: int) -> tuple[int, int]:
    """(VmRSS in KiB, threads) of a process, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["VmRSS"][0]), int(fields["Threads"][0])


class Sampler:
    """The listener's RSS and thread count, sampled in the background during one case."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss_before, self.threads_before = proc_status(pid)
        self.rss_max, self.threads_max = self.rss_before, self.threads_before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            rss, threads = proc_status(self.pid)
            self.rss_max, self.threads_max = max(self.rss_max, rss), max(self.threads_max, threads)

    def stop(self) -> "Sampler":
        self._stop.set()
        self._thread.join()
        return self

    @property
    def rss_growth_mb(self) -> float:
        return (self.rss_max - self.rss_before) * 1024 / 1e6


def start_listener(home: Path) -> tuple[subprocess.Popen, int, int, Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[ENV_PREFIX + "HOME"] = str(home)
    dicom_port, hl7_port = free_port(), free_port()
    env[ENV_PREFIX + "HL7__PORT"] = str(hl7_port)
    beside = Path(sys.executable).with_name("readingroom")
    command = [str(beside if beside.exists() else PROJECT_ROOT / ".venv" / "bin" / "readingroom"),
               "receive", "--port", str(dicom_port)]
    log_path = home / "listener.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the listener exited with status {proc.returncode}:\n{log_path.read_text()[-2000:]}")
        if echo_once(dicom_port) and hl7_once(hl7_port) is not None:
            return proc, dicom_port, hl7_port, log_path
        time.sleep(0.2)
    proc.kill()
    raise BenchError(f"the listener did not answer within 60 s:\n{log_path.read_text()[-2000:]}")


def stop_listener(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the real senders -------------------------------------------------------------------------
def echo_once(port: int) -> bool:
    run = subprocess.run([ECHOSCU, "-aet", SENDER_AE, "-aec", CALLED_AE, "-to", "10", "-ta", "10",
                          HOST, str(port)], capture_output=True, timeout=60)
    return run.returncode == 0


def order_message() -> str:
    from tests.orders_helpers import build_orm

    return build_orm("ABUSE0001", facility="Benchmark", patient_id="AB0001", start="20260105090000")


def hl7_once(port: int) -> str | None:
    """The ACK code of one ORM over MLLP, or None when the listener did not answer."""
    from readingroom.hl7 import ack_code
    from readingroom.mllp import MLLPError, send

    try:
        return ack_code(send(HOST, port, order_message(), timeout_s=10)) or "?"
    except MLLPError:
        return None


def until_through(attempt: Callable[[], Any]) -> tuple[bool, float]:
    """Retry ``attempt`` every 0.2 s until it succeeds: (got through, seconds waited)."""
    start = time.monotonic()
    while time.monotonic() - start < GIVE_UP_S:
        if attempt():
            return True, time.monotonic() - start
        time.sleep(0.2)
    return False, time.monotonic() - start


# -- the attackers ------------------------------------------------------------------------------
def connect_from(source: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect((HOST, port))
    return sock


def closed_by_peer(sock: socket.socket, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def held_for(sockets: list[socket.socket], since: float, timeout_s: float) -> str:
    """How long the listener kept the attackers' connections open."""
    if all(closed_by_peer(sock, max(0.0, since + timeout_s - time.monotonic())) for sock in sockets):
        return f"all closed by the listener after {time.monotonic() - since:.1f} s"
    return f"still open after {timeout_s:.0f} s"


def half_open_dicom(port: int, sources: list[str]) -> tuple[bool, float, str]:
    start = time.monotonic()
    attackers = []
    for source in sources:
        sock = connect_from(source, port)
        sock.sendall(struct.pack(">BBL", 0x01, 0, 205) + b"\x00\x01\x00\x00")   # 10 of 211 bytes
        attackers.append(sock)
    time.sleep(0.2)
    through, waited = until_through(lambda: echo_once(port))
    figure = held_for(attackers, start, 30)
    for sock in attackers:
        sock.close()
    return through, waited, figure


def idle_associations(port: int, sources: list[str]) -> tuple[bool, float, str]:
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

    ae = AE(ae_title=IDLE_AE)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    held = [ae.associate(HOST, port, ae_title=CALLED_AE, bind_address=(source, 0)) for source in sources]
    established = sum(a.is_established for a in held)
    through, waited = until_through(lambda: echo_once(port))
    for assoc in held:
        if assoc.is_established:
            assoc.release()
    return through, waited, f"{established} of {len(held)} idle associations accepted, the rest rejected (busy)"


def huge_pdu(port: int) -> tuple[bool, float, str]:
    sent = [0]

    def attack() -> None:
        chunk = b"\x00" * MiB
        try:
            with connect_from("127.0.0.2", port) as sock:
                sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
                while sent[0] < 256 * MiB:
                    sock.sendall(chunk)
                    sent[0] += len(chunk)
        except OSError:
            pass

    thread = threading.Thread(target=attack, daemon=True)
    thread.start()
    through, waited = until_through(lambda: echo_once(port))
    thread.join(60)
    return through, waited, f"{sent[0] / MiB:.0f} MiB of 256 sent before the listener closed it"


def half_frames(port: int, count: int = 200) -> tuple[bool, float, str]:
    from readingroom.mllp import START_BLOCK

    start = time.monotonic()
    attackers = []
    for _ in range(count):
        sock = connect_from(HOST, port)
        sock.sendall(START_BLOCK + b"MSH|^~\\&|RIS|HOSP")
        attackers.append(sock)
    through, waited = until_through(lambda: hl7_once(port))
    refused = sum(closed_by_peer(sock, 0.01) for sock in attackers)
    figure = f"{refused} of {count} refused at once; the others {held_for(attackers, start, 60)}"
    for sock in attackers:
        sock.close()
    return through, waited, figure


def huge_message(port: int, size: int = 50 * 1000 * 1000) -> tuple[bool, float, str]:
    from readingroom.hl7 import read_ack
    from readingroom.mllp import FrameReader, frame

    data = frame(order_message() + "\rNTE|1||" + "x" * size)
    start = time.monotonic()
    with connect_from(HOST, port) as sock:
        sock.settimeout(60)
        writer = threading.Thread(target=lambda: _send_quietly(sock, data), daemon=True)
        writer.start()
        reader = FrameReader(sock, max_message_bytes=1 * MiB)
        reply = reader.read()
        ack = read_ack(reply) if reply else None
        replied_s = time.monotonic() - start
        writer.join(60)
        closed = closed_by_peer(sock, 10)
    answer = f"{ack.code} {ack.text!r}" if ack else "no reply"
    through, waited = until_through(lambda: hl7_once(port))
    return through, waited, (f"answered {answer} after {replied_s:.1f} s, connection "
                             f"{'closed' if closed else 'left open'}")


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


# -- the run -------------------------------------------------------------------------------------
def run_cases(pid: int, dicom_port: int, hl7_port: int) -> list[CaseResult]:
    addresses = [f"127.0.0.{n}" for n in range(2, 18)]
    cases: list[tuple[str, Callable[[], tuple[bool, float, str]]]] = [
        ("DICOM half-open A-ASSOCIATE-RQ x16, 16 addresses", lambda: half_open_dicom(dicom_port, addresses)),
        ("DICOM half-open A-ASSOCIATE-RQ x16, sender's address", lambda: half_open_dicom(dicom_port, [HOST] * 16)),
        ("DICOM idle associations of a known AE x16, 1 address",
         lambda: idle_associations(dicom_port, ["127.0.0.2"] * 16)),
        ("DICOM idle associations of a known AE x16, 16 addresses", lambda: idle_associations(dicom_port, addresses)),
        ("DICOM PDU header 0xFFFFFFFF + 256 MiB", lambda: huge_pdu(dicom_port)),
        ("MLLP half-sent frames x200", lambda: half_frames(hl7_port)),
        ("MLLP 50 MB message", lambda: huge_message(hl7_port)),
    ]
    results = []
    for name, case in cases:
        time.sleep(0.5)   # the previous case's connections are gone
        sampler = Sampler(pid)
        through, waited, figure = case()
        sampler.stop()
        results.append(CaseResult(name, through, round(waited, 2), figure, round(sampler.rss_growth_mb, 1),
                                  sampler.threads_before, sampler.threads_max))
        print(f"  {name}: {'through' if through else 'KEPT OUT'} after {waited:.2f} s", flush=True)
    return results


def print_table(results: list[CaseResult], settings: dict[str, Any]) -> None:
    print()
    print("Listener defaults: dicom " + ", ".join(f"{k}={settings['dicom'][k]}" for k in
          ("max_associations", "max_associations_per_address", "association_timeout_s", "max_pdu_bytes")))
    print("                   hl7 " + ", ".join(f"{k}={settings['hl7'][k]}" for k in
          ("max_connections", "idle_timeout_s", "max_message_bytes")))
    print()
    print(f"{'case':<58} {'sender':<9} {'waited':>8} {'RSS +MB':>8} {'threads':>10}")
    for r in results:
        print(f"{r.case:<58} {'through' if r.through else 'KEPT OUT':<9} {r.waited_s:>7.2f}s "
              f"{r.rss_growth_mb:>8.1f} {r.threads_before:>4}->{r.threads_max:<5}")
        print(f"{'':<4}{r.figure}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON as well")
    parser.add_argument("--keep", action="store_true", help="keep the listener's data folder and log")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix="abuse-", dir=BENCH_ROOT))
    settings = load_settings(environ={}).model_dump(mode="json")
    try:
        proc, dicom_port, hl7_port, log_path = start_listener(home)
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
        return 2
    try:
        print(f"listener pid {proc.pid}: DICOM {HOST}:{dicom_port}, HL7 {HOST}:{hl7_port}")
        results = run_cases(proc.pid, dicom_port, hl7_port)
    finally:
        stop_listener(proc)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"kept {home} (listener log: {log_path})")
    print_table(results, settings)
    if args.json:
        print(json.dumps([asdict(r) for r in results], indent=2))
    kept_out = [r.case for r in results if not r.through or r.waited_s > TARGET_S]
    if kept_out:
        print(f"\nSENDER KEPT OUT (or waited over {TARGET_S:.0f} s): {kept_out}")
        return 1
    print(f"\nevery real sender got through within {TARGET_S:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
