"""A throwaway Redis server for the tests: a free port on loopback, a temporary folder, gone after.

    with redis_server() as url:     # redis://127.0.0.1:PORT/0
        ...

No persistence (``--save '' --appendonly no``): the broker of a test starts empty. Nothing here
skips: a missing server is an error that says what to install.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

INSTALL_HINT = ("install Debian redis-server (`make test` and `make install` do: apt-get install redis-server) "
                "and the celery extra (`make install` runs pip install -e '.[test,postgres,celery]')")
START_TIMEOUT_S = 20


class RedisUnavailable(RuntimeError):
    """The test server could not be started; the message says what to install or fix."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """Start ``redis-server`` on a free loopback port; yield its URL; stop it and remove its folder."""
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists()
                                              else None)
    if binary is None:
        raise RedisUnavailable(f"redis-server is not on PATH; {INSTALL_HINT}")
    folder = Path(tempfile.mkdtemp(prefix="rr-redis-"))
    port = _free_port()
    log = (folder / "redis.log").open("wb")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(folder), "--daemonize", "no", "--protected-mode", "yes"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _ping(port):
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "redis.log").read_text(errors="replace")[-2000:]
                raise RedisUnavailable(f"redis-server did not answer PING on port {port} "
                                       f"(exit code {process.poll()}): {tail}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
