"""DICOM TLS (security issue #19, finding 6) with real clients and real certificates.

The listener with dicom.tls_certfile/tls_keyfile/tls_ca_file against dcmtk's storescu and
echoscu (``+tls KEY CERT +cf CA``), plain and certificate-less clients, our pynetdicom SCU, the
report delivery to a TLS PACS (dcmtk's storescp), half-open handshakes that must not hold the
port, and the refusal to listen off loopback without TLS. The certificates are made by openssl
for the test (tests/integration/tls_certs.py).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time

import pytest
from pydicom import dcmread
from sqlalchemy import select

from readingroom import dicom_net
from readingroom.errors import ConfigError, ReadingRoomError
from readingroom.schema import Instance
from readingroom.settings import DicomPeer
from readingroom.tls import client_context, is_loopback, listen_problem, peer_context
from tests.conftest import DCMTK, free_port, make_settings
from tests.integration.tls_certs import make_pki
from models.phantoms import ct_series, head_phantom
from triage.intake import Intake
from triage.scp import DicomListener

pytestmark = pytest.mark.integration

TIMEOUT_S = 2.0          # dicom.association_timeout_s of these tests
PROMPT_S = 1.5           # a real sender must be through in less than this
SLACK_S = 2.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_dicom(pki, require_client_cert: bool = True, **more) -> dict:
    return {"tls_certfile": str(pki.server_cert), "tls_keyfile": str(pki.server_key),
            "tls_ca_file": str(pki.ca) if require_client_cert else "", "association_timeout_s": TIMEOUT_S, **more}


@pytest.fixture
def settings(tmp_path, pki):
    return make_settings(tmp_path / "home", dicom=tls_dicom(pki))


def running(settings, db) -> DicomListener:
    listener = DicomListener(settings, Intake(settings, db))
    listener.start()
    return listener


@pytest.fixture
def listener(settings, db):
    listener = running(settings, db)
    yield listener
    listener.stop()


@pytest.fixture(scope="module")
def ct_file(tmp_path_factory):
    ds = ct_series(head_phantom(1, size=16), key="tls-dicom")[0]
    path = tmp_path_factory.mktemp("ct") / "ct.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def dcmtk(tool: str, port: int, *options: str, files=(), calling_ae: str = "STORESCU") -> subprocess.CompletedProcess:
    return subprocess.run([str(DCMTK / tool), *options, "-aet", calling_ae, "-aec", "READINGROOM", "-to", "10",
                           "-ta", "10", "127.0.0.1", str(port), *map(str, files)],
                          capture_output=True, text=True, timeout=60)


def with_cert(pki, cert=None, key=None) -> list[str]:
    return ["+tls", str(key or pki.client_key), str(cert or pki.client_cert), "+cf", str(pki.ca)]


def settled(listener, within_s: float = 3.0) -> bool:
    """Every connection has ended (an association's thread ends a moment after its peer leaves)."""
    deadline = time.monotonic() + within_s
    while listener.connections() != (0, 0):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def indexed(db) -> set[str]:
    with db.reader() as session:
        return set(session.scalars(select(Instance.sop_uid)))


def scu_context(pki, with_client_cert: bool = True, ca=None) -> ssl.SSLContext:
    return client_context(str(ca or pki.ca), str(pki.client_cert) if with_client_cert else "",
                          str(pki.client_key) if with_client_cert else "")


# -- real clients ---------------------------------------------------------------------------------
def test_dcmtk_storescu_and_echoscu_with_a_client_certificate_get_through(listener, db, pki, ct_file):
    store = dcmtk("storescu", listener.port, *with_cert(pki), files=[ct_file])
    assert store.returncode == 0, store.stdout + store.stderr
    assert str(dcmread(ct_file).SOPInstanceUID) in indexed(db)
    echo = dcmtk("echoscu", listener.port, *with_cert(pki), calling_ae="ECHOSCU")
    assert echo.returncode == 0, echo.stdout + echo.stderr
    assert settled(listener)


def test_plain_dicom_and_clients_without_a_trusted_certificate_are_refused(listener, db, pki, ct_file, caplog):
    caplog.set_level("WARNING", logger="triage.scp")
    plain = dcmtk("storescu", listener.port, files=[ct_file])
    assert plain.returncode != 0
    anonymous = dcmtk("storescu", listener.port, "+tla", "+cf", str(pki.ca), files=[ct_file])
    assert anonymous.returncode != 0
    rogue = dcmtk("storescu", listener.port, *with_cert(pki, pki.rogue_cert, pki.rogue_key), files=[ct_file])
    assert rogue.returncode != 0
    assert not dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5)   # plain SCU
    assert not dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5,
                              ssl_context=scu_context(pki, with_client_cert=False))
    assert indexed(db) == set()
    assert "TLS handshake failed" in caplog.text and "dicom.tls_ca_file" in caplog.text
    # and the port still serves a sender with a certificate
    assert dcmtk("echoscu", listener.port, *with_cert(pki), calling_ae="ECHOSCU").returncode == 0


