"""The DICOM listener (pynetdicom): C-ECHO, C-STORE for every storage SOP class, and the
Modality Worklist C-FIND (approved orders, ``orders.mwl``) on the same AE title and port.

Handlers are thin: they hand the dataset to ``Intake.store`` and return its status. They never
raise, so one bad instance gets a failure status and the association goes on.

No peer can hold the port (security issue #19, finding 7). Before pynetdicom sees a connection,
the listener (``AdmissionGate``, ``_GuardedRequestHandler``) applies these rules:

* a connection must send its whole A-ASSOCIATE-RQ, of at most 64 KiB, within
  ``dicom.association_timeout_s``; it is read with MSG_PEEK (pynetdicom then reads it as usual),
  so a stalled or oversize request never becomes an association and is closed;
* ``dicom.max_associations_per_address`` connections at once from one address; over it, that
  address's oldest connection still negotiating is closed, else the new one gets A-ASSOCIATE-RJ;
* at most ``dicom.max_associations`` connections still negotiating; over it, the oldest is closed
  (a real sender sends its request within milliseconds of connecting);
* ``dicom.max_associations`` associations; the last one is kept for a site's AE title that holds
  no association yet (an unknown caller, or one that holds some, gets A-ASSOCIATE-RJ transient,
  local limit exceeded);
* after negotiation no PDU may announce more than ``dicom.max_pdu_bytes`` (plus a margin):
  the connection ends before its body is read; and a PDU half sent for
  ``dicom.network_timeout_s`` ends it too (the socket has that timeout).

DICOM TLS (security issue #19, finding 6): with ``dicom.tls_certfile`` and ``dicom.tls_keyfile``
every connection speaks TLS 1.2 or later; with ``dicom.tls_ca_file`` it must present a client
certificate signed by that CA. The handshake runs on the connection's thread (pynetdicom would
run it in the accepting one), after admission and within ``dicom.association_timeout_s``, so a
half-open handshake holds a negotiating slot like a half-sent request, and is closed at that
deadline. MSG_PEEK does not exist under TLS: the A-ASSOCIATE-RQ is read from the TLS socket
(same deadline, same bounds) and handed to pynetdicom first (``PDULimit``'s prefix). Off
loopback the listener does not start without TLS unless ``dicom.allow_insecure_remote``.
"""

from __future__ import annotations

import copy
import logging
import socket
import socketserver
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt, register_uid
from pynetdicom.dsutils import encode_file_meta
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer
from pynetdicom.sop_class import ModalityWorklistInformationFind, Verification  # type: ignore[attr-defined]

from readingroom.errors import ReadingRoomError
from readingroom.settings import Settings
from readingroom.tls import HandshakeError, handshake, listen_problem, peer_common_name, server_context, shutdown
from triage.intake import CANNOT_UNDERSTAND, Intake

log = logging.getLogger(__name__)

ASSOCIATE_RQ_MAX_BYTES = 64 * 1024    # a real A-ASSOCIATE-RQ (128 contexts) is a few KiB
ASSOCIATE_RQ_MIN_BYTES = 68           # its fixed part: version, AE titles, reserved (PS3.8 9.3.2)
PDU_MARGIN_BYTES = 1024               # over our announced maximum PDU length, for lax senders
KNOWN_AE_RESERVE = 1                  # associations kept for a site's AE title that holds none
PDU_HEADER = struct.Struct(">BBL")    # PDU type, reserved, length
RECV_CHUNK_BYTES = 256 * 1024       # the most one recv_into of a PDU body asks for
REJECT_WAIT_S = 0.5                   # a refused connection's request is awaited this long

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
        dataset.file_meta = meta = event.file_meta      # built once (encoded_dataset() would build it again)
        encoded = b"".join((b"\x00" * 128, b"DICM", encode_file_meta(meta), event.request.DataSet.getvalue()))
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
    ae.acse_timeout = settings.dicom.association_timeout_s
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


# -- admission: the rules of the module docstring ------------------------------------------------
class Refused(Exception):
    """A connection that is closed before pynetdicom sees it; the message says why."""


@dataclass(eq=False)
class Slot:
    """One accepted connection: negotiating until ``calling_ae`` is set, then an association."""

    sock: socket.socket
    address: str
    calling_ae: str | None = None
    dropped: threading.Event = field(default_factory=threading.Event)

    @property
    def negotiating(self) -> bool:
        return self.calling_ae is None


