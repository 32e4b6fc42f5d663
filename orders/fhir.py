"""FHIR ServiceRequest intake, for sites without HL7 v2: the same orders, the same store.

``receive_service_request(db, settings, body)`` validates the JSON with fhir.resources (R5, and
R4B for older servers), maps it to a ``ParsedOrder`` and stores it like an HL7 order. It never
raises: it returns an HTTP status and a FHIR resource (the stored ServiceRequest, or an
OperationOutcome naming the problem). The body is kept in ``order_messages`` either way.

``build_router(db, settings)`` wraps it as a FastAPI router for the lead to mount in app.py:

    app.include_router(build_router(db, settings))   # POST /fhir/ServiceRequest

The account gives the site (``request_site``): a request must be authenticated, with HTTP Basic
credentials (checked here, ``readingroom.auth.authenticate``) or by the web app, which puts the
logged-in name in ``request.state.username``. A "site" account posts for its one site (a
``?site=`` naming another is refused 403); an admin may name the site with ``?site=NAME``; a
radiologist may not post orders (403). Unauthenticated: 401. A site may change or cancel only its
own orders (403, the order untouched).

Mapping: identifier of type ACSN (or a system naming "accession", else the requisition) ->
accession; status active -> new order (or a change when the accession is known), revoked or
entered-in-error -> cancel; priority routine/urgent/asap/stat; code -> procedure; reason(Code) and
note -> indication; requester -> ordering physician; occurrenceDateTime -> scheduled time;
bodySite ("Left knee") -> laterality; subject or a contained Patient -> the patient; a contained
Observation of eGFR and an AllergyIntolerance to contrast are read too.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from readingroom.db import Database
from readingroom.settings import Settings
from orders.common import (
    CANCEL, CHANGE, NEW, MessageError, ParsedMessage, ParsedOrder, SenderNotAllowed, guess_modality,
    normalize_laterality, normalize_priority,
)

log = logging.getLogger(__name__)

ACCEPTED_INTENTS = {"order", "original-order", "reflex-order", "filler-order", "instance-order"}


def _validate(data: dict[str, Any]) -> dict[str, Any]:
    """Validate with fhir.resources (R5, then R4B); return the resource as plain JSON data."""
    from pydantic import ValidationError

    from fhir.resources.R4B.servicerequest import ServiceRequest as ServiceRequestR4B
    from fhir.resources.servicerequest import ServiceRequest

    errors = []
    for model in (ServiceRequest, ServiceRequestR4B):
        try:
            return json.loads(model.model_validate(data).model_dump_json(exclude_none=True))
        except ValidationError as exc:
            errors.append(exc)
    first = errors[0].errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    raise MessageError(f"not a valid FHIR ServiceRequest: {where}: {first['msg']} "
                       f"({errors[0].error_count()} problem(s))", code="102", location=where[:20])


def _text(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if "concept" in concept:  # R5 CodeableReference
        concept = concept["concept"]
    codings = concept.get("coding") or []
    return concept.get("text") or next((c.get("display") for c in codings if c.get("display")), "") or \
        next((c.get("code") for c in codings if c.get("code")), "")


def _code(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    if "concept" in concept:
        concept = concept["concept"]
    return next((c.get("code") for c in concept.get("coding") or [] if c.get("code")), "")


def _accession(resource: dict[str, Any]) -> str:
    identifiers = resource.get("identifier") or []
    for ident in identifiers:
        codes = {c.get("code") for c in (ident.get("type") or {}).get("coding") or []}
        if "ACSN" in codes or "accession" in (ident.get("system") or "").lower():
            return ident.get("value") or ""
    return (resource.get("requisition") or {}).get("value") or (identifiers[0].get("value", "") if identifiers else "")


def _fhir_time(value: str) -> datetime | None:
    """A FHIR dateTime ("2026-11-29T09:00:00+01:00", "2026-11-29") as naive UTC."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return moment


def _contained(resource: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in resource.get("contained") or [] if c.get("resourceType") == kind]


def _patient(resource: dict[str, Any]) -> dict[str, str]:
    subject = resource.get("subject") or {}
    reference = subject.get("reference") or ""
    patients = _contained(resource, "Patient")
    patient = next((p for p in patients if reference == f"#{p.get('id')}"), patients[0] if patients else {})
    ident = (patient.get("identifier") or [{}])[0].get("value") or (subject.get("identifier") or {}).get("value") \
        or (reference.split("/", 1)[1] if reference.startswith("Patient/") else "")
    name = (patient.get("name") or [{}])[0]
    family, given = name.get("family", ""), " ".join(name.get("given") or [])
    dicom_name = f"{family}^{given}".strip("^") if (family or given) else (subject.get("display") or "")
    return {"patient_id": ident[:64], "patient_name": dicom_name[:200],
            "patient_birth_date": (patient.get("birthDate") or "").replace("-", "")[:8],
            "patient_sex": {"male": "M", "female": "F", "other": "O", "unknown": ""}.get(patient.get("gender", ""), "")}


