"""The night-shift simulator: determinism, common random numbers, queueing theory, the upper
limit, the Baltruschat target, scenario errors, scores CSV and the command line."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from readingroom.errors import ConfigError
from triage.priority import Policy
from triage.simulator import (
    ALL,
    NEGATIVE,
    Report,
    generate_studies,
    load_scenario,
    main,
    run,
    scenario_from_dict,
    shipped_scenarios,
    simulate,
)


def queue(rate_per_h: float, read: dict, *, findings: dict | None = None, days: float = 30, policy: dict | None = None,
          radiologists: list | None = None, **extra) -> dict:
    """A one-site, one-modality scenario as a dict."""
    return dict(name="test", start="00:00", warmup_h=24, duration_h=24 * days, cooldown_h=24,
                policy=policy or {}, sites={"site": {"arrivals": {"x": {"rate_per_h": rate_per_h}}}},
                modalities={"x": {"reading_time": read, "findings": findings or {}}},
                radiologists=radiologists or [{"count": 1}], **extra)


# --------------------------------------------------------------------------- determinism, CRN


def test_same_seed_same_records_other_seed_other_records():
    scenario = load_scenario("telerad-night")
    first = simulate(scenario, Policy.AI_AGING, seed=7)
    assert first == simulate(scenario, Policy.AI_AGING, seed=7)
    assert first != simulate(scenario, Policy.AI_AGING, seed=8)
    report_a, report_b = run(scenario, [3, 4], keep_rtat=False), run(scenario, [3, 4], keep_rtat=False)
    assert report_a.to_json() == report_b.to_json()


def test_every_policy_sees_the_same_studies():
    scenario = load_scenario("telerad-night")
    studies = {s.id: s for s in generate_studies(scenario, seed=5)}
    seen = {}
    for policy in Policy:
        records = simulate(scenario, policy, seed=5)
        assert len(records) == len(studies)
        seen[policy] = {r.study_id: (r.arrival_min, r.findings, r.site, r.modality,
                                     round(r.report_min - r.start_min, 9)) for r in records}
        for r in records:
            s = studies[r.study_id]
            assert (r.arrival_min, r.findings) == (s.arrival, s.findings)
            assert r.report_min - r.start_min == pytest.approx(s.reading_min)
    assert seen[Policy.FIFO] == seen[Policy.ORDER] == seen[Policy.AI] == seen[Policy.AI_AGING]
    # ...while the order differs: AI reads an ICH-positive study before older negatives.
    order = {p: [r.study_id for r in sorted(simulate(scenario, p, seed=5), key=lambda r: r.start_min)] for p in Policy}
    assert order[Policy.FIFO] != order[Policy.AI]


def test_changing_one_parameter_leaves_the_other_draws_alone():
    read = {"dist": "exponential", "mean_min": 8}
    base = queue(6, read, findings={"bleed": {"prevalence": 0.1, "sensitivity": 0.9, "specificity": 0.9}}, days=2)
    other = queue(6, read, findings={"bleed": {"prevalence": 0.1, "sensitivity": 0.5, "specificity": 0.9}}, days=2)
    a, b = generate_studies(scenario_from_dict(base), 1), generate_studies(scenario_from_dict(other), 1)
    assert [(s.arrival, s.findings, s.reading_min) for s in a] == [(s.arrival, s.findings, s.reading_min) for s in b]
    assert [s.ai for s in a] != [s.ai for s in b]


# --------------------------------------------------------------------------- queueing theory


def test_fifo_matches_the_mm1_mean_time_in_system():
    lam, mu = 0.06, 0.1                     # per minute: rho = 0.6, E[T] = 1 / (mu - lam) = 25 min
    scenario = scenario_from_dict(queue(lam * 60, {"dist": "exponential", "mean_min": 1 / mu}, days=30))
    rtat, wait = [], []
    for seed in range(12):
        records = [r for r in simulate(scenario, Policy.FIFO, seed) if r.counted]
        rtat += [r.rtat_min for r in records]
        wait += [r.wait_min for r in records]
    assert len(rtat) > 20000
    assert np.mean(rtat) == pytest.approx(1 / (mu - lam), rel=0.06)
    assert np.mean(wait) == pytest.approx(lam / (mu * (mu - lam)), rel=0.08)


def test_ai_priority_matches_the_non_preemptive_priority_queue():
    """QuCAD's defaults: M/M/1, load 0.8, prevalence 0.1, AI 0.9/0.9. Two classes (AI-positive
    first), non-pre-emptive: W0 = lam E[S^2] / 2, W_high = W0 / (1 - rho_high),
    W_low = W_high / (1 - rho)."""
    scenario = load_scenario("qucad").model_copy(update={"duration_h": 24 * 20})
    lam, mean_s, prevalence, sens, spec = 0.08, 10.0, 0.1, 0.9, 0.9
    p_pos = prevalence * sens + (1 - prevalence) * (1 - spec)
    w0 = lam * 2 * mean_s ** 2 / 2
    w_high = w0 / (1 - lam * p_pos * mean_s)
    w_low = w_high / (1 - lam * mean_s)
    diseased = sens * (w_high + mean_s) + (1 - sens) * (w_low + mean_s)
    healthy = (1 - spec) * (w_high + mean_s) + spec * (w_low + mean_s)
    report = run(scenario, 8, [Policy.FIFO, Policy.AI], keep_rtat=False)
    stats = report.stats
    assert stats["fifo"][ALL]["mean"]["value"] == pytest.approx(1 / (1 / mean_s - lam), rel=0.1)
    assert stats["ai"]["disease"]["mean"]["value"] == pytest.approx(diseased, rel=0.1)
    assert stats["ai"][NEGATIVE]["mean"]["value"] == pytest.approx(healthy, rel=0.1)


# --------------------------------------------------------------------------- the upper limit


def test_upper_limit_bounds_the_wait_when_capacity_allows():
    limit, read = 60, 10
    scenario = scenario_from_dict(queue(3.6, {"dist": "fixed", "mean_min": read}, days=10,   # rho = 0.6
                                        findings={"bleed": {"prevalence": 0.5, "sensitivity": 1, "specificity": 1}},
                                        policy={"max_wait_min": limit, "findings": {"bleed": {"urgency": "critical"}}}))
    worst_aging = [max(r.wait_min for r in simulate(scenario, Policy.AI_AGING, s)) for s in range(6)]
    worst_ai = [max(r.wait_min for r in simulate(scenario, Policy.AI, s)) for s in range(6)]
    assert max(worst_aging) <= limit + 2 * read
    assert max(worst_ai) > limit + 2 * read          # without the limit, negatives wait longer
    promoted = [r for r in simulate(scenario, Policy.AI_AGING, 0) if r.promoted]
    assert promoted and all(r.wait_min >= limit for r in promoted)


def test_a_site_may_set_its_own_upper_limit():
    data = queue(3.6, {"dist": "fixed", "mean_min": 10}, days=5,
                 findings={"bleed": {"prevalence": 0.5, "sensitivity": 1, "specificity": 1}},
                 policy={"max_wait_min": 600, "findings": {"bleed": {"urgency": "critical"}}})
    data["sites"]["site"]["max_wait_min"] = 30
    worst = max(r.wait_min for r in simulate(scenario_from_dict(data), Policy.AI_AGING, 0))
    assert worst <= 30 + 2 * 10


# --------------------------------------------------------------------------- shifts


def test_nobody_reads_off_shift_and_the_list_waits_for_the_next_shift():
    data = queue(6, {"dist": "fixed", "mean_min": 5}, days=1,
                 radiologists=[{"count": 1, "start": "08:00", "end": "16:00"}],
                 after_arrivals="next_shift")
    records = simulate(scenario_from_dict(data), Policy.FIFO, 0)
    assert records
    for r in records:
        clock = r.start_min % 1440
        assert 8 * 60 <= clock < 16 * 60
    assert len(records) == len(generate_studies(scenario_from_dict(data), 0))


def test_drain_reads_on_after_the_last_arrival_and_finish_list_stays_on():
    night = scenario_from_dict(dict(queue(15, {"dist": "fixed", "mean_min": 5}, days=0.375,
                                          radiologists=[{"count": 1, "start": "22:00", "end": "07:00"}]),
                                    start="22:00", warmup_h=0, cooldown_h=0))
    records = simulate(night, Policy.FIFO, 0)
    assert max(r.report_min for r in records) > 9 * 60          # load 1.25: reads on after 07:00
    late = queue(4, {"dist": "fixed", "mean_min": 5}, days=1, after_arrivals="next_shift",
                 radiologists=[{"count": 1, "start": "08:00", "end": "16:00", "finish_list": True}])
    starts = [r.start_min % 1440 for r in simulate(scenario_from_dict(late), Policy.FIFO, 0)]
    assert any(s >= 16 * 60 for s in starts)                 # stays after 16:00 until the list is empty


# --------------------------------------------------------------------------- Baltruschat


def test_baltruschat_upper_limit_halves_pneumothorax_rtat_and_keeps_fifo_max():
    scenario = load_scenario("baltruschat2021")
    report = run(scenario, 8, [Policy.FIFO, Policy.AI_AGING], keep_rtat=False)
    fifo, aging = report.stats["fifo"], report.stats["ai_aging"]
    assert aging["pneumothorax"]["mean"]["value"] <= 0.5 * fifo["pneumothorax"]["mean"]["value"]
    for row in report.findings:
        assert aging[row]["max"]["value"] <= 1.1 * fifo[row]["max"]["value"], row
    # the cost to the studies without findings is reported, and positive
    assert aging[NEGATIVE]["mean"]["value"] > fifo[NEGATIVE]["mean"]["value"]
    assert report.findings[-2:] == [NEGATIVE, ALL]


# --------------------------------------------------------------------------- scenarios, errors


def test_shipped_scenarios_load():
    assert {"baltruschat2021", "qucad", "telerad-night"} <= set(shipped_scenarios())
    for name in shipped_scenarios():
        assert load_scenario(name).name == name


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d.update(sheduled=1), "sheduled"),
    (lambda d: d["radiologists"][0].update(cout=2), "radiologists.0.cout"),
    (lambda d: d["modalities"]["x"]["reading_time"].update(dist="weibull"), "modalities.x.reading_time.dist"),
    (lambda d: d["sites"]["site"]["arrivals"].update(mri={"rate_per_h": 1}), "sites.site.arrivals.mri"),
    (lambda d: d["sites"]["site"]["arrivals"]["x"].update(rate_per_h=[1, 2]), "rate_per_h"),
    (lambda d: d.update(policy={"findings": {"bleed": {"urgency": "asap"}}}), "policy"),
    (lambda d: d["radiologists"][0].update(start="25:00", end="07:00"), "radiologists.0.start"),
])
def test_a_bad_scenario_names_the_bad_key(mutate, key):
    data = queue(1, {"dist": "fixed", "mean_min": 5}, days=1)
    mutate(data)
    with pytest.raises(ConfigError) as info:
        scenario_from_dict(data)
    assert key in str(info.value)


def test_a_bad_scenario_file_names_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nduration_h: 1\nsites: {}\nmodalities: {}\nradiologists: [{count: 1}]\nshifts: 2\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*shifts"):
        load_scenario(path)
    with pytest.raises(ConfigError, match="baltruschat2021"):
        load_scenario("no-such-scenario")


# --------------------------------------------------------------------------- scores CSV


def test_scores_csv_gives_labels_and_probabilities_of_one_row(tmp_path):
    rows = [("1.2.1", 0.9, 1, 0.1, 0), ("1.2.2", 0.2, 0, 0.8, 1), ("1.2.3", 0.05, 0, 0.02, 0)]
    with open(tmp_path / "scores.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["study_uid", "ich", "ich_label", "fracture", "fracture_label"])
        writer.writerows(rows)
    data = queue(5, {"dist": "fixed", "mean_min": 5}, days=2, policy={"findings": {"ich": {"urgency": "critical"}}})
    data["modalities"]["x"] = {"reading_time": {"dist": "fixed", "mean_min": 5}, "scores": {"path": "scores.csv"}}
    path = tmp_path / "scores.yaml"
    import yaml
    path.write_text(yaml.safe_dump(data))
    scenario = load_scenario(path)
    assert scenario.findings() == ["ich", "fracture"]
    by_uid = {uid: (p1, l1, p2, l2) for uid, p1, l1, p2, l2 in rows}
    studies = generate_studies(scenario, 0)
    assert {s.source_uid for s in studies} == set(by_uid)
    for s in studies:
        p1, l1, p2, l2 = by_uid[s.source_uid]
        assert [(a.finding, a.probability) for a in s.ai] == [("ich", p1), ("fracture", p2)]
        assert s.findings == tuple(f for f, label in (("ich", l1), ("fracture", l2)) if label)
    placed = {r.study_id: r for r in simulate(scenario, Policy.AI, 0)}
    assert all(placed[s.id].label == ("critical" if s.source_uid == "1.2.1" else "routine") for s in studies)


def test_scores_csv_with_missing_columns_is_refused(tmp_path):
    (tmp_path / "scores.csv").write_text("study_uid,ich\n1,0.5\n")
    data = queue(5, {"dist": "fixed", "mean_min": 5}, days=1)
    data["modalities"]["x"] = {"reading_time": {"dist": "fixed", "mean_min": 5},
                               "scores": {"path": str(tmp_path / "scores.csv"), "findings": ["ich"]}}
    with pytest.raises(ConfigError, match="ich_label"):
        generate_studies(scenario_from_dict(data), 0)


# --------------------------------------------------------------------------- report and CLI


def test_report_json_is_keyed_by_policy_then_finding():
    report = run(load_scenario("telerad-night"), 3)
    data = report.to_json()
    assert list(data) == [p.value for p in Policy]
    assert list(data["fifo"]) == report.findings and report.findings[-2:] == [NEGATIVE, ALL]
    entry = data["ai_aging"]["ich"]
    for stat in ("mean", "median", "p95", "max"):
        assert set(entry[stat]) == {"value", "ci_low", "ci_high"}
        assert entry[stat]["ci_low"] <= entry[stat]["value"] <= entry[stat]["ci_high"]
    assert entry["n"] == 3 and entry["n_studies"] > 0
    assert data["fifo"][ALL]["mean_vs_fifo"]["value"] == 0
    assert isinstance(report, Report) and math.isfinite(report.seconds["fifo"])


def test_cli_writes_csv_json_markdown_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--scenario", "telerad-night", "--seeds", "2", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"fifo", "order", "ai", "ai_aging"} and "negative" in printed["fifo"]
    assert json.loads((out / "rtat.json").read_text()) == printed
    with open(out / "rtat.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 4 * len(printed["fifo"]) and rows[0]["scenario"] == "telerad-night"
    assert "| Finding | Policy |" in (out / "rtat.md").read_text()
    for png in ("rtat_mean.png", "rtat_ecdf.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert main(["--scenario", "qucad", "--seeds", "1", "--policy", "fifo"]) == 0
    assert "| disease | fifo |" in capsys.readouterr().out


def test_cli_reports_a_bad_scenario_and_exits_2(tmp_path, capsys):
    assert main(["--scenario", str(tmp_path / "missing.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_seeds_in_two_processes_give_the_same_report():
    scenario = load_scenario("telerad-night")
    assert run(scenario, 3, jobs=2).to_json() == run(scenario, 3, jobs=1).to_json()
