"""bench/simulation.py compares the scenario's upper limit with the shipped default: check that
the limit it sets is the one the simulator uses, for the policy and for a site's own limit."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from triage.priority import load_policy_config
from triage.simulator import load_scenario, policy_config, run

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_simulation", ROOT / "bench" / "simulation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_with_limit_replaces_the_scenario_and_site_limits():
    bench = _bench()
    baltruschat = load_scenario("baltruschat2021")
    assert set(bench.scenario_limits(baltruschat).values()) == {360}
    shipped = load_policy_config().max_wait_min
    changed = bench.with_limit(baltruschat, shipped)
    assert policy_config(changed).max_wait_min == shipped
    assert set(bench.scenario_limits(changed).values()) == {shipped}
    assert policy_config(baltruschat).max_wait_min == 360          # the original is left alone

    night = load_scenario("telerad-night")                          # one site sets its own 90 min
    assert 90 in bench.scenario_limits(night).values()
    assert set(bench.scenario_limits(bench.with_limit(night, 200)).values()) == {200}


def test_summary_of_a_short_limit_against_fifo():
    bench = _bench()
    scenario = load_scenario("baltruschat2021").model_copy(update={"warmup_h": 0, "duration_h": 24,
                                                                  "cooldown_h": 0})
    fifo = run(scenario, 2, ["fifo", "ai_aging"], keep_rtat=False)
    short = run(bench.with_limit(scenario, 30), 2, ["ai_aging"], keep_rtat=False)
    entry = bench.summarize_limit("short", 30, short, fifo)
    px_fifo = fifo.stats["fifo"]["pneumothorax"]["mean"]["value"]
    assert abs(entry["pneumothorax_change"] - (entry["pneumothorax_mean_min"] / px_fifo - 1)) < 1e-12
    assert entry["max_ratio_vs_fifo"]["min"] <= entry["max_ratio_vs_fifo"]["max"]
    # a 30-minute limit promotes almost every study: it must differ from the 360-minute run
    assert entry["pneumothorax_mean_min"] != fifo.stats["ai_aging"]["pneumothorax"]["mean"]["value"]
    json.dumps(entry)                                               # the JSON line can be written
