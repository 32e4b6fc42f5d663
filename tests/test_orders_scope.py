"""Orders are scoped by site (security issue #19, finding 2).

A site's HL7 messages act on that site's orders only, and must come from the site's allowed
addresses when it lists any; a user lists, opens and acts on the orders of their own sites only;
a FHIR ServiceRequest takes its site from the account that posts it."""

from __future__ import annotations

import json
import types

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from readingroom.access import NotVisible
from readingroom.auth import add_user
from readingroom.db import Database, sync_sites
from readingroom.errors import ConfigError
from readingroom.mllp import send
from readingroom.schema import Order, OrderMessage
from tests.conftest import make_settings
from tests.orders_helpers import build_orm
from orders import review
from orders.common import OrderError
from orders.hl7 import ack_code
from orders.listener import OrderListener
from orders.store import check_source_address, receive_hl7

STMARY, NORTHSIDE = "St. Mary's Hospital", "Northside Clinic"
PASSWORD = "a-long-password-1"


def scoped_settings(tmp_path, stmary_addresses=(), northside_addresses=()):
    return make_settings(tmp_path / "home", sites=[
        {"name": STMARY, "ae_titles": ["STMARY_CT"], "hl7": {"allowed_addresses": list(stmary_addresses)}},
        {"name": NORTHSIDE, "ae_titles": ["NORTHSIDE_MR"], "hl7": {"allowed_addresses": list(northside_addresses)}},
    ])


def open_db(settings):
    database = Database(settings)
    database.upgrade()
    sync_sites(database, [s.name for s in settings.sites])
    return database


@pytest.fixture
def two_sites(tmp_path):
    settings = scoped_settings(tmp_path)
    database = open_db(settings)
    yield settings, database
    database.dispose()


def stored(db, accession):
    with db.reader() as session:
        return session.scalar(select(Order).where(Order.accession == accession))


def kept_messages(db):
    with db.reader() as session:
        return list(session.scalars(select(OrderMessage).order_by(OrderMessage.id)))


# -- HL7: a site changes only its own orders -----------------------------------------------------
def test_a_northside_cancel_of_a_st_marys_order_is_refused_and_the_order_stays(two_sites):
    settings, db = two_sites
    assert ack_code(receive_hl7(db, settings, build_orm("SM5001", facility=STMARY))) == "AA"
    assert stored(db, "SM5001").site_name == STMARY

    cancel = build_orm("SM5001", control="CA", facility=NORTHSIDE, control_id="NS-CA-1")
    reply = receive_hl7(db, settings, cancel, peer="10.9.9.9:4000", address="10.9.9.9")
    assert ack_code(reply) == "AR"
    assert "a site may cancel only its own orders" in reply and STMARY not in reply
    order = stored(db, "SM5001")
    assert order.status == "new" and order.site_name == STMARY
    assert [e["kind"] for e in review.get_order(db, "SM5001")["events"]] == ["created"]
    refused = kept_messages(db)[-1]
    assert (refused.ack_code, refused.control_id, refused.raw) == ("AR", "NS-CA-1", cancel)
    assert "only its own orders" in refused.error and refused.peer == "10.9.9.9:4000"


def test_a_northside_change_or_reuse_of_a_st_marys_accession_is_refused(two_sites):
    settings, db = two_sites
    receive_hl7(db, settings, build_orm("SM5002", facility=STMARY, priority="R"))
    change = receive_hl7(db, settings, build_orm("SM5002", control="XO", facility=NORTHSIDE, priority="S"))
    assert ack_code(change) == "AR" and "may change only its own orders" in change
    again = receive_hl7(db, settings, build_orm("SM5002", facility=NORTHSIDE, control_id="NS-NW-2"))
    assert ack_code(again) == "AR" and "another site" in again and "new" not in again.split("|AR|")[1]
    order = stored(db, "SM5002")
    assert (order.priority, order.status, order.site_name) == ("ROUTINE", "new", STMARY)
    # the owner still may
    assert ack_code(receive_hl7(db, settings, build_orm("SM5002", control="CA", facility=STMARY))) == "AA"
    assert stored(db, "SM5002").status == "cancelled"


