"""Denial of service on the HL7 port (security issue #19, finding 8), with raw sockets.

Half-sent frames must not take a thread each (hl7.max_connections) nor stay forever
(hl7.idle_timeout_s), nor keep a real sender out; an oversize message is answered AR with the
limit, and not stored.
"""

from __future__ import annotations

import logging
import socket
import threading
import time

from datetime import datetime, timezone

import pytest

from readingroom.hl7 import build_ack, read_ack
from readingroom.mllp import EVICT_AFTER_S, START_BLOCK, FrameReader, MLLPError, MLLPServer, frame, send
from orders.listener import OrderListener
from tests.conftest import make_settings

IDLE_S = 1.0             # hl7.idle_timeout_s of the idle test
FLOOD_IDLE_S = 10.0      # ... and of the flood test, where the real sender must not wait for it
SLACK_S = 2.0
MSG = (f"MSH|^~\\&|RIS|HOSP|READINGROOM|READINGROOM|{datetime.now(timezone.utc):%Y%m%d%H%M%S}||ORM^O01|CTRL123|P|"
       "2.5.1\rPID|1||123")   # sent now: no test depends on the date


@pytest.fixture
def server(request):
    idle_s = getattr(request, "param", IDLE_S)
    server = MLLPServer(("127.0.0.1", 0), lambda text: build_ack(text, "AA"),
                        idle_timeout_s=idle_s, max_connections=8, max_message_bytes=64 * 1024).start()
    yield server
    server.stop()


def half_frame(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(START_BLOCK + b"MSH|^~\\&|RIS|HOSP")
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


@pytest.mark.parametrize("server", [FLOOD_IDLE_S], indirect=True)
def test_half_sent_frames_take_at_most_max_connections_and_keep_no_sender_out(server, caplog):
    caplog.set_level(logging.WARNING, logger="readingroom.mllp")
    threads_before = threading.active_count()
    start = time.monotonic()
    attackers = [half_frame(server.port) for _ in range(60)]
    try:
        time.sleep(0.3)
        assert server.open_connections == 8
        assert threading.active_count() - threads_before <= 8
        refused = [sock for sock in attackers if closed_within(sock, 0.05)]
        assert len(refused) == 52                      # closed as soon as they were accepted
        assert "hl7.max_connections" in caplog.text
        # a real sender gets through as soon as a silent connection can make room for it, long
        # before the silent ones time out (hl7.idle_timeout_s)
        while True:
            try:
                reply = send("127.0.0.1", server.port, MSG, timeout_s=5)
                break
            except MLLPError:
                assert time.monotonic() - start < EVICT_AFTER_S + SLACK_S, "the real sender never got through"
                time.sleep(0.1)
        assert read_ack(reply).code == "AA"
        assert time.monotonic() - start < EVICT_AFTER_S + SLACK_S < FLOOD_IDLE_S
        assert "to make room for one from 127.0.0.1" in caplog.text
        assert server.open_connections <= 8
    finally:
        for sock in attackers:
            sock.close()


def test_an_idle_connection_is_closed_after_the_idle_timeout(server):
    sock = half_frame(server.port)
    start = time.monotonic()
    try:
        assert not closed_within(sock, IDLE_S / 2)
        assert closed_within(sock, IDLE_S + SLACK_S)
        assert time.monotonic() - start >= IDLE_S * 0.9
    finally:
        sock.close()


@pytest.fixture
def orders(tmp_path, db):
    settings = make_settings(tmp_path / "home", hl7={"port": 0, "max_message_bytes": 65536})
    listener = OrderListener(settings, db)
    listener.seen = []
    listener.handle = lambda text, address=None: listener.seen.append(text) or build_ack(text, "AA")
    listener.start()
    yield listener
    listener.stop()


@pytest.mark.parametrize("size", [65536 + 100, 8 * 1024 * 1024], ids=["just-over", "8MiB"])
def test_an_oversize_message_is_answered_ar_with_the_limit(orders, size):
    filler = "\rNTE|1||" + "x" * size
    with socket.create_connection(("127.0.0.1", orders.port), timeout=10) as sock:
        sock.sendall(frame(MSG + filler))   # the listener reads (and drops) it all, so this returns
        reader = FrameReader(sock)
        reply = reader.read()
        ack = read_ack(reply)
        assert ack.code == "AR"
        assert ack.control_id == "CTRL123"
        assert "65536-byte limit (hl7.max_message_bytes)" in ack.text
        assert reply.startswith("MSH|^~\\&|READINGROOM|READINGROOM|RIS|HOSP|")
        assert reader.read() is None        # and the connection is closed
    assert orders.seen == []
    # the next message, of a normal size, is taken as usual
    assert read_ack(send("127.0.0.1", orders.port, MSG)).code == "AA"
    assert orders.seen == [MSG]
