"""FHIR ServiceRequest intake through the FastAPI router: R5 and R4B shapes, updates, bad input."""

import copy
import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from readingroom.schema import OrderMessage
from orders import review
from orders.fhir import build_router

REQUEST = {
    "resourceType": "ServiceRequest",
    "id": "sr-7781",
    "contained": [
        {"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:stmary:mrn", "value": "SM200100"}],
         "name": [{"family": "GARCIA", "given": ["LUIS"]}], "birthDate": "1950-02-03", "gender": "male"},
        {"resourceType": "Observation", "id": "gfr", "status": "final",
         "code": {"coding": [{"system": "http://loinc.org", "code": "62238-1", "display": "eGFR CKD-EPI"}]},
         "valueQuantity": {"value": 24, "unit": "mL/min/1.73m2"}},
    ],
    "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                         "code": "ACSN"}]}, "value": "FH1001"}],
    "status": "active",
    "intent": "order",
    "priority": "stat",
    "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005", "display": "Imaging"}]}],
    "code": {"concept": {"coding": [{"system": "http://loinc.org", "code": "24627-2", "display": "CT Chest"}],
                         "text": "CT CHEST WITH CONTRAST"}},
    "subject": {"reference": "#p1"},
    "occurrenceDateTime": "2026-11-29T09:00:00+01:00",
    "requester": {"display": "Dr Meredith Grey"},
    "reason": [{"concept": {"text": "Pleuritic chest pain, raised D-dimer"}}],
    "note": [{"text": "Patient on the ward, bed 12"}],
}


RIS_ACCOUNT = ("testhospital-ris", "ris-password-1")   # a "site" account of Test Hospital


@pytest.fixture
def client(db, settings):
    from readingroom.auth import add_user

    add_user(db, *RIS_ACCOUNT, role="site", sites=["Test Hospital"])
    app = FastAPI()
    app.include_router(build_router(db, settings))
    return TestClient(app)


def post(client, body, site=None, auth=RIS_ACCOUNT):
    content = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post("/fhir/ServiceRequest", params={"site": site} if site else None, content=content,
                       headers={"Content-Type": "application/fhir+json"}, auth=auth)


def test_r5_service_request_becomes_an_order(client, db, settings):
    reply = post(client, REQUEST)
    assert reply.status_code == 201, reply.text
    assert reply.json()["resourceType"] == "OperationOutcome"
    order = review.get_order(db, "FH1001", settings)
    assert (order["patient_id"], order["patient_name"], order["patient_birth_date"], order["patient_sex"]) == \
        ("SM200100", "GARCIA^LUIS", "19500203", "M")
    assert (order["priority"], order["modality"], order["egfr"]) == ("STAT", "CT", 24.0)
    assert order["indication"] == "Pleuritic chest pain, raised D-dimer; Patient on the ward, bed 12"
    assert order["scheduled_at"] == "2026-11-29T08:00:00Z"
    assert order["ordering_physician"] == "Dr Meredith Grey" and order["source"] == "fhir"
    assert order["site"] == "Test Hospital"
    assert order["suggestion"]["name"] == "ct_chest_pe"
    assert any("eGFR below 30" in hint for hint in order["hints"])


def test_r4b_shape_update_and_cancel(client, db):
    r4 = copy.deepcopy(REQUEST)
    r4["code"] = {"coding": [{"code": "KNEE-MR", "display": "MR KNEE"}]}
    r4["reasonCode"] = [{"text": "Twisting injury"}]
    r4["bodySite"] = [{"text": "Left knee"}]
    del r4["reason"]
    r4["identifier"][0]["value"] = "FH1002"
    assert post(client, r4).status_code == 201
    order = review.get_order(db, "FH1002")
    assert (order["modality"], order["laterality"], order["procedure_code"]) == ("MR", "LEFT", "KNEE-MR")
    r4["priority"] = "routine"
    assert post(client, r4).status_code == 200  # same accession: a change
    assert review.get_order(db, "FH1002")["priority"] == "ROUTINE"
    r4["status"] = "revoked"
    assert post(client, r4).status_code == 200
    assert review.get_order(db, "FH1002")["status"] == "cancelled"


@pytest.mark.parametrize("body, status, words", [
    ("{not json", 400, "not JSON"),
    ({"resourceType": "Patient", "id": "x"}, 400, "expected a FHIR ServiceRequest"),
    ({**REQUEST, "status": "bogus"}, 422, "status"),
    ({**REQUEST, "intent": "proposal"}, 422, "intent"),
    ({**REQUEST, "status": "draft"}, 422, "not handled"),
    ({**REQUEST, "identifier": []}, 422, "accession"),
    ({k: v for k, v in REQUEST.items() if k not in ("subject", "contained")}, 422, "subject"),
    ({**REQUEST, "code": {"text": ""}}, 422, "code"),
])
def test_bad_requests_get_an_operation_outcome_and_are_kept(client, db, body, status, words):
    reply = post(client, body)
    assert reply.status_code == status, reply.text
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome" and words in outcome["issue"][0]["diagnostics"]
    with db.reader() as session:
        (kept,) = session.scalars(select(OrderMessage)).all()
    assert kept.source == "fhir" and kept.ack_code in ("AE", "AR") and words in kept.error