def test_without_a_ca_file_tls_is_required_but_client_certificates_are_not(tmp_path, db, pki):
    settings = make_settings(tmp_path / "home", dicom=tls_dicom(pki, require_client_cert=False))
    listener = running(settings, db)
    try:
        anonymous = dcmtk("echoscu", listener.port, "+tla", "+cf", str(pki.ca), calling_ae="ECHOSCU")
        assert anonymous.returncode == 0, anonymous.stdout + anonymous.stderr
        assert dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5,
                              ssl_context=scu_context(pki, with_client_cert=False))
        assert dcmtk("echoscu", listener.port, calling_ae="ECHOSCU").returncode != 0   # plain: no
    finally:
        listener.stop()


def test_our_scu_sends_over_tls_and_verifies_the_server(listener, db, pki):
    series = ct_series(head_phantom(2, size=16), key="tls-scu")
    assert dicom_net.send(series, "127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5,
                          ssl_context=scu_context(pki)) == [0, 0]
    assert {str(ds.SOPInstanceUID) for ds in series} <= indexed(db)
    assert dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5, ssl_context=scu_context(pki))
    # a server certificate that our CA file does not vouch for is refused by the SCU
    with pytest.raises(dicom_net.AssociationError, match="over TLS: check tls_ca_file"):
        dicom_net.send(series[:1], "127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5,
                       ssl_context=scu_context(pki, ca=pki.rogue_cert))


