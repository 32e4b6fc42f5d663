"""Intake benchmark: how fast does the DICOM listener take in a CT series, durably?

It measures, against the real listener (``readingroom receive``, started as its own process
with durability on: every file fsync'd with its folder before the acknowledgement, SQLite
``synchronous=FULL``, pixel data verified):

* run A: a 300-image 512x512 CT series sent by dcmtk's ``storescu`` (one association);
* run B: a second such series (another study) sent by a pynetdicom SCU (``readingroom.dicom_net.send``);
* run C: a third series sent by the same SCU over two parallel associations, as a PACS does;

and prints, for each run, images/s and MB/s (MB = bytes of the files sent / 1e6, timed from the
start of the sender to the last acknowledgement, association set-up and release included), the
time from the last acknowledged image to the queued triage job minus the quiet period, and
checks that the database holds every image of the study. Target on 2 cores: >= 100 images/s.

Run it from the repository root (``make bench`` does the same)::

    .venv/bin/python bench/intake.py [--images 300] [--quiet-period 2] [--keep] [--json]

The data (series files, the listener's data folder and log) go to a temporary folder under
var/bench/, removed at the end unless --keep. Exit status: 0 target met; 1 TARGET MISSED;
2 the benchmark itself failed (a sender failed, images missing from the database, no triage job).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/dictation.py would shadow the
# dictation package: put the project folder first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Engine, create_engine, func, select
from sqlalchemy.orm import Session

from readingroom import dicom_net as scu
from readingroom.schema import Instance, Job, Series, Study, utcnow
from readingroom.settings import ENV_PREFIX, Settings, load_settings
from models import phantoms
from triage.studies import triage_dedupe_key

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = PROJECT_ROOT / "var" / "bench"
# dcmtk's storescu by absolute path: .venv/bin holds pynetdicom's own app of the same name.
STORESCU = "/usr/bin/storescu"
HOST = "127.0.0.1"
CALLING_AE = "RR_BENCH"   # listed in configs/sites.yaml (site "Benchmark"); other callers are rejected
CALLED_AE = "READINGROOM"
TARGET_IMAGES_PER_S = 100.0
POLL_S = 0.01


class BenchError(RuntimeError):
    """The benchmark could not measure what it should (not a slow result: a broken one)."""


@dataclass
class BenchSeries:
    name: str
    study_uid: str
    paths: list[Path]
    n_bytes: int


@dataclass
class RunResult:
    sender: str
    images: int
    megabytes: float
    seconds: float = 0.0
    images_per_s: float = 0.0
    mb_per_s: float = 0.0
    stored_instances: int = 0
    # Last acknowledged image -> triage job queued, minus the quiet period (seconds).
    triage_latency_s: float | None = None
    # The same measured inside the listener: last instance indexed -> job queued, minus quiet.
    triage_latency_server_s: float | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class Sent:
    started: float            # perf_counter
    finished: float           # perf_counter, after the last acknowledgement
    last_ack_utc: datetime    # naive UTC, comparable with the database's times


# -- the data ---------------------------------------------------------------------------------
def make_series(volume: Any, key: str, patient_id: str, folder: Path) -> BenchSeries:
    """Write one synthetic CT series (one file per slice) and return its files."""
    folder.mkdir(parents=True)
    datasets = phantoms.ct_series(volume, key=key, patient_id=patient_id, accession=patient_id)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    n_bytes = sum(p.stat().st_size for p in paths)
    log.info("wrote %d files (%.1f MB) to %s", len(paths), n_bytes / 1e6, folder)
    return BenchSeries(key, str(datasets[0].StudyInstanceUID), paths, n_bytes)


# -- the listener -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def listener_env(home: Path, quiet_period_s: float) -> dict[str, str]:
    """The environment of the listener: ours without READINGROOM_* variables, plus the bench's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env[ENV_PREFIX + "HOME"] = str(home)
    env[ENV_PREFIX + "INTAKE__QUIET_PERIOD_S"] = str(quiet_period_s)
    env[ENV_PREFIX + "DATABASE__SQLITE_SYNCHRONOUS"] = "FULL"
    env[ENV_PREFIX + "DICOM__VERIFY_PIXEL_DATA"] = "true"
    # configs/sites.yaml gives the Benchmark site its own quiet_period_s, which wins over
    # intake.quiet_period_s: set the sender's site to the requested quiet period as well.
    sites = load_settings(environ=env).model_dump(mode="json")["sites"]
    for site in sites:
        if CALLING_AE in site["ae_titles"]:
            site["quiet_period_s"] = quiet_period_s
    env[ENV_PREFIX + "SITES"] = json.dumps(sites)
    return env


