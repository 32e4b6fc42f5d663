"""The priority policy: where a study belongs on the worklist, and why. Pure functions.

The live worklist and the night-shift simulator both call ``place()``; there is no second copy.

A study's class is the highest of:
  * its order priority (STAT, urgent, routine; from the order or the DICOM tags);
  * the urgency of each positive AI finding, unless the policy ignores AI or the AI result is not
    available. ``decide()`` is the one rule for "is this finding positive": the probability is at
    or above the model's own operating threshold (its model card), else the policy's threshold
    for the finding. The triage job's stored flag, the critical alert, the worklist class, the
    reasons, the viewer's AI panel and the simulator all call it;
  * the top class, once the study has waited ``max_wait_min`` (the upper limit), when the policy
    ages studies.
Within a class, the study that arrived first is read first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from readingroom.errors import ConfigError
from readingroom.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

FINDINGS_CONFIG = PROJECT_ROOT / "configs" / "findings.yaml"


class Policy(str, Enum):
    """The orderings the simulator compares. The live worklist uses AI_AGING."""

    FIFO = "fifo"                 # arrival order only
    ORDER = "order"               # order priority, then arrival
    AI = "ai"                     # order priority raised by AI findings, then arrival
    AI_AGING = "ai_aging"         # AI, plus promotion to the top class after max_wait_min


class FindingRule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str = ""
    urgency: str
    threshold: float = Field(0.5, ge=0, le=1)


class PolicyConfig(BaseModel):
    """configs/findings.yaml, typed."""

    model_config = ConfigDict(extra="forbid")
    classes: list[str] = ["critical", "urgent", "routine"]
    findings: dict[str, FindingRule] = {}
    order_priorities: dict[str, str] = {"STAT": "critical", "URGENT": "urgent", "ROUTINE": "routine"}
    max_wait_min: float = Field(120, gt=0)
    sla_min: dict[str, float] = {}

    @model_validator(mode="after")
    def _known_classes(self) -> "PolicyConfig":
        known = set(self.classes)
        bad = [f"findings.{k}.urgency={r.urgency!r}" for k, r in self.findings.items() if r.urgency not in known]
        bad += [f"order_priorities.{k}={v!r}" for k, v in self.order_priorities.items() if v not in known]
        bad += [f"sla_min.{k}" for k in self.sla_min if k not in known]
        if bad:
            raise ValueError(f"{', '.join(bad)}: use one of the classes {', '.join(self.classes)}")
        return self

    def rank(self, label: str) -> int:
        """0 for the lowest class, len(classes)-1 for the top one."""
        return self.ranks[label]

    @property
    def ranks(self) -> dict[str, int]:
        """{class: rank}; cached per list of classes (a copy with other classes gets its own)."""
        return _ranks(tuple(self.classes))

    @property
    def top(self) -> str:
        return self.classes[0]

    @property
    def lowest(self) -> str:
        return self.classes[-1]


@lru_cache(maxsize=64)
def _ranks(classes: tuple[str, ...]) -> dict[str, int]:
    return {label: len(classes) - 1 - n for n, label in enumerate(classes)}


def load_policy_config(path: Path = FINDINGS_CONFIG) -> PolicyConfig:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        return PolicyConfig.model_validate(data)
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: it holds the priority policy (see configs/findings.yaml)") from None
    except (yaml.YAMLError, ValidationError, ValueError) as exc:
        raise ConfigError(f"{path} is invalid: {exc}") from None


@dataclass(frozen=True)
class AIResult:
    finding: str
    probability: float
    threshold: float | None = None   # the model's own operating threshold, if it has one


DEFAULT_THRESHOLD = 0.5   # a finding that neither the model card nor findings.yaml gives a threshold


@dataclass(frozen=True)
class Decision:
    """The one AI decision for one finding: whether it is positive, at which threshold, and the
    class a positive finding raises the study to (None when the policy has no rule for it, so it
    is stored and shown but does not move the study)."""

    finding: str
    probability: float
    threshold: float
    positive: bool
    urgency: str | None


def decide(result: AIResult, config: PolicyConfig) -> Decision:
    """Is this AI finding positive? The model's threshold wins; else the policy's; else 0.5."""
    rule = config.findings.get(result.finding)
    if result.threshold is not None:
        threshold = float(result.threshold)
    else:
        threshold = rule.threshold if rule is not None else DEFAULT_THRESHOLD
    return Decision(result.finding, float(result.probability), threshold, result.probability >= threshold,
                    rule.urgency if rule is not None else None)


def positive_reason(decision: Decision) -> str:
    """The words for a positive finding, as the worklist's reason and the alert show them."""
    return (f"{decision.finding} {decision.probability:.2f} ≥ {decision.threshold:.2f} → "
            f"{decision.urgency or 'no class'} (AI, UNVERIFIED)")


