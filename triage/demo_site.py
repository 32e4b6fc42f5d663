"""The demo hospitals' side of the wire: a RIS that answers MLLP, and folders for PDF and FHIR.

The shipped sites (configs/sites.yaml) have no destinations, so a signed demo report would go
nowhere. ``readingroom run --demo`` starts ``DemoRIS``, a small MLLP listener in the process that
acknowledges every message with AA and keeps what it received under ``<home>/demo-ris/``, and
``apply_demo_destinations`` points each site that has no destination of its own at it (HL7), and
at ``<home>/demo-site/<site>/pdf`` and ``.../fhir`` (PDF and FHIR DiagnosticReport files). Only
the running demo's settings change: sites.yaml, the other commands and the tests see the sites
as configured, and a site with destinations of its own keeps them.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path

from readingroom.mllp import MLLPServer
from readingroom.settings import HL7Peer, Settings, SiteDestinations
from readingroom.storage import atomic_write

log = logging.getLogger(__name__)

RIS_APPLICATION = "DEMO_RIS"
RIS_FOLDER = "demo-ris"        # under home: one file per message received
SITE_FOLDER = "demo-site"      # under home: <site>/pdf and <site>/fhir


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "message"


class DemoRIS:
    """The demo hospitals' RIS: an MLLP listener that answers AA to any HL7 message it can read
    (AE otherwise, as a RIS would) and writes each one to ``folder/<type>-<control id>.hl7``.
    A resend of the same message (same MSH-10) overwrites its file: one file per message."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = Path(folder)
        self.received: list[Path] = []
        self._lock = threading.Lock()
        self.server = MLLPServer((host, port), self.handle)

    @property
    def port(self) -> int:
        return self.server.port

    def handle(self, message: str) -> str:
        from hl7apy.consts import VALIDATION_LEVEL
        from hl7apy.parser import parse_message

        from orders.hl7 import build_ack, normalize_newlines, peek_header

        head = peek_header(message)
        facility = head.get("receiving_facility") or "DEMO_HOSPITAL"
        application = head.get("receiving_app") or RIS_APPLICATION
        try:
            parse_message(normalize_newlines(message), validation_level=VALIDATION_LEVEL.TOLERANT)
        except Exception as exc:  # noqa: BLE001 - anything hl7apy cannot read is answered AE
            log.warning("demo RIS: could not read a message (%s); answered AE", exc)
            return build_ack(message, "AE", f"unreadable message: {exc}"[:80], application=application,
                             facility=facility)
        name = f"{_safe(head.get('type', 'message'))}-{_safe(head.get('control_id', ''))}.hl7"
        path = self.folder / name
        atomic_write(path, normalize_newlines(message).replace("\r", "\n").encode("utf-8"))
        with self._lock:
            self.received.append(path)
        log.info("demo RIS: %s %s received from %s, answered AA (kept in %s)", head.get("type", "?"),
                 head.get("control_id", "?"), head.get("facility", "?"), path)
        return build_ack(message, "AA", application=application, facility=facility)

    def start(self) -> "DemoRIS":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()


def has_destination(d: SiteDestinations) -> bool:
    return bool(d.hl7 or d.fhir_url or d.fhir_folder or d.dicom or d.pdf_folder)


def demo_destinations(site_name: str, ris_port: int, host: str = "127.0.0.1") -> SiteDestinations:
    """A demo site's destinations: the demo RIS (its MSH-6 facility is the site's name, the
    facility the demo orders come from) and a PDF and a FHIR folder of its own under home."""
    folder = f"{SITE_FOLDER}/{_safe(site_name)}"
    return SiteDestinations(hl7=HL7Peer(host=host, port=ris_port, facility=site_name[:20],
                                        application=RIS_APPLICATION),
                            pdf_folder=f"{folder}/pdf", fhir_folder=f"{folder}/fhir")


def apply_demo_destinations(settings: Settings, ris_port: int) -> list[str]:
    """Give every site without a destination the demo ones (in place: the running demo's
    settings only). Returns the names of the sites changed."""
    changed = []
    for site in settings.sites:
        if not has_destination(site.destinations):
            site.destinations = demo_destinations(site.name, ris_port)
            changed.append(site.name)
    return changed


def start_demo_site(settings: Settings) -> DemoRIS:
    """Start the demo RIS on a free port and point the sites without destinations at it."""
    ris = DemoRIS(settings.home / RIS_FOLDER).start()
    changed = apply_demo_destinations(settings, ris.port)
    log.info("demo: RIS on 127.0.0.1:%d (messages in %s); demo destinations for %s", ris.port, ris.folder,
             ", ".join(changed) or "no site (every site has its own)")
    return ris
