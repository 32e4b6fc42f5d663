"""What the upper limit is worth on ``baltruschat2021``: the scenario's 360 min against the
shipped default of ``configs/findings.yaml`` (120 min).

docs/simulation.md reports that AI priority with the upper limit (``ai_aging``) halves the mean
pneumothorax turnaround (RTAT) of ``baltruschat2021``. That scenario sets its own upper limit
(``policy.max_wait_min: 360``); a site installed with the shipped configuration gets 120 min.
This script prints both, so that the figure is never quoted without its limit:

* FIFO (the upper limit does not change it: FIFO never looks at waiting times);
* ``ai_aging`` at the scenario's limit, and at the shipped default.

For each: the mean pneumothorax RTAT, the mean RTAT of studies without findings, the worst
(largest) ratio over all rows of the ``ai_aging`` max RTAT to FIFO's, the max RTAT over all
studies, and the relative change of
the pneumothorax and no-finding means against FIFO (ratio of the means over seeds, as the docs
quote it; the paired per-seed change in minutes with its 95 % CI beside it). Same seeds, same
studies for every run (common random numbers), through the simulator's public ``run``.

Run it from the repository root::

    .venv/bin/python bench/simulation.py [--seeds 20] [--jobs 2] [--json]

The last line is always one JSON object with the figures. Exit status: 0 when the pneumothorax
mean falls by at least 50 % (the target) at the scenario's limit, 1 otherwise; the shipped
default's figure is printed for information, with how far it is from the target.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ comes first on sys.path, and bench/dictation.py would shadow the
# dictation package: put the project folder first.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import time
from typing import Any

from triage.priority import Policy, load_policy_config
from triage.simulator import ALL, NEGATIVE, Report, Scenario, load_scenario, mean_ci, policy_config, run, scenario_from_dict

SCENARIO = "baltruschat2021"
FINDING = "pneumothorax"
TARGET_REDUCTION = 0.50      # docs/simulation.md: mean pneumothorax RTAT at least halved
TARGET_MAX_RATIO = 1.10      # max RTAT with the upper limit at most 1.1 x FIFO's, every row


def scenario_limits(scenario: Scenario) -> dict[str, float | None]:
    """The upper limit each site runs under: its own ``max_wait_min`` or the scenario policy's."""
    default = policy_config(scenario).max_wait_min
    return {name: site.max_wait_min if site.max_wait_min is not None else default
            for name, site in scenario.sites.items()}


def with_limit(scenario: Scenario, limit_min: float) -> Scenario:
    """The same scenario with every site under ``limit_min``: the policy's ``max_wait_min``
    replaced, and a site's own limit (which would win over the policy's) replaced too."""
    data = scenario.model_dump()
    data["policy"] = {**data["policy"], "max_wait_min": limit_min}
    for site in data["sites"].values():
        if site.get("max_wait_min") is not None:
            site["max_wait_min"] = limit_min
    return scenario_from_dict(data, source=f"{scenario.name} with max_wait_min {limit_min:g}")


def paired_change(report: Report, policy: str, baseline: Report, row: str) -> dict[str, float | None]:
    """Per-seed change of the mean RTAT of ``row`` against FIFO (minutes), with its 95 % CI.
    Both reports ran the same seeds, hence the same studies."""
    diffs = [report.per_seed[policy][s][row]["mean"] - baseline.per_seed["fifo"][s][row]["mean"]
             for s in report.seeds
             if row in report.per_seed[policy][s] and row in baseline.per_seed["fifo"][s]]
    return mean_ci(diffs)


def summarize_limit(label: str, limit: float, report: Report, fifo: Report) -> dict[str, Any]:
    """The figures of one ``ai_aging`` run against FIFO."""
    aging, base = report.stats["ai_aging"], fifo.stats["fifo"]
    ratios = {row: aging[row]["max"]["value"] / base[row]["max"]["value"]
              for row in report.findings if aging[row]["max"]["value"] and base[row]["max"]["value"]}
    worst = max(ratios, key=ratios.get)
    px, px_fifo = aging[FINDING]["mean"]["value"], base[FINDING]["mean"]["value"]
    neg, neg_fifo = aging[NEGATIVE]["mean"]["value"], base[NEGATIVE]["mean"]["value"]
    return {
        "label": label, "max_wait_min": limit,
        "pneumothorax_mean_min": px, "pneumothorax_mean_ci": [aging[FINDING]["mean"]["ci_low"],
                                                              aging[FINDING]["mean"]["ci_high"]],
        "pneumothorax_change": px / px_fifo - 1,
        "pneumothorax_paired_change_min": paired_change(report, "ai_aging", fifo, FINDING),
        "negative_mean_min": neg, "negative_change": neg / neg_fifo - 1,
        "negative_paired_change_min": paired_change(report, "ai_aging", fifo, NEGATIVE),
        "max_ratio_vs_fifo": {"min": min(ratios.values()), "max": ratios[worst], "worst_row": worst},
        "all_max_min": aging[ALL]["max"]["value"],
        "seconds": report.seconds["ai_aging"],
    }


