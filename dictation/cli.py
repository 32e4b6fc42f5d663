"""``readingroom transcribe AUDIO [--template NAME] [--json]``: a recording -> structured report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from readingroom.errors import ReadingRoomError

from dictation.audio import decode_audio
from dictation.session import DictationSession
from readingroom.settings import DictationSettings

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="readingroom transcribe",
        description="Transcribe a dictation (wav, webm/opus, ogg, ...) into a structured report. "
        "Offline; not for clinical use.",
    )
    parser.add_argument("audio", type=Path, help="audio file")
    parser.add_argument("--template", default="free", help="report template (configs/templates), default: free")
    parser.add_argument("--model", help="'tiny.en', 'base' or a CTranslate2 Whisper directory")
    parser.add_argument("--threads", type=int, help="CPU threads")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    from readingroom.settings import load_settings

    args = build_parser().parse_args(argv)
    try:
        settings = DictationSettings.from_mapping(load_settings().dictation)
    except ReadingRoomError as exc:
        print(f"readingroom: {exc}", file=sys.stderr)
        return 2
    changes = {"template": args.template}
    if args.model:
        changes["model"] = args.model
    if args.threads:
        changes["cpu_threads"] = args.threads
    settings = settings.with_(**changes)
    try:
        session = DictationSession(settings)
        audio = decode_audio(args.audio)
        timing = session.transcribe_audio(audio)
    except ReadingRoomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    commands = [
        {"action": u.command.action, "argument": u.command.argument, "spoken": u.raw, "at_s": u.start_s}
        for u in session.utterances
        if u.command
    ]
    if args.json:
        print(json.dumps({
            "text": session.transcript(),
            "sections": session.report.as_dict(),
            "commands": commands,
            "corrections": [dataclasses.asdict(c) for u in session.utterances for c in u.corrections],
            "template": session.template.name,
            "timing": timing,
        }))
        return 0
    print(session.transcript() or "(no speech)")
    print()
    print(session.report.render())
    for c in commands:
        print(f"[command at {c['at_s']:.1f} s: {c['action']}{' ' + str(c['argument']) if c['argument'] else ''}]")
    print(f"\n[{timing['audio_s']:.1f} s of audio in {timing['processing_s']:.1f} s, "
          f"RTF {timing['rtf']:.3f}, model {timing['model']}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
