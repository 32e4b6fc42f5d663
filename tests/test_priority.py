"""The priority policy's promises, as properties."""

from hypothesis import given, settings as hyp_settings
from hypothesis import strategies as st

from triage.priority import AIResult, Policy, PolicyConfig, StudyFacts, load_policy_config, place, reading_order

CONFIG = load_policy_config()
ORDER = st.sampled_from(["", "STAT", "URGENT", "ROUTINE", "HIGH", "LOW", "garbage"])
AI = st.lists(st.builds(AIResult, st.sampled_from(sorted(CONFIG.findings) + ["unknown"]),
                        st.floats(0, 1, allow_nan=False)), max_size=4)
FACTS = st.builds(StudyFacts, waited_min=st.floats(0, 2000, allow_nan=False), order_priority=ORDER, ai=AI,
                  ai_available=st.booleans())


def test_shipped_policy_reads_ich_and_pneumothorax_as_critical():
    assert CONFIG.findings["ich"].urgency == "critical" and CONFIG.findings["pneumothorax"].urgency == "critical"
    assert CONFIG.findings["effusion"].urgency == "urgent" and CONFIG.top == "critical"


def test_explanation_names_finding_threshold_order_and_wait():
    facts = StudyFacts(waited_min=12, order_priority="STAT", ai=(AIResult("ich", 0.94),))
    placement = place(facts, CONFIG)
    assert placement.label == "critical" and placement.positive == ("ich",)
    assert "ich 0.94 ≥ 0.50 → critical" in placement.reason
    assert "STAT order → critical" in placement.reason
    assert "waited 12 min" in placement.reason


@given(FACTS)
def test_ai_never_lowers_the_order_priority(facts):
    ordered = place(facts, CONFIG, Policy.ORDER)
    for policy in (Policy.AI, Policy.AI_AGING):
        assert place(facts, CONFIG, policy).rank >= ordered.rank


@given(FACTS)
def test_without_ai_the_study_keeps_its_order_priority(facts):
    unavailable = StudyFacts(facts.waited_min, facts.order_priority, (), ai_available=False)
    assert place(unavailable, CONFIG, Policy.AI).label == place(unavailable, CONFIG, Policy.ORDER).label
    assert "AI unavailable" in place(unavailable, CONFIG, Policy.AI).reason


@given(FACTS)
def test_the_upper_limit_promotes_to_the_top_class(facts):
    placement = place(facts, CONFIG, Policy.AI_AGING)
    if facts.waited_min >= CONFIG.max_wait_min:
        assert placement.label == CONFIG.top
    else:
        assert placement.label == place(facts, CONFIG, Policy.AI).label


def test_site_limit_overrides_the_default():
    facts = StudyFacts(waited_min=100, max_wait_min=90)
    assert place(facts, CONFIG).promoted and "≥ 90 → promoted" in place(facts, CONFIG).reason
    assert not place(StudyFacts(waited_min=100), CONFIG).promoted


@given(st.lists(FACTS, min_size=1, max_size=30))
@hyp_settings(max_examples=50)
def test_fifo_is_arrival_order_and_ties_break_by_arrival(all_facts):
    items = [(float(i), i, f) for i, f in enumerate(all_facts)]
    assert [i for i, _ in reading_order(items, CONFIG, Policy.FIFO)] == list(range(len(all_facts)))
    ordered = reading_order(items, CONFIG, Policy.AI_AGING)
    for (a, pa), (b, pb) in zip(ordered, ordered[1:]):
        assert pa.rank > pb.rank or (pa.rank == pb.rank and a < b)


def test_model_threshold_wins_over_the_policy_default():
    facts = StudyFacts(waited_min=0, ai=(AIResult("pneumothorax", 0.4, threshold=0.3),))
    assert place(facts, CONFIG).label == "critical"


def test_classes_in_the_config_must_be_known():
    import pytest

    with pytest.raises(ValueError, match="use one of the classes"):
        PolicyConfig.model_validate({"findings": {"x": {"urgency": "apocalyptic"}}})


def test_a_copy_with_other_classes_ranks_its_own_classes():
    other = CONFIG.model_copy(update={"classes": ["immediate", *CONFIG.classes]})
    assert other.ranks["immediate"] == len(CONFIG.classes) and CONFIG.top not in ("immediate",)
    assert "immediate" not in CONFIG.ranks
