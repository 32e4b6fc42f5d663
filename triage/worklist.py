"""The worklist: open studies in the priority policy's reading order, as plain dicts.

The order is computed when the worklist is read (``triage.priority.reading_order``), from what is
stored: arrival time, order priority, AI findings and their status. So a new triage result moves
a study at once, and waiting time (the upper limit) is always current. Claims lock a study for one
radiologist until they release it or the claim expires.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import func, or_, select, update

from readingroom.access import may_see, user_sites
from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.schema import AIFinding, Instance, Order, Series, Site, Study, utcnow
from readingroom.settings import Settings
from triage.priority import (AIResult, Policy, PolicyConfig, StudyFacts, decide, load_policy_config, reading_order,
                             sla_min)

log = logging.getLogger(__name__)

OPEN_STATUSES = ("receiving", "new", "triaged", "in_progress", "preliminary")


class ClaimError(ReadingRoomError):
    """The study cannot be claimed: another radiologist holds it, or the user may not read it."""


@lru_cache(maxsize=8)
def _policy(path: Path, mtime: float) -> PolicyConfig:
    return load_policy_config(path)


def policy_config(settings: Settings) -> PolicyConfig:
    """configs/findings.yaml, read again only when the file changes."""
    path = settings.findings_path
    return _policy(path, path.stat().st_mtime if path.exists() else 0.0)


def ai_view(finding: Any, config: PolicyConfig) -> dict[str, Any]:
    """One stored AI finding as the worklist and the viewer's AI panel show it. ``positive`` is
    ``triage.priority.decide`` on the stored probability and threshold: the rule that placed the
    study and raised the alert, not a second copy."""
    decision = decide(AIResult(finding.finding, finding.probability, finding.threshold), config)
    return {"finding": finding.finding, "probability": round(finding.probability, 4), "positive": decision.positive,
            "threshold": round(decision.threshold, 4), "urgency": decision.urgency,
            "model": finding.model, "version": finding.version, "verification": "UNVERIFIED"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


@dataclass(frozen=True)
class Filters:
    site: str | None = None
    modality: str | None = None
    status: str | None = None
    priority: str | None = None

    def keep(self, item: dict[str, Any]) -> bool:
        return ((not self.site or item["site"] == self.site)
                and (not self.modality or self.modality in item["modality"].split("/"))
                and (not self.status or item["status"] == self.status)
                and (not self.priority or item["priority"]["label"] == self.priority))


def open_studies(db: Database, settings: Settings, *, user: str | None = None, filters: Filters = Filters(),
                 now: datetime | None = None, limit: int | None = None,
                 statuses: tuple[str, ...] = OPEN_STATUSES) -> list[dict[str, Any]]:
    """Open studies in reading order, each with the fields of ``readingroom worklist --json``.
    ``statuses``: the study statuses to list (the workstation adds "final" to find signed ones)."""
    now = now or utcnow()
    config = policy_config(settings)
    allowed = user_sites(db, user)
    sites = {site.name: site for site in settings.sites}
    with db.reader() as session:
        counts = (
            select(Series.study_id, func.count(Instance.id).label("n"))
            .join(Instance, Instance.series_id == Series.id)
            .group_by(Series.study_id)
            .subquery()
        )
        # Plain rows, not ORM objects: this runs every few seconds for every open study.
        open_ids = select(Study.id).where(Study.status.in_(statuses))
        rows = session.execute(
            select(*Study.__table__.columns, Site.name.label("site_name"), counts.c.n)
            .outerjoin(Site, Study.site_id == Site.id)
            .outerjoin(counts, counts.c.study_id == Study.id)
            .where(Study.status.in_(statuses))
        ).all()
        rows = [(row, row.site_name, row.n) for row in rows if may_see(allowed, row.site_name)]
        findings: dict[int, list[Any]] = {row.id: [] for row, _s, _n in rows}
        modalities: dict[int, set[str]] = {row.id: set() for row, _s, _n in rows}
        for f in session.execute(select(*AIFinding.__table__.columns)
                                 .where(AIFinding.study_id.in_(open_ids)).order_by(AIFinding.id)):
            if f.study_id in findings:
                findings[f.study_id].append(f)
        for study_id, modality in session.execute(
            select(Series.study_id, Series.modality).where(Series.study_id.in_(open_ids)).distinct()
        ):
            if modality and study_id in modalities:
                modalities[study_id].add(modality)

        orders = _linked_orders(session, {row.order_id for row, _s, _n in rows if row.order_id})

    by_id = {row[0].id: row for row in rows}
    facts = []
    for study, site_name, _n in rows:
        site = sites.get(site_name)
        facts.append((study.received_at.timestamp(), study.id, StudyFacts(
            waited_min=(now - study.received_at).total_seconds() / 60,
            order_priority=study.order_priority,
            ai=tuple(AIResult(f.finding, f.probability, f.threshold) for f in findings[study.id]),
            ai_available=study.ai_status in ("pending", "done"),
            max_wait_min=site.max_wait_min if site else None,
        )))
    items = []
    for position, (study_id, placement) in enumerate(reading_order(facts, config, Policy.AI_AGING), 1):
        study, site_name, n_instances = by_id[study_id]
        site = sites.get(site_name)
        target = sla_min(placement.label, config, site.sla_min if site else None)
        due = study.received_at + timedelta(minutes=target) if target is not None else None
        claimed = study.claimed_by is not None and study.claimed_until is not None and study.claimed_until > now
        status = "in_progress" if claimed and study.status in ("new", "triaged") else study.status
        reason = placement.reason + ("; AI pending" if study.ai_status == "pending" else "")
        item = {
            "position": position,
            "study_uid": study.study_uid,
            "accession": study.accession,
            "patient_id": study.patient_id,
            "patient_name": study.patient_name,
            "modality": "/".join(sorted(modalities[study.id])),
            "description": study.description,
            "site": site_name or "",
            "received_at": _iso(study.received_at),
            "status": status,
            "num_instances": int(n_instances or 0),
            "order_priority": study.order_priority,
            "priority": {"label": placement.label, "score": placement.rank, "reason": reason,
                         "promoted": placement.promoted},
            "sla": {"target_min": target, "due_at": _iso(due),
                    "remaining_min": round((due - now).total_seconds() / 60, 1) if due else None},
            "ai_status": study.ai_status,
            "ai": [ai_view(f, config) for f in findings[study.id]],
            "claimed_by": study.claimed_by if claimed else None,
            # The order the images were acquired for (orders.linking); unlinked studies are flagged.
            "order": orders.get(study.order_id),
            "unlinked": study.order_id is None,
        }
        if filters.keep(item):
            items.append(item)
    return items[:limit] if limit else items


def _linked_orders(session: Any, order_ids: set[int]) -> dict[int, dict[str, Any]]:
    """What the reader needs from each linked order: the question, the side, who asked, the protocol."""
    if not order_ids:
        return {}
    columns = (Order.id, Order.accession, Order.status, Order.priority, Order.indication, Order.laterality,
               Order.ordering_physician, Order.procedure_description, Order.protocol_name)
    return {row.id: {"accession": row.accession, "status": row.status, "priority": row.priority,
                     "indication": row.indication, "laterality": row.laterality,
                     "ordering_physician": row.ordering_physician, "procedure": row.procedure_description,
                     "protocol": row.protocol_name}
            for row in session.execute(select(*columns).where(Order.id.in_(order_ids)))}


def claim(db: Database, settings: Settings, study_uid: str, username: str, now: datetime | None = None) -> datetime:
    """Lock the study for ``username`` until the returned time. Renews the user's own claim.

    Raises ClaimError when another radiologist holds a live claim, or the user may not read the site.
    """
    now = now or utcnow()
    until = now + timedelta(minutes=settings.worklist.claim_ttl_min)
    allowed = user_sites(db, username)
    with db.session() as session:
        row = session.execute(select(Study.id, Site.name).outerjoin(Site, Study.site_id == Site.id)
                              .where(Study.study_uid == study_uid)).first()
        if row is None:
            raise ClaimError(f"no study {study_uid}; see `readingroom worklist`")
        if allowed is not None and row.name not in allowed:
            raise ClaimError(f"{username} is not credentialed for {row.name}")
        taken = session.execute(
            update(Study)
            .where(Study.id == row.id,
                   or_(Study.claimed_by.is_(None), Study.claimed_by == username, Study.claimed_until <= now))
            .values(claimed_by=username, claimed_until=until)
        ).rowcount
        if taken != 1:
            holder = session.scalar(select(Study.claimed_by).where(Study.id == row.id))
            raise ClaimError(f"study {study_uid} is being read by {holder}")
    log.info("%s claimed study %s until %s", username, study_uid, until.isoformat(timespec="seconds"))
    return until


def release(db: Database, study_uid: str, username: str) -> bool:
    """Give the study back. Returns False when the user did not hold it."""
    with db.session() as session:
        done = session.execute(
            update(Study).where(Study.study_uid == study_uid, Study.claimed_by == username)
            .values(claimed_by=None, claimed_until=None)
        ).rowcount
    if done:
        log.info("%s released study %s", username, study_uid)
    return bool(done)


def format_table(items: list[dict[str, Any]]) -> str:
    """A plain-text table for a terminal."""
    header = (f"{'#':>3}  {'PRIORITY':<9} {'STATUS':<11} {'MOD':<6} {'SITE':<20} {'PATIENT':<20} "
              f"{'ACCESSION':<10} {'IMG':>4} {'SLA':>6}  REASON")
    lines = [header]
    for item in items:
        remaining = item["sla"]["remaining_min"]
        lines.append(
            f"{item['position']:>3}  {item['priority']['label']:<9} {item['status']:<11} {item['modality'][:6]:<6} "
            f"{item['site'][:20]:<20} {item['patient_name'][:20]:<20} {item['accession'][:10]:<10} "
            f"{item['num_instances']:>4} {'' if remaining is None else f'{remaining:.0f}m':>6}  "
            f"{item['priority']['reason']}"
        )
    if not items:
        lines.append("     (no open studies)")
    return "\n".join(lines)
