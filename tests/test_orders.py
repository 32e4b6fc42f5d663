"""Order intake over a real MLLP socket, request review, protocoling and rejection to the RIS."""

import socket
import threading

import pytest
from sqlalchemy import select

from readingroom.mllp import MLLPServer, frame, send
from readingroom.schema import Order, OrderMessage
from tests.conftest import make_settings
from tests.orders_helpers import build_orm, hl7_file
from orders import review
from orders.common import OrderError
from orders.hl7 import ack_code
from orders.listener import OrderListener
from orders.review import SEND_JOB, OrderNoticeSender


@pytest.fixture
def hl7(settings, db):
    listener = OrderListener(settings, db).start()
    yield listener
    listener.stop()


def deliver(listener, text):
    return send("127.0.0.1", listener.port, text)


def order(db, accession):
    with db.reader() as session:
        return session.scalar(select(Order).where(Order.accession == accession))


def messages(db):
    with db.reader() as session:
        return list(session.scalars(select(OrderMessage).order_by(OrderMessage.id)))


def test_new_order_over_mllp_is_stored_with_hints(hl7, db):
    reply = deliver(hl7, hl7_file("orm_o01_v23_zsegments.hl7"))
    assert ack_code(reply) == "AA" and "STM000123" in reply
    stored = order(db, "SM24101")
    assert (stored.status, stored.priority, stored.modality, stored.egfr) == ("new", "STAT", "CT", 54.0)
    assert stored.site_name == "STMARY"  # no site claims facility STMARY in the test settings
    assert any("Contrast allergy" in hint for hint in stored.hints)
    (kept,) = messages(db)
    assert (kept.ack_code, kept.control_id, kept.order_id, kept.error) == ("AA", "STM000123", stored.id, "")


@pytest.mark.parametrize("name, accession, version", [("omi_o23_v251.hl7", "NS8810", "2.5.1"),
                                                     ("orm_o01_v22_minimal.hl7", "P77", "2.2")])
def test_other_versions_and_shapes_over_mllp(hl7, db, name, accession, version):
    reply = deliver(hl7, hl7_file(name))
    assert ack_code(reply) == "AA" and f"|{version}" in reply.split("\r")[0]  # answered in the sender's version
    assert order(db, accession).hl7_version == version


def test_site_is_found_by_its_ris_facility(tmp_path):
    from readingroom.settings import load_settings
    from orders.store import site_for_facility

    settings = make_settings(tmp_path, sites=[{"name": "St. Mary's", "destinations": {
        "hl7": {"host": "127.0.0.1", "port": 1, "facility": "STMARY"}}}])
    assert site_for_facility(settings, "STMARY") == "St. Mary's"
    assert site_for_facility(settings, "ELSEWHERE") == "ELSEWHERE"
    assert load_settings(environ={}).hl7.port == 2575


def test_change_and_cancel(hl7, db):
    assert ack_code(deliver(hl7, build_orm("SM24002"))) == "AA"
    reply = deliver(hl7, build_orm("SM24002", control="XO", priority="S", indication="Now short of breath"))
    assert ack_code(reply) == "AA"
    changed = order(db, "SM24002")
    assert (changed.priority, changed.indication, changed.status) == ("STAT", "Now short of breath", "new")
    assert ack_code(deliver(hl7, build_orm("SM24002", control="CA"))) == "AA"
    assert order(db, "SM24002").status == "cancelled"
    history = [e["kind"] for e in review.get_order(db, "SM24002")["events"]]
    assert history == ["created", "changed", "cancelled"]


def test_change_after_approval_sends_the_order_back_for_review(hl7, db, settings):
    deliver(hl7, build_orm("SM24003"))
    review.approve(db, settings, "SM24003")
    deliver(hl7, build_orm("SM24003", control="XO", procedure="XRCHEST^XR CHEST 1 VIEW PORTABLE"))
    assert order(db, "SM24003").status == "new"


