"""The one DICOM sender (readingroom/dicom_net.py) against a real pynetdicom SCP in-process: the
statuses it returns, and the errors the report delivery turns into its own messages."""

from __future__ import annotations

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from reporting.delivery import sr
from reporting.delivery.document import DeliveryError
from readingroom import dicom_net
from tests.conftest import free_port
from models.phantoms import ct_series, head_phantom


@pytest.fixture
def peer():
    """A PACS that stores every CT image except instance 2, which it refuses (0xA700, out of resources)."""
    received: list[str] = []

    def on_store(event):
        ds = event.dataset
        if int(ds.InstanceNumber) == 2:
            return 0xA700
        received.append(str(ds.SOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="PACS")
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1"])
    ae.add_supported_context(Verification)
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    yield port, received
    server.shutdown()


def test_send_returns_one_status_per_item_and_store_raises_on_a_refusal(peer, tmp_path):
    port, received = peer
    series = ct_series(head_phantom(3, size=16), key="dicom-net")
    path = tmp_path / "third.dcm"
    series[2].save_as(path, enforce_file_format=True)
    assert dicom_net.send([series[0], series[1], path], "127.0.0.1", port, called_ae="PACS") == [0, 0xA700, 0]
    assert received == [str(series[0].SOPInstanceUID), str(series[2].SOPInstanceUID)]
    assert dicom_net.echo("127.0.0.1", port, called_ae="PACS", timeout_s=5)

    assert dicom_net.store(series[0], "127.0.0.1", port, "PACS", "RR", timeout_s=5) == 0
    with pytest.raises(dicom_net.StoreError) as refused:
        dicom_net.store(series[1], "127.0.0.1", port, "PACS", "RR", timeout_s=5)
    assert refused.value.status == 0xA700
    with pytest.raises(DeliveryError, match="refused the SR with status 0xA700"):
        sr.store(series[1], "127.0.0.1", port, "PACS", "RR", timeout_s=5)


def test_no_peer_is_a_connection_error_that_names_the_ae_titles():
    port = free_port()
    with pytest.raises(ConnectionError, match="OTHER@127.0.0.1"):
        dicom_net.send([], "127.0.0.1", port, called_ae="OTHER", calling_ae="RR")
    with pytest.raises(DeliveryError, match="did not accept an association from RR"):
        sr.store(ct_series(head_phantom(1, size=16), key="none")[0], "127.0.0.1", port, "PACS", "RR", timeout_s=2)
    assert not dicom_net.echo("127.0.0.1", port, timeout_s=2)
