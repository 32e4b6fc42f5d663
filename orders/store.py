"""Store order messages: every message is kept; new, changed and cancelled orders are applied.

``receive_hl7(db, settings, text, peer, address=ip)`` is the whole HL7 entry point behind the
MLLP listener: it never raises and always returns the ACK to send (AA, or AE/AR naming the
problem). An accepted message is kept in ``order_messages`` in the same transaction as its orders
(one commit); a refused one is kept with the reason, for the admin (``readingroom orders messages``).

A site's messages act on that site's orders only: the site is found from MSH-4
(``site_for_facility``), a message claiming a site must come from one of its
``hl7.allowed_addresses`` when it lists any (``check_source_address``), and a change or cancel
of an order another site placed is refused (``SenderNotAllowed``, AR), the order untouched.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from typing import Any, NoReturn

from sqlalchemy import select, update

from readingroom.db import Database
from readingroom.schema import Order, OrderEvent, OrderMessage, Study, utcnow
from readingroom.settings import Settings
from orders.common import CANCEL, CHANGE, NEW, MessageError, ParsedMessage, ParsedOrder, SenderNotAllowed
from orders.linking import link_waiting_studies
from orders.protocols import appropriateness_hints, load_hint_rules

log = logging.getLogger(__name__)

# One writer at a time in this process: SQLite has one anyway, and waiting here is cheaper than
# SQLite's busy handler, which sleeps in steps of up to 100 ms (4 feeds at once: p95 ACK 380 -> 130 ms).
_WRITE_LOCK = threading.Lock()

# Fields an XO (change) may update; review fields and the status stay ours.
CHANGEABLE = ("placer_order", "filler_order", "patient_id", "patient_name", "patient_birth_date", "patient_sex",
              "visit_number", "patient_class", "ordering_physician", "procedure_code", "procedure_description",
              "modality", "priority", "laterality", "indication", "contrast_allergy", "egfr", "scheduled_at",
              "study_uid")
# A change of these after approval sends the order back for review (the protocol may not fit).
REVIEW_AGAIN = ("procedure_code", "procedure_description", "modality", "laterality", "indication", "patient_id")


def site_for_facility(settings: Settings, facility: str, application: str = "") -> str:
    """The site that sent a message: MSH-4 = its destinations.hl7.facility, else its name."""
    for site in settings.sites:
        peer = site.destinations.hl7
        if peer is not None and peer.facility and peer.facility == facility:
            return site.name
    for site in settings.sites:
        if site.name.lower() in (facility.lower(), application.lower()) or facility in site.ae_titles:
            return site.name
    return facility or "Unknown site"


def check_source_address(settings: Settings, site_name: str, address: str | None) -> None:
    """Refuse (SenderNotAllowed) a message claiming ``site_name`` from an ``address`` (the peer's
    IP) outside that site's ``hl7.allowed_addresses``; a site that lists none accepts any address.
    An unknown address (None) is refused too when the site lists some."""
    site = next((s for s in settings.sites if s.name == site_name), None)
    allowed = site.hl7.allowed_addresses if site is not None else []
    if not allowed:
        return
    try:
        ip = ipaddress.ip_address((address or "").strip("[]"))
    except ValueError:
        ip = None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped   # a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d
    if ip is None or not any(ip in ipaddress.ip_network(net, strict=False) for net in allowed):
        log.warning("HL7 message claiming site %r from %s refused: not in the site's hl7.allowed_addresses %s",
                    site_name, address or "an unknown address", allowed)
        raise SenderNotAllowed(f"messages for site {site_name!r} are not accepted from {address or 'this address'}; "
                               "send from an address in the site's hl7.allowed_addresses (configs/sites.yaml), "
                               "or ask the reading service to add yours")


def _message_row(raw: str, source: str, peer: str, ack: str, error: str = "",
                 parsed: ParsedMessage | None = None, orders: list[Order] | None = None) -> OrderMessage:
    from readingroom.hl7 import peek_header

    head = peek_header(raw) if parsed is None and source == "hl7" else {}
    accession = ",".join(o.accession for o in orders) if orders else \
        (parsed.orders[0].accession if parsed and parsed.orders else "")
    return OrderMessage(
        raw=raw, source=source, peer=peer[:128], received_at=utcnow(), ack_code=ack, error=error[:2000],
        message_type=(parsed.message_type if parsed else head.get("type", ""))[:32],
        control_id=(parsed.control_id if parsed else head.get("control_id", ""))[:64],
        accession=accession[:64], order_id=orders[0].id if orders else None)


def keep_refused(db: Database, raw: str, source: str, peer: str, ack: str, error: str,
                 parsed: ParsedMessage | None = None) -> bool:
    """Keep a message we refused, with why, for the admin. False when even that failed."""
    try:
        with _WRITE_LOCK, db.session() as session:
            session.add(_message_row(raw, source, peer, ack, error, parsed))
        return True
    except Exception:  # the caller answers "send again later"
        log.exception("could not keep a refused %s message", source)
        return False


def apply_message(db: Database, settings: Settings, parsed: ParsedMessage, raw: str, source: str,
                  peer: str = "", note: str = "", site_name: str | None = None) -> list[Order]:
    """Apply every order of a message and keep the message, in one transaction: all or nothing.
    ``site_name`` is the sending site (default: found from MSH-4, ``site_for_facility``).

    One commit per accepted message; if it fails, nothing was acknowledged and the sender resends."""
    site_name = site_name or site_for_facility(settings, parsed.sending_facility, parsed.sending_application)
    with _WRITE_LOCK, db.session() as session:
        orders = [apply_order(session, settings, order, site_name=site_name, source=source,
                              sending_application=parsed.sending_application,
                              sending_facility=parsed.sending_facility, version=parsed.version)
                  for order in parsed.orders]
        session.add(_message_row(raw, source, peer, "AA", note, parsed, orders))
    return orders


def _order_facts(row: Order) -> dict[str, Any]:
    return {c: getattr(row, c) for c in ("procedure_code", "procedure_description", "modality", "indication",
                                         "egfr", "contrast_allergy", "priority", "laterality")}


def _event(session: Any, order_id: int, kind: str, user: str = "", **detail: Any) -> None:
    session.add(OrderEvent(order_id=order_id, kind=kind, user=user, detail=detail, at=utcnow()))


def _jsonable(value: Any) -> Any:
    return value.isoformat() if hasattr(value, "isoformat") else value


def apply_order(session: Any, settings: Settings, parsed: ParsedOrder, *, site_name: str, source: str,
                sending_application: str = "", sending_facility: str = "", version: str = "") -> Order:
    """Create, change or cancel one order in the caller's transaction. Raises MessageError (AE)."""
    now = utcnow()
    order = session.scalar(select(Order).where(Order.accession == parsed.accession))
    if order is not None and order.site_name != site_name:
        _refuse_other_site(parsed, order, site_name)
    if parsed.control == NEW:
        if order is not None:
            raise MessageError(f"order {parsed.accession} already exists ({order.status}); send XO to change it "
                               "or CA to cancel it", code="205", location="ORC-1")
        order = Order(accession=parsed.accession, site_name=site_name, source=source,
                      sending_application=sending_application[:64], sending_facility=sending_facility[:64],
                      hl7_version=version[:8], status="new", created_at=now, updated_at=now, protocol={},
                      **{k: v for k, v in parsed.columns().items() if k != "accession"})
        order.hints = appropriateness_hints(_order_facts(order), load_hint_rules(settings))
        session.add(order)
        session.flush()
        _event(session, order.id, "created", source=source, warnings=parsed.warnings)
        log.info("new order %s from %s: %s %s (%s)", order.accession, site_name, order.modality,
                 order.procedure_description, order.priority or "no priority")
    elif order is None:
        raise MessageError(f"no order {parsed.accession} to {'cancel' if parsed.control == CANCEL else 'change'}; "
                           "send NW first", code="204", location="ORC-2")
    elif parsed.control == CANCEL:
        if order.status != "cancelled":
            previous = order.status
            order.status, order.updated_at = "cancelled", now
            _event(session, order.id, "cancelled", previous=previous)
            log.info("order %s cancelled by %s (was %s)", order.accession, site_name, previous)
    elif parsed.control == CHANGE:
        if order.status == "cancelled":
            raise MessageError(f"order {parsed.accession} is cancelled; send NW with a new accession",
                               code="207", location="ORC-1")
        changes = {}
        for key in CHANGEABLE:
            value = getattr(parsed, key)
            if value in ("", None) or value == getattr(order, key):
                continue
            changes[key] = [_jsonable(getattr(order, key)), _jsonable(value)]
            setattr(order, key, value)
        if changes:
            order.updated_at = now
            order.hints = appropriateness_hints(_order_facts(order), load_hint_rules(settings))
            if (order.status == "approved" and set(changes) & set(REVIEW_AGAIN)) or order.status == "question":
                changes["status"] = [order.status, "new"]  # review again; a held order got its answer
                order.status = "new"
            if "priority" in changes:  # linked studies move on the worklist at once
                session.execute(update(Study).where(Study.order_id == order.id).values(order_priority=order.priority))
            _event(session, order.id, "changed", changes=changes)
            log.info("order %s changed: %s", order.accession, ", ".join(changes))
    linked = link_waiting_studies(session, order.id) if order.status != "cancelled" else []
    if linked:
        session.flush()
    return order


