"""The night-shift simulator's run: what a triage policy would do to report turnaround times (RTAT).

A discrete-event simulation (simpy) of one reading room, over the studies of ``studies.py``:

* radiologists work in shifts; each time one becomes free, the next study is the first of
  ``triage.priority.reading_order`` over every study waiting at that moment (its waited time is
  ``now - arrival``, so the upper limit promotes studies as they age). This is the code the live
  worklist runs (``triage/worklist.py``), not a copy. Reading is not pre-empted;
* RTAT = report time - arrival time; the report is done when the radiologist finishes reading.

Common random numbers: for one seed, every policy sees the same studies (``generate_studies``,
drawn before the simulation). Policies differ only in the order in which they read.

Time: minutes from the scenario's ``start`` clock time. Arrivals run for ``warmup_h +
duration_h + cooldown_h``; only studies that arrive within the ``duration_h`` window after the
warm-up are counted. When arrivals stop, ``after_arrivals`` decides: ``drain`` (every radiologist
of the scenario reads on, shifts ignored, until the list is empty) or ``next_shift`` (shifts go on
repeating every day until the list is empty). A radiologist finishes the study in hand at the end
of a shift and starts no new one, unless the shift has ``finish_list`` (read on until the list is
empty). A radiologist with ``availability`` < 1 spends the rest of the shift on other duties: after
each read, time away in proportion.

``run`` simulates every policy for every seed and returns the ``stats.Report``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import numpy as np
import simpy

from triage.priority import (
    Policy,
    StudyFacts,
    place,
    reading_order,
)
from triage.simulator.policy import policy_config
from triage.simulator.scenario import ALL, NEGATIVE, Scenario, Shift, modality_findings
from triage.simulator.stats import Report, combine, per_seed_stats, rows_of
from triage.simulator.studies import Study, StudyRecord, generate_studies

log = logging.getLogger(__name__)


def _facts(study: Study, now: float) -> StudyFacts:
    return StudyFacts(waited_min=now - study.arrival, order_priority=study.order_priority, ai=study.ai,
                      ai_available=study.ai_available, max_wait_min=study.max_wait_min)


def simulate(scenario: Scenario, policy: Policy | str, seed: int,
             studies: Sequence[Study] | None = None) -> list[StudyRecord]:
    """Run one seed of the scenario under one policy; returns one record per reported study,
    in report order. ``studies`` (from ``generate_studies``) saves drawing them again."""
    policy = Policy(policy)
    config = policy_config(scenario)
    studies = list(generate_studies(scenario, seed) if studies is None else studies)
    env = simpy.Environment()
    offset = scenario.clock_offset
    arrival_end = scenario.arrival_end_min
    drain = scenario.after_arrivals == "drain"
    waiting: dict[int, Study] = {}
    records: list[StudyRecord] = []
    done = env.event()
    state = {"wake": env.event()}
    if not studies:
        done.succeed()

    def notify() -> None:
        wake = state["wake"]
        state["wake"] = env.event()
        wake.succeed()

    def arrivals():
        for study in studies:
            if study.arrival > env.now:
                yield env.timeout(study.arrival - env.now)
            waiting[study.id] = study
            notify()

    def on_duty(shift: Shift, now: float) -> bool:
        return (drain and now >= arrival_end) or shift.on_duty(offset + now)

    def radiologist(index: int, shift: Shift):
        overtime = False   # finish_list: the shift has ended, the list is not empty yet
        while not done.triggered:
            now = env.now
            if on_duty(shift, now):
                overtime = shift.finish_list
            elif overtime and waiting:
                pass        # reads on past the end of the shift
            else:
                overtime = False
                back = shift.next_start(offset + now) - offset
                if drain and now < arrival_end:
                    back = min(back, arrival_end)
                yield env.timeout(max(back - now, 0.0))
                continue
            if not waiting:   # idle: wait for a study, or for the end of the shift
                off = math.inf if drain and now >= arrival_end else shift.end_after(offset + now) - offset
                events = [state["wake"]] + ([env.timeout(off - now)] if off < math.inf else [])
                yield env.any_of(events)
                continue
            items = [(s.arrival, s.id, _facts(s, now)) for s in waiting.values()]
            ident, _ = reading_order(items, config, policy, explain=False)[0]
            study = waiting.pop(ident)
            placement = place(_facts(study, now), config, policy)
            yield env.timeout(study.reading_min)
            records.append(StudyRecord(
                seed=seed, policy=policy.value, study_id=study.id, site=study.site, modality=study.modality,
                findings=study.findings, ai_positive=placement.positive, order_priority=study.order_priority,
                arrival_min=study.arrival, start_min=now, report_min=env.now, label=placement.label,
                promoted=placement.promoted, radiologist=index, counted=study.counted))
            if len(records) == len(studies) and not done.triggered:
                done.succeed()
            if shift.availability < 1 and on_duty(shift, env.now):   # other duties, then the worklist again
                yield env.timeout(study.reading_min * (1 / shift.availability - 1))

    env.process(arrivals())
    index = 0
    for shift in scenario.radiologists:
        for _ in range(shift.count):
            env.process(radiologist(index, shift))
            index += 1
    limit = arrival_end + scenario.max_drain_h * 60
    env.run(until=env.any_of([done, env.timeout(limit)]))
    if len(records) < len(studies):
        log.warning("scenario %s, policy %s, seed %d: %d of %d studies unreported %.0f h after arrivals "
                    "stopped (raise max_drain_h, or add radiologists)", scenario.name, policy.value, seed,
                    len(studies) - len(records), len(studies), scenario.max_drain_h)
    return records


def _run_seed(scenario: Scenario, seed: int, names: Sequence[str], findings: Sequence[str], keep_rtat: bool):
    """One seed, every policy: per-policy stats, pooled RTATs, seconds and unreported counts."""
    studies = generate_studies(scenario, seed)
    stats, pooled, seconds, unreported = {}, {}, {}, {}
    for name in names:
        t0 = time.perf_counter()
        records = simulate(scenario, name, seed, studies=studies)
        seconds[name] = time.perf_counter() - t0
        unreported[name] = len(studies) - len(records)
        stats[name] = per_seed_stats(records, findings)
        rows: dict[str, list[float]] = {}
        if keep_rtat:
            for r in records:
                if r.counted:
                    for row in rows_of(r):
                        rows.setdefault(row, []).append(r.rtat_min)
        pooled[name] = rows
    return seed, stats, pooled, seconds, unreported


def run(scenario: Scenario, seeds: int | Sequence[int] = 20,
        policies: Sequence[Policy | str] = tuple(Policy), keep_rtat: bool = True, jobs: int = 1) -> Report:
    """Simulate every policy for every seed (the same studies for all policies of a seed).
    ``jobs`` > 1 runs seeds in that many processes; the result does not depend on it."""
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    names = [Policy(p).value for p in policies]
    findings = scenario.findings()
    for modality_name, modality in scenario.modalities.items():
        known = policy_config(scenario).findings
        for finding in modality_findings(modality, scenario.base_dir):
            if finding not in known:
                log.warning("scenario %s: finding %s of %s has no rule in the policy; AI never moves it up",
                            scenario.name, finding, modality_name)
    per_seed: dict[str, dict[int, dict[str, dict[str, float]]]] = {p: {} for p in names}
    pooled: dict[str, dict[str, list[float]]] = {p: {} for p in names}
    seconds = {p: 0.0 for p in names}
    unreported = {p: 0 for p in names}
    args = [(scenario, seed, names, findings, keep_rtat) for seed in seed_list]
    if jobs > 1 and len(seed_list) > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=min(jobs, len(seed_list))) as pool:
            results = list(pool.map(_run_seed, *zip(*args)))
    else:
        results = [_run_seed(*a) for a in args]
    for seed, stats, rows, secs, missing in results:
        for name in names:
            per_seed[name][seed] = stats[name]
            seconds[name] += secs[name]
            unreported[name] += missing[name]
            for row, values in rows[name].items():
                pooled[name].setdefault(row, []).extend(values)
    stats = {name: combine(per_seed[name], findings) for name in names}
    return Report(scenario=scenario.name, seeds=seed_list, policies=names, findings=[*findings, NEGATIVE, ALL],
                  stats=stats, per_seed=per_seed,
                  rtat={p: {row: np.asarray(v) for row, v in rows.items()} for p, rows in pooled.items()},
                  seconds=seconds, unreported=unreported)
