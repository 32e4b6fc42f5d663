"""One AI decision, used everywhere (issue 17, item 2).

``triage.priority.decide`` is the one rule for "is this finding positive". These tests check it at
the seam, for probabilities between the model card's threshold and the policy's 0.5: the flag the
triage job stores, the critical alert, the worklist class, the reason, the viewer's AI panel and
the simulator must all agree.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from readingroom.schema import AIFinding, utcnow
from tests.test_worklist import _store_studies
from triage.notify import Notifier, events_since
from triage.pipeline import ModelOutput, record_results
from triage.priority import AIResult, StudyFacts, decide, place
from triage.studies import complete_due_studies
from triage.worklist import open_studies, policy_config
from workstation.web import study_payload

# (finding, probability, the model card's threshold, positive?, the class the study must get)
CASES = [
    ("ich", 0.73, 0.8168, False, "routine"),          # above the policy's 0.5, below the card's
    ("ich", 0.83, 0.8168, True, "critical"),
    ("consolidation", 0.37, 0.30, True, "urgent"),    # below 0.5, above the card's
    ("consolidation", 0.25, 0.30, False, "routine"),
    ("pneumothorax", 0.30, 0.127, True, "critical"),
    ("pneumothorax", 0.10, 0.127, False, "routine"),
]


@pytest.mark.parametrize("finding, probability, threshold, positive, label", CASES)
def test_stored_flag_alert_class_reason_and_panel_agree(settings, db, queue, finding, probability, threshold,
                                                        positive, label):
    uid = _store_studies(settings, db, 1)[0]
    complete_due_studies(db, queue, settings, now=utcnow() + timedelta(seconds=5))
    returned = record_results(db, settings, Notifier(db, settings), uid,
                              [ModelOutput(finding, probability, "model", "1.0", threshold)])

    with db.reader() as session:
        stored = session.scalars(select(AIFinding)).one()
    assert stored.positive is positive and stored.threshold == pytest.approx(threshold)
    assert returned == ([finding] if positive else [])

    alerts = [e.payload["finding"] for e in events_since(db)]
    assert alerts == ([finding] if positive and label == "critical" else [])

    item = open_studies(db, settings)[0]
    assert item["priority"]["label"] == label
    reason = item["priority"]["reason"]
    expected = f"{finding} {probability:.2f} ≥ {threshold:.2f}"
    assert (expected in reason) is positive, reason
    assert "≥ 0.50" not in reason                     # the policy's default never speaks for the card
    assert [a["positive"] for a in item["ai"]] == [positive]

    panel = study_payload(db, uid, policy_config(settings), allowed=None)
    assert [(a["finding"], a["positive"], a["threshold"]) for a in panel["ai"]] == [
        (finding, positive, pytest.approx(threshold))]


def test_decide_falls_back_to_the_policy_then_to_one_half(settings):
    config = policy_config(settings)
    assert decide(AIResult("ich", 0.6), config).positive                    # policy's 0.5
    assert not decide(AIResult("ich", 0.6, 0.8), config).positive           # the card's threshold wins
    unknown = decide(AIResult("not_in_policy", 0.7), config)
    assert unknown.positive and unknown.threshold == 0.5 and unknown.urgency is None
    # A positive finding the policy has no class for is shown, but does not move the study.
    assert place(StudyFacts(0, ai=(AIResult("not_in_policy", 0.9),)), config).label == "routine"


def test_the_simulator_uses_the_model_threshold_from_a_scores_file(tmp_path):
    from triage.simulator import ScoresSpec, Scenario, generate_studies, load_scenario, policy_config as sim_policy

    scores = tmp_path / "scores.csv"
    scores.write_text("study_uid,ich,ich_label\n1,0.73,0\n2,0.9,1\n", encoding="utf-8")
    base = load_scenario("telerad-night").model_dump()
    modality = next(iter(base["modalities"]))
    base["modalities"][modality] = {**base["modalities"][modality], "findings": None,
                                    "scores": ScoresSpec(path=str(scores), thresholds={"ich": 0.8168}).model_dump()}
    scenario = Scenario.model_validate(base)
    studies = [s for s in generate_studies(scenario, seed=1) if s.modality == modality and s.ai]
    assert studies
    config = sim_policy(scenario)
    for study in studies:
        (result,) = study.ai
        assert result.threshold == 0.8168
        placement = place(StudyFacts(0, ai=study.ai), config)
        assert ("ich" in placement.positive) is (result.probability >= 0.8168)
