"""TLS for the DICOM and HL7 (MLLP) listeners and senders (security issue #19, finding 6).

One place builds every ``ssl.SSLContext`` (TLS 1.2 or later, PEM files) and runs every
server-side handshake, so that the DICOM listener (``triage.scp``), the MLLP server
(``readingroom.mllp``) and the senders (``readingroom.dicom_net``, ``readingroom.mllp.send``)
behave alike:

* ``server_context(certfile, keyfile, ca_file, setting="dicom")``: our certificate; with
  ``ca_file`` a client must present a certificate signed by it (CERT_REQUIRED);
* ``client_context(ca_file, certfile, keyfile)``: the peer's certificate is verified (against
  ``ca_file``, else the system's trusted CAs) and its host name or IP checked; our certificate is
  presented when given;
* ``peer_context(peer)``: the client context of a site destination (``destinations.hl7``,
  ``destinations.dicom`` in configs/sites.yaml), None when it does not use TLS;
* ``handshake(sock, timeout_s)``: a server-side handshake with a real deadline (a peer that
  trickles its ClientHello byte by byte is cut off at ``timeout_s`` all the same);
* ``listen_problem(host, tls, allow, section)``: why a listener may not listen on ``host`` (off
  loopback it needs TLS unless ``<section>.allow_insecure_remote`` is true), or None.

    context = server_context("server.pem", "server.key", "ca.pem", setting="hl7")
    tls_sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    handshake(tls_sock, 5.0)
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import ssl
import threading
import time
from typing import Any

from readingroom.errors import ConfigError, ReadingRoomError

log = logging.getLogger(__name__)

MIN_VERSION = ssl.TLSVersion.TLSv1_2
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")
POLL_S = 0.25          # how often a handshake looks at its ``stop`` event


class HandshakeError(ReadingRoomError, ConnectionError):
    """A TLS handshake failed or did not finish in time; the message says which."""


def _load_error(setting: str, what: str, path: str, exc: Exception) -> ConfigError:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
    return ConfigError(f"cannot load {what} {setting}={path!r}: {reason}; give a readable PEM file "
                       "(see the TLS settings in configs/default.yaml and docs/integration.md)")


def server_context(certfile: str, keyfile: str, ca_file: str = "", setting: str = "dicom") -> ssl.SSLContext:
    """The context of a TLS listener: our certificate (chain) and key; with ``ca_file``, client
    certificates are required and verified against it. ConfigError names the setting at fault."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_VERSION
    try:
        context.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise _load_error(f"{setting}.tls_certfile/{setting}.tls_keyfile", "the certificate and key",
                          f"{certfile}, {keyfile}", exc) from None
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise _load_error(f"{setting}.tls_ca_file", "the CA certificates", ca_file, exc) from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: str = "", certfile: str = "", keyfile: str = "",
                   setting: str = "destination") -> ssl.SSLContext:
    """The context of a TLS sender: the server's certificate is verified against ``ca_file`` (the
    system's trusted CAs when empty) and must name the host we connect to; ``certfile``/``keyfile``
    are our client certificate, for a peer that requires one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)   # CERT_REQUIRED and check_hostname
    context.minimum_version = MIN_VERSION
    try:
        if ca_file:
            context.load_verify_locations(cafile=ca_file)
        else:
            context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    except (OSError, ssl.SSLError) as exc:
        raise _load_error(f"{setting}.tls_ca_file", "the CA certificates", ca_file, exc) from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile or None)
        except (OSError, ssl.SSLError) as exc:
            raise _load_error(f"{setting}.tls_certfile/{setting}.tls_keyfile", "the client certificate and key",
                              f"{certfile}, {keyfile}", exc) from None
    return context


def peer_context(peer: Any, setting: str = "destination") -> ssl.SSLContext | None:
    """The client context of a site destination (an ``HL7Peer`` or ``DicomPeer``: ``tls``,
    ``tls_ca_file``, ``tls_certfile``, ``tls_keyfile``), or None when it does not use TLS."""
    if peer is None or not getattr(peer, "uses_tls", False):
        return None
    return client_context(peer.tls_ca_file, peer.tls_certfile, peer.tls_keyfile, setting=setting)


def handshake(sock: ssl.SSLSocket, timeout_s: float, stop: threading.Event | None = None) -> None:
    """Run the server side of the TLS handshake of ``sock`` (wrapped with
    ``do_handshake_on_connect=False``) within ``timeout_s`` in all; HandshakeError otherwise, or
    when ``stop`` is set (another thread closed the connection). The socket's timeout is left at
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    sock.setblocking(False)
    try:
        while True:
            if stop is not None and stop.is_set():
                raise HandshakeError("the connection was closed during the TLS handshake")
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                wait: tuple[list[Any], list[Any]] = ([sock], [])
            except ssl.SSLWantWriteError:
                wait = ([], [sock])
            except ssl.SSLError as exc:
                raise HandshakeError(f"TLS handshake failed: {exc.reason or exc}") from None
            except OSError as exc:
                raise HandshakeError(f"the connection failed during the TLS handshake: {exc}") from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeError(f"no TLS handshake within {timeout_s:g} s")
            try:
                select.select(wait[0], wait[1], [], min(remaining, POLL_S))
            except (OSError, ValueError) as exc:   # the socket was closed under us
                raise HandshakeError(f"the connection failed during the TLS handshake: {exc}") from None
    finally:
        try:
            sock.settimeout(timeout_s)
        except OSError:
            pass


def peer_common_name(sock: Any) -> str:
    """The commonName of the peer's verified certificate ("" without one)."""
    getpeercert = getattr(sock, "getpeercert", None)
    cert = getpeercert() if getpeercert else None
    for rdn in (cert or {}).get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return ""


def shutdown(sock: Any) -> None:
    """Shut the TCP connection of ``sock`` down (a plain or a TLS socket; from any thread: the TLS
    state is left alone, the connection's thread sees the end and closes it)."""
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except (OSError, TypeError):
        pass


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: reachable from this machine only."""
    host = host.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, tls: bool, allow: bool, section: str) -> str | None:
    """Why a ``section`` listener (``dicom``, ``hl7``) may not listen on ``host``, or None: off
    loopback, patient data would travel in clear, unless TLS is on or the setting
    ``<section>.allow_insecure_remote`` says so (a VPN or TLS proxy in front)."""
    if tls or allow or is_loopback(host):
        return None
    what = {"dicom": "DICOM listener", "hl7": "HL7 (MLLP) listener", "web": "web page"}.get(section, section)
    client_certs = "" if section == "web" else f"; {section}.tls_ca_file to require client certificates"
    return (f"{section}.host={host} is reachable from other machines, and the {what} would carry "
            f"patient data in clear: set {section}.tls_certfile and {section}.tls_keyfile (PEM{client_certs}), "
            f"or {section}.allow_insecure_remote=true only behind a VPN or a TLS proxy, or {section}.host=127.0.0.1")
