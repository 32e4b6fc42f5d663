"""A small DICOM sender (pynetdicom SCU): the demo, the benchmark and the tests use it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Iterable

from pydicom import Dataset
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

log = logging.getLogger(__name__)

# Send files as they are on disk, in chunks, without decoding and re-encoding them (pynetdicom's
# default reads each file into a Dataset first). Datasets passed in memory are encoded as usual.
_config.STORE_SEND_CHUNKED_DATASET = True


def _context_key(item: Dataset | Path) -> tuple[str, str]:
    if isinstance(item, Dataset):
        return str(item.SOPClassUID), str(item.file_meta.TransferSyntaxUID)
    from pydicom.filereader import read_file_meta_info

    meta = read_file_meta_info(item)
    return str(meta.MediaStorageSOPClassUID), str(meta.TransferSyntaxUID)


def send(items: Iterable[Dataset | Path], host: str, port: int, called_ae: str = "READINGROOM",
         calling_ae: str = "PYNETDICOM", on_status: Callable[[int, int], None] | None = None,
         max_pdu: int = 0) -> list[int]:
    """C-STORE each dataset or file (a file is sent as it is on disk) over one association.

    Returns one status per item (-1 when the item could not be sent at all).
    ``on_status(index, status)`` is called after each acknowledgement.
    """
    items = list(items)
    keys = [_context_key(item) for item in items]
    ae = AE(ae_title=calling_ae)
    ae.maximum_pdu_size = max_pdu
    for sop_class, syntax in sorted(set(keys))[:127]:
        ae.add_requested_context(sop_class, syntax)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        raise ConnectionError(f"association with {called_ae}@{host}:{port} as {calling_ae} was "
                              "rejected or failed; check the AE titles and that the listener runs")
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


def echo(host: str, port: int, called_ae: str = "READINGROOM", calling_ae: str = "PYNETDICOM") -> bool:
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        reply = assoc.send_c_echo()
        return bool(reply) and int(reply.Status) == 0
    finally:
        assoc.release()
