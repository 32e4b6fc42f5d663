"""MLLP, the framing HL7 v2 uses over TCP: a client and a threaded server.

A message travels as ``0x0B <message> 0x1C 0x0D``; segments inside it end with ``\\r``. This
module moves framed text: building and parsing HL7 is left to readingroom.hl7 (escaping, MSH,
ACK) and hl7apy in the callers (the order listener in ``orders``, the report delivery in
``reporting``). The one HL7 it writes itself is the refusal of an oversize message (below).

    reply = send("ris.example.org", 2575, message)          # waits for the ACK
    reply = send("ris.example.org", 2576, message, ssl_context=client_context("ris-ca.pem"))
    server = MLLPServer(("127.0.0.1", 2575), handle)         # handle(text) -> reply text
    server = MLLPServer(address, handle, with_peer=True)      # handle(text, (host, port)) -> reply
    server.start(); ...; server.stop()

The server calls ``handle`` once per message, on the connection's thread, and sends back what it
returns; with ``with_peer=True`` it passes the connection's ``(host, port)`` as well. A handler
that raises gets no reply on the wire from this layer (the connection stays open) — handlers are
expected to answer with an AE/AR acknowledgement instead of raising.

TLS (``ssl_context``, from ``readingroom.tls.server_context``): the handshake runs on the
connection's thread, not the accepting one, and must end within ``idle_timeout_s`` (a peer that
starts one and stops counts against ``max_connections`` like any silent connection, and is
closed at the deadline). ``send(..., ssl_context=...)`` is the client side: the server's
certificate is verified and must name ``host``.

Limits, so that no peer can hold the listener (hl7.* in configs/default.yaml):

* ``idle_timeout_s``: a connection that sends nothing for this long, even in the middle of a
  message, is closed;
* ``max_connections``: connections at once. One more takes the place of the connection that
  has been silent longest, if that one has been silent for EVICT_AFTER_S (a sender in the middle
  of a message is not silent; a RIS that left its connection open reconnects); else it is closed
  as soon as it is accepted (and logged, at most every few seconds);
* ``max_message_bytes``: a larger message is not read into memory. Its sender gets an AR
  acknowledgement that names the limit (``oversize_reply(first bytes, limit)``, by default
  ``readingroom.hl7.build_ack``), the rest of the frame is read and discarded, and the connection
  is closed.
"""

from __future__ import annotations

import logging
import socket
import socketserver
import ssl
import threading
import time
from typing import Any, Callable

from readingroom.errors import ReadingRoomError
from readingroom.tls import HandshakeError, handshake, peer_common_name, shutdown

log = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
ENCODING = "utf-8"
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
IDLE_TIMEOUT_S = 30.0
MAX_CONNECTIONS = 32
HEAD_BYTES = 4096            # what is kept of an oversize message to answer it (its MSH)
DRAIN_LIMIT_S = 60.0         # how long the rest of an oversize message is read and discarded
REFUSAL_LOG_INTERVAL_S = 5.0
EVICT_AFTER_S = 1.0          # silent this long, a connection may make room for a new one


class MLLPError(ReadingRoomError):
    """The peer could not be reached, closed the connection, or sent something that is not MLLP."""


class MessageTooLarge(MLLPError):
    """A frame grew past the limit before its end block; ``head`` holds its first bytes."""

    def __init__(self, limit: int, head: bytes, complete: bool = False) -> None:
        super().__init__(f"MLLP message larger than {limit} bytes (hl7.max_message_bytes)")
        self.limit = limit
        self.head = head
        self.complete = complete     # its end block has been read too (nothing left to discard)


def frame(message: str) -> bytes:
    """Wrap one HL7 message (segments separated by ``\\r``) for the wire."""
    return START_BLOCK + message.encode(ENCODING) + END_BLOCK


