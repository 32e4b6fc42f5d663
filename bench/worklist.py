"""Worklist benchmarks: how fast the night-shift simulator runs a shift.

Part 1, the simulator (``triage/simulator/engine.py``): a 12-hour shift x 20 seeds under all four
policies (FIFO, order priority, AI priority, AI priority with the upper limit), for

* ``telerad-night``, stretched from 22:00-07:00 to a 12-hour shift 19:00-07:00 (the 22:00 arrival
  rates from 19:00 on, both radiologists from 19:00);
* ``baltruschat2021``, with a 12-hour arrival window 08:00-20:00 (no warm-up, no cool-down; the
  late radiologist then finishes the list, as in the scenario).

Target: each at most 30 s on 2 cores (the simulator uses one). It prints the time of all four
policies together (studies drawn once per seed and shared, as ``readingroom simulate`` does) and
of each policy alone (studies drawn again for it). ``--full`` also times the shipped scenarios as
they are (baltruschat2021 simulates 22 days per seed).

Part 2, reordering (``triage/priority.py`` and ``triage/worklist.py``) with 10,000 open studies:

* ``reorder``: one study's AI result changes, and the whole list is put back in reading order by
  the policy (every study classified again, with its waiting time, then sorted). Target: at most
  50 ms (median of 30 repetitions; p95 printed too).
* ``worklist read``: ``open_studies()`` on a SQLite database holding the same 10,000 studies:
  the query, the policy, the reasons and SLA of every row, as ``readingroom worklist --json``
  builds them. No target; printed for information.

Run it from the repository root::

    .venv/bin/python bench/worklist.py [--seeds 20] [--full] [--json]

Exit status: 0 every target met; 1 TARGET MISSED.
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
import sys
import time
from collections.abc import Callable
from typing import Any

from triage.priority import Policy
from triage.simulator import Scenario, load_scenario, run

log = logging.getLogger(__name__)

TARGET_SIMULATION_S = 30.0
TARGET_REORDER_MS = 50.0
N_OPEN = 10_000
SHIFT_H = 12


def twelve_hour_shift(name: str) -> Scenario:
    """The shipped scenario ``name`` cut to a 12-hour arrival window (see the module docstring)."""
    scenario = load_scenario(name)
    if name == "telerad-night":
        sites = {}
        for site_name, site in scenario.sites.items():
            arrivals = {}
            for modality, stream in site.arrivals.items():
                rates = stream.hourly()
                rates[19] = rates[20] = rates[21] = rates[22]
                arrivals[modality] = stream.model_copy(update={"rate_per_h": rates})
            sites[site_name] = site.model_copy(update={"arrivals": arrivals})
        shifts = [shift.model_copy(update={"start": 19 * 60}) for shift in scenario.radiologists]
        return scenario.model_copy(update={"start": 19 * 60, "warmup_h": 0, "duration_h": SHIFT_H, "cooldown_h": 0,
                                           "sites": sites, "radiologists": shifts})
    return scenario.model_copy(update={"start": 8 * 60, "warmup_h": 0, "duration_h": SHIFT_H, "cooldown_h": 0})


def measure_simulation(scenario: Scenario, seeds: int, label: str | None = None,
                       target_s: float | None = TARGET_SIMULATION_S) -> dict[str, Any]:
    """Time ``run`` with all four policies, then each policy alone."""
    t0 = time.perf_counter()
    report = run(scenario, seeds, tuple(Policy), keep_rtat=False)
    total = time.perf_counter() - t0
    alone = {}
    for policy in Policy:
        t1 = time.perf_counter()
        run(scenario, seeds, [policy], keep_rtat=False)
        alone[policy.value] = round(time.perf_counter() - t1, 3)
    studies = report.stats["fifo"]["all"]["n_studies"]
    return {
        "measurement": "simulate",
        "scenario": label or scenario.name,
        "seeds": seeds,
        "arrival_window_h": scenario.warmup_h + scenario.duration_h + scenario.cooldown_h,
        "counted_studies_per_seed": round(studies / seeds, 1),
        "seconds_all_policies": round(total, 3),
        "seconds_per_policy_alone": alone,
        "seconds_per_policy_in_run": {p: round(s, 3) for p, s in report.seconds.items()},
        "target_s": target_s,
        "met": None if target_s is None else total <= target_s,
    }


def _random_facts(n: int, seed: int = 1) -> list[tuple[float, int, Any]]:
    import random

    from triage.priority import AIResult, StudyFacts, load_policy_config

    rng = random.Random(seed)
    findings = sorted(load_policy_config().findings)
    orders = ["", "ROUTINE", "ROUTINE", "URGENT", "STAT"]
    return [(float(i), i, StudyFacts(waited_min=rng.uniform(0, 300), order_priority=rng.choice(orders),
                                     ai=tuple(AIResult(rng.choice(findings), rng.random())
                                              for _ in range(rng.randint(0, 3)))))
            for i in range(n)]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def measure_reorder(repeats: int = 30) -> dict[str, Any]:
    """A new AI result for one study, then the whole list in reading order again."""
    import dataclasses
    import random

    from triage.priority import AIResult, load_policy_config, reading_order

    config = load_policy_config()
    items = _random_facts(N_OPEN)
    rng = random.Random(2)
    times = []
    for _ in range(repeats):
        k = rng.randrange(N_OPEN)
        arrival, ident, facts = items[k]
        items[k] = (arrival, ident, dataclasses.replace(facts, ai=(AIResult("pneumothorax", rng.random()),)))
        t0 = time.perf_counter()
        order = reading_order(items, config, explain=False)
        times.append((time.perf_counter() - t0) * 1000)
        assert len(order) == N_OPEN
    median = _percentile(times, 0.5)
    return {"measurement": "reorder", "scenario": f"{N_OPEN} open studies", "median_ms": round(median, 1),
            "p95_ms": round(_percentile(times, 0.95), 1), "target_ms": TARGET_REORDER_MS,
            "met": median <= TARGET_REORDER_MS}


def measure_worklist_read(repeats: int = 5) -> dict[str, Any]:
    """``open_studies()`` over a real SQLite database with N_OPEN open studies."""
    import tempfile

    from sqlalchemy import insert

    from readingroom.db import Database, sync_sites
    from readingroom.schema import AIFinding, Instance, Series, Study, utcnow
    from readingroom.settings import load_settings
    from triage.worklist import open_studies

    with tempfile.TemporaryDirectory(prefix="bench-worklist-") as home:
        settings = load_settings(environ={}, overrides={"home": home})
        db = Database(settings)
        db.upgrade()
        sync_sites(db, [site.name for site in settings.sites])
        now = utcnow()
        facts = _random_facts(N_OPEN)
        with db.engine.begin() as conn:
            conn.execute(insert(Study), [{
                "id": i + 1, "study_uid": f"2.25.{i}", "site_id": 1 + i % len(settings.sites), "calling_ae": "BENCH",
                "patient_id": f"P{i}", "patient_name": f"BENCH^{i}", "patient_birth_date": "", "patient_sex": "",
                "accession": f"A{i}", "study_date": "", "study_time": "", "description": "CT HEAD",
                "referring_physician": "", "status": "triaged", "received_at": now, "last_received_at": now,
                "completed_at": now, "ai_status": "done", "order_priority": f.order_priority}
                for i, (_a, _id, f) in enumerate(facts)])
            conn.execute(insert(Series), [{"id": i + 1, "series_uid": f"2.25.{i}.1", "study_id": i + 1,
                                           "modality": "CT", "description": "", "body_part": ""}
                                          for i in range(N_OPEN)])
            conn.execute(insert(Instance), [{"sop_uid": f"2.25.{i}.1.1", "series_id": i + 1,
                                             "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax_uid": "",
                                             "number_of_frames": 1, "path": "-", "size_bytes": 0, "sha256": "",
                                             "calling_ae": "BENCH", "received_at": now} for i in range(N_OPEN)])
            conn.execute(insert(AIFinding), [{"study_id": i + 1, "finding": r.finding, "probability": r.probability,
                                              "positive": r.probability >= 0.5, "model": "bench", "version": "0",
                                              "created_at": now}
                                             for i, (_a, _id, f) in enumerate(facts) for r in f.ai])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            items = open_studies(db, settings)
            times.append((time.perf_counter() - t0) * 1000)
        assert len(items) == N_OPEN
        db.dispose()

    return {"measurement": "worklist read", "scenario": f"{N_OPEN} open studies in SQLite",
            "median_ms": round(_percentile(times, 0.5), 1), "p95_ms": round(_percentile(times, 0.95), 1),
            "target_ms": None, "met": None}


# A measurement: (name, function(seeds, full) -> rows).
MEASUREMENTS: list[tuple[str, Callable[[int, bool], list[dict[str, Any]]]]] = [
    ("simulate", lambda seeds, full: [
        measure_simulation(twelve_hour_shift("telerad-night"), seeds, "telerad-night, 12-h shift"),
        measure_simulation(twelve_hour_shift("baltruschat2021"), seeds, "baltruschat2021, 12-h shift"),
        *([measure_simulation(load_scenario(name), seeds, f"{name} (as shipped)", None)
           for name in ("telerad-night", "qucad", "baltruschat2021")] if full else []),
    ]),
    ("reorder", lambda seeds, full: [measure_reorder(), measure_worklist_read()]),
]


def format_table(rows: list[dict[str, Any]]) -> str:
    timed = [row for row in rows if "median_ms" in row]
    rows = [row for row in rows if "median_ms" not in row]
    lines = ["| Measurement | Workload | Median (ms) | p95 (ms) | Target |", "|---|---|---:|---:|---|"]
    for row in timed:
        target = "–" if row["target_ms"] is None else f"≤ {row['target_ms']:.0f} ms: {'met' if row['met'] else 'MISSED'}"
        lines.append(f"| {row['measurement']} | {row['scenario']} | {row['median_ms']:.1f} | {row['p95_ms']:.1f} | {target} |")
    lines += ["", "| Measurement | Scenario | Seeds | Studies/seed | All 4 policies (s) | fifo | order | ai | ai_aging | Target |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for row in rows:
        alone = row["seconds_per_policy_alone"]
        target = "–" if row["target_s"] is None else f"≤ {row['target_s']:.0f} s: {'met' if row['met'] else 'MISSED'}"
        lines.append(f"| {row['measurement']} | {row['scenario']} | {row['seeds']} | {row['counted_studies_per_seed']} | "
                     f"{row['seconds_all_policies']:.1f} | {alone['fifo']:.1f} | {alone['order']:.1f} | {alone['ai']:.1f} | "
                     f"{alone['ai_aging']:.1f} | {target} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--full", action="store_true", help="also time the shipped scenarios as they are")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows: list[dict[str, Any]] = []
    for _name, measure in MEASUREMENTS:
        rows += measure(args.seeds, args.full)
    met = all(row["met"] is not False for row in rows)
    if not args.json:
        print(format_table(rows))
        print("\nPer-policy times: each policy alone (studies drawn again). "
              "'All 4 policies' shares the studies of a seed, as `readingroom simulate` does.")
        print("all targets met" if met else "TARGET MISSED")
    print(json.dumps({"benchmark": "worklist", "rows": rows, "met": met}))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
