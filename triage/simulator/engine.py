"""The night-shift simulator: what a triage policy would do to report turnaround times (RTAT).

``readingroom simulate --scenario FILE [--seeds N] [--out DIR] [--json]``

A discrete-event simulation (simpy) of one reading room:

* studies arrive per site and modality as a Poisson process whose rate may change with the hour
  of the day;
* each study has true findings (Bernoulli per finding, from its modality's prevalence) and an AI
  output: either drawn from the AI's operating point per finding (sensitivity, specificity), or
  sampled, with replacement, from the per-study scores exported by ``readingroom evaluate``
  (labels and probabilities come from the same CSV row);
* radiologists work in shifts; each time one becomes free, the next study is the first of
  ``triage.priority.reading_order`` over every study waiting at that moment (its waited time is
  ``now - arrival``, so the upper limit promotes studies as they age). This is the code the live
  worklist runs (``triage/worklist.py``), not a copy. Reading is not pre-empted;
* RTAT = report time - arrival time; the report is done when the radiologist finishes reading.

Common random numbers: for one seed, every policy sees the same studies (arrival times, sites,
modalities, findings, AI outputs, order priorities, reading times), drawn before the simulation
from independent numpy streams. Policies differ only in the order in which they read.

Time: minutes from the scenario's ``start`` clock time. Arrivals run for ``warmup_h +
duration_h + cooldown_h``; only studies that arrive within the ``duration_h`` window after the
warm-up are counted. When arrivals stop, ``after_arrivals`` decides: ``drain`` (every radiologist
of the scenario reads on, shifts ignored, until the list is empty) or ``next_shift`` (shifts go on
repeating every day until the list is empty). A radiologist finishes the study in hand at the end
of a shift and starts no new one, unless the shift has ``finish_list`` (read on until the list is
empty). A radiologist with ``availability`` < 1 spends the rest of the shift on other duties: after
each read, time away in proportion.

Statistics: for each seed, the mean, median, 95th percentile and maximum RTAT per finding (a study
counts under each of its true findings), for studies with no finding ('negative') and for all
studies ('all'). The figures reported are the mean of these per-seed statistics over the seeds
with a 95 % Student-t confidence interval (seeds are independent replications). The change of the
mean against FIFO is computed per seed (paired, thanks to common random numbers).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import simpy
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from readingroom.errors import ConfigError
from readingroom.settings import PROJECT_ROOT
from triage.priority import (
    AIResult,
    Policy,
    PolicyConfig,
    StudyFacts,
    load_policy_config,
    place,
    reading_order,
)

log = logging.getLogger(__name__)

SCENARIO_DIR = PROJECT_ROOT / "configs" / "scenarios"
NEGATIVE = "negative"
ALL = "all"
STATS = ("mean", "median", "p95", "max")
MINUTES_PER_DAY = 24 * 60


# --------------------------------------------------------------------------- the scenario, typed


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _clock_minutes(value: Any) -> int:
    """'HH:MM' -> minutes after midnight. YAML reads an unquoted 22:00 as the integer 1320
    (base 60), which is the same number of minutes, so integers are taken as minutes."""
    # ValueError, not TypeError: pydantic reports only ValueError as a validation error.
    if isinstance(value, bool):
        raise ValueError("give a clock time as 'HH:MM'")
    if isinstance(value, int):
        minutes = value
    elif isinstance(value, str):
        try:
            hours, _, mins = value.strip().partition(":")
            minutes = int(hours) * 60 + int(mins or 0)
        except ValueError:
            raise ValueError(f"{value!r} is not a clock time: use 'HH:MM'") from None
    else:
        raise ValueError("give a clock time as 'HH:MM'")
    if not 0 <= minutes <= MINUTES_PER_DAY:
        raise ValueError(f"{value!r} is not a clock time between 00:00 and 24:00")
    return minutes


class ReadingTime(_Model):
    """A reading-time distribution, in minutes. ``sd_min`` is needed by lognormal and gamma."""

    dist: Literal["exponential", "lognormal", "gamma", "fixed"] = "lognormal"
    mean_min: float = Field(gt=0)
    sd_min: float | None = Field(None, gt=0)
    max_min: float | None = Field(None, gt=0)   # clip (a study left open is closed by then)

    @model_validator(mode="after")
    def _needs_sd(self) -> ReadingTime:
        if self.dist in ("lognormal", "gamma") and self.sd_min is None:
            raise ValueError(f"dist {self.dist} needs sd_min")
        return self

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        if self.dist == "exponential":
            out = rng.exponential(self.mean_min, n)
        elif self.dist == "fixed":
            out = np.full(n, self.mean_min)
        elif self.dist == "lognormal":
            sigma2 = math.log1p((self.sd_min / self.mean_min) ** 2)
            out = rng.lognormal(math.log(self.mean_min) - sigma2 / 2, math.sqrt(sigma2), n)
        else:  # gamma
            shape = (self.mean_min / self.sd_min) ** 2
            out = rng.gamma(shape, self.sd_min ** 2 / self.mean_min, n)
        return np.minimum(out, self.max_min) if self.max_min else out


class FindingSpec(_Model):
    """One finding of a modality: its prevalence and the AI's operating point for it."""

    prevalence: float = Field(ge=0, le=1)
    sensitivity: float = Field(ge=0, le=1)
    specificity: float = Field(ge=0, le=1)


