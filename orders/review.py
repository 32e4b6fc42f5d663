"""Request review and protocoling: what the teleradiologist does with a new order.

The Python API of the review tab and of ``readingroom orders`` (every function takes a Database):

    list_orders(db, status="new")                      -> [order dict, ...]
    get_order(db, accession, settings)                 -> order dict with events, studies, suggestion
    suggest(db, settings, accession)                   -> Suggestion | None (protocols.yaml rules)
    approve(db, settings, accession, protocol_name=None, protocol_edits=None, user="")
    reject(db, settings, queue, accession, reason, user="")   the site's RIS gets an HL7 message
    ask(db, accession, question, user="", queue=None)  status "question"; with a queue the RIS is told
    set_protocol(db, settings, accession, protocol_name, protocol_edits=None, user="")

Each also takes ``as_user``: the logged-in user whose sites (``readingroom.access.user_sites``)
limit which orders exist for the call. An order of another site is answered exactly like a
missing one (OrderError "no order with accession ..."). ``as_user=None`` is the command line,
which sees every site. ``user`` is only the name written in the order's history.

An order is approved only with a protocol: the chosen one, or the suggested one. Only approved
orders reach the DICOM worklist. Raises OrderError with what to do next.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from readingroom.access import may_see, user_sites
from readingroom.db import Database
from readingroom.errors import ConfigError
from readingroom.jobs import JobQueue
from readingroom.schema import ORDER_STATUSES, Order, OrderEvent, Study, utcnow
from readingroom.settings import Settings
from orders.common import OrderError
from orders.protocols import PROTOCOL_KEYS, Suggestion, load_library, suggest_protocol

log = logging.getLogger(__name__)

SEND_JOB = "order_hl7_out"
REVIEWABLE = ("new", "question")


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") + "Z" if value else None


def order_dict(order: Order) -> dict[str, Any]:
    """An order as plain data (the JSON of ``readingroom orders show --json``)."""
    return {
        "accession": order.accession, "status": order.status, "site": order.site_name, "source": order.source,
        "placer_order": order.placer_order, "filler_order": order.filler_order,
        "patient_id": order.patient_id, "patient_name": order.patient_name,
        "patient_birth_date": order.patient_birth_date, "patient_sex": order.patient_sex,
        "visit_number": order.visit_number, "patient_class": order.patient_class,
        "ordering_physician": order.ordering_physician, "procedure_code": order.procedure_code,
        "procedure_description": order.procedure_description, "modality": order.modality,
        "priority": order.priority, "laterality": order.laterality, "indication": order.indication,
        "contrast_allergy": order.contrast_allergy, "egfr": order.egfr, "scheduled_at": _iso(order.scheduled_at),
        "study_uid": order.study_uid, "hints": list(order.hints or []), "protocol_name": order.protocol_name,
        "protocol": dict(order.protocol or {}), "review_note": order.review_note, "reviewed_by": order.reviewed_by,
        "reviewed_at": _iso(order.reviewed_at), "created_at": _iso(order.created_at),
        "updated_at": _iso(order.updated_at),
    }


def list_orders(db: Database, status: str | None = None, site: str | None = None, limit: int = 200, *,
                as_user: str | None = None) -> list[dict]:
    """Orders of ``as_user``'s sites (None: every site), newest first; STAT first within the new
    ones is left to the caller's sorting."""
    if status is not None and status not in ORDER_STATUSES:
        raise OrderError(f"unknown order status {status!r}; one of {', '.join(ORDER_STATUSES)}")
    allowed = user_sites(db, as_user)
    with db.reader() as session:
        query = select(Order).order_by(Order.id.desc()).limit(limit)
        if status:
            query = query.where(Order.status == status)
        if site:
            query = query.where(Order.site_name == site)
        if allowed is not None:   # the limit counts visible orders only; may_see below is the rule
            query = query.where(Order.site_name.in_(sorted(allowed)))
        return [order_dict(o) for o in session.scalars(query) if may_see(allowed, o.site_name)]


def _load(session: Any, accession: str, allowed: set[str] | None = None) -> Order:
    """The order, when it exists and ``allowed`` (``user_sites``; None: every site) covers its site."""
    order = session.scalar(select(Order).where(Order.accession == accession))
    if order is None or not may_see(allowed, order.site_name):
        if order is not None:
            log.warning("order %s of site %r asked for outside the user's sites", accession, order.site_name)
        raise OrderError(f"no order with accession {accession!r}; see `readingroom orders list`")
    return order


