"""Received images, the database and the logs are readable by their owner only (issue 19,
finding 10): files 0600, folders 0700, whatever the umask of the shell that started it."""

from __future__ import annotations

import os
import stat

import pytest

from models.phantoms import ct_series, head_phantom
from readingroom import dicom_net as scu
from tests.conftest import free_port
from tests.integration.helpers import start, stop, wait_for_echo

pytestmark = [pytest.mark.integration]


def test_what_the_listener_writes_is_private(tmp_path):
    home, port = tmp_path / "home", free_port()
    old = os.umask(0o022)            # a usual shell: files 0644, folders 0755
    try:
        listener = start("receive", "--port", str(port), home=home, log=tmp_path / "listener.log")
    finally:
        os.umask(old)
    try:
        wait_for_echo(port, listener)
        statuses = scu.send(ct_series(head_phantom(3, size=32), key="modes"), "127.0.0.1", port,
                            calling_ae="TEST_SCU")
        assert set(statuses) == {0}
    finally:
        stop(listener)
    files = [p for p in home.rglob("*") if p.is_file()]
    folders = [p for p in home.rglob("*") if p.is_dir()]
    assert len([p for p in files if p.suffix == ".dcm"]) == 3 and any(".db" in p.name for p in files)
    loose = [f"{p.relative_to(home)} {stat.S_IMODE(p.stat().st_mode):o}" for p in files
             if stat.S_IMODE(p.stat().st_mode) & 0o077]
    loose += [f"{p.relative_to(home)}/ {stat.S_IMODE(p.stat().st_mode):o}" for p in folders
              if stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not loose, loose