def readingroom_command() -> str:
    beside = Path(sys.executable).with_name("readingroom")
    return str(beside if beside.exists() else PROJECT_ROOT / ".venv" / "bin" / "readingroom")


def start_listener(env: dict[str, str], port: int, log_path: Path) -> subprocess.Popen:
    command = [readingroom_command(), "receive", "--port", str(port)]
    log.info("starting %s", " ".join(command))
    with open(log_path, "wb") as out:
        return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


def wait_until_ready(proc: subprocess.Popen, port: int, log_path: Path, timeout_s: float = 60) -> None:
    """Wait for the port to accept connections, then for a C-ECHO to succeed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the listener exited with status {proc.returncode}:\n{tail(log_path)}")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                pass
        except OSError:
            time.sleep(0.1)
            continue
        if scu.echo(HOST, port, called_ae=CALLED_AE, calling_ae=CALLING_AE):
            log.info("listener answers C-ECHO on %s:%d", HOST, port)
            return
        time.sleep(0.2)
    raise BenchError(f"the listener did not answer a C-ECHO within {timeout_s:.0f} s:\n{tail(log_path)}")


def stop_listener(proc: subprocess.Popen, timeout_s: float = 20) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        log.warning("the listener did not stop within %.0f s of SIGTERM; killing it", timeout_s)
        proc.kill()
        proc.wait()
    if proc.returncode not in (0, -signal.SIGTERM):
        log.warning("the listener exited with status %s", proc.returncode)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- the senders ------------------------------------------------------------------------------
def send_with_storescu(series: BenchSeries, port: int) -> Sent:
    command = [STORESCU, "-aet", CALLING_AE, "-aec", CALLED_AE, HOST, str(port), *map(str, series.paths)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    finished = time.perf_counter()
    # storescu exits after the release: its end is the last acknowledgement (to within the release).
    last_ack = utcnow()
    if done.returncode != 0:
        raise BenchError(f"storescu exited with status {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return Sent(started, finished, last_ack)


def send_with_pynetdicom(series: BenchSeries, port: int) -> Sent:
    acks: list[tuple[float, datetime]] = []

    def on_status(_index: int, _status: int) -> None:
        acks.append((time.perf_counter(), utcnow()))

    started = time.perf_counter()
    statuses = scu.send(series.paths, HOST, port, called_ae=CALLED_AE, calling_ae=CALLING_AE, on_status=on_status)
    failed = [(i, s) for i, s in enumerate(statuses) if s != 0]
    if failed or len(statuses) != len(series.paths):
        raise BenchError(f"pynetdicom: {len(failed)} of {len(series.paths)} images not stored "
                         f"(first: index {failed[0][0]}, status {failed[0][1]:#06x})" if failed
                         else f"pynetdicom: {len(statuses)} statuses for {len(series.paths)} images")
    finished, last_ack = acks[-1]
    return Sent(started, finished, last_ack)


def send_with_pynetdicom_parallel(series: BenchSeries, port: int, associations: int = 2) -> Sent:
    """The series split over parallel associations, as a PACS pushing a study usually does."""
    acks: list[tuple[float, datetime]] = []
    results: dict[int, list[int]] = {}
    parts = [series.paths[k::associations] for k in range(associations)]

    def on_status(_index: int, _status: int) -> None:
        acks.append((time.perf_counter(), utcnow()))

    def push(k: int) -> None:
        results[k] = scu.send(parts[k], HOST, port, called_ae=CALLED_AE, calling_ae=CALLING_AE, on_status=on_status)

    started = time.perf_counter()
    threads = [threading.Thread(target=push, args=(k,)) for k in range(associations)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = [s for k in range(associations) for s in results.get(k, [])]
    if len(statuses) != len(series.paths) or any(s != 0 for s in statuses):
        raise BenchError(f"pynetdicom x{associations}: {sum(1 for s in statuses if s == 0)} of "
                         f"{len(series.paths)} images acknowledged with Success")
    finished, last_ack = max(acks)
    return Sent(started, finished, last_ack)


SENDERS = {"storescu": send_with_storescu, "pynetdicom": send_with_pynetdicom,
           "pynetdicom x2": send_with_pynetdicom_parallel}


# -- the database (read only) -----------------------------------------------------------------
def read_only_engine(settings: Settings) -> Engine:
    """A plain engine on the listener's database, for reads only.

    ``readingroom.db.Database`` starts every transaction with BEGIN IMMEDIATE (the write lock);
    polling through it every 10 ms would compete with the listener for that lock and skew the
    latency measured. Plain SELECTs in WAL mode take no lock.
    """
    return create_engine(settings.database_url)


def study_counts(engine: Engine, study_uid: str) -> tuple[int, datetime | None]:
    """Instances stored for the study, and when the last one was indexed."""
    with Session(engine) as session:
        count, last = session.execute(
            select(func.count(Instance.id), func.max(Instance.received_at))
            .join(Series, Instance.series_id == Series.id)
            .join(Study, Series.study_id == Study.id)
            .where(Study.study_uid == study_uid)
        ).one()
    return int(count), last


def wait_for_triage_job(engine: Engine, study_uid: str, timeout_s: float) -> datetime | None:
    """Poll every 10 ms for the study's triage job; its created_at (naive UTC), or None."""
    key = triage_dedupe_key(study_uid)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with Session(engine) as session:
            created = session.scalar(select(Job.created_at).where(Job.dedupe_key == key).order_by(Job.id).limit(1))
        if created is not None:
            return created
        time.sleep(POLL_S)
    return None


