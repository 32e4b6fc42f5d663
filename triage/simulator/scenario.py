"""Scenario files for the simulator: their typed schema, loading and the shipped scenarios.

A scenario (YAML, ``configs/scenarios/*.yaml``; docs/simulation.md lists the keys) gives the
sites and their arrival rates, the modalities (reading time, findings with prevalence and the AI's
operating point, or a scores file), the radiologists' shifts, the time window and the policy
overrides. Everything is checked on loading: a bad scenario is a ConfigError naming the key.
Clock times are minutes after midnight.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
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
from triage.simulator.policy import format_errors, policy_config
from triage.simulator.scores import ScoresSpec, load_scores

log = logging.getLogger(__name__)

SCENARIO_DIR = PROJECT_ROOT / "configs" / "scenarios"
NEGATIVE = "negative"
ALL = "all"
MINUTES_PER_DAY = 24 * 60


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
            for finding in modality_findings(modality, self.base_dir):
                seen.setdefault(finding)
        return list(seen)


def modality_findings(modality: Modality, base_dir: str) -> list[str]:
    """The findings a modality draws: its ``findings``, or those of its scores file."""
    if modality.findings is not None:
        return list(modality.findings)
    return list(load_scores(modality.scores, base_dir).findings)


def shipped_scenarios() -> list[str]:
    """The names of the scenarios in configs/scenarios/."""
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yaml"))


def resolve_scenario_path(path_or_name: str | Path) -> Path:
    """A scenario file: the path itself, or the shipped scenario of that name."""
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
        raise ConfigError(f"{where} is invalid: {format_errors(exc)}") from None
