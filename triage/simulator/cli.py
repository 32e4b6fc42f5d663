"""The simulator's command line: ``readingroom simulate``.

``readingroom simulate --scenario FILE [--seeds N] [--policy P ...] [--out DIR] [--json] [--jobs N]``

Prints the markdown table of the report (or its JSON with ``--json``); ``--out`` also writes the
files of ``output.write_all``. Exit status 2: a bad scenario (the message names the key).
Also ``python -m triage.simulator ...`` (``__main__.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from readingroom.errors import ConfigError
from triage.priority import Policy
from triage.simulator.engine import run
from triage.simulator.output import format_markdown, write_all
from triage.simulator.scenario import load_scenario, shipped_scenarios

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The options of ``readingroom simulate``."""
    parser = argparse.ArgumentParser(
        prog="readingroom simulate",
        description="Night-shift simulator: report turnaround times (RTAT) under FIFO, order priority, "
                    "AI priority and AI priority with the upper limit.")
    parser.add_argument("--scenario", required=True,
                        help=f"a scenario YAML file, or a shipped scenario ({', '.join(shipped_scenarios())})")
    parser.add_argument("--seeds", type=int, default=20, help="number of seeds (replications), default 20")
    parser.add_argument("--policy", action="append", choices=[p.value for p in Policy],
                        help="simulate only this policy (repeatable); default: all four")
    parser.add_argument("--out", type=Path, help="write rtat.csv, rtat.json, rtat.md and PNG plots here")
    parser.add_argument("--json", action="store_true", help="print the JSON (policy -> finding -> statistics)")
    parser.add_argument("--jobs", type=int, default=1, help="processes to run seeds in (default 1); same result")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``readingroom simulate`` with ``argv``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.seeds < 1:
        print("error: --seeds must be at least 1", file=sys.stderr)
        return 2
    try:
        scenario = load_scenario(args.scenario)
        t0 = time.perf_counter()
        report = run(scenario, args.seeds, args.policy or tuple(Policy), keep_rtat=args.out is not None,
                     jobs=max(1, args.jobs))
        log.info("simulated %s: %d seeds x %d policies in %.1f s", scenario.name, args.seeds,
                 len(report.policies), time.perf_counter() - t0)
        if args.out:
            for path in write_all(report, args.out):
                log.info("wrote %s", path)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(format_markdown(report), end="")
        if args.out:
            print(f"\nWrote {args.out}/rtat.csv, rtat.json, rtat.md, rtat_mean.png, rtat_ecdf.png")
    return 0

