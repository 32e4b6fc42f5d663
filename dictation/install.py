"""``python -m dictation.install``: join Whisper base into the data folder (make install)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from readingroom.errors import ReadingRoomError

from dictation.models import install_base

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dictation.install", description=__doc__)
    parser.add_argument("--home", type=Path, help="data folder (default: settings home)")
    parser.add_argument("--force", action="store_true", help="join again even if present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        path = install_base(args.home, force=args.force)
    except ReadingRoomError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
