"""MLLP, the framing HL7 v2 uses over TCP: a client and a threaded server.

A message travels as ``0x0B <message> 0x1C 0x0D``; segments inside it end with ``\\r``. This
module moves framed text and nothing else: building and parsing HL7 is left to readingroom.hl7
(escaping, MSH, ACK) and hl7apy in the callers (the order listener in ``orders``, the
report delivery in ``dictation``).

    reply = send("ris.example.org", 2575, message)          # waits for the ACK
    server = MLLPServer(("127.0.0.1", 2575), handle)         # handle(text) -> reply text
    server.start(); ...; server.stop()

The server calls ``handle`` once per message, on the connection's thread, and sends back what it
returns. A handler that raises gets no reply on the wire from this layer (the connection stays
open) — handlers are expected to answer with an AE/AR acknowledgement instead of raising.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from typing import Callable

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
ENCODING = "utf-8"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class MLLPError(ReadingRoomError):
    """The peer could not be reached, closed the connection, or sent something that is not MLLP."""


def frame(message: str) -> bytes:
    """Wrap one HL7 message (segments separated by ``\\r``) for the wire."""
    return START_BLOCK + message.encode(ENCODING) + END_BLOCK


class FrameReader:
    """Reads whole MLLP frames from a socket; bytes outside a frame are dropped with a warning."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def read(self) -> str | None:
        """The next message, or None when the peer closed the connection cleanly."""
        while True:
            start = self.buffer.find(START_BLOCK)
            if start > 0:
                log.warning("MLLP: dropped %d bytes outside a frame", start)
                self.buffer = self.buffer[start:]
                start = 0
            if start == 0:
                end = self.buffer.find(END_BLOCK)
                if end != -1:
                    data, self.buffer = self.buffer[1:end], self.buffer[end + len(END_BLOCK):]
                    return data.decode(ENCODING, errors="replace")
            if len(self.buffer) > MAX_MESSAGE_BYTES:
                raise MLLPError(f"MLLP frame larger than {MAX_MESSAGE_BYTES} bytes; the peer is not sending MLLP")
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buffer.strip():
                    raise MLLPError("the peer closed the connection in the middle of a message")
                return None
            self.buffer += chunk


def send(host: str, port: int, message: str, timeout_s: float = 10) -> str:
    """Send one message and return the peer's reply (normally an ACK). Raises MLLPError."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(frame(message))
            reply = FrameReader(sock).read()
    except OSError as exc:
        raise MLLPError(f"cannot deliver HL7 to {host}:{port} ({exc}); check the host, the port "
                        "and that the peer's MLLP listener is running") from exc
    if reply is None:
        raise MLLPError(f"{host}:{port} closed the connection without acknowledging the message")
    return reply


Handler = Callable[[str], str]


class _Connection(socketserver.BaseRequestHandler):
    server: "MLLPServer"

    def handle(self) -> None:
        reader = FrameReader(self.request)
        peer = "%s:%s" % self.client_address[:2]
        while True:
            try:
                message = reader.read()
            except (MLLPError, OSError) as exc:
                log.warning("MLLP connection from %s dropped: %s", peer, exc)
                return
            if message is None:
                return
            try:
                reply = self.server.handler(message)
            except Exception:  # a handler bug must not kill the listener
                log.exception("MLLP handler failed on a message from %s; no reply sent", peer)
                continue
            try:
                self.request.sendall(frame(reply))
            except OSError as exc:
                log.warning("MLLP reply to %s failed: %s", peer, exc)
                return


class MLLPServer(socketserver.ThreadingTCPServer):
    """A threaded MLLP listener. Port 0 picks a free port (see ``port``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: Handler) -> None:
        self.handler = handler
        self._thread: threading.Thread | None = None
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        return self.server_address[1]

    def start(self) -> "MLLPServer":
        self._thread = threading.Thread(target=self.serve_forever, name=f"mllp-{self.port}", daemon=True)
        self._thread.start()
        log.info("MLLP listener on %s:%d", *self.server_address[:2])
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
