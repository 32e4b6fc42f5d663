"""Intake against Orthanc: how fast does ReadingRoom take in a CT series, next to Orthanc?

It sends the same 300-image 512x512 CT series (``--images``) to two receivers, one at a time, on
this machine:

* **Orthanc** (Debian ``orthanc``, ``/usr/sbin/Orthanc``), started as its own process from a JSON
  configuration in a fresh folder: SQLite index, files on disk, no plugins. Its durability is its
  default one and is printed: every file fdatasync'd (``SyncStorageArea``), its folders not, SQLite
  in WAL mode with ``synchronous=NORMAL`` (a commit is not synced: an acknowledged image can lose
  its index row in a power cut, not in a crash of Orthanc);
* **ReadingRoom** (``readingroom receive``, started as bench/intake.py starts it): every file
  fdatasync'd, and its folder fsync'd, before the acknowledgement, SQLite ``synchronous=FULL``,
  pixel data verified. ``--rr-processes N`` adds ``--processes N`` to its command line.

Each receiver takes the series over 1 association and over 4 (four dcmtk ``storescu`` processes at
once, each with a quarter of the files), each run into a fresh, empty receiver (its own storage
and index), so that no image is a duplicate. The sender is dcmtk's ``/usr/bin/storescu``, with
``TCP_NODELAY=1`` in its environment and in Orthanc's (without it dcmtk stalls about 50 ms per image
on loopback: ../shared/FIELD-NOTES.md, "dcmtk on loopback"). A run is timed from the start of the
senders to the end of the last one (association set-up and release included); after it, the
receiver is asked whether it holds every image (Orthanc: ``GET /statistics``; ReadingRoom: its
database). For what limits each run, it also prints the CPU time of the receiver (its process and
children), of the senders, and how busy the machine's cores were.

It prints images/s per receiver and association count, the ratio ReadingRoom / Orthanc, and the
target: ReadingRoom >= 0.6x Orthanc at 4 associations.

Run it from the repository root::

    .venv/bin/python bench/intake_vs_orthanc.py [--images 300] [--rr-processes N] [--keep] [--json]

The data (the series, both receivers' folders and logs) go to a temporary folder under var/bench/,
removed at the end unless --keep. Exit status: 0 target met; 1 TARGET MISSED; 2 the benchmark
itself failed (a receiver did not start, a sender failed, images missing from a receiver).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/dictation.py would shadow the
# dictation package: put the project folder first (which also makes bench.intake importable).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.intake import (
    CALLED_AE, CALLING_AE, HOST, PROJECT_ROOT, STORESCU, BenchError, BenchSeries,
    cpu_cores, durability, free_port, listener_env, make_series, read_only_engine, readingroom_command,
    run_in_workdir, stop_listener, study_counts, tail, wait_until_ready,
)
from readingroom.errors import ConfigError
from readingroom.settings import load_settings
from models import phantoms

log = logging.getLogger("bench.intake_vs_orthanc")

ORTHANC = "/usr/sbin/Orthanc"
ECHOSCU = "/usr/bin/echoscu"
ORTHANC_AE = "ORTHANC"
ASSOCIATIONS = (1, 4)
TARGET_RATIO = 0.6          # ReadingRoom / Orthanc at 4 associations
TARGET_ASSOCIATIONS = 4
SENDER_TIMEOUT_S = 600
QUIET_PERIOD_S = 2.0        # ReadingRoom's; no triage runs here (``receive`` runs no workers)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# Orthanc's durability, as its configuration below sets it (both are Orthanc 1.10's defaults,
# written out so that the run does not depend on the version's defaults).
ORTHANC_DURABILITY = {
    "file_fsync": "each file fdatasync'd before the acknowledgement (SyncStorageArea true, its default "
                  "since 1.7.4); its new folders are not (strace: one fdatasync per file, none per commit)",
    "sqlite_synchronous": "NORMAL (built in: PRAGMA SYNCHRONOUS=NORMAL; a commit is not fsync'd, "
                          "the WAL is synced at checkpoints)",
    "sqlite_journal": "WAL, LOCKING_MODE=EXCLUSIVE",
    "verify_pixel_data": False,
}


@dataclass
class Run:
    receiver: str                # "Orthanc" or "ReadingRoom"
    associations: int
    images: int
    seconds: float = 0.0
    images_per_s: float = 0.0
    stored: int = 0
    receiver_cpu_s: float = 0.0   # the receiver's process and its children, during the run
    sender_cpu_s: float = 0.0     # the storescu processes
    machine_busy: float = 0.0     # fraction of all cores busy during the run (anyone's work)
    version: str = ""             # the receiver's, where it says (Orthanc's GET /system)
    errors: list[str] = field(default_factory=list)


# -- CPU accounting ----------------------------------------------------------------------------
def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def tree_cpu_s(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) so far of ``pid`` and of each descendant, by pid."""
    times = {}
    for p in process_tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        times[p] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return times


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]          # idle + iowait
    total = sum(values[:8])               # guest time is already in user
    return total - idle, total


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- the senders -------------------------------------------------------------------------------
def sender_env() -> dict[str, str]:
    return {**os.environ, "TCP_NODELAY": "1"}