# -- HL7: a site's RIS must send from its allowed addresses --------------------------------------
def test_a_message_from_an_address_the_site_does_not_allow_is_refused_over_mllp(tmp_path):
    settings = scoped_settings(tmp_path, stmary_addresses=["10.1.2.0/24"], northside_addresses=["127.0.0.1"])
    db = open_db(settings)
    listener = OrderListener(settings, db).start()
    try:
        reply = send("127.0.0.1", listener.port, build_orm("SM5003", facility=STMARY, control_id="SM-NW-3"))
        assert ack_code(reply) == "AR" and "not accepted from 127.0.0.1" in reply
        assert stored(db, "SM5003") is None
        (refused,) = kept_messages(db)
        assert refused.ack_code == "AR" and refused.control_id == "SM-NW-3"
        assert refused.peer.startswith("127.0.0.1:") and "allowed_addresses" in refused.error
        # the site that allows loopback is heard
        assert ack_code(send("127.0.0.1", listener.port, build_orm("NS5003", facility=NORTHSIDE))) == "AA"
        assert stored(db, "NS5003").site_name == NORTHSIDE
    finally:
        listener.stop()
        db.dispose()


def test_allowed_addresses_are_networks_and_an_unknown_address_is_refused(tmp_path):
    from orders.common import SenderNotAllowed

    settings = scoped_settings(tmp_path, stmary_addresses=["10.1.2.0/24", "2001:db8::/32"])
    for address in ("10.1.2.7", "::ffff:10.1.2.7", "2001:db8::5"):
        check_source_address(settings, STMARY, address)
    for address in ("10.1.3.7", None, "", "not-an-ip"):
        with pytest.raises(SenderNotAllowed, match="allowed_addresses"):
            check_source_address(settings, STMARY, address)
    check_source_address(settings, NORTHSIDE, None)        # lists none: any address
    check_source_address(settings, "Unknown site", "1.2.3.4")
    with pytest.raises(ConfigError, match="not an IP address or network"):
        scoped_settings(tmp_path, stmary_addresses=["10.1.2.0/33"])


# -- the review: a user acts on their sites' orders only -----------------------------------------
@pytest.fixture
def reviewed(two_sites):
    settings, db = two_sites
    receive_hl7(db, settings, build_orm("SM5100", facility=STMARY, procedure="XRCHEST^XR CHEST 2 VIEWS"))
    receive_hl7(db, settings, build_orm("NS5100", facility=NORTHSIDE, procedure="XRCHEST^XR CHEST 2 VIEWS"))
    add_user(db, "dr_north", PASSWORD, "radiologist", [NORTHSIDE])
    add_user(db, "dr_all", PASSWORD, "radiologist", ["*"])
    add_user(db, "boss", PASSWORD, "admin")
    return settings, db


def test_a_radiologist_does_not_list_or_open_another_sites_order(reviewed):
    settings, db = reviewed
    assert [o["accession"] for o in review.list_orders(db, as_user="dr_north")] == ["NS5100"]
    assert [o["accession"] for o in review.list_orders(db, site=STMARY, as_user="dr_north")] == []
    for user in ("dr_all", "boss", None):   # every site: "*", an admin, the command line
        assert {o["accession"] for o in review.list_orders(db, as_user=user)} == {"SM5100", "NS5100"}
    with pytest.raises(OrderError) as missing:
        review.get_order(db, "NOPE", settings, as_user="dr_north")
    with pytest.raises(OrderError) as foreign:
        review.get_order(db, "SM5100", settings, as_user="dr_north")
    assert str(foreign.value) == str(missing.value).replace("NOPE", "SM5100")   # told like a missing one
    with pytest.raises(OrderError, match="no order with accession"):
        review.suggest(db, settings, "SM5100", as_user="dr_north")
    assert review.get_order(db, "NS5100", settings, as_user="dr_north")["site"] == NORTHSIDE
    with pytest.raises(NotVisible):
        review.list_orders(db, as_user="nobody")


def test_a_radiologist_cannot_act_on_another_sites_order(reviewed, queue):
    settings, db = reviewed
    with pytest.raises(OrderError, match="no order with accession 'SM5100'"):
        review.approve(db, settings, "SM5100", protocol_name="xr_chest", user="dr_north", as_user="dr_north")
    with pytest.raises(OrderError, match="no order with accession 'SM5100'"):
        review.reject(db, settings, queue, "SM5100", "not indicated", user="dr_north", as_user="dr_north")
    with pytest.raises(OrderError, match="no order with accession 'SM5100'"):
        review.ask(db, "SM5100", "which side?", user="dr_north", queue=queue, as_user="dr_north")
    order = stored(db, "SM5100")
    assert (order.status, order.protocol_name, order.reviewed_by) == ("new", "", "")
    approved = review.approve(db, settings, "NS5100", user="dr_north", as_user="dr_north")
    assert approved["status"] == "approved"
    with pytest.raises(OrderError, match="no order with accession 'SM5100'"):
        review.set_protocol(db, settings, "SM5100", approved["protocol_name"], as_user="dr_north")


