"""DICOM Modality Worklist (C-FIND SCP): approved, protocoled orders as scheduled procedure steps.

Served by the intake listener on the same AE title and port (``triage.scp``). A modality asks with
keys; ``find_worklist`` returns the matching items, each with the protocol in the Scheduled
Procedure Step Description. Matching follows PS3.4 C.2.2.2: single values, wildcards (* ?) on
names and IDs, date ranges ("20261129-20261130", "-20261130"), and universal matching for empty
keys. The keys that filter: ScheduledProcedureStepStartDate, Modality and ScheduledStationAETitle
(inside the Scheduled Procedure Step Sequence), PatientID, PatientName and AccessionNumber.

A calling AE title listed by a site sees only that site's orders; with no sites configured
every order is visible. Dates are the order's scheduled time (UTC), or the day it arrived.
"""

from __future__ import annotations

import fnmatch
import logging
import re
from datetime import datetime
from typing import Any, Iterator

from pydicom import Dataset
from pydicom.sequence import Sequence
from sqlalchemy import select

from readingroom.db import Database
from readingroom.schema import Order
from readingroom.settings import Settings
from orders.protocols import step_description

log = logging.getLogger(__name__)

SUCCESS, PENDING = 0x0000, 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC001
SPS = "ScheduledProcedureStepSequence"


def _value(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword, "") if keyword in ds else ""
    return str(value if value is not None else "").strip()


def string_matches(pattern: str, value: str) -> bool:
    """DICOM single value or wildcard matching ('' and '*' match anything)."""
    if pattern in ("", "*"):
        return True
    if "*" in pattern or "?" in pattern:
        return fnmatch.fnmatchcase(value, pattern)
    return value == pattern


def date_matches(pattern: str, value: str) -> bool:
    """DICOM date matching: '' any, '20261129' one day, 'A-B', '-B' or 'A-' a range."""
    pattern = pattern.strip()
    if not pattern:
        return True
    if not value:
        return False
    if "-" in pattern:
        low, _, high = pattern.partition("-")
        return (not low or value >= low) and (not high or value <= high)
    return value == pattern


def _order_date_time(order: Any) -> tuple[str, str]:
    moment: datetime = order.scheduled_at or order.created_at
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _station_titles(settings: Settings, site_name: str) -> list[str] | None:
    """The AE titles of the order's site (its modalities); None when the site lists none."""
    site = next((s for s in settings.sites if s.name == site_name), None)
    return list(site.ae_titles) if site and site.ae_titles else None


def _item(order: Any, settings: Settings, station_ae: str) -> Dataset:
    """The full worklist item for an order (trimmed to the query's keys by ``_answer``)."""
    date, time = _order_date_time(order)
    sps = Dataset()
    sps.Modality = order.modality or "OT"
    sps.ScheduledStationAETitle = station_ae
    sps.ScheduledStationName = ""
    sps.ScheduledProcedureStepStartDate = date
    sps.ScheduledProcedureStepStartTime = time
    sps.ScheduledPerformingPhysicianName = ""
    sps.ScheduledProcedureStepDescription = step_description(order.protocol_name, order.protocol or {})
    sps.ScheduledProcedureStepID = order.accession
    sps.ScheduledProcedureStepStatus = "SCHEDULED"
    code = Dataset()
    code.CodeValue = order.protocol_name[:16]
    code.CodingSchemeDesignator = "99READINGROOM"
    code.CodeMeaning = ((order.protocol or {}).get("title") or order.protocol_name)[:64]
    sps.ScheduledProtocolCodeSequence = Sequence([code])
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = order.patient_name
    ds.PatientID = order.patient_id
    ds.PatientBirthDate = order.patient_birth_date
    ds.PatientSex = order.patient_sex[:16]
    ds.AccessionNumber = order.accession
    ds.ReferringPhysicianName = order.ordering_physician
    ds.RequestingPhysician = order.ordering_physician
    ds.StudyInstanceUID = order.study_uid
    ds.RequestedProcedureID = order.accession
    ds.RequestedProcedureDescription = order.procedure_description[:64]
    ds.RequestedProcedurePriority = order.priority or "ROUTINE"
    ds.ReasonForTheRequestedProcedure = order.indication[:64]
    ds.AdmissionID = order.visit_number
    if order.procedure_code:
        proc = Dataset()
        proc.CodeValue = order.procedure_code[:16]
        proc.CodingSchemeDesignator = "L"
        proc.CodeMeaning = (order.procedure_description or order.procedure_code)[:64]
        ds.RequestedProcedureCodeSequence = Sequence([proc])
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    return ds