def send(series: BenchSeries, port: int, called_ae: str, associations: int, receiver_pid: int,
         run: Run) -> None:
    """``associations`` storescu processes at once, each a share of the files; fills ``run``."""
    parts = [series.paths[k::associations] for k in range(associations)]
    env = sender_env()
    ends: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def push(files: list[Path]) -> None:
        command = [STORESCU, "-aet", CALLING_AE, "-aec", called_ae, HOST, str(port), *map(str, files)]
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=SENDER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with lock:
                failures.append(f"storescu did not end within {SENDER_TIMEOUT_S} s")
            return
        finished = time.perf_counter()
        with lock:
            ends.append(finished)
            if done.returncode != 0:
                failures.append(f"storescu exited with status {done.returncode}:\n"
                                f"{done.stdout[-1500:]}{done.stderr[-1500:]}")

    threads = [threading.Thread(target=push, args=(files,)) for files in parts]
    cpu_before = tree_cpu_s(receiver_pid)
    children_before = children_cpu_s()
    busy_before, total_before = machine_ticks()
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    busy_after, total_after = machine_ticks()
    cpu_after = tree_cpu_s(receiver_pid)
    run.sender_cpu_s = round(children_cpu_s() - children_before, 2)
    # A child that ended during the run is missed (its time went to its parent only if reaped).
    run.receiver_cpu_s = round(sum(t - cpu_before.get(p, 0.0) for p, t in cpu_after.items()), 2)
    run.machine_busy = round((busy_after - busy_before) / max(1, total_after - total_before), 3)
    if failures:
        raise BenchError("; ".join(failures))
    run.seconds = round(max(ends) - started, 3)
    run.images_per_s = round(len(series.paths) / run.seconds, 1)


# -- Orthanc -----------------------------------------------------------------------------------
def orthanc_config(folder: Path, dicom_port: int, http_port: int) -> dict[str, Any]:
    return {
        "Name": "bench-intake",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowStore": True,     # accept the calling AE without a DicomModalities entry
        "DicomAlwaysAllowEcho": True,
        "DicomModalities": {},
        "Plugins": [],
        "StorageCompression": False,
        "SyncStorageArea": True,           # Orthanc's default since 1.7.4, written out
        "OverwriteInstances": False,
    }


