"""The one DICOM sender (pynetdicom SCU): C-STORE and C-ECHO to a DICOM peer.

The demo, the benchmark and the tests send images to our listener with ``send``; the report
delivery stores its DICOM SR in a site's PACS with ``store``. Both run the same association:

* presentation contexts: one per (SOP class, transfer syntax) of the items, up to 127, plus
  Verification;
* files are sent as they are on disk, in chunks, without decoding and re-encoding them
  (pynetdicom's default reads each file into a Dataset first); datasets are encoded as usual;
* timeouts: pynetdicom's own unless ``timeout_s`` is given (then connection, ACSE, DIMSE and network);
* statuses: one per item, -1 when the item could not be sent at all (like storescu, the
  association goes on with the next item);
* TLS: with ``ssl_context`` (``readingroom.tls.client_context``, or ``peer_context`` of a site's
  ``destinations.dicom``) the association runs over TLS, the peer's certificate verified and its
  name checked against ``host``.

    statuses = send([path, dataset], "127.0.0.1", 11112, called_ae="READINGROOM")
    status = store(sr_dataset, "pacs.example.org", 104, "PACS", "READINGROOM", timeout_s=30)
    status = store(sr_dataset, "pacs.example.org", 2762, "PACS", "READINGROOM",
                   ssl_context=client_context("pacs-ca.pem"))
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any, Callable, Iterable

from pydicom import Dataset
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)

_config.STORE_SEND_CHUNKED_DATASET = True
MAX_CONTEXTS = 127          # an association holds at most 128 presentation contexts; one is Verification


class AssociationError(ReadingRoomError, ConnectionError):
    """The peer rejected the association or could not be reached; the message names the AE titles."""


class StoreError(ReadingRoomError):
    """The peer did not answer a C-STORE, or refused it (``status`` holds its DICOM status, -1 none)."""

    def __init__(self, message: str, status: int = -1) -> None:
        super().__init__(message)
        self.status = status


def _context_key(item: Dataset | Path) -> tuple[str, str]:
    if isinstance(item, Dataset):
        return str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(item)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def _ae(calling_ae: str, timeout_s: float | None) -> AE:
    ae = AE(ae_title=calling_ae)
    if timeout_s is not None:
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
        ae.connection_timeout = timeout_s       # the TCP connect and, over TLS, the handshake
    return ae


def _associate(ae: AE, host: str, port: int, called_ae: str, ssl_context: ssl.SSLContext | None) -> Any:
    """The association (established or not), over TLS with ``ssl_context``."""
    if ssl_context is None:
        return ae.associate(host, port, ae_title=called_ae)
    return ae.associate(host, port, ae_title=called_ae, tls_args=(ssl_context, host))


def _refused(called_ae: str, host: str, port: int, calling_ae: str, ssl_context: ssl.SSLContext | None) -> str:
    message = (f"association with {called_ae}@{host}:{port} as {calling_ae} was rejected or failed; check the "
               "AE titles and that the listener runs")
    if ssl_context is not None:
        message += (" (over TLS: check tls_ca_file, that the peer's certificate names this host, and our "
                    "client certificate if it requires one; the log has the TLS error)")
    return message


def send(items: Iterable[Dataset | Path], host: str, port: int, called_ae: str = "READINGROOM",
         calling_ae: str = "PYNETDICOM", on_status: Callable[[int, int], None] | None = None,
         max_pdu: int = 0, timeout_s: float | None = None, ssl_context: ssl.SSLContext | None = None) -> list[int]:
    """C-STORE each dataset or file (a file is sent as it is on disk) over one association.

    Returns one status per item (-1 when the item could not be sent at all).
    ``on_status(index, status)`` is called after each acknowledgement. Raises AssociationError
    (a ConnectionError) when the peer does not accept the association. With ``ssl_context`` the
    association runs over TLS.
    """
    items = list(items)
    keys = [_context_key(item) for item in items]
    ae = _ae(calling_ae, timeout_s)
    ae.maximum_pdu_size = max_pdu
    for sop_class, syntax in sorted(set(keys))[:MAX_CONTEXTS]:
        ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, host, port, called_ae, ssl_context)
    if not assoc.is_established:
        raise AssociationError(_refused(called_ae, host, port, calling_ae, ssl_context))
    statuses: list[int] = []
    try:
        for index, item in enumerate(items):
            try:
                reply = assoc.send_c_store(item)
                status = int(reply.Status) if "Status" in reply else -1
            except Exception as exc:  # noqa: BLE001 - report and go on, like storescu
                log.warning("could not send item %d: %s", index, exc)
                status = -1
            statuses.append(status)
            if on_status:
                on_status(index, status)
            if not assoc.is_established:
                statuses.extend([-1] * (len(items) - len(statuses)))
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return statuses


def is_stored(status: int) -> bool:
    """Success (0x0000) or a warning (0xBxxx: stored, with coercion or elements discarded)."""
    return status == 0x0000 or 0xB000 <= status <= 0xBFFF


def store(ds: Dataset, host: str, port: int, called_ae: str, calling_ae: str, timeout_s: float = 30,
          ssl_context: ssl.SSLContext | None = None) -> int:
    """C-STORE one dataset; returns its status (success or warning). Raises AssociationError when
    the peer does not accept the association, StoreError when it does not answer or refuses."""
    (status,) = send([ds], host, port, called_ae=called_ae, calling_ae=calling_ae, timeout_s=timeout_s,
                     ssl_context=ssl_context)
    if status < 0:
        raise StoreError(f"{called_ae}@{host}:{port} did not answer the C-STORE")
    if not is_stored(status):
        raise StoreError(f"{called_ae}@{host}:{port} refused the C-STORE with status 0x{status:04X}", status)
    return status


def echo(host: str, port: int, called_ae: str = "READINGROOM", calling_ae: str = "PYNETDICOM",
         timeout_s: float | None = None, ssl_context: ssl.SSLContext | None = None) -> bool:
    """C-ECHO: is a DICOM peer there and does it accept us (over TLS with ``ssl_context``)?"""
    ae = _ae(calling_ae, timeout_s)
    ae.add_requested_context(Verification)
    assoc = _associate(ae, host, port, called_ae, ssl_context)
    if not assoc.is_established:
        return False
    try:
        reply = assoc.send_c_echo()
        return bool(reply) and int(reply.Status) == 0
    finally:
        assoc.release()