# -- one run ----------------------------------------------------------------------------------
def run_one(sender: str, series: BenchSeries, port: int, engine: Engine, quiet_s: float, job_timeout_s: float) -> RunResult:
    result = RunResult(sender, len(series.paths), round(series.n_bytes / 1e6, 1))
    log.info("run %s: sending %d images", sender, len(series.paths))
    try:
        sent = SENDERS[sender](series, port)
    except BenchError as exc:
        result.errors.append(str(exc))
    else:
        result.seconds = sent.finished - sent.started
        result.images_per_s = len(series.paths) / result.seconds
        result.mb_per_s = series.n_bytes / 1e6 / result.seconds
        log.info("run %s: %.2f s; waiting for the triage job (quiet period %.1f s)", sender, result.seconds, quiet_s)
        queued = wait_for_triage_job(engine, series.study_uid, job_timeout_s)
        if queued is None:
            result.errors.append(f"no triage job queued within {job_timeout_s:.0f} s of the last image")
        else:
            result.triage_latency_s = (queued - sent.last_ack_utc).total_seconds() - quiet_s
    result.stored_instances, last_indexed = study_counts(engine, series.study_uid)
    if result.triage_latency_s is not None and last_indexed is not None:
        queued = wait_for_triage_job(engine, series.study_uid, 0.1)
        result.triage_latency_server_s = (queued - last_indexed).total_seconds() - quiet_s
    if result.stored_instances != len(series.paths):
        result.errors.append(f"the database holds {result.stored_instances} instances of study "
                             f"{series.study_uid}, not {len(series.paths)}")
    return result


# -- the report -------------------------------------------------------------------------------
def target_met(runs: list[RunResult]) -> bool:
    """>= 100 images/s from storescu and from a pynetdicom SCU (its best run: one association is
    limited by the Python sender itself; a PACS pushes over several associations)."""
    rates: dict[str, float] = {}
    for r in runs:
        kind = r.sender.split()[0]
        rates[kind] = max(rates.get(kind, 0.0), r.images_per_s)
    return all(rate >= TARGET_IMAGES_PER_S for rate in rates.values())

def durability(settings: Settings) -> dict[str, Any]:
    return {
        "file_fsync": ("file fdatasync'd and its folder fsync'd before each acknowledgement (readingroom.storage."
                       "write_pending, PendingFile.install); one folder fsync and one commit for the instances that "
                       "wait for the lock together"),
        "sqlite_synchronous": settings.database.sqlite_synchronous,
        "sqlite_journal": "WAL",
        "verify_pixel_data": settings.dicom.verify_pixel_data,
    }


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 0


def format_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{round(seconds * 1000):d} ms"