@pytest.fixture
def tls_pacs(tmp_path, pki):
    """dcmtk's storescp over TLS, requiring our client certificate: the site's PACS."""
    port, folder = free_port(), tmp_path / "pacs"
    folder.mkdir()
    proc = subprocess.Popen([str(DCMTK / "storescp"), "+tls", str(pki.server_key), str(pki.server_cert),
                             "+cf", str(pki.ca), "-aet", "PACS", "-od", str(folder), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    yield port, folder
    proc.terminate()
    proc.wait(10)


def test_the_report_sr_goes_to_a_tls_pacs_with_the_destinations_tls_settings(tmp_path, pki, tls_pacs):
    from tests.test_report_delivery import Stack

    port, folder = tls_pacs
    peer = {"ae_title": "PACS", "host": "127.0.0.1", "port": port, "tls_ca_file": str(pki.ca),
            "tls_certfile": str(pki.client_cert), "tls_keyfile": str(pki.client_key)}
    stack = Stack(tmp_path / "home", {"dicom": peer})
    report_id = stack.signed()
    stack.drain()
    row = stack.service.delivery_status(report_id)[0]
    assert row["status"] == "delivered" and row["acknowledgement"].startswith("C-STORE 0x0000"), row
    (stored,) = list(folder.iterdir())
    assert dcmread(stored).Modality == "SR"
    stack.db.dispose()
    # without our client certificate the PACS refuses us, and the error says where to look
    from reporting.delivery import sr
    from reporting.delivery.document import DeliveryError

    bare = DicomPeer(ae_title="PACS", host="127.0.0.1", port=port, tls_ca_file=str(pki.ca))
    with pytest.raises(DeliveryError, match="over TLS"):
        sr.store(dcmread(stored), "127.0.0.1", port, "PACS", "READINGROOM", timeout_s=5,
                 ssl_context=peer_context(bare))


# -- the handshake has a deadline -----------------------------------------------------------------
def client_hello() -> bytes:
    """The first flight of a real TLS client (a ClientHello), to send byte by byte."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def closed_within(sock: socket.socket, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
        return True
    except TimeoutError:
        return False
    return False


def trickle(sock: socket.socket, data: bytes, stop: threading.Event, every_s: float = 0.2) -> None:
    """Send ``data`` one byte at a time: each byte resets a per-read timeout, not the deadline."""
    for byte in data:
        if stop.wait(every_s):
            return
        try:
            sock.send(bytes([byte]))
        except OSError:
            return


def test_half_open_handshakes_are_dropped_at_the_deadline_while_a_sender_gets_through(listener, pki):
    silent = [connect(listener.port, f"127.0.0.{n}") for n in range(2, 10)]      # connect, say nothing
    trickler = connect(listener.port, "127.0.0.10")                            # a ClientHello, slowly
    stop = threading.Event()
    threading.Thread(target=trickle, args=(trickler, client_hello(), stop), daemon=True).start()
    handshaken = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)                        # TLS, then no request
    handshaken.load_verify_locations(str(pki.ca))
    handshaken.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    idle = handshaken.wrap_socket(connect(listener.port, "127.0.0.11"), server_hostname="127.0.0.1")
    started = time.monotonic()
    try:
        time.sleep(0.2)
        began = time.monotonic()
        echo = dcmtk("echoscu", listener.port, *with_cert(pki), calling_ae="ECHOSCU")
        assert echo.returncode == 0, echo.stdout + echo.stderr
        assert time.monotonic() - began < PROMPT_S
        attackers = [*silent, trickler, idle]
        assert all(closed_within(sock, 2 * TIMEOUT_S + SLACK_S) for sock in attackers)
        assert time.monotonic() - started < 2 * TIMEOUT_S + SLACK_S
        assert settled(listener)
    finally:
        stop.set()
        for sock in [*silent, trickler, idle]:
            sock.close()


def test_the_trickled_handshake_is_cut_at_the_deadline_not_per_read(listener):
    sock = connect(listener.port, "127.0.0.2")
    stop = threading.Event()
    threading.Thread(target=trickle, args=(sock, client_hello(), stop, 0.1), daemon=True).start()
    start = time.monotonic()
    try:
        assert closed_within(sock, TIMEOUT_S + SLACK_S)
        assert TIMEOUT_S - 0.3 < time.monotonic() - start < TIMEOUT_S + SLACK_S
    finally:
        stop.set()
        sock.close()


@pytest.mark.parametrize("limits", [{"max_associations_per_address": 1}, {"max_associations": 1}],
                         ids=["per-address", "all-in-use"])
def test_a_busy_tls_listener_answers_a_rejection_over_tls(tmp_path, db, pki, limits):
    settings = make_settings(tmp_path / "home", dicom=tls_dicom(pki, **limits))
    listener = running(settings, db)
    try:
        from pynetdicom import AE
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        ae = AE(ae_title="TEST_SCU")
        ae.add_requested_context(Verification)
        held = ae.associate("127.0.0.1", listener.port, ae_title="READINGROOM",
                            tls_args=(scu_context(pki), "127.0.0.1"))
        assert held.is_established
        try:
            busy = dcmtk("echoscu", listener.port, *with_cert(pki), calling_ae="ECHOSCU")
            assert busy.returncode != 0
            assert "Rejected" in busy.stdout + busy.stderr, busy.stdout + busy.stderr
        finally:
            held.release()
        time.sleep(0.2)
        assert dcmtk("echoscu", listener.port, *with_cert(pki), calling_ae="ECHOSCU").returncode == 0
    finally:
        listener.stop()


# -- where the listener may listen ----------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost", "LOCALHOST"])
def test_loopback_hosts(host):
    assert is_loopback(host)
    assert listen_problem(host, tls=False, allow=False, section="dicom") is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "pacs.example.org", ""])
def test_other_hosts_need_tls_or_the_explicit_setting(host):
    problem = listen_problem(host, tls=False, allow=False, section="dicom")
    assert problem and "dicom.tls_certfile" in problem and "dicom.allow_insecure_remote=true" in problem
    assert listen_problem(host, tls=True, allow=False, section="dicom") is None
    assert listen_problem(host, tls=False, allow=True, section="dicom") is None


def test_the_listener_refuses_0_0_0_0_without_tls_and_starts_when_allowed(tmp_path, db, pki):
    plain = make_settings(tmp_path / "a", dicom={"host": "0.0.0.0"})
    with pytest.raises(ReadingRoomError, match="dicom.allow_insecure_remote") as refused:
        DicomListener(plain, Intake(plain, db)).start()
    assert "dicom.tls_certfile" in str(refused.value)
    for dicom in ({"host": "0.0.0.0", "allow_insecure_remote": True}, {"host": "0.0.0.0", **tls_dicom(pki)}):
        settings = make_settings(tmp_path / "b", dicom=dicom)
        listener = running(settings, db)
        try:
            context = scu_context(pki) if "tls_certfile" in dicom else None
            assert dicom_net.echo("127.0.0.1", listener.port, calling_ae="TEST_SCU", timeout_s=5, ssl_context=context)
        finally:
            listener.stop()


def test_tls_settings_are_checked(tmp_path, db, pki):
    with pytest.raises(ConfigError, match="dicom.tls_keyfile"):
        make_settings(tmp_path / "h", dicom={"tls_certfile": str(pki.server_cert)})
    with pytest.raises(ConfigError, match="dicom.tls_ca_file requires"):
        make_settings(tmp_path / "h", dicom={"tls_ca_file": str(pki.ca)})
    with pytest.raises(ValueError, match="TLS is off"):
        DicomPeer(ae_title="PACS", host="h", port=104, tls_certfile="c.pem", tls_keyfile="k.pem")
    assert peer_context(DicomPeer(ae_title="PACS", host="h", port=104)) is None
    assert peer_context(DicomPeer(ae_title="PACS", host="h", port=104, tls=True)) is not None   # system CAs
    missing = make_settings(tmp_path / "h", dicom={"tls_certfile": str(tmp_path / "no.pem"),
                                                   "tls_keyfile": str(tmp_path / "no.key")})
    with pytest.raises(ConfigError, match="cannot load the certificate and key dicom.tls_certfile"):
        DicomListener(missing, Intake(missing, db)).start()