class ScoresSpec(_Model):
    """Per-study AI scores exported by ``readingroom evaluate``: one row per study, a
    ``study_uid`` column, a probability column and a 0/1 label column per finding."""

    path: str
    findings: list[str] | None = None          # default: every finding with both columns
    probability_column: str = "{finding}"
    label_column: str = "{finding}_label"
    # The model's operating threshold per finding (its model card's); a finding not listed uses
    # the policy's threshold. triage.priority.decide applies it, as on the live worklist.
    thresholds: dict[str, float] = {}


class Modality(_Model):
    reading_time: ReadingTime
    findings: dict[str, FindingSpec] | None = None
    scores: ScoresSpec | None = None
    order_priority: dict[str, float] = {"ROUTINE": 1.0}  # order priority -> share of studies
    ai_coverage: float = Field(1.0, ge=0, le=1)            # share of studies with an AI result

    @model_validator(mode="after")
    def _one_source(self) -> Modality:
        if (self.findings is None) == (self.scores is None):
            raise ValueError("give either findings (prevalence and operating point) or scores (a CSV), not both")
        _check_shares(self.order_priority, "order_priority")
        return self


def _check_shares(shares: Mapping[str, float], name: str) -> None:
    if not shares or any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"{name} needs non-negative shares with a positive sum")


class Stream(_Model):
    """Arrivals of one modality at one site: studies per hour, one number or 24 (one per clock
    hour, 00:00-01:00 first)."""

    rate_per_h: float | list[float]
    order_priority: dict[str, float] | None = None   # default: the modality's

    @field_validator("rate_per_h")
    @classmethod
    def _rates(cls, value: float | list[float]) -> float | list[float]:
        rates = value if isinstance(value, list) else [value]
        if isinstance(value, list) and len(value) != 24:
            raise ValueError(f"give one rate or 24 hourly rates, not {len(value)}")
        if any(r < 0 for r in rates):
            raise ValueError("rates must be >= 0")
        return value

    def hourly(self) -> list[float]:
        return list(self.rate_per_h) if isinstance(self.rate_per_h, list) else [float(self.rate_per_h)] * 24


class Site(_Model):
    arrivals: dict[str, Stream]
    max_wait_min: float | None = Field(None, gt=0)   # the site's upper limit (default: the policy's)


class Shift(_Model):
    """A group of radiologists on the same daily shift. No start/end: on duty around the clock.
    ``availability`` is the share of their time spent on this worklist (other duties: CT, calls):
    after reading a study for t minutes, the radiologist is away for t * (1/availability - 1)
    minutes before picking the next one. With ``finish_list`` the radiologist does not leave at
    the end of the shift while studies wait, but reads on, with no other duties, until the list
    is empty."""

    name: str = ""
    count: int = Field(1, ge=0)
    start: int | None = None
    end: int | None = None
    availability: float = Field(1.0, gt=0, le=1)
    finish_list: bool = False     # at the end of the shift, read on until the list is empty

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> int | None:
        return None if value is None else _clock_minutes(value)

    @model_validator(mode="after")
    def _both(self) -> Shift:
        if (self.start is None) != (self.end is None):
            raise ValueError("give both start and end, or neither (on duty around the clock)")
        return self

    @property
    def around_the_clock(self) -> bool:
        return self.start is None or self.start % MINUTES_PER_DAY == self.end % MINUTES_PER_DAY

    def on_duty(self, clock: float) -> bool:
        if self.around_the_clock:
            return True
        tod = clock % MINUTES_PER_DAY
        if self.start < self.end:
            return self.start <= tod < self.end
        return tod >= self.start or tod < self.end

    def next_start(self, clock: float) -> float:
        """The next clock minute (absolute, >= clock) at which this shift starts."""
        day = math.floor(clock / MINUTES_PER_DAY) * MINUTES_PER_DAY
        candidate = day + self.start
        return candidate if candidate >= clock else candidate + MINUTES_PER_DAY

    def end_after(self, clock: float) -> float:
        """The end of the shift in progress at ``clock`` (absolute clock minutes)."""
        if self.around_the_clock:
            return math.inf
        day = math.floor(clock / MINUTES_PER_DAY) * MINUTES_PER_DAY
        candidate = day + self.end
        return candidate if candidate > clock else candidate + MINUTES_PER_DAY


