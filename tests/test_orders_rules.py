"""Protocol suggestions and appropriateness hints: rules as data, and a bad rules file stops with its name."""

import shutil

import pytest

from readingroom.errors import ConfigError
from tests.conftest import make_settings
from orders.protocols import appropriateness_hints, load_hint_rules, load_library, matches, suggest_protocol


def order(**kw):
    base = {"procedure_code": "", "procedure_description": "", "modality": "", "indication": "", "priority": "",
            "laterality": "", "egfr": None, "contrast_allergy": ""}
    return {**base, **kw}


@pytest.mark.parametrize("facts, expected", [
    (order(procedure_code="CTHEAD", procedure_description="CT HEAD WITHOUT CONTRAST", modality="CT",
           indication="Thunderclap headache"), "ct_head_sah"),
    (order(procedure_code="CTHEAD", procedure_description="CT HEAD WITHOUT CONTRAST", modality="CT",
           indication="Fall, hit head"), "ct_head_noncontrast"),
    (order(procedure_description="CT HEAD", modality="CT", indication="Left hemiparesis since 1 hour"),
     "ct_head_stroke"),
    (order(procedure_description="CT CHEST WITH CONTRAST", modality="CT", indication="suspected PE"), "ct_chest_pe"),
    (order(procedure_description="CT CHEST WITH CONTRAST", modality="CT", indication="pericarditis"),
     "ct_chest_routine"),
    (order(procedure_description="CT ABDOMEN", modality="CT", indication="right renal colic"),
     "ct_abdomen_noncontrast"),
    (order(procedure_code="XRCHEST", modality="CR"), "xr_chest"),
    (order(procedure_description="XR KNEE LEFT", modality="CR"), "xr_extremity"),
    (order(procedure_description="PET CT WHOLE BODY", modality="PT"), None),
])
def test_suggestions(settings, facts, expected):
    suggestion = suggest_protocol(facts, load_library(settings))
    assert (suggestion.name if suggestion else None) == expected


def test_short_phrases_match_whole_words_only():
    assert matches({"indication_any": ["PE"]}, order(indication="r/o PE"))
    assert not matches({"indication_any": ["PE"]}, order(indication="pericarditis, peptic ulcer"))
    assert matches({"indication_any": ["pulmonary embol"]}, order(indication="Pulmonary embolism?"))


def test_hints(settings):
    rules = load_hint_rules(settings)
    assert appropriateness_hints(order(procedure_description="CT HEAD", indication="headache, fever"), rules) == []
    assert len(appropriateness_hints(order(procedure_description="CT HEAD", indication="chronic headache"),
                                     rules)) == 1
    assert len(appropriateness_hints(order(procedure_description="CTA HEAD", indication="x", egfr=25,
                                           contrast_allergy="iodine"), rules)) == 2


def test_a_bad_rules_file_names_the_problem(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(make_settings(tmp_path / "h").config_dir, configs)
    settings = make_settings(tmp_path / "home", config_dir=str(configs))
    (configs / "appropriateness.yaml").write_text("rules:\n  - hint: x\n    when: {indication_anyy: [a]}\n")
    with pytest.raises(ConfigError, match="indication_anyy"):
        load_hint_rules(settings)
    (configs / "protocols.yaml").write_text("protocols:\n  a: {title: A, modality: CT, colour: red}\n")
    with pytest.raises(ConfigError, match="colour"):
        load_library(settings)
    (configs / "protocols.yaml").write_text("protocols:\n  a: {title: A, modality: CT}\nrules:\n  - protocol: b\n")
    with pytest.raises(ConfigError, match="'b', which is not defined"):
        load_library(settings)
