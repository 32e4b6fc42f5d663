from pathlib import Path

import pytest

from readingroom.errors import ConfigError
from readingroom.settings import DEFAULT_CONFIG, load_settings


def test_shipped_defaults_load_and_document_every_setting():
    settings = load_settings(environ={})
    assert settings.dicom.ae_title == "READINGROOM"
    assert settings.dicom.port == 11112
    assert settings.web.port == 7860
    assert settings.intake.quiet_period_s == 5
    assert settings.home.is_absolute() and settings.home.name == "var"
    assert [s.name for s in settings.sites]  # sites.yaml is read
    text = DEFAULT_CONFIG.read_text()
    for section in ("database", "dicom", "intake", "jobs", "web", "demo", "worklist", "notifications"):
        for key in type(getattr(settings, section)).model_fields:
            assert f"  {key}:" in text, f"{section}.{key} is not documented in default.yaml"


def test_environment_overrides_the_file(tmp_path: Path):
    settings = load_settings(environ={
        "READINGROOM_HOME": str(tmp_path),
        "READINGROOM_DICOM__PORT": "11113",
        "READINGROOM_DICOM__AE_TITLE": "NIGHTREAD",
        "READINGROOM_DATABASE__SQLITE_SYNCHRONOUS": "NORMAL",
    })
    assert settings.home == tmp_path
    assert settings.dicom.port == 11113
    assert settings.dicom.ae_title == "NIGHTREAD"
    assert settings.database.sqlite_synchronous == "NORMAL"
    assert settings.database_url == f"sqlite:///{tmp_path / 'readingroom.db'}"


@pytest.mark.parametrize("env, named, valid", [
    ({"READINGROOM_DICOM__PORT": "99999"}, "dicom.port", "65535"),
    ({"READINGROOM_DATABASE__SQLITE_SYNCHRONOUS": "OFF"}, "database.sqlite_synchronous", "'FULL' or 'NORMAL'"),
    ({"READINGROOM_LOG_LEVEL": "LOUD"}, "log_level", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    ({"READINGROOM_DICOM__AE_TITLE": "A_TITLE_LONGER_THAN_16"}, "dicom.ae_title", "1 to 16"),
    ({"READINGROOM_DICOM__COLOUR": "blue"}, "dicom.colour", "unknown setting"),
])
def test_bad_setting_names_the_setting_and_its_valid_values(env, named, valid):
    with pytest.raises(ConfigError) as err:
        load_settings(environ=env)
    assert named in str(err.value)
    assert valid in str(err.value)


def test_missing_config_file_says_what_to_do(tmp_path: Path):
    with pytest.raises(ConfigError, match="READINGROOM_CONFIG"):
        load_settings(config_path=tmp_path / "nope.yaml", environ={})


def test_sites_decide_which_callers_are_allowed(settings):
    assert settings.site_for_ae("TEST_SCU").name == "Test Hospital"
    assert settings.site_for_ae("NOBODY") is None
    assert "OTHER_PACS" in settings.allowed_calling_ae_titles
    assert settings.quiet_period_for("Test Hospital") == 0.5
    assert settings.quiet_period_for("Other Hospital") == settings.intake.quiet_period_s


def test_the_first_admins_password_variable_is_not_a_setting():
    """docs/deploy.md sets $READINGROOM_ADMIN_PASSWORD for a node's first start: settings must load."""
    from readingroom.settings import load_settings

    settings = load_settings(environ={"READINGROOM_ADMIN_PASSWORD": "a-long-Secret-1",
                                      "READINGROOM_DICOM__PORT": "11999"})
    assert settings.dicom.port == 11999
    assert "a-long-Secret-1" not in settings.model_dump_json()