class Scenario(_Model):
    name: str
    description: str = ""
    start: int = 0                           # clock time at simulation minute 0
    warmup_h: float = Field(0, ge=0)          # arrivals simulated, not counted
    duration_h: float = Field(gt=0)           # arrivals counted
    cooldown_h: float = Field(0, ge=0)        # arrivals simulated after the counted window, not counted
    after_arrivals: Literal["drain", "next_shift"] = "drain"
    max_drain_h: float = Field(72, gt=0)      # stop (and warn) if the list is not empty by then
    policy: dict[str, Any] = {}               # PolicyConfig fields replacing configs/findings.yaml's
    sites: dict[str, Site]
    modalities: dict[str, Modality]
    radiologists: list[Shift]
    base_dir: str = ""                        # set by load_scenario: relative scores paths start here

    @field_validator("start", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> int:
        return _clock_minutes(value)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for site, spec in self.sites.items():
            for modality in spec.arrivals:
                if modality not in self.modalities:
                    raise ValueError(f"sites.{site}.arrivals.{modality}: no such modality "
                                     f"(modalities: {', '.join(self.modalities)})")
            for modality, stream in spec.arrivals.items():
                if stream.order_priority is not None:
                    _check_shares(stream.order_priority, f"sites.{site}.arrivals.{modality}.order_priority")
        for name, modality in self.modalities.items():
            for finding in modality.findings or {}:
                if finding in (NEGATIVE, ALL):
                    raise ValueError(f"modalities.{name}.findings.{finding}: {NEGATIVE!r} and {ALL!r} are reserved")
        if not any(shift.count for shift in self.radiologists):
            raise ValueError("radiologists: at least one radiologist is needed")
        policy_config(self)   # fails here, with the key, if the policy override is invalid
        return self

    @property
    def clock_offset(self) -> float:
        return float(self.start)

    @property
    def arrival_end_min(self) -> float:
        return (self.warmup_h + self.duration_h + self.cooldown_h) * 60

    def findings(self) -> list[str]:
        """Every finding of the scenario, in the order the scenario lists them."""
        seen: dict[str, None] = {}
        for modality in self.modalities.values():
            for finding in _modality_findings(modality, self.base_dir):
                seen.setdefault(finding)
        return list(seen)


def policy_config(scenario: Scenario) -> PolicyConfig:
    """The policy the scenario runs: configs/findings.yaml with the scenario's ``policy`` keys
    replacing the default's. When the scenario gives its own ``classes``, findings,
    order_priorities and sla_min are not inherited (they name the default classes)."""
    return _policy_config(json.dumps(scenario.policy, sort_keys=True))


@lru_cache(maxsize=32)
def _policy_config(policy_json: str) -> PolicyConfig:
    override = json.loads(policy_json)
    base = load_policy_config().model_dump()
    if "classes" in override:
        base.update(findings={}, order_priorities={}, sla_min={})
    base.update(override)
    try:
        return PolicyConfig.model_validate(base)
    except ValidationError as exc:
        raise ValueError("policy: " + _format_errors(exc)) from None


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)


