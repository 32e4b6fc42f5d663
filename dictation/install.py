"""``python -m dictation.install``: check the Whisper models by checksum; join base if missing.

The models live in the models folder (settings ``models_dir``; default inside the virtual
environment), not in the data folder, so deleting ``var/`` keeps them. ``make run`` and
``make test`` run the check every time (through ``readingroom models``), and it installs what is
missing or damaged. ``--check`` only reports, and exits 1 when a model is missing or damaged.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dictation.models import ModelCheck, check_model, ensure_model, install_base, models_dir
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


def whisper_models(dictation: dict | None = None) -> list[tuple[str, str]]:
    """(role, model name) of every Whisper model to keep installed: the live and final models of
    the ``dictation:`` settings, and always tiny.en and base (the shipped defaults)."""
    from readingroom.settings import DictationSettings

    settings = DictationSettings.from_mapping(dictation or {})
    roles = [("live", settings.model)]
    if settings.final_model and settings.final_model != settings.model:
        roles.append(("final", settings.final_model))
    for name in ("tiny.en", "base"):
        if name not in (model for _role, model in roles):
            roles.append(("spare", name))
    return roles


def check_whisper(dictation: dict | None = None, *, root: Path | None = None, install: bool = True,
                  checksum: bool = True) -> list[tuple[str, ModelCheck]]:
    """(role, check) of every Whisper model; with ``install``, a missing or damaged base is
    joined again first."""
    out = []
    for role, name in whisper_models(dictation):
        found = ensure_model(name, root=root) if install else check_model(name, root=root, checksum=checksum)
        out.append((role, found))
    return out


def _stale_copy_note() -> str:
    """The data folder's old copy of base (before models moved out of it), if there is one."""
    try:
        from readingroom.settings import get_settings

        old = get_settings().home / "models" / "whisper-base"
    except Exception:  # noqa: BLE001 - only a hint
        return ""
    if (old / "model.bin").exists() and old.resolve() != (models_dir() / "whisper-base").resolve():
        return f"note: {old} is an older copy that is no longer used; delete it to free 145 MB"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dictation.install", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="models folder (default: settings models_dir)")
    parser.add_argument("--check", action="store_true", help="only verify; exit 1 if a model is missing")
    parser.add_argument("--force", action="store_true", help="join base again even if it is complete")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = args.dir.resolve() if args.dir else None
    try:
        if args.force:
            install_base(root, force=True)
        from readingroom.settings import get_settings

        results = check_whisper(get_settings().dictation, root=root, install=not args.check)
    except ReadingRoomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for role, found in results:
        state = f"ok ({found.checked})" if found.ok else "MISSING"
        print(f"{state:<14} whisper {role:<6} {found.name:<8} {found.path or ''}")
        if not found.ok:
            print(f"  {found.problem}", file=sys.stderr)
    if note := _stale_copy_note():
        print(note)
    return 0 if all(found.ok for _role, found in results) else 1


if __name__ == "__main__":
    sys.exit(main())