class AdmissionGate:
    """Who gets a connection and who gets an association (thread-safe; see the module docstring)."""

    def __init__(self, max_associations: int, max_per_address: int, known_ae_titles: list[str]) -> None:
        self.max_associations = max_associations
        self.max_per_address = max_per_address
        self.known = {title.strip() for title in known_ae_titles}   # empty: every caller is known
        self.reserve = KNOWN_AE_RESERVE if max_associations > KNOWN_AE_RESERVE else 0
        self._lock = threading.Lock()
        self._slots: list[Slot] = []     # oldest first

    def counts(self) -> tuple[int, int]:
        """(connections still negotiating, associations)."""
        with self._lock:
            negotiating = sum(1 for slot in self._slots if slot.negotiating)
            return negotiating, len(self._slots) - negotiating

    def admit(self, sock: socket.socket, address: str) -> Slot:
        """A slot for a new connection from ``address``, or Refused. May close an older connection
        of the same address (or any, when too many negotiate) that has not sent its request yet."""
        with self._lock:
            same = [slot for slot in self._slots if slot.address == address]
            if len(same) >= self.max_per_address:
                stalled = next((slot for slot in same if slot.negotiating), None)
                if stalled is None:
                    raise Refused(f"{address} already holds {len(same)} associations, the limit "
                                  "(dicom.max_associations_per_address)")
                self._drop(stalled, f"{address} opened a new one over dicom.max_associations_per_address")
            negotiating = [slot for slot in self._slots if slot.negotiating]
            if len(negotiating) >= self.max_associations:
                self._drop(negotiating[0], f"{len(negotiating)} connections were negotiating at once")
            slot = Slot(sock, address)
            self._slots.append(slot)
            return slot

    def associate(self, slot: Slot, calling_ae: str) -> None:
        """Turn a negotiating slot into an association of ``calling_ae``, or Refused."""
        known = not self.known or calling_ae in self.known
        with self._lock:
            held = [other for other in self._slots if not other.negotiating]
            if len(held) >= self.max_associations:
                raise Refused(f"all {len(held)} associations are in use (dicom.max_associations)")
            if len(held) >= self.max_associations - self.reserve:
                if not known:
                    raise Refused("the last association is kept for the AE titles of configs/sites.yaml")
                mine = sum(1 for other in held if other.calling_ae == calling_ae)
                if mine:
                    raise Refused(f"the last association is kept for a sender that holds none; "
                                  f"{calling_ae} holds {mine}")
            slot.calling_ae = calling_ae

    def release(self, slot: Slot) -> None:
        with self._lock:
            if slot in self._slots:
                self._slots.remove(slot)

    def close_all(self) -> None:
        """Close every connection (the listener stops)."""
        with self._lock:
            slots, self._slots = self._slots, []
        for slot in slots:
            slot.dropped.set()
            _shutdown(slot.sock)

    def _drop(self, slot: Slot, why: str) -> None:
        """Close a connection that has not sent its A-ASSOCIATE-RQ (the lock is held)."""
        self._slots.remove(slot)
        slot.dropped.set()
        _shutdown(slot.sock)
        log.warning("closed a DICOM connection from %s that had not sent its association request: %s",
                    slot.address, why)


def _shutdown(sock: Any) -> None:
    shutdown(sock)   # the TCP connection, also of a TLS socket (whose thread then closes it)


def peek_associate_request(sock: socket.socket, timeout_s: float, dropped: threading.Event,
                           consume: bool = False) -> bytes:
    """The whole A-ASSOCIATE-RQ PDU, read with MSG_PEEK (it stays in the socket for pynetdicom),
    within ``timeout_s``; Refused when it does not come in time, is not one, or is over 64 KiB.
    ``consume``: read it out of the socket instead (a TLS socket, which cannot peek); the caller
    hands it on."""
    deadline = time.monotonic() + timeout_s
    want, pause = PDU_HEADER.size, 0.002
    data = b""
    while not dropped.is_set():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Refused(f"no complete A-ASSOCIATE-RQ within {timeout_s:g} s (dicom.association_timeout_s)")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(want - len(data)) if consume else sock.recv(want, socket.MSG_PEEK)
        except TimeoutError:
            continue
        except OSError as exc:
            raise Refused(f"the connection failed: {exc}") from None
        if not chunk:
            raise Refused("it closed before sending an A-ASSOCIATE-RQ")
        data = data + chunk if consume else chunk
        if want == PDU_HEADER.size and len(data) == want:
            pdu_type, _, length = PDU_HEADER.unpack(data)
            if pdu_type != 0x01:
                raise Refused(f"its first PDU is of type 0x{pdu_type:02X}, not an A-ASSOCIATE-RQ")
            if not ASSOCIATE_RQ_MIN_BYTES <= length <= ASSOCIATE_RQ_MAX_BYTES:
                raise Refused(f"its A-ASSOCIATE-RQ announces {length} bytes; a valid one has "
                              f"{ASSOCIATE_RQ_MIN_BYTES} to {ASSOCIATE_RQ_MAX_BYTES}")
            want += length
            continue
        if len(data) >= want:
            return data
        if not consume:
            time.sleep(min(pause, remaining))   # part of it is there: wait for the rest
            pause = min(pause * 2, 0.05)
    raise Refused("closed to make room for another connection")


