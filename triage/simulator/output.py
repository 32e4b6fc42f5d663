"""What the simulator writes: a Report as CSV, JSON, a markdown table and PNG plots.

``write_all`` writes ``rtat.csv``, ``rtat.json``, ``rtat.md``, ``rtat_mean.png`` (mean RTAT per
finding and policy, with its 95 % CI) and ``rtat_ecdf.png`` (the RTAT distribution, pooled over
seeds). matplotlib is imported only when plotting.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from triage.priority import Policy
from triage.simulator.stats import STATS, Report

log = logging.getLogger(__name__)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _cell(stat: Mapping[str, float | None]) -> str:
    if stat["value"] is None:
        return "–"
    if stat["ci_low"] is None:
        return _fmt(stat["value"])
    return f"{_fmt(stat['value'])} ({_fmt(stat['ci_low'])}–{_fmt(stat['ci_high'])})"


def write_csv(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["scenario", "policy", "finding", "n_seeds", "n_studies",
                         *[f"{s}{suffix}" for s in STATS for suffix in ("", "_ci_low", "_ci_high")],
                         "mean_vs_fifo", "mean_vs_fifo_ci_low", "mean_vs_fifo_ci_high"])
        data = report.to_json()
        for policy in report.policies:
            for row in report.findings:
                e = data[policy][row]
                delta = e.get("mean_vs_fifo", {"value": None, "ci_low": None, "ci_high": None})
                writer.writerow([report.scenario, policy, row, e["n"], e["n_studies"],
                                 *[_csv(e[s][k]) for s in STATS for k in ("value", "ci_low", "ci_high")],
                                 *[_csv(delta[k]) for k in ("value", "ci_low", "ci_high")]])
    return path


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def format_markdown(report: Report) -> str:
    lines = [(f"RTAT in minutes, scenario `{report.scenario}`, {len(report.seeds)} seeds: mean over seeds of each "
              "seed's statistic, with its 95 % t-interval; 'vs FIFO' is the paired change of the mean."), "",
             "| Finding | Policy | Studies | Mean | Median | p95 | Max | Mean vs FIFO |",
             "|---|---|---:|---|---|---|---|---|"]
    data = report.to_json()
    for row in report.findings:
        for policy in report.policies:
            e = data[policy][row]
            delta = e.get("mean_vs_fifo")
            vs = "–" if delta is None or policy == Policy.FIFO.value or delta["value"] is None else (
                f"{delta['value']:+.1f} ({delta['ci_low']:+.1f} to {delta['ci_high']:+.1f})"
                if delta["ci_low"] is not None else f"{delta['value']:+.1f}")
            lines.append(f"| {row} | {policy} | {e['n_studies']} | {_cell(e['mean'])} | {_cell(e['median'])} | "
                         f"{_cell(e['p95'])} | {_cell(e['max'])} | {vs} |")
    if any(report.unreported.values()):
        lines += ["", "Unreported studies (left out): " + ", ".join(f"{p} {n}" for p, n in report.unreported.items())]
    return "\n".join(lines) + "\n"


def write_markdown(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(format_markdown(report), encoding="utf-8")
    return path


def write_json(report: Report, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.to_json(), indent=2) + "\n", encoding="utf-8")
    return path


def write_plots(report: Report, out_dir: Path) -> list[Path]:
    """rtat_mean.png (mean RTAT per finding and policy, with 95 % CI) and rtat_ecdf.png (the
    distribution of RTAT per finding, pooled over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, policies = report.findings, report.policies
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(rows) + 2), 4.5))
    width = 0.8 / max(len(policies), 1)
    x = np.arange(len(rows))
    for k, policy in enumerate(policies):
        means = [report.stats[policy][r]["mean"]["value"] or 0.0 for r in rows]
        lows = [report.stats[policy][r]["mean"]["ci_low"] for r in rows]
        highs = [report.stats[policy][r]["mean"]["ci_high"] for r in rows]
        err = np.array([[m - lo if lo is not None else 0 for m, lo in zip(means, lows)],
                        [hi - m if hi is not None else 0 for m, hi in zip(means, highs)]])
        ax.bar(x + (k - (len(policies) - 1) / 2) * width, means, width, yerr=err, capsize=2, label=policy)
    ax.set_xticks(x, rows, rotation=30, ha="right")
    ax.set_ylabel("mean RTAT (min)")
    ax.set_title(f"{report.scenario}: mean RTAT, 95 % CI over {len(report.seeds)} seeds")
    ax.legend()
    fig.tight_layout()
    bar = out_dir / "rtat_mean.png"
    fig.savefig(bar, dpi=110)
    plt.close(fig)

    cols = min(4, len(rows))
    nrows = math.ceil(len(rows) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.6 * nrows), squeeze=False, sharex=True)
    for i, row in enumerate(rows):
        ax = axes[i // cols][i % cols]
        for k, policy in enumerate(policies):
            values = np.sort(report.rtat.get(policy, {}).get(row, np.empty(0)))
            if len(values):   # line styles keep identical curves (order = FIFO without orders) visible
                ax.step(values, np.arange(1, len(values) + 1) / len(values), where="post", label=policy,
                        linestyle=("-", "--", "-.", ":")[k % 4], linewidth=1.2)
        ax.set_title(row, fontsize=9)
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    for j in range(len(rows), nrows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=7)
    fig.supxlabel("RTAT (min, log scale)")
    fig.supylabel("share of studies reported")
    fig.suptitle(f"{report.scenario}: RTAT distribution, pooled over {len(report.seeds)} seeds")
    fig.tight_layout()
    ecdf = out_dir / "rtat_ecdf.png"
    fig.savefig(ecdf, dpi=110)
    plt.close(fig)
    return [bar, ecdf]


def write_all(report: Report, out_dir: Path) -> list[Path]:
    out_dir = Path(out_dir)
    return [write_csv(report, out_dir / "rtat.csv"), write_json(report, out_dir / "rtat.json"),
            write_markdown(report, out_dir / "rtat.md"), *write_plots(report, out_dir)]
