"""Orders benchmark: HL7 order intake over MLLP, and DICOM worklist queries, against a real
``readingroom receive`` process (its own data folder, SQLite ``synchronous=FULL``).

* run A: N ORM^O01 messages (built with hl7apy) over one MLLP connection, one at a time, each
  waiting for its ACK: messages/s and ACK latency (median, p95);
* run B: the same number over 4 connections at once (four RIS feeds);
* run C: approve every order, then dcmtk ``findscu -W`` queries: by modality and date (matching
  about a quarter of the orders) and by accession (one order), timed from process start to exit.

Target (ours, from the ~5 orders/min of a busy night across all sites): >= 20 orders/s accepted,
p95 ACK <= 250 ms, a worklist query for one accession <= 1 s. Run from the repository root:

    .venv/bin/python bench/orders.py [--orders 400] [--json]

Exit status: 0 targets met; 1 TARGET MISSED; 2 the benchmark itself failed.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import date

ROOT = Path(__file__).resolve().parent.parent
SITE = [{"name": "Bench Hospital", "ae_titles": ["RR_BENCH"], "quiet_period_s": 5}]
MODALITIES = [("CTHEAD^CT HEAD WITHOUT CONTRAST", "CT"), ("XRCHEST^XR CHEST 2 VIEWS", "CR"),
              ("MRBRAIN^MR BRAIN", "MR"), ("USABD^US ABDOMEN COMPLETE", "US")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _message(i: int, today: str) -> str:
    from tests.orders_helpers import build_orm

    procedure, modality = MODALITIES[i % 4]
    return build_orm(f"B{i:06d}", facility="Bench Hospital", patient_id=f"BP{i:06d}", procedure=procedure,
                     modality=modality, start=today + "0900", priority="S" if i % 10 == 0 else "R")


def _send_all(port: int, messages: list[str], latencies: list[float], errors: list[str]) -> None:
    from readingroom.mllp import FrameReader, frame

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = FrameReader(sock)
        for text in messages:
            start = time.perf_counter()
            sock.sendall(frame(text))
            reply = reader.read() or ""
            latencies.append(time.perf_counter() - start)
            if "|AA|" not in reply:
                errors.append(reply[:200])


def _run(port: int, messages: list[str], connections: int) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    chunks = [messages[k::connections] for k in range(connections)]
    threads = [threading.Thread(target=_send_all, args=(port, chunk, latencies, errors)) for chunk in chunks]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"{len(errors)} messages not accepted, first: {errors[0]}")
    ordered = sorted(latencies)
    return {"messages": len(messages), "connections": connections, "seconds": round(elapsed, 2),
            "per_s": round(len(messages) / elapsed, 1),
            "ack_median_ms": round(statistics.median(ordered) * 1000, 1),
            "ack_p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 1)}


def _findscu(port: int, keys: list[str], out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    args = ["/usr/bin/findscu", "-W", "-aet", "RR_BENCH", "-aec", "READINGROOM", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    start = time.perf_counter()
    result = subprocess.run(args + ["127.0.0.1", str(port)], capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"findscu failed: {result.stderr[-300:]}")
    return elapsed, len(list(out.glob("rsp*.dcm")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=400)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    today = date.today().strftime("%Y%m%d")
    work = Path(tempfile.mkdtemp(prefix="orders-", dir=ROOT / "var" if (ROOT / "var").exists() else None))
    dicom_port, hl7_port = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("READINGROOM_")}
    env.update({"READINGROOM_HOME": str(work / "home"), "READINGROOM_SITES": json.dumps(SITE),
                "READINGROOM_HL7__PORT": str(hl7_port), "READINGROOM_LOG_LEVEL": "WARNING",
                "PYTHONPATH": str(ROOT)})
    log = open(work / "receive.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "app", "receive", "--port", str(dicom_port)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", hl7_port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the listener did not start; see {work / 'receive.log'}") from None
                time.sleep(0.2)
        messages = [_message(i, today) for i in range(2 * args.orders)]
        run_a = _run(hl7_port, messages[:args.orders], 1)
        run_b = _run(hl7_port, messages[args.orders:], 4)

        os.environ.update(env)
        from readingroom.db import Database
        from readingroom.settings import load_settings
        from orders import review

        settings = load_settings(environ=env)
        db = Database(settings)
        for i in range(2 * args.orders):
            review.approve(db, settings, f"B{i:06d}")
        db.dispose()
        by_modality = [_findscu(dicom_port, ["ScheduledProcedureStepSequence[0].Modality=CT",
                                             f"ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate={today}",
                                             "PatientName", "PatientID", "AccessionNumber",
                                             "ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription"],
                                work / "mwl") for _ in range(5)]
        by_accession = [_findscu(dicom_port, ["AccessionNumber=B000007", "PatientName", "PatientID",
                                              "ScheduledProcedureStepSequence[0].Modality"], work / "mwl")
                        for _ in range(10)]
    except Exception as exc:  # noqa: BLE001
        print(f"benchmark failed: {exc} (data and log kept in {work})", file=sys.stderr)
        return 2
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
    shutil.rmtree(work, ignore_errors=True)
    expected_ct = len([i for i in range(2 * args.orders) if i % 4 == 0])
    if {n for _, n in by_modality} != {expected_ct} or {n for _, n in by_accession} != {1}:
        print("benchmark failed: wrong number of worklist items", by_modality[:1], by_accession[:1], file=sys.stderr)
        return 2
    results = {
        "A_one_connection": run_a, "B_four_connections": run_b,
        "C_mwl_modality_date": {"orders": 2 * args.orders, "items": expected_ct,
                                "median_s": round(statistics.median(t for t, _ in by_modality), 3)},
        "C_mwl_accession": {"orders": 2 * args.orders, "items": 1,
                            "median_s": round(statistics.median(t for t, _ in by_accession), 3)},
    }
    met = (min(run_a["per_s"], run_b["per_s"]) >= 20 and max(run_a["ack_p95_ms"], run_b["ack_p95_ms"]) <= 250
           and results["C_mwl_accession"]["median_s"] <= 1.0)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for name, figures in results.items():
            print(f"{name:<22} " + ", ".join(f"{k} {v}" for k, v in figures.items()))
        print("targets (>= 20 orders/s, p95 ACK <= 250 ms, accession query <= 1 s):",
              "met" if met else "TARGET MISSED")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