class FrameReader:
    """Reads whole MLLP frames from a socket; bytes outside a frame are dropped with a warning.

    A frame larger than ``max_message_bytes`` raises MessageTooLarge before more of it is read."""

    def __init__(self, sock: socket.socket, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.sock = sock
        self.max_message_bytes = max_message_bytes
        self.buffer = bytearray()
        self._scanned = 0        # bytes of the current frame already searched for the end block
        self.last_received = time.monotonic()

    def read(self) -> str | None:
        """The next message, or None when the peer closed the connection cleanly."""
        while True:
            start = self.buffer.find(START_BLOCK)
            if start > 0:
                log.warning("MLLP: dropped %d bytes outside a frame", start)
                del self.buffer[:start]
                start = 0
                self._scanned = 0
            if start == 0:
                end = self.buffer.find(END_BLOCK, max(1, self._scanned - 1))
                if end != -1:
                    data = bytes(self.buffer[1:end])
                    del self.buffer[:end + len(END_BLOCK)]
                    self._scanned = 0
                    if len(data) > self.max_message_bytes:
                        raise MessageTooLarge(self.max_message_bytes, data[:HEAD_BYTES], complete=True)
                    return data.decode(ENCODING, errors="replace")
                self._scanned = len(self.buffer)
                if len(self.buffer) - 1 > self.max_message_bytes:
                    raise MessageTooLarge(self.max_message_bytes, bytes(self.buffer[1:1 + HEAD_BYTES]))
            elif len(self.buffer) > self.max_message_bytes:
                raise MLLPError(f"{len(self.buffer)} bytes without an MLLP start block; the peer is not sending MLLP")
            chunk = self.sock.recv(65536)
            if not chunk:
                if bytes(self.buffer).strip():
                    raise MLLPError("the peer closed the connection in the middle of a message")
                return None
            self.buffer += chunk
            self.last_received = time.monotonic()

    def discard_frame(self, limit_s: float = DRAIN_LIMIT_S) -> bool:
        """Read and drop the rest of the current frame (after MessageTooLarge), for at most
        ``limit_s`` seconds; True when its end block came (the peer then reads our reply)."""
        deadline = time.monotonic() + limit_s
        tail = bytes(self.buffer[-1:])
        self.buffer.clear()
        self._scanned = 0
        while time.monotonic() < deadline:
            chunk = self.sock.recv(65536)
            if not chunk:
                return False
            self.last_received = time.monotonic()
            if END_BLOCK in tail + chunk:
                return True
            tail = chunk[-1:]
        return False


def send(host: str, port: int, message: str, timeout_s: float = 10,
         ssl_context: ssl.SSLContext | None = None) -> str:
    """Send one message and return the peer's reply (normally an ACK), over TLS with
    ``ssl_context`` (``readingroom.tls.client_context``). Raises MLLPError."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw:
            sock = ssl_context.wrap_socket(raw, server_hostname=host) if ssl_context else raw
            with sock:
                sock.sendall(frame(message))
                reply = FrameReader(sock).read()
    except ssl.SSLError as exc:
        raise MLLPError(f"cannot deliver HL7 to {host}:{port}: TLS failed ({exc.reason or exc}); check "
                        "tls_ca_file, that the peer's certificate names this host, and our client "
                        "certificate (tls_certfile, tls_keyfile) if it requires one") from exc
    except OSError as exc:
        raise MLLPError(f"cannot deliver HL7 to {host}:{port} ({exc}); check the host, the port "
                        "and that the peer's MLLP listener is running") from exc
    if reply is None:
        raise MLLPError(f"{host}:{port} closed the connection without acknowledging the message")
    return reply


Handler = Callable[..., str]      # handle(text) -> reply, or handle(text, (host, port)) with with_peer
OversizeReply = Callable[[str, int], str]


def oversize_text(limit: int) -> str:
    """The error text of the AR for a message over ``limit`` bytes (MSA-3 keeps 80 characters)."""
    return f"message larger than the {limit}-byte limit (hl7.max_message_bytes); not stored"


def refuse_oversize(head: str, limit: int, application: str = "READINGROOM", facility: str = "READINGROOM") -> str:
    """An AR acknowledgement of the message that begins with ``head``, naming the size limit."""
    from readingroom.hl7 import build_ack

    return build_ack(head, "AR", oversize_text(limit), "207", application=application, facility=facility)


class _Connection(socketserver.BaseRequestHandler):
    server: "MLLPServer"

    def handle(self) -> None:
        server, raw = self.server, self.request
        peer = "%s:%s" % self.client_address[:2]
        if server.ssl_context is None:
            self._serve(raw, peer)
            return
        sock = self._start_tls(raw, peer)
        if sock is None:
            return
        try:
            self.request = sock
            self._serve(raw, peer)
        finally:
            shutdown(sock)
            sock.close()

    def _start_tls(self, raw: Any, peer: str) -> ssl.SSLSocket | None:
        """The connection's TLS socket once the handshake is done, within hl7.idle_timeout_s; None
        (the connection closed, the reason logged) when it fails or comes too late."""
        server = self.server
        assert server.ssl_context is not None
        try:
            sock = server.ssl_context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.warning("MLLP connection from %s dropped before its TLS handshake: %s", peer, exc)
            return None
        if not server.note_tls(raw, sock):     # closed to make room, or the server stops
            sock.close()
            return None
        try:
            handshake(sock, server.idle_timeout_s)
        except HandshakeError as exc:
            log.warning("MLLP connection from %s closed: %s (hl7.idle_timeout_s=%g; client certificates "
                        "%s)", peer, exc, server.idle_timeout_s,
                        "required, hl7.tls_ca_file" if server.ssl_context.verify_mode == ssl.CERT_REQUIRED
                        else "not required")
            sock.close()
            return None
        log.debug("MLLP connection from %s: TLS %s, client certificate %r", peer, sock.version(),
                  peer_common_name(sock))
        return sock

    def _serve(self, raw: Any, peer: str) -> None:
        """Read messages and answer them until the peer closes, falls silent, or errs."""
        server = self.server
        self.request.settimeout(server.idle_timeout_s)
        reader = FrameReader(self.request, server.max_message_bytes)
        server.track(raw, reader)
        while True:
            try:
                message = reader.read()
            except MessageTooLarge as exc:
                self._refuse(reader, exc, peer)
                return
            except TimeoutError:
                log.warning("MLLP connection from %s closed: nothing received for %g s (hl7.idle_timeout_s)",
                            peer, server.idle_timeout_s)
                return
            except (MLLPError, OSError) as exc:
                log.warning("MLLP connection from %s dropped: %s", peer, exc)
                return
            if message is None:
                return
            reader.last_received = float("inf")   # busy with the message: never closed to make room
            try:
                reply = (server.handler(message, tuple(self.client_address[:2])) if server.with_peer
                         else server.handler(message))
            except Exception:  # a handler bug must not kill the listener
                log.exception("MLLP handler failed on a message from %s; no reply sent", peer)
                continue
            finally:
                reader.last_received = time.monotonic()
            try:
                self.request.sendall(frame(reply))
            except OSError as exc:
                log.warning("MLLP reply to %s failed: %s", peer, exc)
                return

    def _refuse(self, reader: FrameReader, exc: MessageTooLarge, peer: str) -> None:
        """Answer AR, drop the rest of the frame, close: the message is never held in memory."""
        head = exc.head.decode(ENCODING, errors="replace")
        try:
            reply = self.server.oversize_reply(head, exc.limit)
        except Exception:  # a bug in the reply: still close the connection
            log.exception("MLLP: could not build the refusal of an oversize message from %s", peer)
            return
        log.warning("MLLP message from %s is larger than %d bytes (hl7.max_message_bytes): answered AR, "
                    "not stored; closing the connection", peer, exc.limit)
        try:
            self.request.sendall(frame(reply))
            if not exc.complete:
                reader.discard_frame()
        except OSError as error:
            log.info("MLLP: %s went away while its oversize message was discarded: %s", peer, error)


class _Open:
    """An open connection: its peer, its socket (the TLS one once wrapped), and its reader once
    its thread runs."""

    def __init__(self, address: str, opened: float, sock: Any) -> None:
        self.address = address
        self.opened = opened
        self.sock = sock
        self.reader: FrameReader | None = None

    @property
    def last_received(self) -> float:
        return self.reader.last_received if self.reader else self.opened


class MLLPServer(socketserver.ThreadingTCPServer):
    """A threaded MLLP listener. Port 0 picks a free port (see ``port``). With ``ssl_context``
    it speaks MLLP over TLS; with ``with_peer`` the handler gets the peer's ``(host, port)`` too."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128     # the listen() backlog (socketserver's 5 drops a burst of connections)

    def __init__(self, address: tuple[str, int], handler: Handler, *, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 max_connections: int = MAX_CONNECTIONS, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 oversize_reply: OversizeReply = refuse_oversize, ssl_context: ssl.SSLContext | None = None,
                 with_peer: bool = False) -> None:
        self.handler = handler
        self.with_peer = with_peer
        self.ssl_context = ssl_context
        self.idle_timeout_s = idle_timeout_s
        self.max_connections = max_connections
        self.max_message_bytes = max_message_bytes
        self.oversize_reply = oversize_reply
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._open: dict[Any, _Open] = {}     # accepted socket -> when it last sent something
        self._refused = 0
        self._refusal_logged_at = float("-inf")
        super().__init__(address, _Connection)

    @property
    def port(self) -> int:
        return self.server_address[1]

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def track(self, request: Any, reader: FrameReader) -> None:
        """Note the reader of a connection, whose ``last_received`` tells how long it has been silent."""
        with self._lock:
            if request in self._open:
                self._open[request].reader = reader

    def note_tls(self, request: Any, tls_sock: Any) -> bool:
        """The TLS socket of ``request`` (what eviction and ``stop`` shut down from now on); False
        when the connection was already closed to make room."""
        with self._lock:
            if request not in self._open:
                return False
            self._open[request].sock = tls_sock
            return True

    def process_request(self, request: Any, client_address: Any) -> None:
        now = time.monotonic()
        evicted = None
        with self._lock:
            admitted = len(self._open) < self.max_connections
            if not admitted:
                evicted = min(self._open.items(), key=lambda item: item[1].last_received, default=None)
                if evicted is not None and now - evicted[1].last_received >= EVICT_AFTER_S:
                    del self._open[evicted[0]]
                    admitted = True
                else:
                    evicted = None
            if admitted:
                self._open[request] = _Open(client_address[0], now, request)
        if evicted is not None:
            _, info = evicted
            log.warning("MLLP: closed the connection from %s, silent for %.1f s, to make room for one from %s "
                        "(hl7.max_connections=%d)", info.address, now - info.last_received, client_address[0],
                        self.max_connections)
            shutdown(info.sock)
        if not admitted:
            self._note_refusal(client_address)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._open.pop(request, None)

    def _note_refusal(self, client_address: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self._refused += 1
            if now - self._refusal_logged_at < REFUSAL_LOG_INTERVAL_S:
                return
            refused, self._refused, self._refusal_logged_at = self._refused, 0, now
        log.warning("MLLP: refused %d connection(s), the latest from %s: %d are open and none has been "
                    "silent for %g s, the limit (hl7.max_connections); a sender should try again later",
                    refused, client_address[0], self.max_connections, EVICT_AFTER_S)

    def start(self) -> "MLLPServer":
        self._thread = threading.Thread(target=self.serve_forever, name=f"mllp-{self.port}", daemon=True)
        self._thread.start()
        log.info("MLLP listener on %s:%d", *self.server_address[:2])
        return self

    def stop(self) -> None:
        """Stop accepting, and close every open connection."""
        self.shutdown()
        self.server_close()
        with self._lock:
            still_open = [info.sock for info in self._open.values()]
        for sock in still_open:
            shutdown(sock)
        if self._thread is not None:
            self._thread.join(timeout=5)