def _trim(full: Dataset, query: Dataset) -> Dataset:
    """Only the attributes the query asked for (PS3.4 C.4.1.1.3), nested sequences included."""
    out = Dataset()
    for elem in query:
        keyword = elem.keyword
        if not keyword:
            continue
        if keyword == "SpecificCharacterSet":
            continue
        if elem.VR == "SQ":
            if keyword in full:
                if len(elem.value) and len(elem.value[0]):
                    out[keyword] = full[keyword]
                    out[keyword].value = Sequence([_trim(item, elem.value[0]) for item in full[keyword].value])
                else:
                    out[keyword] = full[keyword]
            else:
                setattr(out, keyword, Sequence([]))
        elif keyword in full:
            out[keyword] = full[keyword]
        else:
            setattr(out, keyword, None)
    out.SpecificCharacterSet = "ISO_IR 192"
    return out


def find_worklist(db: Database, settings: Settings, query: Dataset, calling_ae: str = "") -> list[Dataset]:
    """Worklist items that match the query, for this caller. Pure apart from the database read."""
    sps_query = query[SPS].value[0] if SPS in query and len(query[SPS].value) else Dataset()
    modality = _value(sps_query, "Modality")
    station = _value(sps_query, "ScheduledStationAETitle")
    date = _value(sps_query, "ScheduledProcedureStepStartDate")
    patient_id, accession = _value(query, "PatientID"), _value(query, "AccessionNumber")
    patient_name = _value(query, "PatientName")
    caller_site = settings.site_for_ae(calling_ae) if calling_ae else None

    with db.reader() as session:
        statement = select(Order).where(Order.status == "approved", Order.protocol_name != "").order_by(Order.id)
        if caller_site is not None:
            statement = statement.where(Order.site_name == caller_site.name)
        if accession and not re.search(r"[*?]", accession):
            statement = statement.where(Order.accession == accession)
        if patient_id and not re.search(r"[*?]", patient_id):
            statement = statement.where(Order.patient_id == patient_id)
        orders = list(session.scalars(statement))

    items = []
    for order in orders:
        if not (string_matches(accession, order.accession) and string_matches(patient_id, order.patient_id)
                and string_matches(patient_name, order.patient_name)
                and string_matches(modality, order.modality or "OT")
                and date_matches(date, _order_date_time(order)[0])):
            continue
        titles = _station_titles(settings, order.site_name)
        if station in ("", "*"):
            station_ae = calling_ae if titles is None or calling_ae in titles else ""
        else:
            fits = [t for t in (titles if titles is not None else [station]) if string_matches(station, t)]
            if not fits:
                continue
            station_ae = station if station in fits else fits[0]
        items.append(_trim(_item(order, settings, station_ae), query))
    return items


def handle_find(event: Any, db: Database, settings: Settings) -> Iterator[tuple[int, Dataset | None]]:
    """EVT_C_FIND handler: yields (Pending, item) per match, then Success. Never raises."""
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        query = event.identifier
        items = find_worklist(db, settings, query, calling_ae)
    except Exception as exc:  # noqa: BLE001 - a bad query or a database error gets a status, not a crash
        log.warning("worklist query from %s failed, status 0x%04X: %s", calling_ae, UNABLE_TO_PROCESS, exc)
        yield UNABLE_TO_PROCESS, None
        return
    log.info("worklist query from %s: %d item(s)", calling_ae, len(items))
    for item in items:
        if event.is_cancelled:
            yield CANCEL, None
            return
        yield PENDING, item
    yield SUCCESS, None
