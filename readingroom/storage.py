"""Crash-safe file storage for received DICOM instances.

Every file is written atomically: to a temporary file in the destination folder, flushed and
fsynced, renamed over the final name, and the folder fsynced. A crash at any point leaves
either the old file, the new file, or a stray ``*.tmp`` that ``remove_stale_temp_files`` cleans
at start-up; never a half-written ``.dcm``.

Files hold patient data: they are written ``0600`` in folders made ``0700`` (owner only), and
``readingroom`` runs with umask 077, so whatever else it writes (database, logs, PDFs) is too.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from readingroom.errors import StorageError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".tmp"
PRIVATE_FILE, PRIVATE_DIR, PRIVATE_UMASK = 0o600, 0o700, 0o077
# A conformant DICOM UID: digits and dots, at most 64 characters.
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# What we accept as a path component. Real senders emit non-conformant UIDs (hex hashes, for
# example); they are still unique, so they are stored. Nothing that could leave the folder is.
_SAFE_UID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$")


def is_conformant_uid(value: str) -> bool:
    return bool(value) and len(value) <= 64 and bool(_UID.match(value))


def is_valid_uid(value: str) -> bool:
    """True when ``value`` can safely name a file or folder (and so can be stored)."""
    return bool(_SAFE_UID.match(value or "")) and ".." not in value


def instance_relpath(study_uid: str, series_uid: str, sop_uid: str) -> Path:
    """dicom/<study>/<series>/<sop>.dcm, relative to the data folder. UIDs must be valid."""
    for name, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid), ("SOPInstanceUID", sop_uid)):
        if not is_valid_uid(uid):
            raise ValueError(f"{name} {uid!r} is not a usable UID (letters, digits, dots, at most 64 characters)")
    return Path("dicom") / study_uid / series_uid / f"{sop_uid}.dcm"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _storage_error(path: Path, exc: OSError) -> StorageError:
    reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror or str(exc)
    return StorageError(f"cannot write {path}: {reason}")


@dataclass
class PendingFile:
    """A file written and fsynced under a temporary name beside its final ``path``
    (``write_pending``); ``install`` renames it into place, ``discard`` removes it."""
    path: Path
    tmp: Path
    new_folders: list[Path]       # the folders write_pending made, outermost first
    durable: bool = True

    @property
    def folders(self) -> list[Path]:
        """The folders to fsync once it is renamed: its own, and the one above each new folder."""
        return list(dict.fromkeys([self.path.parent, *(new.parent for new in self.new_folders)]))

    def install(self, sync_folders: bool = True) -> None:
        """Rename over the final name, then (``sync_folders``) fsync ``folders``. Without, the
        caller must ``fsync_folders`` before it relies on the new name: one fsync of a series
        folder makes every rename into it durable (the intake's group commit)."""
        try:
            os.replace(self.tmp, self.path)
        except OSError as exc:
            self.discard()
            raise _storage_error(self.path, exc) from exc
        if self.durable and sync_folders:
            fsync_folders(self.folders)

    def take_back(self) -> None:
        """Undo ``install``: back to the temporary name (so that it can be installed again), or
        removed when that fails."""
        try:
            os.replace(self.path, self.tmp)
        except OSError:
            self.path.unlink(missing_ok=True)

    def discard(self) -> None:
        try:
            self.tmp.unlink()
        except OSError:
            pass


def fsync_folders(folders: Iterable[Path]) -> None:
    """fsync each folder once (the renames into it are durable after)."""
    for folder in dict.fromkeys(folders):
        try:
            _fsync_dir(folder)
        except OSError as exc:
            raise _storage_error(folder, exc) from exc


def write_pending(path: Path, data: bytes, *, durable: bool = True) -> PendingFile:
    """Write ``data`` beside ``path`` under a temporary name, flushed and fsynced (the slow part,
    which needs no lock: several writers at once overlap their fsyncs); ``install()`` puts it in
    place. Raises StorageError (with ``errno`` of the cause) when the disk is full or unwritable."""
    folder = path.parent
    tmp = folder / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"
    missing: list[Path] = []
    try:
        missing = [p for p in [folder, *folder.parents] if not p.exists()]
        for new in reversed(missing):
            new.mkdir(mode=PRIVATE_DIR, exist_ok=True)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fdatasync(handle.fileno())   # the data and what reads it back (its size): a new file's all
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise _storage_error(path, exc) from exc
    return PendingFile(path, tmp, list(reversed(missing)), durable)


def atomic_write(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` so that ``path`` never holds a partial file.

    Raises StorageError (with ``errno`` of the cause) when the disk is full or unwritable.
    """
    write_pending(path, data, durable=durable).install()


def remove_stale_temp_files(root: Path) -> int:
    """Delete temporary files left by a crash in the middle of a write. Returns how many."""
    count = 0
    if not root.exists():
        return 0
    for tmp in root.rglob(f".*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            count += 1
        except OSError as exc:
            log.warning("could not remove stale temporary file %s: %s", tmp, exc)
    if count:
        log.info("removed %d temporary file(s) left by an interrupted write under %s", count, root)
    return count


QUARANTINE_FOLDER = "quarantine"   # under home: files taken out of dicom/, each with a reason file
REASON_SUFFIX = ".reason.txt"


def quarantine_file(home: Path, path: Path, reason: str) -> Path:
    """Move ``path`` (a file under ``home``) to ``<home>/quarantine/`` at the same relative path
    (``.1``, ``.2``... before the suffix when taken), with ``<name>.reason.txt`` beside it that
    says why. Returns the new path. Raises StorageError (or OSError) when it cannot be moved;
    the file then stays where it was."""
    try:
        rel = path.relative_to(home)
    except ValueError:
        rel = Path(path.name)
    target = home / QUARANTINE_FOLDER / rel
    n = 0
    while target.exists() or target.with_name(target.name + REASON_SUFFIX).exists():
        n += 1
        target = target.with_name(f"{rel.stem}.{n}{rel.suffix}")
    note = target.with_name(target.name + REASON_SUFFIX)
    atomic_write(note, f"{rel.as_posix()}: {reason}\n".encode("utf-8", "replace"))   # makes the folders
    try:
        os.replace(path, target)
    except OSError:
        note.unlink(missing_ok=True)
        raise
    return target
