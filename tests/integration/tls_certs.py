"""Throwaway certificates for the TLS tests, made with the openssl command line.

A test CA; a server certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) and a client
certificate, both signed by it; and a client certificate of another CA, which our listeners must
not trust. Valid for 2 days: the tests never depend on the date (expiry is not tested).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

DAYS = "2"


@dataclass(frozen=True)
class PKI:
    ca: Path                 # the CA certificate (PEM) that both sides trust
    server_cert: Path
    server_key: Path
    client_cert: Path        # CN=STORESCU, signed by ``ca``
    client_key: Path
    rogue_cert: Path         # signed by another CA: must be refused
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    run = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, f"openssl {' '.join(map(str, args))}: {run.stderr}"


def _ca(folder: Path, name: str) -> tuple[Path, Path]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS, "-subj", f"/CN={name}",
             "-keyout", key, "-out", cert,
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _leaf(folder: Path, name: str, common_name: str, extensions: str, ca: tuple[Path, Path]) -> tuple[Path, Path]:
    cert, key, csr, ext = (folder / f"{name}.pem", folder / f"{name}.key", folder / f"{name}.csr",
                           folder / f"{name}.ext")
    ext.write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={common_name}", "-keyout", key, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", DAYS,
             "-extfile", ext, "-out", cert)
    return cert, key


def make_pki(folder: Path) -> PKI:
    folder.mkdir(parents=True, exist_ok=True)
    ca, rogue_ca = _ca(folder, "test-ca"), _ca(folder, "rogue-ca")
    server = _leaf(folder, "server", "127.0.0.1",
                   "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
                   ca)
    client_ext = "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n"
    client = _leaf(folder, "client", "STORESCU", client_ext, ca)
    rogue = _leaf(folder, "rogue", "STORESCU", client_ext, rogue_ca)
    return PKI(ca[0], server[0], server[1], client[0], client[1], rogue[0], rogue[1])
