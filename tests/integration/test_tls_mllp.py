"""MLLP over TLS (security issue #19, finding 6): the HL7 order listener with hl7.tls_* against a
Python ssl client, the deadline of the handshake and the connection limits under TLS, the peer
address handed to the handler, the report and order-notice senders to a TLS RIS, and the refusal
to listen off loopback without TLS. Certificates: tests/integration/tls_certs.py (openssl)."""

from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest
from sqlalchemy import select

from readingroom.errors import ConfigError, ReadingRoomError
from readingroom.hl7 import build_ack, read_ack
from readingroom.mllp import EVICT_AFTER_S, FrameReader, MLLPError, MLLPServer, frame, send
from readingroom.schema import OrderMessage
from readingroom.settings import HL7Peer
from readingroom.tls import client_context, peer_context, server_context
from tests.conftest import make_settings
from tests.integration.tls_certs import make_pki
from tests.orders_helpers import build_orm
from orders.listener import OrderListener

pytestmark = pytest.mark.integration

IDLE_S = 1.5             # hl7.idle_timeout_s: also the deadline of the TLS handshake
PROMPT_S = 1.0
SLACK_S = 2.0
SITES = [{"name": "Test Hospital", "ae_titles": ["TEST_SCU"]}, {"name": "STMARY", "ae_titles": ["STMARY_CT"]}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_hl7(pki, **more) -> dict:
    return {"port": 0, "tls_certfile": str(pki.server_cert), "tls_keyfile": str(pki.server_key),
            "tls_ca_file": str(pki.ca), "idle_timeout_s": IDLE_S, **more}


@pytest.fixture
def settings(tmp_path, pki):
    return make_settings(tmp_path / "home", sites=SITES, hl7=tls_hl7(pki))


@pytest.fixture
def orders(settings, db):
    listener = OrderListener(settings, db).start()
    yield listener
    listener.stop()


def ris_context(pki, with_client_cert: bool = True) -> ssl.SSLContext:
    return client_context(str(pki.ca), str(pki.client_cert) if with_client_cert else "",
                          str(pki.client_key) if with_client_cert else "")


def kept(db) -> list[OrderMessage]:
    with db.reader() as session:
        return list(session.scalars(select(OrderMessage).order_by(OrderMessage.id)))


def test_a_tls_client_with_a_certificate_sends_an_order_and_gets_aa(orders, db, pki):
    reply = send("127.0.0.1", orders.port, build_orm("TLS1001"), ssl_context=ris_context(pki))
    assert read_ack(reply).code == "AA", reply
    (message,) = kept(db)
    assert message.peer.startswith("127.0.0.1:")      # the address readingroom.mllp hands the handler


def test_plain_mllp_and_clients_without_a_trusted_certificate_are_refused(orders, db, pki, caplog):
    caplog.set_level("WARNING", logger="readingroom.mllp")
    with pytest.raises(MLLPError):
        send("127.0.0.1", orders.port, build_orm("TLS1002"), timeout_s=5)
    with pytest.raises(MLLPError):
        send("127.0.0.1", orders.port, build_orm("TLS1003"), timeout_s=5,
             ssl_context=ris_context(pki, with_client_cert=False))
    rogue = client_context(str(pki.ca), str(pki.rogue_cert), str(pki.rogue_key))
    with pytest.raises(MLLPError):
        send("127.0.0.1", orders.port, build_orm("TLS1004"), timeout_s=5, ssl_context=rogue)
    assert kept(db) == []
    assert "TLS handshake failed" in caplog.text and "hl7.tls_ca_file" in caplog.text
    # a client that does not trust our certificate stops by itself, with a clear error
    with pytest.raises(MLLPError, match="TLS failed"):
        send("127.0.0.1", orders.port, build_orm("TLS1005"), timeout_s=5,
             ssl_context=client_context(str(pki.rogue_cert)))
    assert read_ack(send("127.0.0.1", orders.port, build_orm("TLS1006"), ssl_context=ris_context(pki))).code == "AA"


def client_hello() -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return False


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, every_s: float) -> None:
    for byte in data:
        if stop.wait(every_s):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return


