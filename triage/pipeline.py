"""The triage job: run the installed models on a completed study and store what they found.

``record_results`` is where a triage result enters the database: the worklist reads it at once
(its order is computed when read), and a positive finding of the policy's top class raises a
notification. Until a model is installed for a study's modalities, the study is marked "AI
unavailable" and keeps its order priority and arrival order: AI never hides a study.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import delete, select

from models.registry import WEIGHTS_DIR, models_for
from readingroom.db import Database
from readingroom.schema import AIFinding, Series, Study, utcnow
from readingroom.settings import Settings
from triage.notify import CRITICAL_FINDING, Notifier
from triage.worklist import policy_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutput:
    finding: str
    probability: float
    model: str
    version: str
    threshold: float | None = None   # the model's operating threshold; else the policy's


def record_results(db: Database, settings: Settings, notifier: Notifier | None, study_uid: str,
                   outputs: Sequence[ModelOutput]) -> list[str]:
    """Store a study's AI results (replacing earlier ones of the same models). Returns the
    positive findings. A positive finding of the top class raises a notification."""
    config = policy_config(settings)
    positive: list[tuple[ModelOutput, str]] = []
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise LookupError(f"study {study_uid} is not in the database")
        models = {o.model for o in outputs}
        if models:
            session.execute(delete(AIFinding).where(AIFinding.study_id == study.id, AIFinding.model.in_(models)))
        for out in outputs:
            rule = config.findings.get(out.finding)
            threshold = out.threshold if out.threshold is not None else (rule.threshold if rule else 0.5)
            is_positive = out.probability >= threshold
            session.add(AIFinding(study_id=study.id, finding=out.finding, probability=out.probability,
                                  positive=is_positive, model=out.model, version=out.version))
            if is_positive and rule is not None:
                positive.append((out, rule.urgency))
        study.ai_status = "done"
        study.triaged_at = utcnow()
        if study.status == "new":
            study.status = "triaged"
        site_name = study.site.name if study.site else ""
        accession = study.accession
    if notifier is not None:
        for out, urgency in positive:
            if urgency == config.top:
                notifier.publish(CRITICAL_FINDING, study_uid, {
                    "finding": out.finding, "probability": round(out.probability, 4), "urgency": urgency,
                    "model": out.model, "version": out.version, "site": site_name, "accession": accession,
                    "summary": f"{out.finding} {out.probability:.2f} (AI, UNVERIFIED) at {site_name}, "
                               f"accession {accession}",
                })
    return [out.finding for out, _ in positive]


def mark_ai_unavailable(db: Database, study_uid: str, why: str) -> None:
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise LookupError(f"study {study_uid} is not in the database")
        study.ai_status = "unavailable"
        study.triaged_at = utcnow()
    log.info("study %s: AI unavailable (%s); it keeps its order priority and arrival order", study_uid, why)


class TriagePipeline:
    """Job handler for ``triage_study``: payload ``{"study_uid": ...}``."""

    def __init__(self, db: Database, settings: Settings, notifier: Notifier | None = None,
                 weights_dir: Path = WEIGHTS_DIR) -> None:
        self.db = db
        self.settings = settings
        self.notifier = notifier
        self.weights_dir = weights_dir

    def __call__(self, payload: dict[str, Any]) -> None:
        study_uid = payload["study_uid"]
        with self.db.reader() as session:
            study_id = session.scalar(select(Study.id).where(Study.study_uid == study_uid))
            if study_id is None:
                raise LookupError(f"study {study_uid} is not in the database")
            modalities = set(session.scalars(select(Series.modality).where(Series.study_id == study_id)))
        cards = models_for(modalities, self.weights_dir)
        if not cards:
            mods = "/".join(sorted(m for m in modalities if m)) or "this study"
            mark_ai_unavailable(self.db, study_uid, f"no triage model installed for {mods}")
            return
        # Running models arrives with the triage models; refuse to pretend until then.
        raise NotImplementedError(f"models {[c.name for c in cards]} are installed but inference is not wired yet")
