"""The simulator's priority policy: the live one, with a scenario's overrides.

The simulator has no rule of its own. It reads ``configs/findings.yaml`` through
``triage.priority.load_policy_config``, replaces the keys the scenario's ``policy`` gives, and the
engine orders and places studies with ``triage.priority`` (``reading_order``, ``place``, hence
``decide``): the code the live worklist runs.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import ValidationError

from triage.priority import PolicyConfig, load_policy_config

if TYPE_CHECKING:
    from triage.simulator.scenario import Scenario

log = logging.getLogger(__name__)


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
        raise ValueError("policy: " + format_errors(exc)) from None


def format_errors(exc: ValidationError) -> str:
    """A pydantic error as one line: ``where: message`` per error, ``; `` between (the policy
    override here, the whole scenario in scenario.py)."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not allowed here)"
        parts.append(f"{where}: {msg}" if where else msg)
    return "; ".join(parts)