def get_order(db: Database, accession: str, settings: Settings | None = None, *,
              as_user: str | None = None) -> dict[str, Any]:
    """One order with its history, its linked studies and (given settings) the protocol suggestion."""
    allowed = user_sites(db, as_user)
    with db.reader() as session:
        order = _load(session, accession, allowed)
        data = order_dict(order)
        data["events"] = [{"at": _iso(e.at), "kind": e.kind, "user": e.user, "detail": e.detail}
                          for e in session.scalars(select(OrderEvent).where(OrderEvent.order_id == order.id)
                                                   .order_by(OrderEvent.id))]
        data["studies"] = list(session.scalars(select(Study.study_uid).where(Study.order_id == order.id)))
    if settings is not None:
        suggestion = suggest_protocol(data, load_library(settings))
        data["suggestion"] = ({"name": suggestion.name, "reason": suggestion.reason, "protocol": suggestion.protocol}
                              if suggestion else None)
    return data


def suggest(db: Database, settings: Settings, accession: str, *, as_user: str | None = None) -> Suggestion | None:
    """The protocol the rules suggest for this order (configs/protocols.yaml)."""
    allowed = user_sites(db, as_user)
    with db.reader() as session:
        data = order_dict(_load(session, accession, allowed))
    return suggest_protocol(data, load_library(settings))