@dataclass(frozen=True)
class StudyFacts:
    """What the policy needs to know about one study."""

    waited_min: float
    order_priority: str = ""
    ai: Sequence[AIResult] = ()
    ai_available: bool = True        # False: AI failed, timed out, or no model covers the study
    max_wait_min: float | None = None  # the site's upper limit, if it sets one


@dataclass(frozen=True)
class Placement:
    label: str
    rank: int
    promoted: bool
    positive: tuple[str, ...] = field(default=())
    reason: str = ""


def _order_class(order_priority: str, config: PolicyConfig) -> str:
    return config.order_priorities.get((order_priority or "").strip().upper(), config.lowest)


def classify(facts: StudyFacts, config: PolicyConfig,
             policy: Policy = Policy.AI_AGING) -> tuple[str, bool, list[Decision]]:
    """The decision alone, without words: (class, promoted, the positive findings that have a
    class in the policy). ``place()`` explains it; ``reading_order()`` sorts by it."""
    ranks = config.ranks
    best = config.lowest if policy is Policy.FIFO else _order_class(facts.order_priority, config)
    positive: list[Decision] = []
    if policy is Policy.AI or policy is Policy.AI_AGING:
        for result in facts.ai:
            decision = decide(result, config)
            if decision.positive and decision.urgency is not None:
                positive.append(decision)
                if ranks[decision.urgency] > ranks[best]:
                    best = decision.urgency
    promoted = False
    if policy is Policy.AI_AGING and best != config.top:
        limit = facts.max_wait_min if facts.max_wait_min is not None else config.max_wait_min
        if facts.waited_min >= limit:
            best, promoted = config.top, True
    return best, promoted, positive


def place(facts: StudyFacts, config: PolicyConfig, policy: Policy = Policy.AI_AGING) -> Placement:
    """The study's class under ``policy``, with the reason in words."""
    label, promoted, positive = classify(facts, config, policy)
    reasons: list[str] = []
    if policy is not Policy.FIFO:
        order = (facts.order_priority or "").strip().upper()
        reasons.append(f"{order} order → {_order_class(order, config)}" if order
                       else f"no order priority → {config.lowest}")
    if policy in (Policy.AI, Policy.AI_AGING):
        if not facts.ai_available:
            reasons.append("AI unavailable")
        reasons += [positive_reason(decision) for decision in positive]
    if promoted:
        limit = facts.max_wait_min if facts.max_wait_min is not None else config.max_wait_min
        reasons.append(f"waited {facts.waited_min:.0f} min ≥ {limit:.0f} → promoted to {config.top}")
    else:
        reasons.append(f"waited {facts.waited_min:.0f} min")
    return Placement(label, config.ranks[label], promoted, tuple(d.finding for d in positive), "; ".join(reasons))


def reading_order(items: Iterable[tuple[float, int, StudyFacts]], config: PolicyConfig,
                  policy: Policy = Policy.AI_AGING, explain: bool = True) -> list[tuple[int, Placement | None]]:
    """Sort ``(arrival, id, facts)`` into reading order: class, then arrival, then id.

    Returns ``(id, placement)`` pairs, first to read first. With ``explain=False`` the placements
    are None and only the order is computed (the simulator's and the benchmark's fast path).
    """
    ranks = config.ranks
    keyed = [(-ranks[classify(facts, config, policy)[0]], arrival, ident, facts) for arrival, ident, facts in items]
    keyed.sort(key=lambda item: item[:3])
    if not explain:
        return [(ident, None) for _r, _a, ident, _f in keyed]
    return [(ident, place(facts, config, policy)) for _r, _a, ident, facts in keyed]


def sla_min(label: str, config: PolicyConfig, site_sla: Mapping[str, float] | None = None) -> float | None:
    """The turnaround target for a class: the site's, else the default."""
    if site_sla and label in site_sla:
        return site_sla[label]
    return config.sla_min.get(label)
