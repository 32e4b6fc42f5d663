"""A throwaway PostgreSQL server for the tests: initdb in a temporary folder, a private socket, gone after.

    with postgres_server() as url:            # postgresql+psycopg://postgres@/rr?host=DIR&port=PORT
        with fresh_database(url) as db_url:   # a new, empty database on that server
            ...

The server listens only on a Unix socket in its own folder (no TCP), with fsync off: it is fast and
collides with nothing. PostgreSQL refuses to run as root, so under root (CI) the folder is handed to
the ``postgres`` user and the server runs as that user through ``runuser``. The server's time zone is
pinned far from UTC, so a test's outcome never depends on the machine's zone and a naive-UTC mistake
shows up the same way everywhere. Nothing here skips: a missing server or driver is an error that
says what to install.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

INSTALL_HINT = ("install Debian postgresql (`make test` and `make install` do: apt-get install postgresql) and "
                "the postgres extra (`make install` runs pip install -e '.[test,postgres,celery]': psycopg)")
SERVER_TIMEZONE = "Pacific/Kiritimati"   # UTC+14: far from UTC and from any CI machine's zone
START_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """The test server could not be started; the message says what to install or fix."""


def find_binary(name: str) -> str:
    """``name`` (initdb, pg_ctl) on PATH, else in the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: [int(x) if x.isdigit() else 0 for x in Path(p).parts[-3].split(".")])
    if candidates:
        return candidates[-1]
    raise PostgresUnavailable(f"PostgreSQL's {name} is not on PATH nor in /usr/lib/postgresql/*/bin; {INSTALL_HINT}")


def _as_server_user() -> tuple[list[str], tuple[int, int] | None]:
    """The command prefix that runs a server binary, and the (uid, gid) to own its folder (root only)."""
    if os.geteuid() != 0:
        return [], None
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root, and there is no 'postgres' user to run the test server as "
                                  f"(PostgreSQL refuses to run as root); {INSTALL_HINT}") from None
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    if not os.path.exists(runuser):
        raise PostgresUnavailable("running as root, and runuser (util-linux) is missing: it runs the test server "
                                  "as the 'postgres' user")
    return [runuser, "-u", "postgres", "--"], (user.pw_uid, user.pw_gid)


def _run(cmd: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def _connect(url_host: str, port: int, dbname: str):
    try:
        import psycopg
    except ImportError:
        raise PostgresUnavailable(f"the PostgreSQL driver psycopg is not installed; {INSTALL_HINT}") from None
    return psycopg.connect(host=url_host, port=port, user="postgres", dbname=dbname, autocommit=True,
                           connect_timeout=5)


def url_for(host: str, port: int, dbname: str) -> str:
    return f"postgresql+psycopg://postgres@/{dbname}?host={host}&port={port}"


@contextmanager
def postgres_server(dbname: str = "rr") -> Iterator[str]:
    """Start a server in a temporary folder, create ``dbname``, yield its SQLAlchemy URL; stop and remove it."""
    from tests.conftest import free_port

    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    prefix, owner = _as_server_user()
    # A short path: the socket path must stay under 107 bytes. /tmp, not $TMPDIR, because under root
    # the postgres user must be able to reach it.
    root = Path(tempfile.mkdtemp(prefix="rr-pg-", dir="/tmp" if os.path.isdir("/tmp") else None))
    data, log = root / "data", root / "server.log"
    port = free_port()
    started = False
    try:
        if owner is not None:
            os.chown(root, *owner)
        done = _run(prefix + [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
                              "--locale=C", "--no-sync", "--no-instructions"], root, 120)
        if done.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")
        options = (f"-p {port} -k {root} -c listen_addresses='' -c fsync=off -c synchronous_commit=off "
                   f"-c full_page_writes=off -c max_connections=200 -c timezone={SERVER_TIMEZONE}")
        done = _run(prefix + [pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w",
                              "-t", str(START_TIMEOUT_S), "start"], root, START_TIMEOUT_S + 10)
        started = True
        if done.returncode != 0:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed ({done.returncode}): {done.stderr or done.stdout}\n"
                                      f"server log:\n{tail}")
        _wait_and_create(str(root), port, dbname, log)
        yield url_for(str(root), port, dbname)
    finally:
        if started:
            _run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], root, 60)
        shutil.rmtree(root, ignore_errors=True)


def _wait_and_create(host: str, port: int, dbname: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            with _connect(host, port, "postgres") as conn:
                conn.execute(f'CREATE DATABASE "{dbname}"')
            return
        except PostgresUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - not accepting connections yet; the deadline decides
            if time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                raise PostgresUnavailable(f"the test server does not accept connections: {exc}\n"
                                          f"server log:\n{tail}") from None
            time.sleep(0.1)


def _parts(url: str) -> tuple[str, int, str]:
    """(socket folder, port, database) of a URL made by ``url_for``."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return str(parsed.query["host"]), int(str(parsed.query["port"])), str(parsed.database)


@contextmanager
def fresh_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A new empty database on the server of ``server_url`` (unique name), dropped at the end."""
    host, port, _ = _parts(server_url)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with _connect(host, port, "postgres") as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield url_for(host, port, name)
    finally:
        with _connect(host, port, "postgres") as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