def _chosen_protocol(settings: Settings, data: dict[str, Any], protocol_name: str | None,
                     edits: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    library = load_library(settings)
    if protocol_name:
        try:
            protocol = dict(library.get(protocol_name))
        except ConfigError as exc:
            raise OrderError(str(exc)) from None
    else:
        suggestion = suggest_protocol(data, library)
        if suggestion is None:
            raise OrderError(f"no protocol fits order {data['accession']} ({data['procedure_description']}); "
                             "choose one with --protocol NAME: " + ", ".join(sorted(library.protocols)))
        protocol_name, protocol = suggestion.name, dict(suggestion.protocol)
    if edits:
        unknown = set(edits) - PROTOCOL_KEYS
        if unknown:
            raise OrderError(f"cannot edit protocol field(s) {sorted(unknown)}; editable: {sorted(PROTOCOL_KEYS)}")
        protocol.update(edits)
        protocol["edited"] = sorted(edits)
    return protocol_name, protocol


def approve(db: Database, settings: Settings, accession: str, protocol_name: str | None = None,
            protocol_edits: dict[str, Any] | None = None, user: str = "", *,
            as_user: str | None = None) -> dict[str, Any]:
    """Approve a new order (or one with a question) with a protocol; it joins the DICOM worklist."""
    allowed = user_sites(db, as_user)
    with db.session() as session:
        order = _load(session, accession, allowed)
        if order.status not in REVIEWABLE:
            raise OrderError(f"order {accession} is {order.status}; only new orders or orders with a question "
                             "can be approved (use set_protocol to change an approved order's protocol)")
        name, protocol = _chosen_protocol(settings, order_dict(order), protocol_name, protocol_edits)
        order.status, order.protocol_name, order.protocol = "approved", name, protocol
        order.reviewed_by, order.reviewed_at = user, utcnow()
        order.updated_at = order.reviewed_at
        if not order.study_uid:
            from pydicom.uid import generate_uid  # here: pydicom costs 0.2 s to import in the CLI

            order.study_uid = generate_uid()
        session.add(OrderEvent(order_id=order.id, kind="approved", user=user, at=utcnow(),
                               detail={"protocol": name, "edited": protocol.get("edited", [])}))
        data = order_dict(order)
    log.info("order %s approved by %s with protocol %s", accession, user or "?", name)
    return data


def set_protocol(db: Database, settings: Settings, accession: str, protocol_name: str,
                 protocol_edits: dict[str, Any] | None = None, user: str = "", *,
                 as_user: str | None = None) -> dict[str, Any]:
    """Change the protocol of an approved order (the worklist shows the new one at once)."""
    allowed = user_sites(db, as_user)
    with db.session() as session:
        order = _load(session, accession, allowed)
        if order.status != "approved":
            raise OrderError(f"order {accession} is {order.status}; approve it with a protocol instead")
        name, protocol = _chosen_protocol(settings, order_dict(order), protocol_name, protocol_edits)
        order.protocol_name, order.protocol, order.updated_at = name, protocol, utcnow()
        session.add(OrderEvent(order_id=order.id, kind="protocol", user=user, at=utcnow(), detail={"protocol": name}))
        return order_dict(order)


def ask(db: Database, accession: str, question: str, user: str = "", queue: JobQueue | None = None, *,
        as_user: str | None = None) -> dict[str, Any]:
    """Put a question to the ordering physician; the order waits in status "question". With a
    ``queue``, the site's RIS is told too (the order held, ORC-1 "OH", with the question)."""
    if not question.strip():
        raise OrderError("the question is empty; write what the ordering physician should answer")
    allowed = user_sites(db, as_user)
    with db.session() as session:
        order = _load(session, accession, allowed)
        if order.status not in REVIEWABLE:
            raise OrderError(f"order {accession} is {order.status}; questions are for new orders")
        order.status, order.review_note = "question", question.strip()
        order.reviewed_by, order.reviewed_at = user, utcnow()
        session.add(OrderEvent(order_id=order.id, kind="question", user=user, at=utcnow(),
                               detail={"question": question.strip()}))
        if queue is not None:
            queue.enqueue(SEND_JOB, {"accession": accession, "kind": "question", "text": question.strip()},
                          session=session)
        return order_dict(order)


def reject(db: Database, settings: Settings, queue: JobQueue, accession: str, reason: str,
           user: str = "", *, as_user: str | None = None) -> dict[str, Any]:
    """Reject an order with a reason; an HL7 message tells the site's RIS (a durable job)."""
    if not reason.strip():
        raise OrderError("a rejection needs a reason; the site's RIS and the ordering physician see it")
    allowed = user_sites(db, as_user)
    with db.session() as session:
        order = _load(session, accession, allowed)
        if order.status not in REVIEWABLE:
            raise OrderError(f"order {accession} is {order.status}; only new orders or orders with a question "
                             "can be rejected")
        order.status, order.review_note = "rejected", reason.strip()
        order.reviewed_by, order.reviewed_at = user, utcnow()
        order.updated_at = order.reviewed_at
        session.add(OrderEvent(order_id=order.id, kind="rejected", user=user, at=utcnow(),
                               detail={"reason": reason.strip()}))
        queue.enqueue(SEND_JOB, {"accession": accession, "kind": "rejection", "text": reason.strip()},
                      dedupe_key=f"{SEND_JOB}:rejection:{accession}", session=session)
        data = order_dict(order)
    log.info("order %s rejected by %s: %s", accession, user or "?", reason)
    return data


class OrderNoticeSender:
    """The job handler that tells the site's RIS about a rejection or a question, over MLLP
    (retried with backoff by the worker pool until the RIS answers AA)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db, self.settings = db, settings

    def __call__(self, payload: dict[str, Any]) -> None:
        from readingroom.mllp import send
        from readingroom.hl7 import ack_code
        from readingroom.tls import peer_context
        from orders.hl7 import build_order_notice

        accession, kind = payload["accession"], payload.get("kind", "rejection")
        with self.db.reader() as session:
            order = order_dict(_load(session, accession))
            version = session.scalar(select(Order.hl7_version).where(Order.accession == accession)) or ""
        text = payload.get("text") or order["review_note"]
        site = next((s for s in self.settings.sites if s.name == order["site"]), None)
        peer = site.destinations.hl7 if site else None
        if peer is None:
            log.warning("order %s: %s not sent, site %r has no destinations.hl7; tell the site another way "
                        "or add its RIS to configs/sites.yaml", accession, kind, order["site"])
            self._event(order, f"{kind}_not_sent", reason="the site has no destinations.hl7")
            return
        message = build_order_notice(order, kind, text, peer.application, peer.facility,
                                     self.settings.hl7.application, self.settings.hl7.facility,
                                     version if version[:1] == "2" else "2.5.1")
        reply = send(peer.host, peer.port, message, timeout_s=peer.timeout_s,
                     ssl_context=peer_context(peer, f"sites[{order['site']}].destinations.hl7"))
        code = ack_code(reply)
        if code not in ("AA", "CA"):
            raise OrderError(f"the RIS at {peer.host}:{peer.port} answered {code or 'no MSA'} to the {kind} of "
                             f"{accession}: {reply[:200]!r}")
        self._event(order, f"{kind}_sent", to=f"{peer.host}:{peer.port}")
        log.info("%s of order %s delivered to %s:%d", kind, accession, peer.host, peer.port)

    def _event(self, order: dict[str, Any], kind: str, **detail: Any) -> None:
        with self.db.session() as session:
            order_id = session.scalar(select(Order.id).where(Order.accession == order["accession"]))
            session.add(OrderEvent(order_id=order_id, kind=kind, at=utcnow(), detail=detail))
