import errno
import os
from pathlib import Path

import pytest

from readingroom.errors import StorageError
from readingroom.storage import atomic_write, instance_relpath, is_valid_uid, remove_stale_temp_files


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path):
    target = tmp_path / "a" / "b" / "x.dcm"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["x.dcm"]


def test_disk_full_raises_and_leaves_nothing(tmp_path: Path, monkeypatch):
    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    monkeypatch.setattr(os, "fdatasync", full)
    target = tmp_path / "x.dcm"
    with pytest.raises(StorageError, match="disk is full"):
        atomic_write(target, b"data")
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_removed(tmp_path: Path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".x.dcm.123.abcd.tmp").write_bytes(b"half")
    (tmp_path / "s" / "y.dcm").write_bytes(b"whole")
    assert remove_stale_temp_files(tmp_path) == 1
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["y.dcm"]


@pytest.mark.parametrize("uid, ok", [
    ("1.2.840.10008.5.1.4.1.1.2", True),
    ("dccc9599087131742838cc1162a630fea87ba9bf61ac09bfda90d4adfa5ddaed", True),  # real, non-conformant
    ("..", False),
    ("../../etc/passwd", False),
    ("1.2.3/4", False),
    ("", False),
    ("1." * 40, False),
])
def test_uid_validation_protects_paths(uid, ok):
    assert is_valid_uid(uid) is ok
    if not ok:
        with pytest.raises(ValueError):
            instance_relpath(uid, "1.2", "1.3")


def test_layout_is_study_series_sop():
    assert instance_relpath("1.1", "1.2", "1.3") == Path("dicom/1.1/1.2/1.3.dcm")