def orthanc_get(http_port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{HOST}:{http_port}{path}", timeout=10) as response:
        return json.loads(response.read())


class Orthanc:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.log_path = folder / "orthanc.log"
        folder.mkdir(parents=True)
        config = folder / "orthanc.json"
        config.write_text(json.dumps(orthanc_config(folder, self.dicom_port, self.http_port), indent=2))
        log.info("starting %s %s", ORTHANC, config)
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen([ORTHANC, str(config)], env=sender_env(), cwd=folder, stdout=out,
                                         stderr=subprocess.STDOUT)

    def wait_until_ready(self, timeout_s: float = 60) -> str:
        """Wait for ``GET /system``, then for a C-ECHO; Orthanc's version."""
        deadline = time.monotonic() + timeout_s
        version = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"Orthanc exited with status {self.proc.returncode}:\n{tail(self.log_path)}")
            try:
                version = version or str(orthanc_get(self.http_port, "/system")["Version"])
            except (OSError, urllib.error.URLError, ValueError, KeyError):
                time.sleep(0.1)
                continue
            echo = subprocess.run([ECHOSCU, "-aet", CALLING_AE, "-aec", ORTHANC_AE, HOST, str(self.dicom_port)],
                                  env=sender_env(), capture_output=True, text=True, timeout=30)
            if echo.returncode == 0:
                log.info("Orthanc %s answers C-ECHO on %s:%d", version, HOST, self.dicom_port)
                return version
            time.sleep(0.2)
        raise BenchError(f"Orthanc did not answer within {timeout_s:.0f} s:\n{tail(self.log_path)}")

    def count_instances(self) -> int:
        return int(orthanc_get(self.http_port, "/statistics")["CountInstances"])

    def stop(self, timeout_s: float = 30) -> None:
        stop_listener(self.proc, timeout_s)


def run_orthanc(series: BenchSeries, associations: int, folder: Path) -> Run:
    run = Run("Orthanc", associations, len(series.paths))
    orthanc = Orthanc(folder)
    try:
        run.version = orthanc.wait_until_ready()
        log.info("Orthanc, %d association(s): sending %d images", associations, len(series.paths))
        try:
            send(series, orthanc.dicom_port, ORTHANC_AE, associations, orthanc.proc.pid, run)
        except BenchError as exc:
            run.errors.append(str(exc))
        run.stored = orthanc.count_instances()
    finally:
        orthanc.stop()
    if run.stored != len(series.paths):
        run.errors.append(f"Orthanc holds {run.stored} instances, not {len(series.paths)}")
        log.error("Orthanc log (last lines):\n%s", tail(orthanc.log_path))
    return run


# -- ReadingRoom -------------------------------------------------------------------------------
def start_readingroom(env: dict[str, str], port: int, log_path: Path, processes: int | None) -> subprocess.Popen:
    command = [readingroom_command(), "receive", "--port", str(port)]
    if processes is not None:
        command += ["--processes", str(processes)]
    log.info("starting %s", " ".join(command))
    with open(log_path, "wb") as out:
        return subprocess.Popen(command, env=env, cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)


def run_readingroom(series: BenchSeries, associations: int, folder: Path, processes: int | None) -> Run:
    run = Run("ReadingRoom", associations, len(series.paths))
    folder.mkdir(parents=True)
    env = listener_env(folder / "home", QUIET_PERIOD_S)
    settings = load_settings(environ=env)
    port = free_port()
    log_path = folder / "listener.log"
    proc = start_readingroom(env, port, log_path, processes)
    engine = None
    try:
        wait_until_ready(proc, port, log_path)
        engine = read_only_engine(settings)
        log.info("ReadingRoom, %d association(s): sending %d images", associations, len(series.paths))
        try:
            send(series, port, CALLED_AE, associations, proc.pid, run)
        except BenchError as exc:
            run.errors.append(str(exc))
        run.stored, _ = study_counts(engine, series.study_uid)
    finally:
        stop_listener(proc)
        if engine is not None:
            engine.dispose()
    if run.stored != len(series.paths):
        run.errors.append(f"ReadingRoom's database holds {run.stored} instances of study "
                          f"{series.study_uid}, not {len(series.paths)}")
        log.error("listener log (last lines):\n%s", tail(log_path))
    return run


# -- the report --------------------------------------------------------------------------------
def rate(runs: list[Run], receiver: str, associations: int) -> float | None:
    for r in runs:
        if r.receiver == receiver and r.associations == associations and not r.errors:
            return r.images_per_s
    return None