def _egfr(resource: dict[str, Any]) -> float | None:
    from orders.hl7 import EGFR_LOINC

    for obs in _contained(resource, "Observation"):
        codes = {c.get("code") for c in (obs.get("code") or {}).get("coding") or []}
        if codes & EGFR_LOINC or "GFR" in _text(obs.get("code")).upper():
            value = (obs.get("valueQuantity") or {}).get("value")
            if value is not None:
                return float(value)
    return None


def _allergy(resource: dict[str, Any]) -> str:
    from orders.hl7 import _CONTRAST

    found = [_text(a.get("code")) for a in _contained(resource, "AllergyIntolerance")]
    return "; ".join(t for t in found if t and _CONTRAST.search(t))[:200]


def parse_service_request(data: Any) -> ParsedMessage:
    """Map a ServiceRequest (dict or JSON text) to a message with one order. Raises MessageError."""
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MessageError(f"the body is not JSON: {exc}", ack="AR", code="100") from None
    if not isinstance(data, dict) or data.get("resourceType") != "ServiceRequest":
        kind = data.get("resourceType") if isinstance(data, dict) else type(data).__name__
        raise MessageError(f"expected a FHIR ServiceRequest, got {kind!r}", ack="AR", code="200",
                           location="resourceType")
    resource = _validate(data)
    if resource.get("intent") not in ACCEPTED_INTENTS:
        raise MessageError(f"intent {resource.get('intent')!r} is not an order; use intent 'order'",
                           code="103", location="intent")
    status = resource.get("status")
    if status in ("revoked", "entered-in-error"):
        control = CANCEL
    elif status == "active":
        control = NEW
    else:
        raise MessageError(f"status {status!r} is not handled; send 'active' (new or changed) or 'revoked' "
                           "(cancelled)", code="103", location="status")
    accession = _accession(resource)
    if not accession:
        raise MessageError("no accession number: add an identifier of type ACSN (or a requisition)",
                           location="identifier")
    if len(accession) > 16:
        raise MessageError(f"accession number {accession!r} is longer than 16 characters (DICOM SH)",
                           code="102", location="identifier")
    patient = _patient(resource)
    if not patient["patient_id"]:
        raise MessageError("no patient identifier: give subject.identifier, a Patient/<id> reference or a "
                           "contained Patient with an identifier", location="subject")
    code = resource.get("code") or {}
    procedure_code, procedure_text = _code(code), _text(code)
    if control != CANCEL and not (procedure_code or procedure_text):
        raise MessageError("code is empty: the request names no procedure", location="code")
    reasons = [_text(r) for r in (resource.get("reason") or resource.get("reasonCode") or [])]
    notes = [n.get("text", "") for n in resource.get("note") or []]
    body_sites = [_text(b) for b in resource.get("bodySite") or []]
    category = " ".join(_text(c) + " " + _code(c) for c in resource.get("category") or [])
    requester = resource.get("requester") or {}
    order = ParsedOrder(
        control=control, accession=accession, placer_order=(resource.get("id") or "")[:64], **patient,
        ordering_physician=(requester.get("display") or "")[:200], procedure_code=procedure_code[:64],
        procedure_description=procedure_text[:200], modality=guess_modality(category, procedure_code, procedure_text),
        priority=normalize_priority(resource.get("priority") or ""),
        laterality=normalize_laterality("", *body_sites, procedure_text),
        indication="; ".join(dict.fromkeys(t for t in reasons + notes if t)),
        contrast_allergy=_allergy(resource), egfr=_egfr(resource),
        scheduled_at=_fhir_time(resource.get("occurrenceDateTime") or ""),
    )
    return ParsedMessage(message_type="ServiceRequest", control_id=(resource.get("id") or accession)[:64],
                         version="FHIR", sending_application="FHIR", orders=[order])


