"""The triage job: run the installed models on a completed study and store what they found.

``TriagePipeline`` (the ``triage_study`` job handler) gathers the study's series, lets
models/inference.py pick a series per model and run it, saves each finding's heatmap under
``<home>/ai/<study_uid>/`` and calls ``record_results``. ``record_results`` is where a triage
result enters the database: the worklist reads it at once (its order is computed when read), and
a positive finding of the policy's top class raises a notification. A study no model applies to,
or whose images no model could process, is marked "AI unavailable" with the reason, and keeps
its order priority and arrival order: AI never hides a study. All AI output is UNVERIFIED.
"""

from __future__ import annotations

import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload

from models.registry import WEIGHTS_DIR, all_models, load_config
from readingroom.db import Database
from readingroom.schema import AIFinding, Series, Study, utcnow
from readingroom.settings import PROJECT_ROOT, Settings
from readingroom.storage import atomic_write
from triage.notify import CRITICAL_FINDING, Notifier
from triage.priority import AIResult, Decision, decide, positive_reason
from triage.worklist import policy_config

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutput:
    finding: str
    probability: float
    model: str
    version: str
    threshold: float | None = None   # the model's operating threshold; else the policy's
    series_uid: str = ""             # the series the model read
    heatmap_path: str = ""           # .npy relative to the home folder ("" when none)


def record_results(db: Database, settings: Settings, notifier: Notifier | None, study_uid: str,
                   outputs: Sequence[ModelOutput]) -> list[str]:
    """Store a study's AI results (replacing earlier ones of the same models). Returns the
    positive findings that the policy gives a class. A positive finding of the top class raises a
    notification. Positive means ``triage.priority.decide``: the same rule the worklist uses."""
    config = policy_config(settings)
    positive: list[tuple[ModelOutput, Decision]] = []
    with db.session() as session:
        study = session.scalar(select(Study).where(Study.study_uid == study_uid))
        if study is None:
            raise LookupError(f"study {study_uid} is not in the database")
        models = {o.model for o in outputs}
        if models:
            session.execute(delete(AIFinding).where(AIFinding.study_id == study.id, AIFinding.model.in_(models)))
        for out in outputs:
            decision = decide(AIResult(out.finding, out.probability, out.threshold), config)
            session.add(AIFinding(study_id=study.id, finding=out.finding, probability=out.probability,
                                  positive=decision.positive, model=out.model, version=out.version,
                                  threshold=decision.threshold, series_uid=out.series_uid,
                                  heatmap_path=out.heatmap_path))
            if decision.positive and decision.urgency is not None:
                positive.append((out, decision))
        study.ai_status = "done"
        study.ai_reason = ""
        study.triaged_at = utcnow()
        if study.status == "new":
            study.status = "triaged"
        site_name = study.site.name if study.site else ""
        accession = study.accession
    if notifier is not None:
        for out, decision in positive:
            if decision.urgency == config.top:
                notifier.publish(CRITICAL_FINDING, study_uid, {
                    "finding": out.finding, "probability": round(out.probability, 4), "urgency": decision.urgency,
                    "threshold": round(decision.threshold, 4), "reason": positive_reason(decision),
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
        study.ai_reason = why[:255]
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
        if not self.settings.models.enabled:
            mark_ai_unavailable(self.db, study_uid, "triage models are switched off (models.enabled: false)")
            return
        series = self._series(study_uid)
        modalities = {s.modality for s in series}
        config = load_config(self.settings.config_dir / self.settings.models.file)
        cards = [c for c in all_models(self.weights_dir, config, PROJECT_ROOT)
                 if {m.upper() for m in modalities} & {m.upper() for m in c.modalities}]
        if not cards:
            mods = "/".join(sorted(m for m in modalities if m)) or "this study"
            mark_ai_unavailable(self.db, study_uid, f"no triage model installed for {mods}")
            return
        from models.inference import analyse

        runs = analyse(cards, series, config["rules"], self.settings.models.heatmap_size)
        outputs = []
        for run in runs:
            if run.reason:
                log.info("study %s: %s gave no result: %s", study_uid, run.model, run.reason)
                continue
            outputs += [self._output(study_uid, f, run.series.sop_uids if run.series else ()) for f in run.findings]
        if not outputs:
            mark_ai_unavailable(self.db, study_uid, "; ".join(f"{r.model}: {r.reason}" for r in runs))
            return
        if runs and len(runs) > len({o.model for o in outputs}):
            log.info("study %s: some models gave no result (see above)", study_uid)
        record_results(self.db, self.settings, self.notifier, study_uid, outputs)

    def _series(self, study_uid: str):
        from models.inference import SeriesInfo

        with self.db.reader() as session:
            study = session.scalar(select(Study).where(Study.study_uid == study_uid)
                                   .options(selectinload(Study.series).selectinload(Series.instances)))
            if study is None:
                raise LookupError(f"study {study_uid} is not in the database")
            home = self.settings.home
            return [SeriesInfo(s.series_uid, s.modality or "", s.description or "", s.body_part or "",
                               study.description or "", tuple(home / i.path for i in s.instances),
                               tuple(i.sop_uid for i in s.instances)) for s in study.series]

    def _output(self, study_uid: str, finding, sop_uids: Sequence[str]) -> ModelOutput:
        rel = ""
        if finding.heatmap is not None:
            rel = save_heatmap(self.settings.home, study_uid, finding, sop_uids)
        return ModelOutput(finding.finding, finding.probability, finding.model, finding.version, finding.threshold,
                           finding.series_uid, rel)


def save_heatmap(home: Path, study_uid: str, finding, sop_uids: Sequence[str] = ()) -> str:
    """``ai/<study_uid>/<model>-<finding>.npy`` (float16, 0..1) and a JSON sidecar describing its
    grid; returns the .npy path relative to ``home``."""
    import numpy as np

    folder = Path("ai") / study_uid
    name = f"{finding.model}-{finding.finding}"
    buf = io.BytesIO()
    np.save(buf, np.clip(finding.heatmap, 0, 1).astype(np.float16))
    atomic_write(home / folder / f"{name}.npy", buf.getvalue(), durable=False)
    meta = {"status": "UNVERIFIED", "model": finding.model, "version": finding.version, "finding": finding.finding,
            "probability": round(finding.probability, 4), "series_uid": finding.series_uid,
            "shape": list(finding.heatmap.shape),
            "grid": ("one map per image of the series, in instance order, over the whole image at reduced resolution"
                     if finding.heatmap.ndim == 3 else "the whole radiograph at reduced resolution"),
            "sop_uids": list(sop_uids)}
    atomic_write(home / folder / f"{name}.json", json.dumps(meta, indent=1).encode(), durable=False)
    return str(folder / f"{name}.npy")