def test_half_open_handshakes_are_dropped_at_the_deadline_while_a_sender_gets_through(orders, db, pki):
    silent = [socket.create_connection(("127.0.0.1", orders.port), timeout=10) for _ in range(4)]
    trickler = socket.create_connection(("127.0.0.1", orders.port), timeout=10)
    stop = threading.Event()
    threading.Thread(target=trickle, args=(trickler, client_hello(), stop, 0.1), daemon=True).start()
    started = time.monotonic()
    try:
        time.sleep(0.2)
        began = time.monotonic()
        reply = send("127.0.0.1", orders.port, build_orm("TLS2001"), ssl_context=ris_context(pki))
        assert read_ack(reply).code == "AA" and time.monotonic() - began < PROMPT_S
        attackers = [*silent, trickler]
        assert all(closed_within(sock, IDLE_S + SLACK_S) for sock in attackers)
        elapsed = time.monotonic() - started
        assert IDLE_S - 0.3 < elapsed < IDLE_S + SLACK_S     # the trickler too: a deadline, not per read
    finally:
        stop.set()
        for sock in [*silent, trickler]:
            sock.close()


def test_max_connections_holds_under_tls_and_a_sender_takes_a_silent_ones_place(tmp_path, db, pki):
    settings = make_settings(tmp_path / "home", sites=SITES, hl7=tls_hl7(pki, idle_timeout_s=30, max_connections=4))
    listener = OrderListener(settings, db).start()
    silent = [socket.create_connection(("127.0.0.1", listener.port), timeout=10) for _ in range(4)]
    try:
        time.sleep(EVICT_AFTER_S + 0.3)   # silent long enough to make room; the handshake deadline is far
        reply = send("127.0.0.1", listener.port, build_orm("TLS3001"), ssl_context=ris_context(pki))
        assert read_ack(reply).code == "AA"
        assert sum(closed_within(sock, 0.5) for sock in silent) == 1   # one made room, long before 30 s
    finally:
        for sock in silent:
            sock.close()
        listener.stop()


def test_the_handler_gets_the_peer_address_when_it_asks_for_it():
    seen = []
    server = MLLPServer(("127.0.0.1", 0), lambda text, peer: seen.append(peer) or build_ack(text, "AA"),
                        with_peer=True).start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(frame(build_orm("PEER1")))
            assert read_ack(FrameReader(sock).read()).code == "AA"
            assert seen == [sock.getsockname()[:2]]          # (host, port) of this very connection
    finally:
        server.stop()


def test_senders_use_tls_where_the_destination_says_so(tmp_path, pki):
    """The ORU of a signed report goes to a RIS that requires TLS and our client certificate."""
    from tests.test_report_delivery import Stack

    received: list[str] = []
    ris = MLLPServer(("127.0.0.1", 0), lambda text: received.append(text) or build_ack(text, "AA"),
                     ssl_context=server_context(str(pki.server_cert), str(pki.server_key), str(pki.ca), "ris"))
    ris.start()
    try:
        destination = {"host": "127.0.0.1", "port": ris.port, "tls_ca_file": str(pki.ca),
                       "tls_certfile": str(pki.client_cert), "tls_keyfile": str(pki.client_key)}
        stack = Stack(tmp_path / "home", {"hl7": destination})
        report_id = stack.signed()
        stack.drain()
        row = stack.service.delivery_status(report_id)[0]
        assert row["status"] == "delivered" and row["acknowledgement"].startswith("AA"), row
        assert len(received) == 1 and "ORU^R01" in received[0]
        stack.db.dispose()
        # the same destination without TLS (or without our certificate) is not answered
        plain = HL7Peer(host="127.0.0.1", port=ris.port, timeout_s=3)
        assert peer_context(plain) is None
        with pytest.raises(MLLPError):
            send(plain.host, plain.port, received[0], timeout_s=3, ssl_context=peer_context(plain))
        bare = HL7Peer(host="127.0.0.1", port=ris.port, tls_ca_file=str(pki.ca))
        with pytest.raises(MLLPError):
            send(bare.host, bare.port, received[0], timeout_s=3, ssl_context=peer_context(bare))
        assert len(received) == 1
    finally:
        ris.stop()


