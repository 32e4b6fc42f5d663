"""Order-to-study linking: which order were these images acquired for?

By accession number first; then by the Study Instance UID the worklist gave the modality; then by
patient ID plus procedure plus date, and only when exactly one order fits. A linked study takes
the order's priority (so STAT reaches the priority policy) and shows its indication, side and
ordering physician; a study that no order fits stays unlinked and the worklist flags it.

The functions take a SQLAlchemy Connection or Session (both have ``execute``) so that the intake
can link inside its own transaction.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from sqlalchemy import or_, select, update

from readingroom.schema import Order, OrderEvent, Study, utcnow

log = logging.getLogger(__name__)

_ORDER_COLUMNS = (Order.id, Order.accession, Order.priority, Order.patient_id, Order.procedure_code,
                  Order.procedure_description, Order.scheduled_at, Order.created_at, Order.study_uid)
_NOISE = {"WITH", "WITHOUT", "W", "WO", "AND", "OF", "THE", "CONTRAST", "VIEW", "VIEWS", "1", "2"}


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[A-Z0-9]+", (text or "").upper()) if w not in _NOISE}


def same_procedure(order: Any, description: str, codes: set[str]) -> bool:
    """The study's procedure codes or description fit the order's procedure."""
    if order.procedure_code and order.procedure_code.upper() in {c.upper() for c in codes}:
        return True
    ordered, done = _words(order.procedure_description), _words(description)
    return bool(ordered and done) and (ordered <= done or done <= ordered)


def _order_dates(order: Any) -> set[str]:
    return {moment.strftime("%Y%m%d") for moment in (order.scheduled_at, order.created_at) if moment}


def find_order(conn: Any, *, accession: str, study_uid: str = "", patient_id: str = "", study_date: str = "",
               description: str = "", codes: set[str] = frozenset()) -> tuple[Any, str] | None:
    """The order row for a study and how it was found ("accession", "study_uid", "patient+procedure+date")."""
    if accession:
        row = conn.execute(select(*_ORDER_COLUMNS).where(Order.accession == accession)).first()
        if row is not None:
            return row, "accession"
    if study_uid:
        row = conn.execute(select(*_ORDER_COLUMNS).where(Order.study_uid == study_uid)).first()
        if row is not None:
            return row, "study_uid"
    if not patient_id:
        return None
    candidates = [row for row in conn.execute(
        select(*_ORDER_COLUMNS).where(Order.patient_id == patient_id, Order.status != "cancelled"))
        if (not study_date or study_date in _order_dates(row)) and same_procedure(row, description, codes)]
    if len(candidates) == 1:
        return candidates[0], "patient+procedure+date"
    if len(candidates) > 1:
        log.warning("study of patient %s on %s fits %d orders (%s); not linked, choose by hand", patient_id,
                    study_date, len(candidates), ", ".join(c.accession for c in candidates))
    return None


def link(conn: Any, study_id: int, study_uid: str, order: Any, how: str) -> None:
    """Point the study at the order and give it the order's priority; record the event."""
    values: dict[str, Any] = {"order_id": order.id}
    if order.priority:
        values["order_priority"] = order.priority
    conn.execute(update(Study).where(Study.id == study_id).values(**values))
    conn.execute(OrderEvent.__table__.insert().values(order_id=order.id, at=utcnow(), kind="linked", user="",
                                                      detail={"study_uid": study_uid, "by": how}))
    log.info("study %s linked to order %s by %s", study_uid, order.accession, how)


def link_new_study(conn: Any, study_id: int, study_uid: str, **facts: Any) -> bool:
    """Called by the intake when a study's first instance arrives. Returns True when linked."""
    found = find_order(conn, study_uid=study_uid, **facts)
    if found is None:
        return False
    link(conn, study_id, study_uid, *found)
    return True


def link_waiting_studies(conn: Any, order_id: int) -> list[str]:
    """Called when an order arrives or changes: link the unlinked studies it fits. Returns their UIDs."""
    order = conn.execute(select(*_ORDER_COLUMNS).where(Order.id == order_id)).first()
    query = select(Study.id, Study.study_uid, Study.accession, Study.study_date, Study.description).where(
        Study.order_id.is_(None),
        or_(Study.accession == order.accession, Study.study_uid == order.study_uid,
            Study.patient_id == order.patient_id))
    linked = []
    for study in conn.execute(query).all():
        if study.accession and study.accession != order.accession:
            continue  # the study names another order
        found = find_order(conn, accession=study.accession, study_uid=study.study_uid, patient_id=order.patient_id,
                           study_date=study.study_date, description=study.description)
        if found is not None and found[0].id == order.id:
            link(conn, study.id, study.study_uid, *found)
            linked.append(study.study_uid)
    return linked


def dicom_procedure_facts(ds: Any) -> tuple[str, set[str]]:
    """The study's procedure description and codes from a DICOM dataset (for the fallback match)."""
    codes: set[str] = set()
    descriptions = []
    try:
        for keyword in ("ProcedureCodeSequence", "RequestedProcedureCodeSequence"):
            for item in ds.get(keyword) or []:
                if item.get("CodeValue"):
                    codes.add(str(item.CodeValue))
        for item in ds.get("RequestAttributesSequence") or []:
            if item.get("RequestedProcedureID"):
                codes.add(str(item.RequestedProcedureID))
            if item.get("ScheduledProcedureStepDescription"):
                descriptions.append(str(item.ScheduledProcedureStepDescription))
        descriptions = [str(ds.get("StudyDescription") or ""), str(ds.get("RequestedProcedureDescription") or "")] \
            + descriptions
    except Exception:  # noqa: BLE001 - optional tags; a malformed one only costs the fallback
        pass
    return " ".join(d for d in descriptions if d)[:400], codes
