"""The DICOM listener (pynetdicom): C-ECHO, C-STORE for every storage SOP class, and the
Modality Worklist C-FIND (approved orders, ``orders.mwl``) on the same AE title and port.

Handlers are thin: they hand the dataset to ``Intake.store`` and return its status. They never
raise, so one bad instance gets a failure status and the association goes on.
"""

from __future__ import annotations

import logging
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt, register_uid
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]

from readingroom.settings import Settings
from triage.intake import CANNOT_UNDERSTAND, Intake

log = logging.getLogger(__name__)

# Retired image storage classes that old modalities and archives still send (PS3.6 Annex A).
RETIRED_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.3": "UltrasoundMultiFrameImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.5": "NuclearMedicineImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.6": "UltrasoundImageStorageRetired",
    "1.2.840.10008.5.1.4.1.1.12.3": "XRayAngiographicBiPlaneImageStorageRetired",
}


def _register_retired_classes() -> None:
    """Teach pynetdicom that the retired classes are storage classes (it knows them by UID only)."""
    import pynetdicom.sop_class as sop_class

    for uid, keyword in RETIRED_IMAGE_STORAGE.items():
        if not hasattr(sop_class, keyword):
            register_uid(uid, keyword, StorageServiceClass)


def handle_store(event: Any, intake: Intake) -> int:
    calling_ae = event.assoc.requestor.ae_title
    try:
        dataset = event.dataset
        dataset.file_meta = event.file_meta
        encoded = event.encoded_dataset()
    except Exception as exc:  # noqa: BLE001 - malformed data stream
        log.warning("rejected a C-STORE from %s, status 0x%04X: cannot decode the dataset: %s",
                    calling_ae, CANNOT_UNDERSTAND, exc)
        return CANNOT_UNDERSTAND
    return intake.store(dataset, encoded, calling_ae=calling_ae, source="network").status


def _handle_worklist_find(event: Any, intake: Intake):  # a generator of (status, dataset)
    from orders.mwl import handle_find

    yield from handle_find(event, intake.db, intake.settings)


def _log_event(event: Any) -> None:
    requestor = event.assoc.requestor
    if event.event.name == "EVT_REJECTED":
        called = getattr(requestor.primitive, "called_ae_title", "") if requestor.primitive else ""
        ours = event.assoc.acceptor.ae_title
        if called and called.strip() != ours.strip():
            reason = f"it called AE title {called.strip()!r}, ours is {ours!r}"
        else:
            reason = "its calling AE title is not listed under any site's ae_titles in configs/sites.yaml"
        log.warning("association from %s (%s:%s) rejected: %s", requestor.ae_title, requestor.address,
                    requestor.port, reason)
    elif event.event.name == "EVT_ACCEPTED":
        log.debug("association from %s (%s) accepted", requestor.ae_title, requestor.address)
    elif event.event.name == "EVT_ABORTED":
        log.warning("association from %s aborted", requestor.ae_title)


def build_ae(settings: Settings) -> AE:
    _register_retired_classes()
    ae = AE(ae_title=settings.dicom.ae_title)
    ae.maximum_associations = settings.dicom.max_associations
    ae.maximum_pdu_size = settings.dicom.max_pdu_bytes
    ae.network_timeout = settings.dicom.network_timeout_s
    ae.acse_timeout = settings.dicom.network_timeout_s
    ae.dimse_timeout = settings.dicom.network_timeout_s
    ae.require_called_aet = True  # a sender that calls another AE title is misconfigured
    allowed = settings.allowed_calling_ae_titles
    if allowed:
        ae.require_calling_aet = allowed
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(ModalityWorklistInformationFind)  # approved orders (orders.mwl)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    for sop_class in RETIRED_IMAGE_STORAGE:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    return ae


class DicomListener:
    """The running listener: ``start()`` returns at once, ``stop()`` ends every association."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.ae = build_ae(settings)
        self._server = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.settings.dicom.port

    def start(self) -> None:
        handlers = [
            (evt.EVT_C_STORE, handle_store, [self.intake]),
            (evt.EVT_C_FIND, _handle_worklist_find, [self.intake]),
            (evt.EVT_REJECTED, _log_event),
            (evt.EVT_ACCEPTED, _log_event),
            (evt.EVT_ABORTED, _log_event),
        ]
        address = (self.settings.dicom.host, self.settings.dicom.port)
        try:
            self._server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        except OSError as exc:
            from readingroom.errors import ReadingRoomError

            raise ReadingRoomError(
                f"cannot listen for DICOM on {address[0]}:{address[1]}: {exc.strerror}. Is another listener "
                "running? Choose another port with --port or READINGROOM_DICOM__PORT."
            ) from None
        allowed = self.settings.allowed_calling_ae_titles
        log.info("DICOM listener %s on %s:%d (%s)", self.settings.dicom.ae_title, address[0], self.port,
                 f"accepting {len(allowed)} AE titles from {len(self.settings.sites)} sites" if allowed
                 else "accepting any calling AE title")

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            log.info("DICOM listener stopped")
