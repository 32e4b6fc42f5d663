"""Logging set-up. Only the CLI and the app call ``configure``; modules just get a logger."""

from __future__ import annotations

import logging
import sys
from pathlib import Path


def configure(level: str = "INFO", log_file: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8"))
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    # pynetdicom logs every PDU at INFO; keep its warnings only.
    for noisy in ("pynetdicom", "alembic", "httpx", "uvicorn.access", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