def shipped_scenarios() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def resolve_scenario_path(path_or_name: str | Path) -> Path:
    path = Path(path_or_name)
    if path.is_file():
        return path
    shipped = SCENARIO_DIR / f"{path_or_name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"scenario {str(path_or_name)!r} not found: give a YAML file or one of the shipped "
                      f"scenarios ({', '.join(shipped_scenarios())})")


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Read and check a scenario (a path, or a shipped name such as ``baltruschat2021``)."""
    path = resolve_scenario_path(path_or_name)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"scenario {path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"scenario {path}: expected a mapping of keys at the top level")
    data.setdefault("base_dir", str(path.resolve().parent))
    return scenario_from_dict(data, source=str(path))


def scenario_from_dict(data: Mapping[str, Any], source: str = "") -> Scenario:
    """Check a scenario given as a mapping (what the YAML file holds)."""
    try:
        return Scenario.model_validate(dict(data))
    except ValidationError as exc:
        where = f"scenario {source}" if source else f"scenario {data.get('name', '')!s}".rstrip()
        raise ConfigError(f"{where} is invalid: {_format_errors(exc)}") from None


# --------------------------------------------------------------------------- scores CSV


@dataclass(frozen=True)
class ScoreTable:
    uids: tuple[str, ...]
    findings: tuple[str, ...]
    probabilities: np.ndarray   # (studies, findings)
    labels: np.ndarray          # (studies, findings), bool


def _scores_path(spec: ScoresSpec, base_dir: str) -> Path:
    path = Path(spec.path)
    if path.is_absolute():
        return path
    for root in (Path(base_dir) if base_dir else None, PROJECT_ROOT, Path.cwd()):
        if root is not None and (root / path).is_file():
            return root / path
    return (Path(base_dir) if base_dir else PROJECT_ROOT) / path


@lru_cache(maxsize=16)
def _read_scores(path: str, findings: tuple[str, ...] | None, prob_col: str, label_col: str) -> ScoreTable:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except FileNotFoundError:
        raise ConfigError(f"scores file {path} not found (export it with `readingroom evaluate`)") from None
    if "study_uid" not in columns:
        raise ConfigError(f"scores file {path} has no study_uid column")
    if findings is None:
        findings = tuple(c for c in columns if c != "study_uid"
                         and c == prob_col.format(finding=c) and label_col.format(finding=c) in columns)
    missing = [col for f in findings for col in (prob_col.format(finding=f), label_col.format(finding=f))
               if col not in columns]
    if missing or not findings:
        raise ConfigError(f"scores file {path}: missing columns {', '.join(missing) or '(no finding found)'}; "
                          f"expected {prob_col!r} and {label_col!r} per finding")
    if not rows:
        raise ConfigError(f"scores file {path} has no rows")
    try:
        probs = np.array([[float(r[prob_col.format(finding=f)]) for f in findings] for r in rows])
        labels = np.array([[float(r[label_col.format(finding=f)]) for f in findings] for r in rows]) >= 0.5
    except ValueError as exc:
        raise ConfigError(f"scores file {path}: a value is not a number ({exc})") from None
    return ScoreTable(tuple(r["study_uid"] for r in rows), tuple(findings), probs, labels)


def load_scores(spec: ScoresSpec, base_dir: str = "") -> ScoreTable:
    path = _scores_path(spec, base_dir)
    return _read_scores(str(path), tuple(spec.findings) if spec.findings else None,
                        spec.probability_column, spec.label_column)


def _modality_findings(modality: Modality, base_dir: str) -> list[str]:
    if modality.findings is not None:
        return list(modality.findings)
    return list(load_scores(modality.scores, base_dir).findings)


# --------------------------------------------------------------------------- studies


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


# --------------------------------------------------------------------------- simulation


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


# --------------------------------------------------------------------------- statistics


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
    return _combine(seeds, findings)


def _combine(per_seed: Mapping[int, Mapping[str, Mapping[str, float]]], findings: Sequence[str]) -> dict[str, dict[str, Any]]:
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

    def delta_vs(self, policy: str, row: str, stat: str = "mean", baseline: str = Policy.FIFO.value) -> dict[str, float | None]:
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
        for finding in _modality_findings(modality, scenario.base_dir):
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
    stats = {name: _combine(per_seed[name], findings) for name in names}
    return Report(scenario=scenario.name, seeds=seed_list, policies=names, findings=[*findings, NEGATIVE, ALL],
                  stats=stats, per_seed=per_seed,
                  rtat={p: {row: np.asarray(v) for row, v in rows.items()} for p, rows in pooled.items()},
                  seconds=seconds, unreported=unreported)


# --------------------------------------------------------------------------- writers


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


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
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


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
