"""Notification events: a critical AI finding is announced to the web page and, when a URL is
set, to a webhook, within a second of the triage result. Every event says UNVERIFIED."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from typing import Any

from sqlalchemy import func, select

from readingroom import NOT_FOR_CLINICAL_USE
from readingroom.db import Database
from readingroom.schema import Notification, utcnow
from readingroom.settings import Settings

log = logging.getLogger(__name__)

CRITICAL_FINDING = "critical_finding"


class Notifier:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def publish(self, kind: str, study_uid: str, payload: dict[str, Any]) -> int:
        """Store the event (the web page polls for it) and post it to the webhook, if any."""
        payload = {**payload, "verification": "UNVERIFIED", "notice": NOT_FOR_CLINICAL_USE}
        with self.db.session() as session:
            event = Notification(kind=kind, study_uid=study_uid, payload=payload, created_at=utcnow())
            session.add(event)
            session.flush()
            event_id = event.id
        log.warning("%s for study %s: %s", kind, study_uid, payload.get("summary", ""))
        url = self.settings.notifications.webhook_url
        if url:
            body = {"id": event_id, "kind": kind, "study_uid": study_uid, **payload}
            threading.Thread(target=self._post, args=(url, body), name="webhook", daemon=True).start()
        return event_id

    def _post(self, url: str, body: dict[str, Any]) -> None:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.notifications.webhook_timeout_s) as reply:
                log.info("webhook %s answered %s for event %s", url, reply.status, body["id"])
        except Exception as exc:  # noqa: BLE001 - a webhook must never break triage
            log.error("webhook %s failed for event %s: %s; the event stays on the web page", url, body["id"], exc)


def events_since(db: Database, last_id: int = 0, limit: int = 50) -> list[Notification]:
    with db.reader() as session:
        return list(session.scalars(select(Notification).where(Notification.id > last_id)
                                    .order_by(Notification.id).limit(limit)))


def latest_event_id(db: Database) -> int:
    """The newest event's id (0 when there is none): a new page shows only what comes after."""
    with db.reader() as session:
        return session.scalar(select(func.max(Notification.id))) or 0