def test_order_notices_go_over_tls_to_the_sites_ris(tmp_path, pki):
    from readingroom.db import Database, sync_sites
    from orders import review
    from orders.store import receive_hl7

    received: list[str] = []
    ris = MLLPServer(("127.0.0.1", 0), lambda text: received.append(text) or build_ack(text, "AA"),
                     ssl_context=server_context(str(pki.server_cert), str(pki.server_key), str(pki.ca), "ris"))
    ris.start()
    destination = {"host": "127.0.0.1", "port": ris.port, "tls": True, "tls_ca_file": str(pki.ca),
                   "tls_certfile": str(pki.client_cert), "tls_keyfile": str(pki.client_key)}
    settings = make_settings(tmp_path / "home", sites=[{"name": "STMARY", "ae_titles": ["STMARY_CT"],
                                                        "destinations": {"hl7": destination}}])
    db = Database(settings)
    try:
        db.upgrade()
        sync_sites(db, ["STMARY"])
        assert read_ack(receive_hl7(db, settings, build_orm("TLS4001", facility="STMARY"))).code == "AA"
        review.OrderNoticeSender(db, settings)({"accession": "TLS4001", "kind": "rejection",
                                                "text": "Wrong protocol requested."})
        assert len(received) == 1 and "TLS4001" in received[0]
    finally:
        db.dispose()
        ris.stop()


# -- where the listener may listen ----------------------------------------------------------------
def test_the_order_listener_refuses_0_0_0_0_without_tls_and_starts_when_allowed(tmp_path, db, pki):
    plain = make_settings(tmp_path / "a", hl7={"port": 0, "host": "0.0.0.0"})
    with pytest.raises(ReadingRoomError, match="hl7.allow_insecure_remote") as refused:
        OrderListener(plain, db).start()
    assert "hl7.tls_certfile" in str(refused.value)
    allowed = make_settings(tmp_path / "b", hl7={"port": 0, "host": "0.0.0.0", "allow_insecure_remote": True})
    listener = OrderListener(allowed, db).start()
    try:
        assert read_ack(send("127.0.0.1", listener.port, build_orm("TLS5001"))).code == "AA"
    finally:
        listener.stop()
    tls = make_settings(tmp_path / "c", sites=SITES, hl7=tls_hl7(pki, host="0.0.0.0"))
    listener = OrderListener(tls, db).start()
    try:
        assert read_ack(send("127.0.0.1", listener.port, build_orm("TLS5002"), ssl_context=ris_context(pki))).code \
            == "AA"
    finally:
        listener.stop()


def test_hl7_tls_settings_are_checked(tmp_path, db, pki):
    with pytest.raises(ConfigError, match="hl7.tls_keyfile"):
        make_settings(tmp_path / "h", hl7={"tls_certfile": str(pki.server_cert)})
    with pytest.raises(ConfigError, match="hl7.tls_ca_file requires"):
        make_settings(tmp_path / "h", hl7={"tls_ca_file": str(pki.ca)})
    with pytest.raises(ValueError, match="destinations.hl7.tls_certfile is set but TLS is off"):
        HL7Peer(host="h", port=1, tls_certfile="c.pem", tls_keyfile="k.pem")
    broken = make_settings(tmp_path / "h", hl7={"port": 0, "tls_certfile": str(pki.server_cert),
                                                "tls_keyfile": str(pki.server_key), "tls_ca_file": str(tmp_path)})
    with pytest.raises(ConfigError, match="hl7.tls_ca_file"):
        OrderListener(broken, db).start()
