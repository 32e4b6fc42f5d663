"""The worklist: open studies in reading order, as plain dicts (JSON for the CLI and the web).

Reading order is priority score (highest first), then arrival (oldest first). Until a triage
model scores studies every score is 0, so the order is arrival order.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import func, select

from readingroom.db import Database
from readingroom.schema import AIFinding, Instance, Series, Site, Study

log = logging.getLogger(__name__)

OPEN_STATUSES = ("receiving", "new", "triaged", "in_progress", "preliminary")


def _iso(value) -> str | None:  # noqa: ANN001
    return value.isoformat(timespec="seconds") + "Z" if value else None


def open_studies(db: Database, limit: int | None = None) -> list[dict[str, Any]]:
    """Open studies in reading order, each with the fields of ``readingroom worklist --json``."""
    with db.reader() as session:
        counts = (
            select(Series.study_id, func.count(Instance.id).label("n"))
            .join(Instance, Instance.series_id == Series.id)
            .group_by(Series.study_id)
            .subquery()
        )
        query = (
            select(Study, Site.name, counts.c.n)
            .outerjoin(Site, Study.site_id == Site.id)
            .outerjoin(counts, counts.c.study_id == Study.id)
            .where(Study.status.in_(OPEN_STATUSES))
            .order_by(Study.priority_score.desc(), Study.received_at, Study.id)
        )
        if limit:
            query = query.limit(limit)
        rows = session.execute(query).all()
        ids = [row[0].id for row in rows]
        findings: dict[int, list[dict[str, Any]]] = {i: [] for i in ids}
        modalities: dict[int, set[str]] = {i: set() for i in ids}
        if ids:
            for f in session.scalars(select(AIFinding).where(AIFinding.study_id.in_(ids)).order_by(AIFinding.id)):
                findings[f.study_id].append({"finding": f.finding, "probability": round(f.probability, 4),
                                             "positive": f.positive, "model": f.model, "version": f.version})
            for study_id, modality in session.execute(
                select(Series.study_id, Series.modality).where(Series.study_id.in_(ids)).distinct()
            ):
                if modality:
                    modalities[study_id].add(modality)
        items = []
        for study, site_name, n_instances in rows:
            items.append({
                "study_uid": study.study_uid,
                "accession": study.accession,
                "patient_id": study.patient_id,
                "patient_name": study.patient_name,
                "modality": "/".join(sorted(modalities[study.id])),
                "description": study.description,
                "site": site_name or "",
                "received_at": _iso(study.received_at),
                "status": study.status,
                "num_instances": int(n_instances or 0),
                "priority": {"label": study.priority_label, "score": study.priority_score,
                             "reason": study.priority_reason},
                "ai": findings[study.id],
                "ai_status": study.ai_status,
            })
        return items


def format_table(items: list[dict[str, Any]]) -> str:
    """A plain-text table for a terminal."""
    header = f"{'#':>3}  {'PRIORITY':<9} {'STATUS':<10} {'MOD':<6} {'SITE':<22} {'PATIENT':<22} {'ACCESSION':<12} {'IMG':>4}  REASON"
    lines = [header]
    for n, item in enumerate(items, 1):
        lines.append(
            f"{n:>3}  {item['priority']['label']:<9} {item['status']:<10} {item['modality'][:6]:<6} "
            f"{item['site'][:22]:<22} {item['patient_name'][:22]:<22} {item['accession'][:12]:<12} "
            f"{item['num_instances']:>4}  {item['priority']['reason']}"
        )
    if not items:
        lines.append("     (no open studies)")
    return "\n".join(lines)
