"""MLLP framing over a real socket: messages, split frames, garbage, a handler that fails."""

import socket

import pytest

from readingroom.mllp import END_BLOCK, START_BLOCK, FrameReader, MLLPError, MLLPServer, frame, send

MSG = "MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||123"


@pytest.fixture
def echo_server():
    seen: list[str] = []

    def handle(text: str) -> str:
        seen.append(text)
        if "BOOM" in text:
            raise RuntimeError("handler bug")
        return "ACK:" + text.split("\r")[0]

    server = MLLPServer(("127.0.0.1", 0), handle).start()
    yield server, seen
    server.stop()


def test_round_trip_and_several_messages_per_connection(echo_server):
    server, seen = echo_server
    assert send("127.0.0.1", server.port, MSG) == "ACK:" + MSG.split("\r")[0]
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        # garbage before the frame, and one frame split across two writes
        sock.sendall(b"noise" + frame("first")[:3])
        sock.sendall(frame("first")[3:] + frame("second"))
        reader = FrameReader(sock)
        assert reader.read() == "ACK:first"
        assert reader.read() == "ACK:second"
    assert seen[-2:] == ["first", "second"]


def test_failing_handler_keeps_the_listener_serving(echo_server):
    server, _ = echo_server
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(frame("BOOM") + frame("after"))
        assert FrameReader(sock).read() == "ACK:after"


def test_unreachable_peer_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(MLLPError, match="check the host"):
        send("127.0.0.1", port, MSG, timeout_s=2)


def test_frame_bytes():
    assert frame("x") == START_BLOCK + b"x" + END_BLOCK
