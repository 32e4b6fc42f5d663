"""Scale-out benchmark: throughput against the number of worker processes, on PostgreSQL.

For each worker count (``--workers 1 2 4``) it starts, on a fresh PostgreSQL database and a fresh
storage root (one shared folder, as on NFS):

* two listeners (``readingroom receive``, each its own process, on two ports);
* N workers (``readingroom worker``, each its own process with one worker thread);

then sends two batches of ``--studies`` synthetic head CTs (``--slices`` x ``--size``² each), every
study's instances split between the two listeners and sent at once over two associations (one per
listener, as a PACS pushing on two links does):

* **the night**: the workers run while the images arrive, on the same cores as the listeners and
  PostgreSQL (a night on one machine). Printed: instances stored per second (instances / first
  C-STORE sent -> last acknowledgement), studies per minute end to end (first C-STORE -> last study
  triaged, quiet period included) and the median wait of a study from complete to triaged;
* **the drain**: the workers are paused (SIGSTOP), the second batch is sent (instances stored per
  second by the listeners alone), every study completes and waits in the queue, then the workers
  resume (SIGCONT). Printed: studies triaged per minute, resumed -> last study triaged: what the
  workers can do, not what the senders feed them.

Last, it times the triage job in-process on stored studies of the last run with nothing else
running (the handler, and inside it decode / preprocess / model): the CPU time per study that
docs/benchmarks.md uses to estimate what a GPU worker would change.

Run it from the repository root (the PostgreSQL server is the tests' throwaway one, tests/postgres.py:
PostgreSQL 15's initdb and pg_ctl, run as the postgres user under root)::

    .venv/bin/python bench/scale.py [--workers 1 2 4] [--studies 24] [--slices 32] [--size 256] [--json]

Data go to a temporary folder under var/bench/, removed at the end unless --keep. Exit status: 0
measured; 2 the benchmark itself failed (an instance refused or missing, a study not triaged).
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
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import func, select

from readingroom import dicom_net as scu
from readingroom.db import Database
from readingroom.schema import Instance, Job, Series, Study, utcnow
from readingroom.settings import ENV_PREFIX, Settings, load_settings
from models.phantoms import ct_series, head_phantom
from triage.studies import TRIAGE_JOB

log = logging.getLogger("bench.scale")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BENCH_ROOT = PROJECT_ROOT / "var" / "bench"
HOST = "127.0.0.1"
CALLING_AE = "RR_BENCH"
SITE = "Benchmark"
LISTENERS = 2


class BenchError(RuntimeError):
    """The benchmark could not measure what it should (not a slow result: a broken one)."""


@dataclass
class RunResult:
    workers: int
    studies: int                  # per batch
    instances: int                # per batch
    # The night: the workers triage while the images arrive, on the same cores.
    night_instances_per_s: float
    night_end_to_end_per_min: float   # studies / (first C-STORE -> last study triaged)
    night_median_wait_s: float        # a study, complete -> triaged
    # Intake alone (the workers paused), then the workers alone on the queued studies.
    intake_instances_per_s: float
    drain_studies_per_min: float      # studies / (workers resumed -> last study triaged)


@dataclass
class JobTiming:
    studies: int
    handler_s: float        # the whole triage_study job: database read, decode, preprocess, model, writes
    decode_s: float
    preprocess_s: float
    model_s: float


# -- the data -----------------------------------------------------------------------------------------
def make_studies(count: int, slices: int, size: int) -> dict[str, list[tuple[list, list]]]:
    """Two batches ("night", "drain") of ``count`` studies made from the same volumes under other UIDs;
    per study: (the instances for listener 1, those for listener 2), half and half."""
    volumes = [head_phantom(slices, size=size, seed=100 + i) for i in range(count)]
    batches: dict[str, list[tuple[list, list]]] = {}
    for batch in ("night", "drain"):
        batches[batch] = []
        for i, volume in enumerate(volumes):
            series = ct_series(volume, key=f"bench-scale-{batch}-{i}", patient_id=f"B{batch[0].upper()}{i:04d}",
                               accession=f"B{batch[0].upper()}{i:04d}")
            half = len(series) // 2
            batches[batch].append((series[:half], series[half:]))
    return batches


# -- the processes --------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def node_env(home: Path, url: str, quiet_period_s: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update({ENV_PREFIX + "HOME": str(home), ENV_PREFIX + "DATABASE__URL": url,
                ENV_PREFIX + "SITES": json.dumps([{"name": SITE, "ae_titles": [CALLING_AE],
                                                   "quiet_period_s": quiet_period_s}]),
                ENV_PREFIX + "INTAKE__RESCAN_INTERVAL_S": "1",
                ENV_PREFIX + "JOBS__WORKERS": "1", ENV_PREFIX + "JOBS__POLL_INTERVAL_S": "0.2",
                ENV_PREFIX + "HL7__ENABLED": "false", "PYTHONUNBUFFERED": "1"})
    return env


def readingroom_command() -> list[str]:
    beside = Path(sys.executable).with_name("readingroom")
    return [str(beside)] if beside.exists() else [sys.executable, str(PROJECT_ROOT / "app.py")]


def start(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "wb") as out:
        return subprocess.Popen(readingroom_command() + args, env=env, cwd=PROJECT_ROOT, stdout=out,
                                stderr=subprocess.STDOUT)


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_ready(procs: list[tuple[subprocess.Popen, Path, int | None]], timeout_s: float = 120) -> None:
    """Listeners: a C-ECHO answered on their port; workers: their start line in the log."""
    deadline = time.monotonic() + timeout_s
    for proc, log_path, port in procs:
        while True:
            if proc.poll() is not None:
                raise BenchError(f"{log_path.name}: exited with {proc.returncode}:\n{tail(log_path)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{log_path.name}: not ready after {timeout_s:.0f} s:\n{tail(log_path)}")
            if port is not None:
                try:
                    if scu.echo(HOST, port, calling_ae=CALLING_AE):
                        break
                except Exception:  # noqa: BLE001 - not listening yet
                    pass
            elif "job worker(s)" in log_path.read_text(errors="replace"):
                break
            time.sleep(0.2)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- one run ------------------------------------------------------------------------------------------------
def send_split(studies: list[tuple[list, list]], ports: tuple[int, int]) -> tuple[float, datetime, datetime]:
    """Both halves of every study at once, one association per listener; returns (seconds from the first
    C-STORE to the last acknowledgement, the start and the last acknowledgement in naive UTC)."""
    barrier = threading.Barrier(LISTENERS)
    errors: list[str] = []
    last_ack: list[datetime] = []

    def sender(n: int) -> None:
        items = [ds for parts in studies for ds in parts[n]]
        ends, count = set(), 0
        for parts in studies:
            count += len(parts[n])
            ends.add(count - 1)

        def on_status(index: int, status: int) -> None:
            if status != 0:
                errors.append(f"listener {n + 1}: instance {index} refused with 0x{status:04X}")
            last_ack.append(utcnow())
            if index in ends:
                barrier.wait(120)      # the other half of this study is in too: a study arrives together

        try:
            scu.send(items, HOST, ports[n], calling_ae=CALLING_AE, on_status=on_status)
        except Exception as exc:  # noqa: BLE001 - reported below
            barrier.abort()
            errors.append(f"listener {n + 1}: {exc!r}")

    threads = [threading.Thread(target=sender, args=(n,), daemon=True) for n in range(LISTENERS)]
    started_utc, t0 = utcnow(), time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    seconds = time.perf_counter() - t0
    if errors or any(t.is_alive() for t in threads):
        raise BenchError("sending failed: " + "; ".join(errors[:5] or ["a sender hung"]))
    return seconds, started_utc, max(last_ack)


def count_studies(db: Database, prefix_of_patient: str, column) -> int:
    with db.reader() as s:
        return s.scalar(select(func.count()).select_from(Study).where(Study.patient_id.startswith(prefix_of_patient),
                                                                      column.is_not(None)))


def wait_for(db: Database, prefix: str, column, count: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (found := count_studies(db, prefix, column)) < count:
        if time.monotonic() > deadline:
            raise BenchError(f"only {found} of {count} studies have {column.key} after {timeout_s:.0f} s")
        time.sleep(0.1)


def batch_rows(db: Database, prefix: str) -> list:
    with db.reader() as s:
        return s.execute(select(Study.completed_at, Study.triaged_at).where(Study.patient_id.startswith(prefix))).all()


def signal_all(procs: list[subprocess.Popen], sig: int) -> None:
    for proc in procs:
        os.kill(proc.pid, sig)


def one_run(workers: int, batches: dict[str, list[tuple[list, list]]], server_url: str, root: Path,
            quiet_period_s: float, time_the_job: bool) -> tuple[RunResult, JobTiming | None]:
    """Two listeners and ``workers`` workers on a fresh database: the night batch with everything running,
    then the drain batch sent with the workers paused (SIGSTOP) and triaged once they resume (SIGCONT)."""
    from tests.postgres import fresh_database

    folder = root / f"workers-{workers}"
    home = folder / "home"
    night, drain = batches["night"], batches["drain"]
    instances = sum(len(a) + len(b) for a, b in night)
    timeout_s = 120 + 10 * len(night)
    with fresh_database(server_url, prefix="bench") as url:
        env = node_env(home, url, quiet_period_s)
        home.mkdir(parents=True)
        migrated = subprocess.run(readingroom_command() + ["db", "upgrade"], env=env, cwd=PROJECT_ROOT,
                                  capture_output=True, text=True, timeout=300)
        if migrated.returncode != 0:
            raise BenchError(f"readingroom db upgrade failed: {migrated.stderr[-2000:]}")
        ports = (free_port(), free_port())
        listeners = [(start(["receive", "--port", str(p)], env, folder / f"listener-{n}.log"),
                      folder / f"listener-{n}.log", p) for n, p in enumerate(ports, 1)]
        worker_procs = [(start(["worker"], env, folder / f"worker-{n}.log"), folder / f"worker-{n}.log", None)
                        for n in range(1, workers + 1)]
        settings = load_settings(environ={}, overrides={"home": str(home), "database": {"url": url},
                                                       "sites": [{"name": SITE, "ae_titles": [CALLING_AE],
                                                                  "quiet_period_s": quiet_period_s}]})
        db = Database(settings)
        paused = False
        try:
            wait_ready(listeners + worker_procs)
            log.info("%d worker(s), the night: %d studies (%d instances) while the workers run", workers,
                     len(night), instances)
            night_s, night_start, _ = send_split(night, ports)
            wait_for(db, "BN", Study.triaged_at, len(night), timeout_s)
            night_rows = batch_rows(db, "BN")

            log.info("%d worker(s), the drain: %d studies sent with the workers paused", workers, len(drain))
            signal_all([p for p, _, _ in worker_procs], signal.SIGSTOP)
            paused = True
            intake_s, _, _ = send_split(drain, ports)
            wait_for(db, "BD", Study.completed_at, len(drain), timeout_s)
            resumed = utcnow()
            signal_all([p for p, _, _ in worker_procs], signal.SIGCONT)
            paused = False
            wait_for(db, "BD", Study.triaged_at, len(drain), timeout_s)
            drain_rows = batch_rows(db, "BD")
            deadline = time.monotonic() + 30
            while True:     # the last job's row says done a moment after its study says triaged
                with db.reader() as s:
                    jobs = s.execute(select(Job.kind, Job.status)).all()
                if all(status in ("done", "dead") for _, status in jobs) or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            with db.reader() as s:
                stored = s.scalar(select(func.count()).select_from(Instance))
        finally:
            if paused:
                signal_all([p for p, _, _ in worker_procs], signal.SIGCONT)
            for proc, _, _ in listeners + worker_procs:
                stop(proc)
        triage_jobs = [st for kind, st in jobs if kind == TRIAGE_JOB]
        if stored != 2 * instances or triage_jobs != ["done"] * (2 * len(night)):
            raise BenchError(f"{stored} of {2 * instances} instances stored; triage jobs: {triage_jobs}")
        result = RunResult(
            workers=workers, studies=len(night), instances=instances,
            night_instances_per_s=round(instances / night_s, 1),
            night_end_to_end_per_min=round(
                len(night) / (max(t for _, t in night_rows) - night_start).total_seconds() * 60, 1),
            night_median_wait_s=round(statistics.median((t - c).total_seconds() for c, t in night_rows), 2),
            intake_instances_per_s=round(instances / intake_s, 1),
            drain_studies_per_min=round(
                len(drain) / (max(t for _, t in drain_rows) - resumed).total_seconds() * 60, 1))
        log.info("%s", result)
        timing = time_jobs(db, settings) if time_the_job else None
        db.dispose()
        return result, timing


def time_jobs(db: Database, settings: Settings, count: int = 6) -> JobTiming:
    """The triage job in this process, alone on the machine, on stored studies: one warm-up, then ``count``."""
    from models.inference import SeriesInfo, analyse
    from models.registry import WEIGHTS_DIR, all_models, load_config
    from triage.pipeline import TriagePipeline

    with db.reader() as s:
        uids = list(s.scalars(select(Study.study_uid).order_by(Study.id).limit(count + 1)))
    pipeline = TriagePipeline(db, settings)
    config = load_config(settings.config_dir / settings.models.file)
    cards = [c for c in all_models(WEIGHTS_DIR, config, PROJECT_ROOT) if "CT" in {m.upper() for m in c.modalities}]
    handler, parts = [], []
    for n, uid in enumerate(uids):
        t0 = time.perf_counter()
        pipeline({"study_uid": uid})
        elapsed = time.perf_counter() - t0
        with db.reader() as s:
            study = s.scalar(select(Study).where(Study.study_uid == uid))
            infos = []
            for series in s.scalars(select(Series).where(Series.study_id == study.id)):
                files = list(s.execute(select(Instance.path, Instance.sop_uid).where(Instance.series_id == series.id)
                                       .order_by(Instance.instance_number)).all())
                infos.append(SeriesInfo(series.series_uid, series.modality or "", series.description or "",
                                        series.body_part or "", study.description or "",
                                        tuple(settings.home / p for p, _ in files), tuple(u for _, u in files)))
        runs = analyse(cards, infos, config["rules"], settings.models.heatmap_size)
        if n == 0:
            continue                               # warm-up: the model's session is loaded here
        handler.append(elapsed)
        parts.append({k: sum(r.timings.get(k, 0.0) for r in runs) for k in ("decode_s", "preprocess_s", "model_s")})
    return JobTiming(studies=len(handler), handler_s=round(statistics.median(handler), 3),
                     **{k: round(statistics.median(p[k] for p in parts), 3) for k in ("decode_s", "preprocess_s",
                                                                                     "model_s")})


# -- the report -----------------------------------------------------------------------------------------------
def table(results: list[RunResult]) -> str:
    base = results[0]
    lines = ["| Worker processes | Night: instances stored /s | Night: end to end, studies /min "
             "| Night: median complete → triaged | Intake alone: instances /s | Workers alone: studies triaged /min "
             "| vs 1 worker |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r.workers} | {r.night_instances_per_s:.1f} | {r.night_end_to_end_per_min:.1f} | "
                     f"{r.night_median_wait_s:.2f} s | {r.intake_instances_per_s:.1f} | {r.drain_studies_per_min:.1f} | "
                     f"{r.drain_studies_per_min / base.drain_studies_per_min:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="worker process counts")
    parser.add_argument("--studies", type=int, default=24)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--size", type=int, default=256, help="rows and columns of each slice")
    parser.add_argument("--quiet-period", type=float, default=2.0, help="the site's quiet period, seconds")
    parser.add_argument("--keep", action="store_true", help="keep the data folder under var/bench/")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)   # "connection refused" while a listener starts
    os.umask(0o077)

    from tests.postgres import PostgresUnavailable, postgres_server

    BENCH_ROOT.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="scale-", dir=BENCH_ROOT))
    if os.geteuid() == 0:
        os.chmod(root, 0o755)
    t0 = time.perf_counter()
    batches = make_studies(args.studies, args.slices, args.size)
    log.info("made %d studies of %d x %d² in %.1f s", args.studies, args.slices, args.size, time.perf_counter() - t0)
    results: list[RunResult] = []
    timing: JobTiming | None = None
    try:
        with postgres_server("bench") as server_url:
            for n, workers in enumerate(args.workers):
                result, found = one_run(workers, batches, server_url, root, args.quiet_period,
                                        time_the_job=n == len(args.workers) - 1)
                results.append(result)
                timing = found or timing
    except (BenchError, PostgresUnavailable) as exc:
        print(f"bench/scale.py: FAILED: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"runs": [asdict(r) for r in results], "job": asdict(timing) if timing else None,
                          "studies": args.studies, "slices": args.slices, "size": args.size,
                          "listeners": LISTENERS, "cpus": os.cpu_count()}, indent=2))
        return 0
    print(f"\nTwo batches of {args.studies} head CTs of {args.slices} x {args.size}² ({args.studies * args.slices} "
          f"instances each) through {LISTENERS} listeners on PostgreSQL, quiet period {args.quiet_period:g} s, "
          f"{os.cpu_count()} CPUs; one thread per worker process\n")
    print(table(results))
    if timing:
        print(f"\nTriage job in-process, alone, median of {timing.studies} after a warm-up: {timing.handler_s:.3f} s "
              f"per study (decode {timing.decode_s:.3f} s, preprocess {timing.preprocess_s:.3f} s, "
              f"model {timing.model_s:.3f} s; the rest is the database and the heatmap writes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
