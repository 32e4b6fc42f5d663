"""The simulator's statistics: RTAT per finding, mean with a 95 % t-interval, and the Report.

For each seed, the mean, median, 95th percentile and maximum RTAT per finding (a study counts
under each of its true findings), for studies with no finding ('negative') and for all studies
('all'). The figures reported are the mean of these per-seed statistics over the seeds with a
95 % Student-t confidence interval (seeds are independent replications). The change of the mean
against FIFO is computed per seed (paired, thanks to common random numbers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from triage.priority import Policy
from triage.simulator.scenario import ALL, NEGATIVE
from triage.simulator.studies import StudyRecord

log = logging.getLogger(__name__)

STATS = ("mean", "median", "p95", "max")


_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042]


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        return math.nan
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def mean_ci(values: Sequence[float]) -> dict[str, float | None]:
    """Mean with a 95 % t-interval (None where it cannot be computed)."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if not len(arr):
        return {"value": None, "ci_low": None, "ci_high": None}
    mean = float(arr.mean())
    if len(arr) < 2:
        return {"value": mean, "ci_low": None, "ci_high": None}
    half = t975(len(arr) - 1) * float(arr.std(ddof=1)) / math.sqrt(len(arr))
    return {"value": mean, "ci_low": mean - half, "ci_high": mean + half}


def rows_of(record: StudyRecord) -> tuple[str, ...]:
    """The result rows a study counts in: its findings (or 'negative'), and 'all'."""
    return (*(record.findings or (NEGATIVE,)), ALL)


def per_seed_stats(records: Iterable[StudyRecord], findings: Sequence[str]) -> dict[str, dict[str, float]]:
    """For one seed: finding -> {mean, median, p95, max, n} of the counted studies' RTAT."""
    by_row: dict[str, list[float]] = {f: [] for f in (*findings, NEGATIVE, ALL)}
    for r in records:
        if r.counted:
            for row in rows_of(r):
                by_row.setdefault(row, []).append(r.rtat_min)
    out: dict[str, dict[str, float]] = {}
    for row, values in by_row.items():
        if values:
            arr = np.asarray(values)
            out[row] = {"mean": float(arr.mean()), "median": float(np.median(arr)),
                        "p95": float(np.percentile(arr, 95)), "max": float(arr.max()), "n": len(arr)}
    return out


def summarize(records_by_seed: Mapping[int, Sequence[StudyRecord]],
              findings: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """One policy's records, by seed -> finding -> {mean, median, p95, max: {value, ci_low,
    ci_high}, n (seeds with such studies), n_studies (all seeds)}."""
    if findings is None:
        findings = sorted({f for recs in records_by_seed.values() for r in recs for f in r.findings})
    seeds = {seed: per_seed_stats(recs, findings) for seed, recs in records_by_seed.items()}
    return combine(seeds, findings)


def combine(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]],
            findings: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per-seed statistics (seed -> row -> stat) -> row -> {stat: mean with its CI, n, n_studies}."""
    out: dict[str, dict[str, Any]] = {}
    for row in (*findings, NEGATIVE, ALL):
        present = [s[row] for s in per_seed.values() if row in s]
        entry: dict[str, Any] = {stat: mean_ci([p[stat] for p in present]) for stat in STATS}
        entry["n"] = len(present)
        entry["n_studies"] = int(sum(p["n"] for p in present))
        out[row] = entry
    return out


@dataclass
class Report:
    """The outcome of ``run``: statistics per policy and finding, and what is needed to plot them."""

    scenario: str
    seeds: list[int]
    policies: list[str]
    findings: list[str]                                   # rows, 'negative' and 'all' last
    stats: dict[str, dict[str, dict[str, Any]]]           # policy -> row -> stat
    per_seed: dict[str, dict[int, dict[str, dict[str, float]]]]   # policy -> seed -> row -> stat
    rtat: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)   # policy -> row -> pooled RTATs
    seconds: dict[str, float] = field(default_factory=dict)             # policy -> simulation time
    unreported: dict[str, int] = field(default_factory=dict)

    def delta_vs(self, policy: str, row: str, stat: str = "mean",
                 baseline: str = Policy.FIFO.value) -> dict[str, float | None]:
        """Paired per-seed change of ``stat`` against ``baseline`` (minutes), with a 95 % CI."""
        if baseline not in self.per_seed or policy not in self.per_seed:
            return {"value": None, "ci_low": None, "ci_high": None}
        diffs = [self.per_seed[policy][s][row][stat] - self.per_seed[baseline][s][row][stat]
                 for s in self.seeds if row in self.per_seed[policy][s] and row in self.per_seed[baseline][s]]
        return mean_ci(diffs)

    def to_json(self) -> dict[str, dict[str, dict[str, Any]]]:
        """policy -> finding -> {mean, median, p95, max: {value, ci_low, ci_high}, n, n_studies,
        mean_vs_fifo (paired change of the mean, minutes)}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for policy in self.policies:
            out[policy] = {}
            for row in self.findings:
                entry = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.stats[policy][row].items()}
                if Policy.FIFO.value in self.policies:
                    entry["mean_vs_fifo"] = self.delta_vs(policy, row)
                out[policy][row] = entry
        return out

