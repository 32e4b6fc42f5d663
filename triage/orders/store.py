"""Store order messages: every message is kept; new, changed and cancelled orders are applied.

``receive_hl7(db, settings, text)`` is the whole HL7 entry point behind the MLLP listener: it
never raises and always returns the ACK to send (AA, or AE/AR naming the problem). The message is
saved in ``order_messages`` first, in its own transaction, so that even a message that breaks the
parser or the database is kept for the admin (``readingroom orders messages``).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from readingroom.db import Database
from readingroom.schema import Order, OrderEvent, OrderMessage, utcnow
from readingroom.settings import Settings
from triage.orders.common import CANCEL, CHANGE, NEW, MessageError, ParsedMessage, ParsedOrder
from triage.orders.linking import link_waiting_studies
from triage.orders.protocols import appropriateness_hints, load_hint_rules

log = logging.getLogger(__name__)

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


def save_message(db: Database, raw: str, source: str, peer: str = "") -> int:
    """Keep the message as received, before anything else can fail. Returns its row id."""
    with db.session() as session:
        row = OrderMessage(raw=raw, source=source, peer=peer[:128], received_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


def finish_message(db: Database, message_id: int, *, ack: str, error: str = "", message_type: str = "",
                   control_id: str = "", accession: str = "", order_id: int | None = None) -> None:
    with db.session() as session:
        session.execute(update(OrderMessage).where(OrderMessage.id == message_id).values(
            ack_code=ack, error=error, message_type=message_type[:32], control_id=control_id[:64],
            accession=accession[:64], order_id=order_id))


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
            if order.status == "approved" and set(changes) & set(REVIEW_AGAIN):
                order.status = "new"
                changes["status"] = ["approved", "new"]
            _event(session, order.id, "changed", changes=changes)
            log.info("order %s changed: %s", order.accession, ", ".join(changes))
    linked = link_waiting_studies(session, order.id) if order.status != "cancelled" else []
    if linked:
        session.flush()
    return order


def receive_parsed(db: Database, settings: Settings, parsed: ParsedMessage, source: str) -> list[Order]:
    """Apply every order of a message in one transaction: all or nothing."""
    site_name = site_for_facility(settings, parsed.sending_facility, parsed.sending_application)
    with db.session() as session:
        return [apply_order(session, settings, order, site_name=site_name, source=source,
                            sending_application=parsed.sending_application,
                            sending_facility=parsed.sending_facility, version=parsed.version)
                for order in parsed.orders]


def _already_accepted(db: Database, control_id: str, raw: str, message_id: int) -> bool:
    """The same message (control ID and text) was accepted before: the sender missed our ACK."""
    with db.reader() as session:
        return session.scalar(select(OrderMessage.id).where(
            OrderMessage.control_id == control_id, OrderMessage.ack_code == "AA", OrderMessage.source == "hl7",
            OrderMessage.raw == raw, OrderMessage.id != message_id).limit(1)) is not None


def receive_hl7(db: Database, settings: Settings, text: str, peer: str = "") -> str:
    """Keep, parse and apply one HL7 message; return the ACK. Never raises."""
    from triage.orders.hl7 import build_ack, parse_order_message

    app, facility = settings.hl7.application, settings.hl7.facility
    try:
        message_id = save_message(db, text, "hl7", peer)
    except Exception as exc:  # noqa: BLE001 - the database is down: the sender must retry
        log.exception("could not save an HL7 message from %s", peer or "?")
        return build_ack(text, "AE", f"cannot store the message now, send it again later ({type(exc).__name__})",
                         "207", application=app, facility=facility)
    parsed: ParsedMessage | None = None
    try:
        parsed = parse_order_message(text)
        if _already_accepted(db, parsed.control_id, text, message_id):
            log.info("HL7 message %s received again; already applied", parsed.control_id)
            finish_message(db, message_id, ack="AA", error="duplicate of an accepted message; not applied again",
                           message_type=parsed.message_type, control_id=parsed.control_id,
                           accession=parsed.orders[0].accession if parsed.orders else "")
            return build_ack(text, "AA", application=app, facility=facility)
        orders = receive_parsed(db, settings, parsed, "hl7")
    except MessageError as exc:
        log.warning("HL7 message from %s answered %s: %s", peer or "?", exc.ack, exc.text)
        _finish_quietly(db, message_id, exc.ack, exc.text, parsed, text)
        return build_ack(text, exc.ack, exc.text, exc.code, exc.location, application=app, facility=facility)
    except Exception as exc:  # noqa: BLE001 - a bug or a database error: keep the message, answer AE
        log.exception("HL7 message from %s could not be applied", peer or "?")
        text_error = f"internal error, message kept for the admin: {type(exc).__name__}: {exc}"[:500]
        _finish_quietly(db, message_id, "AE", text_error, parsed, text)
        return build_ack(text, "AE", text_error, "207", application=app, facility=facility)
    finish_message(db, message_id, ack="AA", message_type=parsed.message_type, control_id=parsed.control_id,
                   accession=",".join(o.accession for o in orders), order_id=orders[0].id if orders else None)
    return build_ack(text, "AA", application=app, facility=facility)


def _finish_quietly(db: Database, message_id: int, ack: str, error: str, parsed: ParsedMessage | None,
                    raw: str = "") -> None:
    from triage.orders.hl7 import peek_header

    head = peek_header(raw) if parsed is None else {}
    try:
        finish_message(db, message_id, ack=ack, error=error,
                       message_type=parsed.message_type if parsed else head.get("type", ""),
                       control_id=parsed.control_id if parsed else head.get("control_id", ""),
                       accession=parsed.orders[0].accession if parsed and parsed.orders else "")
    except Exception:  # noqa: BLE001 - the raw message is saved already
        log.exception("could not record the outcome of HL7 message %d", message_id)


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

