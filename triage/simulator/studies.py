"""The night's studies, drawn before the simulation, and the record of what happened to each.

* studies arrive per site and modality as a Poisson process whose rate may change with the hour
  of the day;
* each study has true findings (Bernoulli per finding, from its modality's prevalence) and an AI
  output: either drawn from the AI's operating point per finding (sensitivity, specificity), or
  sampled, with replacement, from the per-study scores exported by ``readingroom evaluate``
  (labels and probabilities come from the same CSV row; ``scores.py``).

Common random numbers: for one seed, every policy sees the same studies (arrival times, sites,
modalities, findings, AI outputs, order priorities, reading times), drawn from independent numpy
streams, so policies differ only in the order in which they read (``engine.py``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from triage.priority import AIResult
from triage.simulator.scenario import Scenario, Stream
from triage.simulator.scores import load_scores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """One simulated study: everything drawn before the simulation (common random numbers)."""

    id: int
    site: str
    modality: str
    arrival: float                 # minutes from the scenario start
    findings: tuple[str, ...]      # true findings
    ai: tuple[AIResult, ...]
    ai_available: bool
    order_priority: str
    reading_min: float             # at full availability
    max_wait_min: float | None
    counted: bool
    source_uid: str = ""


@dataclass(frozen=True)
class StudyRecord:
    """What happened to one study under one policy."""

    seed: int
    policy: str
    study_id: int
    site: str
    modality: str
    findings: tuple[str, ...]
    ai_positive: tuple[str, ...]
    order_priority: str
    arrival_min: float
    start_min: float
    report_min: float
    label: str                     # the class it was read in
    promoted: bool
    radiologist: int
    counted: bool

    @property
    def rtat_min(self) -> float:
        return self.report_min - self.arrival_min

    @property
    def wait_min(self) -> float:
        return self.start_min - self.arrival_min


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), *stream]))


def _arrival_times(stream: Stream, offset: float, horizon: float, rng: np.random.Generator) -> np.ndarray:
    """A Poisson process with a rate constant within each clock hour, on [0, horizon)."""
    rates = stream.hourly()
    times: list[np.ndarray] = []
    t = 0.0
    while t < horizon:
        clock = offset + t
        hour_end = (math.floor(clock / 60) + 1) * 60 - offset
        end = min(hour_end, horizon)
        rate = rates[int(clock // 60) % 24] / 60.0
        n = rng.poisson(rate * (end - t)) if rate > 0 else 0
        if n:
            times.append(np.sort(rng.uniform(t, end, n)))
        t = end
    return np.concatenate(times) if times else np.empty(0)


def generate_studies(scenario: Scenario, seed: int) -> list[Study]:
    """The studies of one seed, the same for every policy. Each (site, modality) stream and each
    part of a study (arrivals, findings, AI, order, reading time) has its own random stream, so
    changing one parameter leaves the other draws alone."""
    horizon = scenario.arrival_end_min
    lo, hi = scenario.warmup_h * 60, (scenario.warmup_h + scenario.duration_h) * 60
    drafts: list[tuple[float, int, dict]] = []
    for s_idx, (site_name, site) in enumerate(scenario.sites.items()):
        for m_idx, (mod_name, stream) in enumerate(site.arrivals.items()):
            modality = scenario.modalities[mod_name]
            key = (s_idx, m_idx)
            times = _arrival_times(stream, scenario.clock_offset, horizon, _rng(seed, 1, *key))
            n = len(times)
            if not n:
                continue
            reading = modality.reading_time.sample(_rng(seed, 2, *key), n)
            shares = stream.order_priority or modality.order_priority
            names = list(shares)
            p = np.array([shares[k] for k in names], dtype=float)
            orders = _rng(seed, 3, *key).choice(len(names), size=n, p=p / p.sum())
            available = _rng(seed, 4, *key).random(n) < modality.ai_coverage
            uids = [""] * n
            if modality.findings is not None:
                findings = list(modality.findings)
                f_rng, ai_rng = _rng(seed, 5, *key), _rng(seed, 6, *key)
                prevalence = np.array([modality.findings[f].prevalence for f in findings])
                truth = f_rng.random((n, len(findings))) < prevalence
                u = ai_rng.random((n, len(findings)))
                sens = np.array([modality.findings[f].sensitivity for f in findings])
                spec = np.array([modality.findings[f].specificity for f in findings])
                probs = np.where(truth, u < sens, u >= spec).astype(float)
                thresholds: dict[str, float] = {}
            else:
                table = load_scores(modality.scores, scenario.base_dir)
                findings = list(table.findings)
                rows = _rng(seed, 7, *key).integers(0, len(table.uids), n)
                truth, probs = table.labels[rows], table.probabilities[rows]
                uids = [table.uids[r] for r in rows]
                thresholds = modality.scores.thresholds
            for i in range(n):
                drafts.append((float(times[i]), len(drafts), {
                    "site": site_name, "modality": mod_name,
                    "findings": tuple(f for f, t in zip(findings, truth[i]) if t),
                    "ai": (tuple(AIResult(f, float(pr), thresholds.get(f)) for f, pr in zip(findings, probs[i]))
                           if available[i] else ()),
                    "ai_available": bool(available[i]), "order_priority": names[orders[i]],
                    "reading_min": float(reading[i]), "max_wait_min": site.max_wait_min,
                    "counted": bool(lo <= times[i] < hi), "source_uid": uids[i]}))
    drafts.sort(key=lambda d: (d[0], d[1]))
    return [Study(id=i, arrival=t, **fields) for i, (t, _k, fields) in enumerate(drafts)]

