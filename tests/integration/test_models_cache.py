"""Models live outside the data folder: resetting the demo (``rm -rf var``) loses none of them,
and the start-up banner lists every model, or says loudly which one is missing.

Real parts: the Whisper base model joined from its two wheels into a temporary models folder,
``readingroom models`` as a process, the real listener, and ``app.announce()``, the function
``readingroom run`` prints its banner with.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import app
from dictation.models import BASE_MODEL_BYTES, BASE_MODEL_SHA256, default_models_dir, models_dir, sha256_file
from models.registry import installed_models
from readingroom.db import Database
from readingroom.jobs import DatabaseJobQueue
from tests.conftest import make_settings
from tests.integration.helpers import env_for
from triage.service import IntakeService

pytestmark = pytest.mark.integration


def _models_cli(*args: str, home: Path, models: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "models", *args], capture_output=True,
                          text=True, timeout=300, env=env_for(home, READINGROOM_MODELS_DIR=str(models)))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A models folder that `readingroom models` filled (as make run does), from empty."""
    folder = tmp_path_factory.mktemp("models")
    home = tmp_path_factory.mktemp("home-install")
    run = _models_cli(home=home, models=folder)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Installed Whisper base" in run.stderr
    assert not list(home.rglob("model.bin")), "the install wrote a model into the data folder"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)              # 150 MB: not kept among pytest's tmp dirs


def _start_and_announce(home: Path, models: Path, capsys) -> tuple[str, list]:
    """What `readingroom run` does up to its banner: a migrated database in ``home``, the real
    listener, then the banner."""
    settings = make_settings(home, models_dir=str(models))
    db = Database(settings)
    db.upgrade()
    service = IntakeService(settings, db, DatabaseJobQueue(db, settings.jobs))
    service.start()
    try:
        capsys.readouterr()
        lines = app.announce(settings, service)
        return capsys.readouterr().out, lines
    finally:
        service.stop()
        db.dispose()


def test_removing_the_data_folder_loses_no_model(tmp_path, models, capsys):
    home = tmp_path / "var"
    banner, lines = _start_and_announce(home, models, capsys)
    assert (home / "readingroom.db").exists()
    shutil.rmtree(home)                                  # the user resets the demo

    banner, lines = _start_and_announce(home, models, capsys)
    assert "MISSING" not in banner and "!!!" not in banner, banner
    roles = {line.role: line for line in lines}
    assert roles["whisper live"].name == "tiny.en" and roles["whisper live"].ok
    assert roles["whisper final"].name == "base" and roles["whisper final"].ok
    assert Path(roles["whisper final"].path) == models / "whisper-base"
    model_bin = models / "whisper-base" / "model.bin"
    assert model_bin.stat().st_size == BASE_MODEL_BYTES and sha256_file(model_bin) == BASE_MODEL_SHA256
    for label in ("whisper live   tiny.en", "whisper final  base"):
        assert label in banner, banner
    cards = installed_models()
    assert cards, "no triage model in models/weights"
    for card in cards:
        assert f"triage         {card.name} {card.version}" in banner, banner
    assert "Data folder:" in banner and str(home) in banner


def test_the_default_models_folder_is_not_in_the_data_folder(tmp_path):
    settings = make_settings(tmp_path / "var")
    folder = models_dir(settings.models_dir)
    assert folder == default_models_dir()
    assert Path(sys.prefix).resolve() in folder.parents        # inside the venv: make clean removes it
    assert settings.home not in folder.parents and folder != settings.home


def test_a_missing_final_model_is_said_loudly(tmp_path, capsys):
    empty = tmp_path / "no-models"
    banner, lines = _start_and_announce(tmp_path / "var", empty, capsys)
    final = next(line for line in lines if line.role == "whisper final")
    assert not final.ok
    assert "!!! whisper final model 'base' is MISSING" in banner, banner
    assert "make install" in banner
    assert "the live model (tiny.en) writes the final text too" in banner


def test_a_damaged_model_is_found_by_checksum_and_installed_again(tmp_path, models):
    copy = tmp_path / "models"
    shutil.copytree(models, copy)
    try:
        _damage_check_and_repair(copy, tmp_path / "var")
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def _damage_check_and_repair(copy: Path, home: Path) -> None:
    model_bin = copy / "whisper-base" / "model.bin"
    with open(model_bin, "r+b") as fh:                   # same size, one byte changed
        fh.seek(BASE_MODEL_BYTES // 2)
        byte = fh.read(1)
        fh.seek(BASE_MODEL_BYTES // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))

    check = _models_cli("--check", home=home, models=copy)
    assert check.returncode == 1
    assert "damaged" in check.stderr and str(model_bin) in check.stderr, check.stderr
    assert sha256_file(model_bin) != BASE_MODEL_SHA256    # --check changes nothing

    repair = _models_cli(home=home, models=copy)
    assert repair.returncode == 0, repair.stderr
    assert "ok (sha256)    whisper final  base" in repair.stdout
    assert sha256_file(model_bin) == BASE_MODEL_SHA256
