"""The HL7 order listener: MLLP on hl7.port (2575), one ACK per message (see ``store.receive_hl7``)."""

from __future__ import annotations

import logging

from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.mllp import MLLPServer
from readingroom.settings import Settings
from orders.store import receive_hl7

log = logging.getLogger(__name__)


class OrderListener:
    """``start()`` binds and returns; ``port`` is the bound port (hl7.port 0 picks a free one)."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db
        self._server: MLLPServer | None = None

    @property
    def port(self) -> int:
        return self._server.port if self._server else self.settings.hl7.port

    def handle(self, text: str) -> str:
        return receive_hl7(self.db, self.settings, text)

    def start(self) -> "OrderListener":
        address = (self.settings.hl7.host, self.settings.hl7.port)
        try:
            self._server = MLLPServer(address, self.handle).start()
        except OSError as exc:
            raise ReadingRoomError(
                f"cannot listen for HL7 on {address[0]}:{address[1]}: {exc.strerror}. Is another listener running? "
                "Choose another port with READINGROOM_HL7__PORT, or set hl7.enabled: false."
            ) from None
        log.info("HL7 order listener on %s:%d", address[0], self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
            log.info("HL7 order listener stopped")