@pytest.mark.parametrize("text, code, words", [
    ("not hl7 at all", "AR", "MSH"),
    ("MSH|^~\\&|A|B|C|D|20261129||ADT^A01|1|P|2.5\rPID|1||X", "AR", "not supported"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|9|P|2.3\rPID|1||\rORC|NW|P1\rOBR|1|P1||CT^CT HEAD", "AE", "PID-3"),
])
def test_malformed_messages_get_ae_or_ar_and_are_kept(hl7, db, text, code, words):
    reply = deliver(hl7, text)
    assert ack_code(reply) == code and words in reply
    (kept,) = messages(db)
    assert kept.raw == text and kept.ack_code == code and words in kept.error


def test_unknown_order_and_duplicate_new_are_errors(hl7, db):
    assert "no order NOPE" in deliver(hl7, build_orm("NOPE", control="CA"))
    deliver(hl7, build_orm("SM24004"))
    reply = deliver(hl7, build_orm("SM24004", control_id="another-id"))
    assert ack_code(reply) == "AE" and "already exists" in reply


def test_a_resent_message_is_acknowledged_once_applied(hl7, db):
    text = build_orm("SM24005")
    assert ack_code(deliver(hl7, text)) == "AA"
    assert ack_code(deliver(hl7, text)) == "AA"  # the RIS missed our ACK and sends again
    assert [m.ack_code for m in messages(db)] == ["AA", "AA"]
    assert "duplicate" in messages(db)[1].error


def test_several_messages_on_one_connection_and_a_broken_frame(hl7, db):
    from readingroom.mllp import FrameReader

    with socket.create_connection(("127.0.0.1", hl7.port), timeout=10) as sock:
        reader = FrameReader(sock)
        sock.sendall(b"noise before the frame" + frame(build_orm("SM24006")))
        assert ack_code(reader.read()) == "AA"
        sock.sendall(frame(build_orm("SM24007")))
        assert ack_code(reader.read()) == "AA"
    assert order(db, "SM24006") and order(db, "SM24007")


def test_review_suggests_and_approves_the_thunderclap_protocol(hl7, db, settings):
    deliver(hl7, hl7_file("orm_o01_v23_zsegments.hl7"))
    shown = review.get_order(db, "SM24101", settings)
    assert shown["suggestion"]["name"] == "ct_head_sah"
    approved = review.approve(db, settings, "SM24101", protocol_edits={"slice_thickness_mm": 1.0}, user="dr.a")
    assert approved["status"] == "approved" and approved["protocol_name"] == "ct_head_sah"
    protocol = approved["protocol"]
    assert protocol["slice_thickness_mm"] == 1.0 and protocol["edited"] == ["slice_thickness_mm"]
    assert approved["study_uid"] == "1.2.840.113619.2.55.3.2609.24101"  # the RIS's own UID is kept
    with pytest.raises(OrderError, match="is approved"):
        review.approve(db, settings, "SM24101")
    changed = review.set_protocol(db, settings, "SM24101", "ct_head_noncontrast")
    assert changed["protocol"]["contrast"] == "none"


def test_approve_needs_a_protocol_that_exists(hl7, db, settings):
    deliver(hl7, build_orm("SM24008", procedure="ZZ99^SOMETHING UNUSUAL", modality="OT"))
    with pytest.raises(OrderError, match="no protocol fits"):
        review.approve(db, settings, "SM24008")
    with pytest.raises(OrderError, match="choose one of"):
        review.approve(db, settings, "SM24008", "no_such_protocol")
    with pytest.raises(OrderError, match="cannot edit"):
        review.approve(db, settings, "SM24008", "xr_chest", {"colour": "blue"})
    assert review.approve(db, settings, "SM24008", "xr_chest")["status"] == "approved"
    with pytest.raises(OrderError, match="no order"):
        review.approve(db, settings, "MISSING")


def test_question_then_approve(hl7, db, settings):
    deliver(hl7, build_orm("SM24009", indication=""))
    assert any("No clinical indication" in h for h in review.get_order(db, "SM24009")["hints"])
    with pytest.raises(OrderError, match="empty"):
        review.ask(db, "SM24009", "  ")
    assert review.ask(db, "SM24009", "What is the clinical question?")["status"] == "question"
    assert [o["accession"] for o in review.list_orders(db, status="question")] == ["SM24009"]
    assert review.approve(db, settings, "SM24009")["status"] == "approved"


def test_the_answer_to_a_question_comes_back_as_a_change(hl7, db, settings):
    deliver(hl7, build_orm("SM24013", indication=""))
    review.ask(db, "SM24013", "What is the clinical question?")
    deliver(hl7, build_orm("SM24013", control="XO", indication="Fever and cough"))
    answered = review.get_order(db, "SM24013")
    assert (answered["status"], answered["indication"]) == ("new", "Fever and cough")
    assert not any("No clinical indication" in h for h in answered["hints"])


class FakeRis:
    """A real MLLP peer that records what it receives and answers AA (or AE)."""

    def __init__(self, answer="AA"):
        self.received = []
        self.answer = answer
        self.server = MLLPServer(("127.0.0.1", 0), self.handle).start()

    def handle(self, text):
        self.received.append(text)
        control = text.split("\r")[0].split("|")[9]
        return f"MSH|^~\\&|RIS|STMARY|READINGROOM|READINGROOM|20261129||ACK^O01|A1|P|2.5.1\rMSA|{self.answer}|{control}"


@pytest.fixture
def ris():
    peer = FakeRis()
    yield peer
    peer.server.stop()


def _site_settings(tmp_path, ris_port):
    return make_settings(tmp_path / "home2", sites=[{
        "name": "St. Mary's", "ae_titles": ["STMARY_CT"],
        "destinations": {"hl7": {"host": "127.0.0.1", "port": ris_port, "facility": "STMARY", "application": "RIS",
                                 "timeout_s": 5}}}])


def test_rejection_goes_back_to_the_site_ris(tmp_path, ris):
    from readingroom.db import Database
    from readingroom.jobs import DatabaseJobQueue, WorkerPool
    from orders.store import receive_hl7

    settings = _site_settings(tmp_path, ris.server.port)
    db = Database(settings)
    db.upgrade()
    try:
        assert ack_code(receive_hl7(db, settings, build_orm("SM24010"))) == "AA"
        assert review.get_order(db, "SM24010")["site"] == "St. Mary's"
        queue = DatabaseJobQueue(db, settings.jobs)
        with pytest.raises(OrderError, match="needs a reason"):
            review.reject(db, settings, queue, "SM24010", "")
        review.reject(db, settings, queue, "SM24010", "Duplicate of SM23990", user="dr.a")
        pool = WorkerPool(queue, settings.jobs, {SEND_JOB: OrderNoticeSender(db, settings)})
        assert pool.run_once()
        (sent,) = ris.received
        assert "|OC|" in sent and "Duplicate of SM23990" in sent and "|RIS|STMARY|" in sent
        kinds = [e["kind"] for e in review.get_order(db, "SM24010")["events"]]
        assert kinds[-2:] == ["rejected", "rejection_sent"]
        with pytest.raises(OrderError, match="is rejected"):
            review.reject(db, settings, queue, "SM24010", "again")
    finally:
        db.dispose()


def test_question_goes_to_the_ris_as_a_held_order(tmp_path, ris):
    from readingroom.db import Database
    from readingroom.jobs import DatabaseJobQueue, WorkerPool
    from readingroom.hl7 import Segment
    from orders.store import receive_hl7

    settings = _site_settings(tmp_path, ris.server.port)
    db = Database(settings)
    db.upgrade()
    try:
        receive_hl7(db, settings, build_orm("SM24012", procedure="XRHAND^XR HAND"))
        queue = DatabaseJobQueue(db, settings.jobs)
        review.ask(db, "SM24012", "Which hand: left ^ right?", user="dr.a", queue=queue)
        assert WorkerPool(queue, settings.jobs, {SEND_JOB: OrderNoticeSender(db, settings)}).run_once()
        (sent,) = ris.received
        orc = next(Segment(line, "|^~\\&") for line in sent.split("\r") if line.startswith("ORC"))
        assert (orc.component(1), orc.component(5), orc.component(16, 2)) == ("OH", "HD", "Which hand: left ^ right?")
        assert review.get_order(db, "SM24012")["events"][-1]["kind"] == "question_sent"
    finally:
        db.dispose()


def test_rejection_is_retried_when_the_ris_is_down(tmp_path):
    from readingroom.db import Database
    from readingroom.jobs import DatabaseJobQueue, WorkerPool
    from tests.conftest import free_port
    from orders.store import receive_hl7

    settings = _site_settings(tmp_path, free_port())  # nobody listens there
    db = Database(settings)
    db.upgrade()
    try:
        receive_hl7(db, settings, build_orm("SM24011"))
        queue = DatabaseJobQueue(db, settings.jobs)
        review.reject(db, settings, queue, "SM24011", "Wrong patient")
        WorkerPool(queue, settings.jobs, {SEND_JOB: OrderNoticeSender(db, settings)}).run_once()
        (job,) = queue.list()
        assert job.status == "queued" and job.attempts == 1 and "cannot deliver HL7" in job.last_error
    finally:
        db.dispose()


def test_concurrent_senders(hl7, db):
    errors = []

    def send_some(start):
        for i in range(start, start + 10):
            reply = deliver(hl7, build_orm(f"C{i:04d}"))
            if ack_code(reply) != "AA":
                errors.append(reply)

    threads = [threading.Thread(target=send_some, args=(n * 100,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(review.list_orders(db)) == 30


def test_listener_port_in_use_says_what_to_do(settings, db, hl7):
    from readingroom.errors import ReadingRoomError

    taken = settings.model_copy(update={"hl7": settings.hl7.model_copy(update={"port": hl7.port})})
    with pytest.raises(ReadingRoomError, match="READINGROOM_HL7__PORT"):
        OrderListener(taken, db).start()


def test_intake_service_starts_the_order_listener_only_when_enabled(tmp_path, db, queue):
    from triage.service import IntakeService

    assert IntakeService(make_settings(tmp_path / "a"), db, queue).orders is not None
    assert IntakeService(make_settings(tmp_path / "b", hl7={"enabled": False}), db, queue).orders is None