def test_the_requests_tab_lists_and_opens_the_users_sites_only(reviewed, queue):
    import gradio as gr

    from workstation.page_context import PageContext
    from workstation.tab_requests import build_requests

    settings, db = reviewed
    with gr.Blocks() as blocks:
        ctx = PageContext(settings=settings, db=db, queue=queue, wake=None, reports=None, blocks=blocks,
                          tabs=gr.Tabs(), open_uid=gr.State(""), live=gr.State(None),
                          critical_count=gr.Number(0, visible=False))
        tab = build_requests(ctx)
    rows = tab.list_requests("new", types.SimpleNamespace(username="dr_north"))
    assert [row[0] for row in rows] == ["NS5100"]
    assert sorted(row[0] for row in tab.list_requests("new", types.SimpleNamespace(username="boss"))) == \
        ["NS5100", "SM5100"]


# -- FHIR: the account gives the site -------------------------------------------------------------
SERVICE_REQUEST = {
    "resourceType": "ServiceRequest", "id": "sr-1", "status": "active", "intent": "order",
    "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "FS5200"}],
    "code": {"coding": [{"code": "XRCHEST", "display": "XR CHEST 2 VIEWS"}]},
    "subject": {"identifier": {"value": "P5200"}, "display": "DOE^JANE"},
}


@pytest.fixture
def fhir(two_sites):
    from orders.fhir import build_router

    settings, db = two_sites
    add_user(db, "stmary-ris", PASSWORD, "site", [STMARY])
    add_user(db, "north-ris", PASSWORD, "site", [NORTHSIDE])
    add_user(db, "dr_north", PASSWORD, "radiologist", [NORTHSIDE])
    add_user(db, "boss", PASSWORD, "admin")
    app = FastAPI()

    @app.middleware("http")
    async def session_user(request, call_next):   # what the web app's session gate tells the router
        if request.headers.get("x-test-session"):
            request.state.username = request.headers["x-test-session"]
        return await call_next(request)

    app.include_router(build_router(db, settings))
    return settings, db, TestClient(app)


def post(client, body=SERVICE_REQUEST, user="stmary-ris", site=None, headers=None):
    return client.post("/fhir/ServiceRequest", params={"site": site} if site else None, content=json.dumps(body),
                       headers={"Content-Type": "application/fhir+json", **(headers or {})},
                       auth=(user, PASSWORD) if user else None)


def test_a_site_account_posts_for_its_own_site(fhir):
    settings, db, client = fhir
    assert post(client).status_code == 201
    assert stored(db, "FS5200").site_name == STMARY
    assert post(client, site=STMARY).status_code == 200          # naming its own site is fine (a change)


@pytest.mark.parametrize("user, site, status, words", [
    ("stmary-ris", NORTHSIDE, 403, "its own site only"),
    ("dr_north", None, 403, "may not post orders"),
    (None, None, 401, "authentication required"),
])
def test_a_fhir_request_outside_the_accounts_site_is_refused(fhir, user, site, status, words):
    settings, db, client = fhir
    reply = post(client, user=user, site=site)
    assert reply.status_code == status, reply.text
    outcome = reply.json()
    assert outcome["resourceType"] == "OperationOutcome" and words in outcome["issue"][0]["diagnostics"]
    assert stored(db, "FS5200") is None
    if status == 401:
        assert reply.headers["www-authenticate"].startswith("Basic")
    else:
        assert kept_messages(db)[-1].ack_code == "AR" and words in kept_messages(db)[-1].error


def test_wrong_basic_credentials_are_401(fhir):
    settings, db, client = fhir
    reply = client.post("/fhir/ServiceRequest", content=json.dumps(SERVICE_REQUEST), auth=("stmary-ris", "wrong"))
    assert reply.status_code == 401 and stored(db, "FS5200") is None


def test_an_admin_names_the_site_and_a_session_user_is_read_from_the_web_app(fhir):
    settings, db, client = fhir
    assert post(client, user="boss", site=NORTHSIDE).status_code == 201
    assert stored(db, "FS5200").site_name == NORTHSIDE
    # a web session (request.state.username) counts as the account, no Basic credentials needed
    reply = post(client, user=None, headers={"x-test-session": "dr_north"})
    assert reply.status_code == 403 and "may not post orders" in reply.text


def test_a_site_account_cannot_cancel_another_sites_order(fhir):
    settings, db, client = fhir
    assert post(client, user="north-ris").status_code == 201
    revoked = {**SERVICE_REQUEST, "status": "revoked"}
    reply = post(client, revoked, user="stmary-ris")
    assert reply.status_code == 403 and "only its own orders" in reply.json()["issue"][0]["diagnostics"]
    order = stored(db, "FS5200")
    assert (order.status, order.site_name) == ("new", NORTHSIDE)
    assert post(client, revoked, user="north-ris").status_code == 200
    assert stored(db, "FS5200").status == "cancelled"