def calling_ae_of(request: bytes) -> str:
    """The calling AE title of an A-ASSOCIATE-RQ PDU (bytes 27-42, PS3.8 table 9-11)."""
    return request[26:42].decode("ascii", errors="replace").strip()


def reject_transient(sock: socket.socket, request: bytes | None = None, consumed: bool = False) -> None:
    """Answer A-ASSOCIATE-RJ (rejected-transient, service provider presentation, local limit
    exceeded: PS3.8 9.3.4, what pynetdicom sends when it is busy) and close. The request is read
    first (waiting REJECT_WAIT_S for it when ``request`` is None): a peer must have sent it to
    understand the answer, and a close with unread bytes would reset the connection.
    ``consumed``: the request is already read out of the socket (TLS)."""
    try:
        if request is None:
            request = peek_associate_request(sock, REJECT_WAIT_S, threading.Event(), consume=consumed)
        sock.settimeout(REJECT_WAIT_S)
        left = 0 if consumed else len(request)
        while left > 0:
            chunk = sock.recv(min(left, 65536))
            if not chunk:
                return
            left -= len(chunk)
        sock.sendall(PDU_HEADER.pack(0x03, 0, 4) + bytes([0, 0x02, 0x03, 0x02]))
        sock.shutdown(socket.SHUT_WR)
    except (Refused, OSError):
        pass
    finally:
        sock.close()


class PDULimit:
    """The accepted socket as pynetdicom reads it: every PDU header is checked as it passes, and a
    PDU that announces more than ``limit`` bytes ends the connection before its body is read
    (pynetdicom reads the header, then asks for the whole body at once)."""

    def __init__(self, sock: socket.socket, limit: int | None, peer: str, prefix: bytes = b"") -> None:
        self._sock = sock
        self._limit = limit
        self._peer = peer
        self._prefix = prefix   # bytes already read from the socket (the A-ASSOCIATE-RQ, under TLS)
        self._header = b""
        self._left = 0          # bytes of the current PDU's body still to come
        self._closed = False

    def __getattr__(self, name: str) -> Any:   # fileno, send, shutdown, close...: the socket's
        return getattr(self._sock, name)

    def pending(self) -> int:
        """Bytes readable now that select() does not see: the prefix, and what TLS has decrypted."""
        inner = getattr(self._sock, "pending", None)
        return len(self._prefix) + (inner() if inner is not None else 0)

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        """``recv`` into ``buffer``: a PDU's body goes straight in, headers pass through ``recv``."""
        nbytes = nbytes or len(buffer)
        if self._left and not self._prefix and not self._closed:
            read = self._sock.recv_into(buffer, min(nbytes, self._left), flags)
            self._left -= read
            return read
        data = self.recv(nbytes, flags)
        buffer[:len(data)] = data
        return len(data)

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if self._closed:
            return b""
        size = min(bufsize, self._left) if self._left else min(bufsize, PDU_HEADER.size - len(self._header))
        if self._prefix:
            data, self._prefix = self._prefix[:size], self._prefix[size:]
        else:
            data = self._sock.recv(size, flags)
        if self._left:
            self._left -= len(data)
            return data
        self._header += data
        if len(self._header) == PDU_HEADER.size:
            _, _, length = PDU_HEADER.unpack(self._header)
            self._header = b""
            if self._limit is not None and length > self._limit:
                log.warning("DICOM connection from %s closed: a PDU announces %d bytes, more than the %d "
                            "allowed (dicom.max_pdu_bytes and a margin)", self._peer, length, self._limit)
                self._closed = True
                _shutdown(self._sock)
            self._left = length
        return data


