"""Denial of service on the DICOM port (security issue #19, finding 7), with real clients.

The attackers are raw sockets (half-sent A-ASSOCIATE-RQ, a PDU header that announces 4 GiB) and
pynetdicom associations that stay idle; the real sender is dcmtk's echoscu or pynetdicom's SCU,
and it must get through at once, while the attack is on. Attackers connect from other loopback
addresses (127.0.0.2 and up) unless the case is about the sender's own address.
"""

from __future__ import annotations

import socket
import struct
import subprocess
import time

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from readingroom import dicom_net
from tests.conftest import DCMTK, make_settings
from triage.intake import Intake
from triage.scp import DicomListener

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0          # dicom.association_timeout_s of these tests
PROMPT_S = 1.5           # a real sender must be through in less than this (less than TIMEOUT_S)
SLACK_S = 2.0


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path / "home", dicom={"association_timeout_s": TIMEOUT_S})


@pytest.fixture
def listener(settings, db):
    listener = DicomListener(settings, Intake(settings, db))
    listener.start()
    yield listener
    listener.stop()


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def half_request(port: int, source: str) -> socket.socket:
    """A connection that sends the first 10 bytes of an A-ASSOCIATE-RQ and then nothing."""
    sock = connect(port, source)
    sock.sendall(struct.pack(">BBL", 0x01, 0, 205) + b"\x00\x01\x00\x00")
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    """Does the listener close the connection within ``seconds`` (what it sends first is read)?"""
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return False


def echoscu(listener, settings, calling_ae: str = "ECHOSCU") -> float:
    """dcmtk's echoscu from 127.0.0.1; the seconds it took (it must succeed)."""
    start = time.monotonic()
    run = subprocess.run([str(DCMTK / "echoscu"), "-aet", calling_ae, "-aec", settings.dicom.ae_title,
                          "-to", "10", "-ta", "10", "127.0.0.1", str(listener.port)],
                         capture_output=True, text=True, timeout=30)
    elapsed = time.monotonic() - start
    assert run.returncode == 0, run.stdout + run.stderr
    return elapsed


def idle_association(port: int, source: str, calling_ae: str = "OTHER_PACS"):
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.network_timeout = 10
    ae.add_requested_context(Verification)
    return ae.associate("127.0.0.1", port, ae_title="READINGROOM", bind_address=(source, 0))


@pytest.mark.parametrize("sources", [["127.0.0.2"] * 16, [f"127.0.0.{n}" for n in range(2, 18)],
                                     ["127.0.0.1"] * 16],
                         ids=["one-address", "sixteen-addresses", "the-senders-address"])
def test_half_sent_requests_do_not_hold_the_port(listener, settings, sources):
    attackers = [half_request(listener.port, source) for source in sources]
    time.sleep(0.2)   # every one of them is accepted and waiting
    try:
        assert echoscu(listener, settings) < PROMPT_S
        assert dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5)
        start = time.monotonic()
        assert all(closed_within(sock, TIMEOUT_S + SLACK_S) for sock in attackers)
        assert time.monotonic() - start < TIMEOUT_S + SLACK_S
        assert listener.connections() == (0, 0)
    finally:
        for sock in attackers:
            sock.close()


def test_one_address_holds_at_most_its_share(listener, settings):
    limit = settings.dicom.max_associations_per_address
    attackers = [half_request(listener.port, "127.0.0.2") for _ in range(limit)]
    time.sleep(0.2)
    extra = half_request(listener.port, "127.0.0.2")
    try:
        # the oldest stalled connection of that address makes room for the new one, at once
        assert closed_within(attackers[0], 1.0)
        assert not closed_within(extra, 0.2)
        assert listener.connections() == (limit, 0)
    finally:
        for sock in attackers + [extra]:
            sock.close()


def test_idle_associations_of_a_known_ae_leave_room_for_other_senders(listener, settings):
    limit = settings.dicom.max_associations_per_address
    one_address = [idle_association(listener.port, "127.0.0.2") for _ in range(16)]
    many_addresses = []
    try:
        assert sum(a.is_established for a in one_address) == limit
        # the others got A-ASSOCIATE-RJ (transient, local limit exceeded), not a reset
        assert [a.is_rejected for a in one_address[limit:]] == [True] * (16 - limit)
        assert echoscu(listener, settings) < PROMPT_S
        # from sixteen addresses: the last association is kept for an AE title that holds none
        many_addresses = [idle_association(listener.port, f"127.0.0.{n}") for n in range(3, 19)]
        held = limit + sum(a.is_established for a in many_addresses)
        assert held == settings.dicom.max_associations - 1
        # (fifteen idle pynetdicom associations poll the CPU: a looser bound than PROMPT_S, still
        # far below the dicom.network_timeout_s they would otherwise hold the port for)
        assert echoscu(listener, settings) < 5
        statuses = dicom_net.send([], "127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5)
        assert statuses == []
    finally:
        for assoc in one_address + many_addresses:
            if assoc.is_established:
                assoc.release()


def test_a_huge_pdu_header_is_refused_before_anything_is_buffered(listener, settings):
    sock = connect(listener.port, "127.0.0.2")
    sent = 0
    chunk = b"\x00" * (1 << 20)
    try:
        sock.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
        with pytest.raises(OSError):   # reset or broken pipe once the listener has closed it
            while sent < 256 * (1 << 20):
                sock.sendall(chunk)
                sent += len(chunk)
    finally:
        sock.close()
    assert sent < 32 * (1 << 20)   # the kernel's buffers at most, not the announced 4 GiB
    assert echoscu(listener, settings) < PROMPT_S


def test_an_oversize_pdu_after_negotiation_ends_the_association(listener, settings):
    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title="READINGROOM", bind_address=("127.0.0.2", 0))
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    try:
        raw.sendall(struct.pack(">BBL", 0x04, 0, settings.dicom.max_pdu_bytes + 64 * 1024) + b"\x00" * 65536)
    except OSError:
        pass
    deadline = time.monotonic() + SLACK_S
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not assoc.is_established
    assert echoscu(listener, settings) < PROMPT_S