def operation_outcome(text: str, code: str = "invalid", severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": text}]}


def receive_service_request(db: Database, settings: Settings, body: Any, peer: str = "",
                            site: str | None = None) -> tuple[int, dict[str, Any]]:
    """Keep, parse and apply one ServiceRequest. Returns (HTTP status, FHIR resource). Never raises.

    ``site`` names the sending site (a site name, or its RIS facility as in sites.yaml); without
    it the order belongs to "Unknown site" and only callers of every site see it. The caller
    decides who may name which site (``build_router``: the account's)."""
    from sqlalchemy import select

    from readingroom.schema import Order
    from orders.review import order_dict
    from orders.store import apply_message, keep_refused, site_for_facility

    raw = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else \
        body if isinstance(body, str) else json.dumps(body)
    parsed = None
    try:
        parsed = parse_service_request(raw)
        if site:
            parsed.sending_facility = site
        order = parsed.orders[0]
        if order.control == NEW:
            with db.reader() as session:
                if session.scalar(select(Order.id).where(Order.accession == order.accession)) is not None:
                    order.control = CHANGE  # an update of a known request
        (stored,) = apply_message(db, settings, parsed, raw, "fhir", peer,
                                  site_name=site_for_facility(settings, site) if site else None)
    except MessageError as exc:
        log.warning("FHIR ServiceRequest refused: %s", exc.text)
        if not keep_refused(db, raw, "fhir", peer, exc.ack, exc.text, parsed):
            return 503, operation_outcome("cannot store the request now, send it again later", "transient")
        if isinstance(exc, SenderNotAllowed):
            return 403, operation_outcome(exc.text, "forbidden")
        return (422 if exc.ack == "AE" else 400), operation_outcome(exc.text)
    except Exception as exc:
        log.exception("FHIR ServiceRequest could not be applied")
        if not keep_refused(db, raw, "fhir", peer, "AE", f"internal error: {exc}", parsed):
            return 503, operation_outcome("cannot store the request now, send it again later", "transient")
        return 500, operation_outcome(f"internal error, request kept for the admin: {type(exc).__name__}",
                                      "exception")
    with db.reader() as session:
        data = order_dict(session.get(Order, stored.id))
    outcome = operation_outcome(f"order {data['accession']} is {data['status']}", "informational", "information")
    outcome["issue"][0]["details"] = {"text": json.dumps({"accession": data["accession"], "status": data["status"],
                                                          "hints": data["hints"]})}
    return (201 if order.control == NEW else 200), outcome


class Refused(Exception):
    """A request the account may not make: ``status`` (401, 403) and the OperationOutcome's text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


def _basic_user(db: Database, header: str) -> Any:
    """The enabled user of HTTP Basic credentials, or None (bad or missing)."""
    import base64
    import binascii

    from readingroom.auth import authenticate

    if not header.lower().startswith("basic "):
        return None
    try:
        name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return authenticate(db, name, password) if name else None


def _account(db: Database, request: Request) -> tuple[str, str, list[str]]:
    """(username, role, sites) of the request's account: the web app's session user
    (``request.state.username``), else HTTP Basic credentials. Raises Refused(401)."""
    from sqlalchemy import select

    from readingroom.schema import User

    name = getattr(request.state, "username", None)
    if name:
        with db.reader() as session:
            user = session.scalar(select(User).where(User.username == name))
        if user is not None and not user.disabled:
            return user.username, user.role, list(user.sites or [])
    user = _basic_user(db, request.headers.get("authorization", ""))
    if user is None:
        raise Refused(401, "authentication required: send HTTP Basic credentials of the site's account "
                           "(an admin creates it with `readingroom users add NAME --role site --sites SITE`)")
    return user.username, user.role, list(user.sites or [])


def request_site(db: Database, settings: Settings, request: Request) -> str | None:
    """The site a ServiceRequest is posted for, from the account (see the module's docstring).
    Raises Refused (401 not authenticated, 403 not allowed)."""
    from orders.store import site_for_facility

    username, role, sites = _account(db, request)
    asked = request.query_params.get("site") or None
    if role == "site":
        if len(sites) != 1:
            raise Refused(403, f"site account {username!r} is bound to {len(sites)} sites, not one; "
                               "an admin sets its one site with `readingroom users sites`")
        if asked is not None and site_for_facility(settings, asked) != sites[0]:
            log.warning("FHIR: site account %r of %r asked to post for site %r: refused", username, sites[0], asked)
            raise Refused(403, f"account {username!r} posts orders for its own site only; leave out ?site= "
                               "or name the account's site")
        return sites[0]
    if role == "admin":
        return asked
    log.warning("FHIR: %s account %r tried to post a ServiceRequest: refused", role, username)
    raise Refused(403, f"account {username!r} ({role}) may not post orders; a site's order system uses "
                       "that site's account (role 'site')")


def build_router(db: Database, settings: Settings) -> APIRouter:
    """``POST /fhir/ServiceRequest`` (application/fhir+json or application/json), for the site of
    the account (``request_site``)."""
    router = APIRouter()

    @router.post("/fhir/ServiceRequest")
    async def post_service_request(request: Request) -> JSONResponse:
        body = await request.body()
        peer = f"{request.client.host}:{request.client.port}" if request.client else ""
        try:
            site = await run_in_threadpool(request_site, db, settings, request)
        except Refused as exc:
            headers = {"WWW-Authenticate": 'Basic realm="ReadingRoom FHIR"'} if exc.status == 401 else None
            if exc.status == 403:   # an account's refused request is kept for the admin, like any refused order
                from orders.store import keep_refused

                await run_in_threadpool(keep_refused, db, body.decode("utf-8", errors="replace"), "fhir", peer,
                                        "AR", exc.text)
            return JSONResponse(operation_outcome(exc.text, "login" if exc.status == 401 else "forbidden"),
                                status_code=exc.status, headers=headers, media_type="application/fhir+json")
        status, resource = await run_in_threadpool(receive_service_request, db, settings, body, peer, site)
        return JSONResponse(resource, status_code=status, media_type="application/fhir+json")

    return router