class _BufferedAssociationSocket(AssociationSocket):
    """pynetdicom's socket of an association, also ready to read when ``PDULimit`` holds bytes that
    select() cannot see: the A-ASSOCIATE-RQ read during admission, and what TLS has decrypted
    (pynetdicom checks ``pending()`` only on an ssl.SSLSocket itself, which PDULimit is not).
    It reads a PDU's body straight into one buffer, up to RECV_CHUNK_BYTES per call, where
    pynetdicom's own ``recv`` reads 4 KiB per call and appends (a 512 KiB image: 128 calls)."""

    def recv(self, nr_bytes: int) -> bytearray:
        assert self.socket is not None
        buffer = bytearray(nr_bytes)
        got = 0
        with memoryview(buffer) as view:
            while got < nr_bytes:
                read = self.socket.recv_into(view[got:], min(nr_bytes - got, RECV_CHUNK_BYTES))
                if not read:       # the connection closed: what came, as pynetdicom returns it
                    break
                got += read
        del buffer[got:]
        return buffer

    @property
    def ready(self) -> bool:
        pending = getattr(self.socket, "pending", None)
        if self.socket is not None and pending is not None and pending():
            return True
        return bool(super().ready)


class _GuardedRequestHandler(RequestHandler):
    """pynetdicom's request handler behind the admission rules; the slot lasts as long as the association."""

    server: "GuardedServer"

    def handle(self) -> None:
        server, sock = self.server, self.request
        address = str(self.client_address[0])
        try:
            slot = server.gate.admit(sock, address)
        except Refused as exc:
            log.warning("refused a DICOM connection from %s: %s", address, exc)
            if server.tls_context is None:
                reject_transient(sock)
            else:
                self._reject_tls(sock, address)
            return
        try:
            self._associate(slot)
        finally:
            server.gate.release(slot)

    def _reject_tls(self, sock: socket.socket, address: str) -> None:
        """A-ASSOCIATE-RJ over TLS: a short handshake (REJECT_WAIT_S) first, else just close."""
        assert self.server.tls_context is not None
        try:
            tls_sock = self.server.tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError:
            sock.close()
            return
        try:
            handshake(tls_sock, REJECT_WAIT_S)
        except HandshakeError:
            _shutdown(tls_sock)
            tls_sock.close()
            return
        reject_transient(tls_sock, consumed=True)

    def _start_tls(self, slot: Slot) -> Any:
        """The connection's TLS socket after its handshake (within dicom.association_timeout_s), or
        None: the connection is closed and the reason logged."""
        server = self.server
        assert server.tls_context is not None
        try:
            sock = server.tls_context.wrap_socket(slot.sock, server_side=True, do_handshake_on_connect=False)
        except OSError as exc:
            log.warning("closed a DICOM connection from %s before its TLS handshake: %s", slot.address, exc)
            return None
        slot.sock = sock      # from now on the gate closes the TLS socket (wrap_socket detached the other)
        try:
            if slot.dropped.is_set():
                raise HandshakeError("closed to make room for another connection")
            handshake(sock, server.association_timeout_s, slot.dropped)
        except HandshakeError as exc:
            server.gate.release(slot)
            if not slot.dropped.is_set():
                log.warning("closed a DICOM connection from %s: %s (dicom.association_timeout_s=%g; this listener "
                            "speaks DICOM TLS only%s)", slot.address, exc, server.association_timeout_s,
                            ", with a client certificate signed by dicom.tls_ca_file"
                            if server.tls_context.verify_mode == ssl.CERT_REQUIRED else "")
            _shutdown(sock)
            sock.close()
            return None
        log.debug("DICOM connection from %s: %s, client certificate %r", slot.address, sock.version(),
                  peer_common_name(sock))
        return sock

    def _associate(self, slot: Slot) -> None:
        server, sock = self.server, self.request
        tls = server.tls_context is not None
        if tls:
            sock = self._start_tls(slot)
            if sock is None:
                return
        try:
            request = peek_associate_request(sock, server.association_timeout_s, slot.dropped, consume=tls)
        except Refused as exc:
            server.gate.release(slot)
            if not slot.dropped.is_set():
                log.warning("closed a DICOM connection from %s: %s", slot.address, exc)
            _shutdown(sock)
            sock.close()
            return
        calling_ae = calling_ae_of(request)
        try:
            server.gate.associate(slot, calling_ae)
        except Refused as exc:
            server.gate.release(slot)
            log.warning("association from %s (%s) rejected, busy: %s", calling_ae, slot.address, exc)
            reject_transient(sock, request, consumed=tls)
            return
        sock.settimeout(server.network_timeout_s)
        self.request = PDULimit(sock, server.pdu_limit, slot.address, prefix=request if tls else b"")
        assoc = self._create_association()
        assoc.dul.socket.__class__ = _BufferedAssociationSocket   # it must see PDULimit.pending()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()
        assoc.join()