def ratios(runs: list[Run]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for n in ASSOCIATIONS:
        rr, orthanc = rate(runs, "ReadingRoom", n), rate(runs, "Orthanc", n)
        out[str(n)] = round(rr / orthanc, 3) if rr and orthanc else None
    return out


def limits(runs: list[Run], cores: int, rr_processes: int = 1) -> list[str]:
    """What each run spent its time on, from the CPU figures: one line per run."""
    lines = []
    for r in runs:
        if not r.seconds:
            continue
        receiver_cores = r.receiver_cpu_s / r.seconds
        sender_cores = r.sender_cpu_s / r.seconds
        busy_cores = r.machine_busy * cores
        other_cores = max(0.0, busy_cores - receiver_cores - sender_cores)
        per_image_ms = r.receiver_cpu_s / r.images * 1000
        if receiver_cores + sender_cores >= 0.85 * cores:
            verdict = "CPU: the receiver and the senders fill the cores"
        elif r.machine_busy >= 0.9:
            verdict = f"CPU, shared: the cores were saturated, {other_cores:.2f} of them by other work (noisy)"
        elif receiver_cores >= 0.9 * rr_processes and r.receiver == "ReadingRoom":
            verdict = (f"the receiver is near its {rr_processes} core(s) (Python: one core per listener process, "
                       "the GIL; --rr-processes)")
        else:
            verdict = "cores left idle: waiting (fsync, locks, the network), not CPU"
        lines.append(f"{r.receiver:<11} x{r.associations}: receiver {r.receiver_cpu_s:.2f} CPU-s "
                     f"({per_image_ms:.1f} ms/image, {receiver_cores:.2f} cores), senders {sender_cores:.2f} "
                     f"cores, other work {other_cores:.2f} cores, machine {r.machine_busy * 100:.0f}% busy: {verdict}")
    cpu = {r.receiver: r.receiver_cpu_s / r.images for r in runs
           if r.associations == TARGET_ASSOCIATIONS and r.seconds and r.receiver_cpu_s}
    if len(cpu) == 2:
        times = cpu["ReadingRoom"] / cpu["Orthanc"]
        lines.append(f"at {TARGET_ASSOCIATIONS} associations ReadingRoom spent {times:.1f}x Orthanc's CPU time per "
                     f"image; where the cores are the limit, the ratio of rates tends to 1/{times:.1f} = "
                     f"{1 / times:.2f}x")
    return lines


def print_table(report: dict[str, Any]) -> None:
    print(f"\nIntake, ReadingRoom against Orthanc {report['orthanc_version']}: {report['images']} CT images "
          f"{report['size']}x{report['size']} ({report['megabytes']:.1f} MB), {report['cpu_cores']} CPU cores")
    print(f"sender: dcmtk {STORESCU}, TCP_NODELAY=1 in its environment and in Orthanc's "
          f"(../shared/FIELD-NOTES.md, 'dcmtk on loopback'); N associations = N storescu processes at once, "
          f"each 1/N of the files; every run into a fresh, empty receiver")
    for name, d in (("Orthanc", report["durability"]["orthanc"]), ("ReadingRoom", report["durability"]["readingroom"])):
        print(f"durability, {name}: {d['file_fsync']}; SQLite synchronous={d['sqlite_synchronous']} "
              f"({d['sqlite_journal']}); verify_pixel_data={str(d['verify_pixel_data']).lower()}")
    procs = report["rr_processes"]
    print(f"ReadingRoom command: readingroom receive --port P{'' if procs is None else f' --processes {procs}'}\n")
    header = f"{'receiver':<12}" + "".join(f"{f'{n} assoc. images/s':>22}" for n in ASSOCIATIONS)
    print(header)
    print("-" * len(header))
    for receiver in ("Orthanc", "ReadingRoom"):
        cells = []
        for n in ASSOCIATIONS:
            r = next((x for x in report["runs"] if x["receiver"] == receiver and x["associations"] == n), None)
            if r is None or r["errors"]:
                cells.append(f"{'FAILED':>22}")
            else:
                cells.append(f"{r['images_per_s']:>13.1f} ({r['seconds']:5.2f} s)")
        print(f"{receiver:<12}" + "".join(cells))
    ratio_cells = "".join(f"{'-' if v is None else f'{v:.2f}x':>22}" for v in report["ratio"].values())
    print(f"{'RR / Orthanc':<12}{ratio_cells}")
    print("\nwhat limits it (CPU time during each run):")
    for line in report["limits"]:
        print(f"  {line}")
    for r in report["runs"]:
        for error in r["errors"]:
            print(f"ERROR {r['receiver']} x{r['associations']}: {error}")
    at_target = report["ratio"][str(TARGET_ASSOCIATIONS)]
    line = f"target: ReadingRoom >= {TARGET_RATIO:g}x Orthanc at {TARGET_ASSOCIATIONS} associations: "
    if not report["ok"]:
        print(line + "not measured (the benchmark failed)")
    elif report["target_met"]:
        print(line + f"met ({at_target:.2f}x)")
    else:
        print(line + f"TARGET MISSED by {TARGET_RATIO - at_target:.2f}x ({at_target:.2f}x; "
                     f"{report['missing_images_per_s']:.1f} images/s short)")


# -- main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="images in the series (default 300)")
    parser.add_argument("--rr-processes", type=int, default=None, metavar="N",
                        help="pass --processes N to readingroom receive (default: not passed)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder under var/bench/")
    parser.add_argument("--json", action="store_true", help="print only one JSON line")
    return parser.parse_args(argv)


def check_tools() -> None:
    for tool in (ORTHANC, STORESCU, ECHOSCU):
        if not os.access(tool, os.X_OK):
            raise BenchError(f"{tool} is missing: apt-get install orthanc dcmtk")


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    check_tools()
    try:
        rr_settings = load_settings(environ=listener_env(workdir / "readingroom-1" / "home", QUIET_PERIOD_S))
    except ConfigError as exc:
        raise BenchError(f"ReadingRoom's settings do not load: {exc}") from exc
    size = 512
    log.info("computing a %d-slice %dx%d head phantom", args.images, size, size)
    volume = phantoms.head_phantom(args.images, size=size, seed=1)
    # One series for every run: each run goes to a fresh, empty receiver, so nothing is a duplicate.
    series = make_series(volume, "bench-intake-vs-orthanc", "BENCHVSO", workdir / "series")
    del volume

    runs: list[Run] = []
    version = "?"
    for n in ASSOCIATIONS:
        for run in (run_orthanc(series, n, workdir / f"orthanc-{n}"),
                    run_readingroom(series, n, workdir / f"readingroom-{n}", args.rr_processes)):
            version = run.version or version
            log.info("%s x%d: %.1f images/s, %d stored%s", run.receiver, n, run.images_per_s, run.stored,
                     f"; ERRORS: {run.errors}" if run.errors else "")
            runs.append(run)

    ok = all(not r.errors for r in runs)
    ratio = ratios(runs)
    at_target = ratio[str(TARGET_ASSOCIATIONS)]
    orthanc_4 = rate(runs, "Orthanc", TARGET_ASSOCIATIONS) or 0.0
    rr_4 = rate(runs, "ReadingRoom", TARGET_ASSOCIATIONS) or 0.0
    cores = cpu_cores()
    return {
        "benchmark": "intake_vs_orthanc",
        "images": args.images,
        "size": size,
        "megabytes": round(series.n_bytes / 1e6, 1),
        "cpu_cores": cores,
        "sender": f"{STORESCU} (dcmtk), TCP_NODELAY=1",
        "orthanc_version": version,
        "rr_processes": args.rr_processes,
        "durability": {"orthanc": ORTHANC_DURABILITY, "readingroom": durability(rr_settings)},
        "target_ratio": TARGET_RATIO,
        "target_associations": TARGET_ASSOCIATIONS,
        "ratio": ratio,
        "target_met": ok and at_target is not None and at_target >= TARGET_RATIO,
        "missing_images_per_s": round(max(0.0, TARGET_RATIO * orthanc_4 - rr_4), 1),
        "ok": ok,
        "limits": limits(runs, cores, args.rr_processes or 1),
        "runs": [asdict(r) for r in runs],
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run_in_workdir(args, benchmark, "intake-vs-orthanc")
    if report is None:
        return 2
    if args.json:
        print(json.dumps(report))
    else:
        print_table(report)
    if not report["ok"]:
        return 2
    if not report["target_met"]:
        if args.json:
            print("TARGET MISSED", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # clean up the receivers on SIGTERM too
    sys.exit(main())
