"""The HL7 order listener: MLLP on hl7.port (2575), one ACK per message (see ``store.receive_hl7``),
with the limits of hl7.idle_timeout_s, hl7.max_connections and hl7.max_message_bytes (readingroom.mllp).

MLLP over TLS with hl7.tls_certfile and hl7.tls_keyfile (client certificates required with
hl7.tls_ca_file); off loopback it does not start without TLS unless hl7.allow_insecure_remote.
Each message is kept with the address it came from (readingroom.mllp passes it: ``with_peer``)."""

from __future__ import annotations

import logging
from typing import Any

from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.mllp import MLLPServer, refuse_oversize
from readingroom.settings import Settings
from readingroom.tls import listen_problem, server_context
from orders.store import receive_hl7

log = logging.getLogger(__name__)


def format_peer(address: Any) -> tuple[str, str]:
    """("host:port" to keep with the message, the peer's IP) of an MLLP connection's ``(host, port)``;
    ("", "") without one."""
    if not address:
        return "", ""
    host, port = str(address[0]), address[1]
    return (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"), host


class OrderListener:
    """``start()`` binds and returns; ``port`` is the bound port (hl7.port 0 picks a free one)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._server: MLLPServer | None = None

    @property
    def port(self) -> int:
        return self._server.port if self._server else self.settings.hl7.port

    def handle(self, text: str, address: tuple[str, int] | None = None) -> str:
        """The ACK of one message from ``address`` (the connection's ``(host, port)``)."""
        peer, host = format_peer(address)
        return receive_hl7(self.db, self.settings, text, peer=peer, address=host or None)

    def refuse_oversize(self, head: str, limit: int) -> str:
        """The AR of a message over hl7.max_message_bytes (it is neither read whole nor stored)."""
        return refuse_oversize(head, limit, self.settings.hl7.application, self.settings.hl7.facility)

    def start(self) -> "OrderListener":
        hl7 = self.settings.hl7
        address = (hl7.host, hl7.port)
        problem = listen_problem(hl7.host, hl7.tls, hl7.allow_insecure_remote, "hl7")
        if problem:
            raise ReadingRoomError(f"the HL7 order listener does not start: {problem}")
        context = server_context(hl7.tls_certfile, hl7.tls_keyfile, hl7.tls_ca_file, "hl7") if hl7.tls else None
        try:
            self._server = MLLPServer(address, self.handle, idle_timeout_s=hl7.idle_timeout_s,
                                      max_connections=hl7.max_connections,
                                      max_message_bytes=hl7.max_message_bytes,
                                      oversize_reply=self.refuse_oversize, ssl_context=context,
                                      with_peer=True).start()
        except OSError as exc:
            raise ReadingRoomError(
                f"cannot listen for HL7 on {address[0]}:{address[1]}: {exc.strerror}. Is another listener running? "
                "Choose another port with READINGROOM_HL7__PORT, or set hl7.enabled: false."
            ) from None
        log.info("HL7 order listener on %s:%d (%s)", address[0], self.port,
                 ("MLLP over TLS, client certificates required" if hl7.tls_ca_file else "MLLP over TLS")
                 if hl7.tls else "plain MLLP")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            log.info("HL7 order listener stopped")