class _Contexts(list):
    """The supported presentation contexts, copied cheaply for each association.

    pynetdicom deep-copies them per association: with every storage class and transfer syntax
    that is about 0.1 s of CPU (each UID is validated again as it is copied), per association.
    A context holds immutable UIDs and one list; copying the context and its list is the same copy."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            twin = copy.copy(context)
            twin._transfer_syntax = list(context._transfer_syntax)
            copies.append(twin)
        return copies


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with the admission rules (``ae.make_server(server_class=...)``)."""

    daemon_threads = True
    request_queue_size = 128     # the listen() backlog: a burst of connections is not dropped (5)

    def __init__(self, *args: Any, settings: Settings, **kwargs: Any) -> None:
        dicom = settings.dicom
        self.gate = AdmissionGate(dicom.max_associations, dicom.max_associations_per_address,
                                  settings.allowed_calling_ae_titles)
        self.association_timeout_s = dicom.association_timeout_s
        self.network_timeout_s = dicom.network_timeout_s
        self.pdu_limit = (max(dicom.max_pdu_bytes + PDU_MARGIN_BYTES, ASSOCIATE_RQ_MAX_BYTES)
                          if dicom.max_pdu_bytes else None)
        # Our own TLS context, not pynetdicom's ssl_context: that one handshakes in the accepting
        # thread, where one silent peer would stop every other connection (module docstring).
        self.tls_context = (server_context(dicom.tls_certfile, dicom.tls_keyfile, dicom.tls_ca_file, "dicom")
                            if dicom.tls else None)
        # Several listener processes on one port (dicom.processes, triage/listener_group.py): the
        # kernel spreads the incoming connections over their sockets.
        self.reuse_port = dicom.processes > 1
        super().__init__(*args, request_handler=_GuardedRequestHandler, **kwargs)
        self.contexts = _Contexts(self.contexts)

    def server_bind(self) -> None:
        if self.reuse_port:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        """Stop accepting and close every connection (the AE does not list this server)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        self.gate.close_all()


class DicomListener:
    """The running listener: ``start()`` returns at once, ``stop()`` ends every connection."""

    def __init__(self, settings: Settings, intake: Intake) -> None:
        self.settings = settings
        self.intake = intake
        self.ae = build_ae(settings)
        self._server: GuardedServer | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self.settings.dicom.port

    def connections(self) -> tuple[int, int]:
        """(connections still negotiating, associations) now; (0, 0) when stopped."""
        return self._server.gate.counts() if self._server else (0, 0)

    def start(self) -> None:
        handlers = [
            (evt.EVT_C_STORE, handle_store, [self.intake]),
            (evt.EVT_C_FIND, _handle_worklist_find, [self.intake]),
            (evt.EVT_REJECTED, _log_event),
            (evt.EVT_ACCEPTED, _log_event),
            (evt.EVT_ABORTED, _log_event),
        ]
        dicom = self.settings.dicom
        address = (dicom.host, dicom.port)
        problem = listen_problem(dicom.host, dicom.tls, dicom.allow_insecure_remote, "dicom")
        if problem:
            raise ReadingRoomError(f"the DICOM listener does not start: {problem}")
        try:
            server = self.ae.make_server(address, evt_handlers=handlers, server_class=GuardedServer,
                                         settings=self.settings)
        except OSError as exc:
            raise ReadingRoomError(
                f"cannot listen for DICOM on {address[0]}:{address[1]}: {exc.strerror}. Is another listener "
                "running? Choose another port with --port or READINGROOM_DICOM__PORT."
            ) from None
        self._server = server
        threading.Thread(target=server.serve_forever, name=f"dicom-{server.server_address[1]}", daemon=True).start()
        allowed = self.settings.allowed_calling_ae_titles
        tls = ("DICOM TLS, client certificates required" if dicom.tls_ca_file else "DICOM TLS") if dicom.tls \
            else "no TLS"
        log.info("DICOM listener %s on %s:%d (%s; %s)", dicom.ae_title, address[0], self.port,
                 f"accepting {len(allowed)} AE titles from {len(self.settings.sites)} sites" if allowed
                 else "accepting any calling AE title", tls)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            log.info("DICOM listener stopped")