def _refuse_other_site(parsed: ParsedOrder, order: Order, site_name: str) -> NoReturn:
    """A site may create, change and cancel only its own orders: refuse, naming neither the other
    site nor the order's state."""
    action = {NEW: "create", CANCEL: "cancel"}.get(parsed.control, "change")
    log.warning("site %r tried to %s order %s of site %r: refused", site_name, action, parsed.accession,
                order.site_name)
    if parsed.control == NEW:
        raise SenderNotAllowed(f"accession {parsed.accession} is already used by an order of another site; "
                               "send the order with this site's own accession number", code="205",
                               location="OBR-18")
    raise SenderNotAllowed(f"order {parsed.accession} was not placed by {site_name}: a site may {action} only "
                           "its own orders; check the accession number and MSH-4", code="204", location="ORC-2")


def _already_accepted(db: Database, control_id: str, raw: str) -> bool:
    """The same message (control ID and text) was accepted before: the sender missed our ACK."""
    with db.reader() as session:
        return session.scalar(select(OrderMessage.id).where(
            OrderMessage.control_id == control_id, OrderMessage.ack_code == "AA", OrderMessage.source == "hl7",
            OrderMessage.raw == raw).limit(1)) is not None


def receive_hl7(db: Database, settings: Settings, text: str, peer: str = "", address: str | None = None) -> str:
    """Parse, apply and keep one HL7 message; return the ACK. Never raises; never drops a message:
    an accepted one is kept with its orders, a refused one with the reason (or the sender is told
    to send it again when even that cannot be written). ``peer`` is kept with the message
    ("host:port"); ``address`` is the sender's IP, checked against its site's
    ``hl7.allowed_addresses`` (``check_source_address``)."""
    from readingroom.hl7 import build_ack
    from orders.hl7 import parse_order_message

    app, facility = settings.hl7.application, settings.hl7.facility
    parsed: ParsedMessage | None = None
    try:
        parsed = parse_order_message(text)
        site_name = site_for_facility(settings, parsed.sending_facility, parsed.sending_application)
        check_source_address(settings, site_name, address)
        if _already_accepted(db, parsed.control_id, text):
            log.info("HL7 message %s received again; already applied", parsed.control_id)
            keep_refused(db, text, "hl7", peer, "AA", "duplicate of an accepted message; not applied again", parsed)
            return build_ack(text, "AA", application=app, facility=facility)
        apply_message(db, settings, parsed, text, "hl7", peer, site_name=site_name)
    except MessageError as exc:
        log.warning("HL7 message from %s answered %s: %s", peer or "?", exc.ack, exc.text)
        if not keep_refused(db, text, "hl7", peer, exc.ack, exc.text, parsed):
            return build_ack(text, "AE", "cannot store the message now, send it again later", "207",
                             application=app, facility=facility)
        return build_ack(text, exc.ack, exc.text, exc.code, exc.location, application=app, facility=facility)
    except Exception as exc:  # a bug or a database error: keep the message, answer AE
        log.exception("HL7 message from %s could not be applied", peer or "?")
        error = f"internal error, message kept for the admin: {type(exc).__name__}: {exc}"[:500]
        if not keep_refused(db, text, "hl7", peer, "AE", error, parsed):
            error = f"cannot store the message now, send it again later ({type(exc).__name__})"
        return build_ack(text, "AE", error, "207", application=app, facility=facility)
    return build_ack(text, "AA", application=app, facility=facility)


def recent_messages(db: Database, limit: int = 50, errors_only: bool = False) -> list[dict[str, Any]]:
    """The newest order messages, for the admin (errors first to look at)."""
    with db.reader() as session:
        query = select(OrderMessage).order_by(OrderMessage.id.desc()).limit(limit)
        if errors_only:
            query = query.where(OrderMessage.ack_code != "AA")
        return [{"id": m.id, "received_at": m.received_at.isoformat(timespec="seconds") + "Z", "source": m.source,
                 "peer": m.peer, "message_type": m.message_type, "control_id": m.control_id,
                 "accession": m.accession, "ack": m.ack_code, "error": m.error, "raw": m.raw}
                for m in session.scalars(query)]