def print_table(report: dict[str, Any]) -> None:
    print(f"\nReadingRoom intake benchmark: {report['images']} CT images {report['size']}x{report['size']}, "
          f"{report['cpu_cores']} CPU cores")
    d = report["durability"]
    print(f"durability: {d['file_fsync']}; SQLite synchronous={d['sqlite_synchronous']} "
          f"({d['sqlite_journal']}); verify_pixel_data={str(d['verify_pixel_data']).lower()}")
    print(f"quiet period: {report['quiet_period_s']:g} s (subtracted from the triage latency)\n")
    header = f"{'sender':<13} {'images':>6} {'MB':>7} {'seconds':>8} {'images/s':>9} {'MB/s':>7} {'stored':>6} " \
             f"{'triage queued*':>15} {'(in listener)':>14}"
    print(header)
    print("-" * len(header))
    for r in report["runs"]:
        print(f"{r['sender']:<13} {r['images']:>6} {r['megabytes']:>7.1f} {r['seconds']:>8.2f} "
              f"{r['images_per_s']:>9.1f} {r['mb_per_s']:>7.1f} {r['stored_instances']:>6} "
              f"{format_ms(r['triage_latency_s']):>15} {format_ms(r['triage_latency_server_s']):>14}")
    print("* from the last acknowledged image to the queued triage job, minus the quiet period;\n"
          "  (in listener): from the last image indexed to the job queued, minus the quiet period.")
    for r in report["runs"]:
        for error in r["errors"]:
            print(f"ERROR {r['sender']}: {error}")
    verdict = "met" if report["target_met"] else "TARGET MISSED"
    print(f"target >= {TARGET_IMAGES_PER_S:g} images/s from storescu and from a pynetdicom SCU "
          f"(its best run): {verdict}")


# -- main -------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images per series (default 300)")
    parser.add_argument("--quiet-period", type=float, default=2.0, help="quiet period in seconds (default 2)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder under var/bench/")
    parser.add_argument("--json", action="store_true", help="print only one JSON line")
    return parser.parse_args(argv)


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    size = 512
    log.info("computing a %d-slice %dx%d head phantom", args.images, size, size)
    volume = phantoms.head_phantom(args.images, size=size, seed=1)
    # One study per sender (another key, other UIDs): the second run is no pile of duplicates.
    series = {sender: make_series(volume, f"bench-intake-{sender}", f"BENCH{n}",
                                   workdir / "series" / sender.replace(" ", "-"))
              for n, sender in enumerate(SENDERS, 1)}
    del volume

    home = workdir / "home"
    env = listener_env(home, args.quiet_period)
    settings = load_settings(environ=env)
    site = settings.site_for_ae(CALLING_AE)
    quiet_s = settings.quiet_period_for(site.name if site else None)
    port = free_port()
    log_path = workdir / "listener.log"
    proc = start_listener(env, port, log_path)
    engine = None
    try:
        wait_until_ready(proc, port, log_path)
        engine = read_only_engine(settings)
        job_timeout_s = quiet_s + 2 * settings.intake.rescan_interval_s + 30
        runs = [run_one(sender, series[sender], port, engine, quiet_s, job_timeout_s) for sender in SENDERS]
    finally:
        stop_listener(proc)
        if engine is not None:
            engine.dispose()
    if any(r.errors for r in runs):
        log.error("listener log (last lines):\n%s", tail(log_path))
    ok = all(not r.errors for r in runs)
    return {
        "benchmark": "intake",
        "images": args.images,
        "size": size,
        "cpu_cores": cpu_cores(),
        "quiet_period_s": quiet_s,
        "durability": durability(settings),
        "target_images_per_s": TARGET_IMAGES_PER_S,
        "target_met": ok and target_met(runs),
        "ok": ok,
        "runs": [asdict(r) for r in runs],
    }


def run_in_workdir(args: argparse.Namespace, run: Callable[[argparse.Namespace, Path], dict[str, Any]],
                   prefix: str) -> dict[str, Any] | None:
    """Logging set up, ``run(args, workdir)`` in a fresh folder under var/bench/ (removed unless
    ``args.keep``); None (logged) when the benchmark itself failed (BenchError)."""
    logging.basicConfig(level=logging.WARNING if args.json else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=BENCH_ROOT))
    try:
        return run(args, workdir)
    except BenchError as exc:
        log.error("%s", exc)
        return None
    finally:
        if args.keep:
            log.info("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_in_workdir(args, benchmark, "intake")
    if report is None:
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
        print(json.dumps(report))
    if not report["ok"]:
        return 2
    if not report["target_met"]:
        if args.json:
            print("TARGET MISSED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
