"""The triage job: run the installed models on a completed study and set its place on the worklist.

Until a model is installed for a study's modalities, the study is marked "AI unavailable" and
keeps its arrival order: AI never hides a study, it can only move one up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import select

from models.registry import WEIGHTS_DIR, models_for
from readingroom.db import Database
from readingroom.schema import Series, Study, utcnow

log = logging.getLogger(__name__)


class TriagePipeline:
    def __init__(self, db: Database, weights_dir: Path = WEIGHTS_DIR) -> None:
        self.db = db
        self.weights_dir = weights_dir

    def __call__(self, payload: dict[str, Any]) -> None:
        """Job handler for ``triage_study``: payload ``{"study_uid": ...}``."""
        study_uid = payload["study_uid"]
        with self.db.session() as session:
            study = session.scalar(select(Study).where(Study.study_uid == study_uid))
            if study is None:
                raise LookupError(f"study {study_uid} is not in the database")
            modalities = set(session.scalars(select(Series.modality).where(Series.study_id == study.id)))
            cards = models_for(modalities, self.weights_dir)
            if not cards:
                study.ai_status = "unavailable"
                study.priority_label = "routine"
                study.priority_score = 0.0
                study.priority_reason = (f"arrival order; AI unavailable: no triage model installed for "
                                         f"{'/'.join(sorted(m for m in modalities if m)) or 'this study'}")
                study.triaged_at = utcnow()
                log.info("study %s: no triage model for %s; kept in arrival order", study_uid, sorted(modalities))
                return
            # Running models arrives with the triage models; refuse to pretend until then.
            raise NotImplementedError(f"models {[c.name for c in cards]} are installed but inference is not wired yet")