def measure(seeds: int, jobs: int) -> dict[str, Any]:
    scenario = load_scenario(SCENARIO)
    limits = scenario_limits(scenario)
    distinct = sorted({v for v in limits.values() if v is not None})
    if len(distinct) != 1:
        raise SystemExit(f"{SCENARIO}: its sites run under different upper limits {limits}; "
                         "this benchmark compares one limit against the shipped default")
    scenario_limit, shipped = distinct[0], load_policy_config().max_wait_min
    t0 = time.perf_counter()
    at_scenario = run(scenario, seeds, [Policy.FIFO, Policy.AI_AGING], keep_rtat=False, jobs=jobs)
    at_shipped = run(with_limit(scenario, shipped), seeds, [Policy.AI_AGING], keep_rtat=False, jobs=jobs)
    fifo = at_scenario.stats["fifo"]
    return {
        "scenario": SCENARIO, "seeds": seeds, "seconds": time.perf_counter() - t0,
        "fifo": {"pneumothorax_mean_min": fifo[FINDING]["mean"]["value"],
                 "pneumothorax_mean_ci": [fifo[FINDING]["mean"]["ci_low"], fifo[FINDING]["mean"]["ci_high"]],
                 "negative_mean_min": fifo[NEGATIVE]["mean"]["value"], "all_max_min": fifo[ALL]["max"]["value"]},
        "ai_aging": [summarize_limit("scenario", scenario_limit, at_scenario, at_scenario),
                     summarize_limit("shipped default, configs/findings.yaml", shipped, at_shipped, at_scenario)],
    }


def _pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def print_table(result: dict[str, Any]) -> None:
    fifo = result["fifo"]
    print(f"{result['scenario']}, {result['seeds']} seeds ({result['seconds']:.1f} s). RTAT in minutes: "
          "mean over seeds of each seed's mean; change = ratio of those means - 1.")
    print()
    print("| Policy | Upper limit | Pneumothorax mean | change vs FIFO | paired change, min (95 % CI) | "
          "No-finding mean | change vs FIFO | Max RTAT / FIFO's, all rows (worst row) | Max RTAT, all studies |")
    print("|---|---:|---:|---:|---|---:|---:|---|---:|")
    lo, hi = fifo["pneumothorax_mean_ci"]
    print(f"| fifo | – | {fifo['pneumothorax_mean_min']:.1f} ({lo:.1f}–{hi:.1f}) | – | – | "
          f"{fifo['negative_mean_min']:.1f} | – | 1 | {fifo['all_max_min']:.1f} |")
    for entry in result["ai_aging"]:
        lo, hi = entry["pneumothorax_mean_ci"]
        d = entry["pneumothorax_paired_change_min"]
        r = entry["max_ratio_vs_fifo"]
        print(f"| ai_aging | {entry['max_wait_min']:g} min ({entry['label']}) | "
              f"{entry['pneumothorax_mean_min']:.1f} ({lo:.1f}–{hi:.1f}) | {_pct(entry['pneumothorax_change'])} | "
              f"{d['value']:+.1f} ({d['ci_low']:+.1f} to {d['ci_high']:+.1f}) | {entry['negative_mean_min']:.1f} | "
              f"{_pct(entry['negative_change'])} | {r['min']:.3f}–{r['max']:.3f} ({r['worst_row']}) | "
              f"{entry['all_max_min']:.1f} |")
    print()
    for entry in result["ai_aging"]:
        reduction = -entry["pneumothorax_change"]
        gap = reduction - TARGET_REDUCTION
        verdict = "met" if gap >= 0 else f"MISSED by {100 * -gap:.1f} percentage points"
        ratio = entry["max_ratio_vs_fifo"]["max"]
        print(f"upper limit {entry['max_wait_min']:g} min: pneumothorax mean {100 * reduction:.1f} % lower "
              f"(target >= {100 * TARGET_REDUCTION:.0f} %: {verdict}); worst max ratio {ratio:.3f} "
              f"(target <= {TARGET_MAX_RATIO:g}: {'met' if ratio <= TARGET_MAX_RATIO else 'MISSED'})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="seeds (replications), default 20")
    parser.add_argument("--jobs", type=int, default=2, help="processes to run seeds in (default 2); same result")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (the confidence intervals need two)")
    result = measure(args.seeds, max(1, args.jobs))
    if not args.json:
        print_table(result)
    print(json.dumps(result))
    return 0 if -result["ai_aging"][0]["pneumothorax_change"] >= TARGET_REDUCTION else 1


if __name__ == "__main__":
    sys.exit(main())
