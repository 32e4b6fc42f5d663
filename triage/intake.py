"""Intake: validate, store and index one DICOM instance. The listener and the importer share it.

``Intake.store()`` is the one code path by which an image enters ReadingRoom. It returns the
DICOM status to send back; it never raises. An instance is on disk (atomically) *and* in the
database before the status is Success, so an acknowledged image is never lost. A failure leaves
no file and no row behind.

``Intake.reconcile()`` runs at start-up (triage/service.py), before the listener listens: a
``.dcm`` file under ``<home>/dicom/`` without an Instance row (its row was lost, for example
when something broke the database's locks) is indexed through the same checks as a received
instance, or moved to ``<home>/quarantine/`` with a reason file when it cannot be.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from pydicom import Dataset, dcmread, dcmwrite
from pydicom.dataset import FileMetaDataset
from pydicom.pixels.utils import get_expected_length
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID
from sqlalchemy import Connection, bindparam, case, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from readingroom.db import Database
from readingroom.errors import StorageError
from readingroom.schema import Instance, Series, Site, Study, utcnow
from readingroom.settings import Settings
from readingroom.storage import (PendingFile, fsync_folders, instance_relpath, is_conformant_uid, is_valid_uid,
                                quarantine_file, write_pending)

log = logging.getLogger(__name__)

# Statements built once; each call only binds parameters (this runs for every image).
_FIND_STUDY = select(Study.id, Study.status).where(Study.study_uid == bindparam("uid"))
_FIND_SERIES = select(Series.id).where(Series.series_uid == bindparam("uid"))
_FIND_SITE = select(Site.id).where(Site.name == bindparam("name"))
# last_received_at only moves forward: two listeners may commit a study's instances out of order,
# and the quiet period runs from the newest of them.
_TOUCH_STUDY = (update(Study).where(Study.id == bindparam("study_id"))
                .values(last_received_at=case((Study.last_received_at < bindparam("now"), bindparam("now")),
                                              else_=Study.last_received_at),
                        completed_at=None, status=bindparam("new_status")))
_INSERT_STUDY = insert(Study)
_INSERT_SERIES = insert(Series)
_INSERT_INSTANCE = insert(Instance)
_INSTANCE_PATH = select(Instance.path).where(Instance.sop_uid == bindparam("sop_uid"))
_EXISTING = (
    select(Study.study_uid, Series.series_uid)
    .select_from(Instance)
    .join(Series, Instance.series_id == Series.id)
    .join(Study, Series.study_id == Study.id)
    .where(Instance.sop_uid == bindparam("sop_uid"))
)

# Indexing an instance is tried again when another process created its study or series meanwhile.
INDEX_ATTEMPTS = 3
# Under home: the listener processes of one SQLite database take turns to write through it.
PROCESS_LOCK_FILE = "intake.lock"

# C-STORE statuses we return (PS3.4 B.2.3). 0xA7xx: out of resources (the sender may retry
# later); 0xC2xx: cannot understand (retrying the same data will not help).
SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700          # disk full, unwritable storage
OUT_OF_RESOURCES_DATABASE = 0xA701  # the index could not be written
CANNOT_UNDERSTAND = 0xC210         # the dataset could not be parsed at all
MISSING_UID = 0xC211               # a required UID is missing or malformed
UNDECODABLE_PIXELS = 0xC212        # pixel data present but cannot be decoded
UID_CONFLICT = 0xC213              # this SOP Instance UID is already stored in another study/series

# Site for callers that no site lists (only when no site restricts AE titles).
UNKNOWN_SITE = "Unknown site"
# Recorded as the "calling AE title" of instances indexed by the start-up reconcile.
RECONCILE_AE = "RECONCILE"
# Refusals that will not change on a retry: reconcile quarantines such a file. Any other
# (the disk or the database failing) leaves it where it is for the next start.
PERMANENT_REFUSALS = frozenset({CANNOT_UNDERSTAND, MISSING_UID, UNDECODABLE_PIXELS, UID_CONFLICT})


@dataclass(frozen=True)
class StoreResult:
    status: int
    outcome: str  # "stored", "duplicate" or "rejected"
    reason: str = ""
    study_uid: str = ""
    sop_uid: str = ""

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


@dataclass
class ReconcileSummary:
    """What the start-up reconcile did: files seen, indexed, quarantined, left for the next start."""

    files: int = 0
    indexed: int = 0
    quarantined: int = 0
    left: int = 0          # not indexed because of a passing failure (disk, database)

    @property
    def changed(self) -> int:
        return self.indexed + self.quarantined

    def format(self) -> str:
        text = (f"indexed {self.indexed}, quarantined {self.quarantined} "
                f"(of {self.files} .dcm file(s) on disk)")
        return text + (f", {self.left} left for the next start" if self.left else "")


def _text(ds: Dataset, keyword: str, limit: int = 200) -> str:
    value = ds.get(keyword, "")
    return str(value if value is not None else "").strip()[:limit]


def _int(ds: Dataset, keyword: str) -> int | None:
    try:
        value = ds.get(keyword)
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def order_priority(ds: Dataset) -> str:
    """Requested Procedure Priority (0040,1003), at the top level or in the Request Attributes
    Sequence: STAT, HIGH, ROUTINE, MEDIUM or LOW. "" when the modality did not send it."""
    try:
        value = ds.get("RequestedProcedurePriority")
        if not value and "RequestAttributesSequence" in ds and len(ds.RequestAttributesSequence):
            value = ds.RequestAttributesSequence[0].get("RequestedProcedurePriority")
        return str(value or "").strip().upper()[:16]
    except Exception:  # noqa: BLE001 - a malformed optional tag is no reason to refuse an image
        return ""


def pixel_data_problem(ds: Dataset) -> str:
    """Why the pixel data cannot be decoded, or "" when it can.

    Compressed data is decoded (JPEG, JPEG-LS, JPEG 2000, RLE: pylibjpeg and its plugins).
    Native data needs no decoder: its length must match what the image attributes describe,
    which is what decoding would check, without copying the pixels.
    """
    try:
        syntax = ds.file_meta.TransferSyntaxUID
        if syntax.is_compressed:
            ds.pixel_array  # noqa: B018 - decoding is the check
            return ""
        expected = get_expected_length(ds, "bytes")
        actual = len(ds.PixelData)
        if actual < expected or actual > expected + 1:  # one byte of padding to an even length
            return f"{actual} bytes of pixel data, but the image attributes need {expected}"
        return ""
    except Exception as exc:  # noqa: BLE001 - any failure here means nobody can display it
        return str(exc) or type(exc).__name__


def encode_file(ds: Dataset) -> bytes:
    """The dataset in the DICOM file format (preamble, file meta, dataset)."""
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:
        raise ValueError("no transfer syntax: the dataset has no File Meta Information")
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.setdefault("ImplementationClassUID", PYDICOM_IMPLEMENTATION_UID)
    ds.file_meta = meta
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(eq=False)
class _IndexRequest:
    """One instance waiting for the intake's lock: what its rows need, and the outcome."""
    ds: Dataset
    uids: dict[str, str]
    relpath: str
    size: int
    digest: str
    calling_ae: str
    write: bool
    pending: PendingFile | None = None
    installed: bool = False       # renamed into place (or about to be): undone if its rows do not commit
    result: tuple[str, tuple] | None = None
    error: BaseException | None = None

    @property
    def finished(self) -> bool:
        return self.result is not None or self.error is not None

    def uninstall(self) -> None:
        """Its rows did not commit: its file goes back to the temporary name (removed at the end)."""
        if self.installed and self.pending is not None:
            self.pending.take_back()
        self.installed = False


class Intake:
    """Stores instances and tells a listener (the study monitor) about each new one."""

    def __init__(self, settings: Settings, db: Database,
                 on_instance: Callable[[str, str | None, datetime], None] | None = None) -> None:
        self.settings = settings
        self.db = db
        self.on_instance = on_instance
        self._site_ids: dict[str, int] = {}
        # SQLite has one writer at a time anyway; serialising here avoids lock churn, and the
        # requests that wait for the lock are indexed together (group commit, ``_index``).
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_IndexRequest] = []
        # SQLite, several listener processes (dicom.processes): a writer that finds the database
        # locked sleeps 1, 2, 5, 10... ms before it tries again, which costs more than the write
        # itself. A lock file that the kernel hands over at once (flock) queues them instead.
        self._lock_file = settings.home / PROCESS_LOCK_FILE if db.is_sqlite else None
        self._lock_fd: int | None = None

    # -- the public entry point -----------------------------------------------------------
    def store(self, ds: Dataset, encoded: bytes | None = None, calling_ae: str = "",
              source: str = "network") -> StoreResult:
        """Validate, write and index one instance. ``encoded`` is the file as received, if any."""
        try:
            return self._store(ds, encoded, calling_ae.strip(), source)
        except Exception as exc:  # a handler must answer, never raise
            log.exception("unexpected error storing an instance from %s (%s)", calling_ae or "?", source)
            return self._reject(OUT_OF_RESOURCES, f"unexpected error: {exc}", calling_ae, source)

    def reconcile(self) -> ReconcileSummary:
        """Index each complete ``.dcm`` file under ``<home>/dicom/`` that no Instance row names,
        as a received instance (the same checks and rows; a new study gets no site, a known one
        keeps its own), or move it to ``<home>/quarantine/`` with a reason file when it can never
        be indexed. Run at start-up, before the listener listens. One query of the known paths
        and one walk of the folder when nothing is missing; a file is read only when it is."""
        summary = ReconcileSummary()
        root, home = self.settings.dicom_dir, self.settings.home
        if not root.is_dir():
            return summary
        with self.db.read_engine.connect() as conn:
            known = set(conn.scalars(select(Instance.path)))
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(".") or not name.endswith(".dcm"):
                    continue                   # temporary files of a write, and anything else
                summary.files += 1
                path = Path(folder) / name
                relpath = path.relative_to(home).as_posix()
                if relpath not in known:
                    self._reconcile_file(path, relpath, summary)
        return summary

    def _reconcile_file(self, path: Path, relpath: str, summary: ReconcileSummary) -> None:
        """Index (or quarantine) one file that has no Instance row."""
        try:
            data = path.read_bytes()
        except OSError as exc:                 # unreadable now (permissions, the disk): not junk
            summary.left += 1
            log.error("could not read %s (%s); it stays, and the next start tries again", relpath, exc)
            return
        try:
            ds = dcmread(io.BytesIO(data))
        except Exception as exc:  # noqa: BLE001 - whatever the reason, it cannot be indexed
            self._quarantine(path, relpath, f"cannot be read as a DICOM file: {exc}", summary)
            return
        try:
            result = self._store(ds, data, RECONCILE_AE, f"reconcile {relpath}", on_disk=relpath)
        except Exception as exc:  # the next start tries again
            log.exception("could not index %s; it stays for the next start", relpath)
            result = StoreResult(OUT_OF_RESOURCES, "rejected", f"unexpected error: {exc}")
        if result.outcome == "stored":
            summary.indexed += 1
            log.warning("indexed %s (instance %s of study %s): it was on disk without a database row",
                        relpath, result.sop_uid, result.study_uid)
        elif result.outcome == "duplicate":
            with self.db.read_engine.connect() as conn:
                indexed_at = conn.scalar(_INSTANCE_PATH, {"sop_uid": result.sop_uid})
            if indexed_at != relpath:          # else: another process indexed this very file meanwhile
                self._quarantine(path, relpath, f"a second copy of instance {result.sop_uid}, which is "
                                 f"indexed at {indexed_at}", summary)
        elif result.status in PERMANENT_REFUSALS:
            self._quarantine(path, relpath, f"refused with status 0x{result.status:04X}: {result.reason}", summary)
        else:
            summary.left += 1
            log.warning("could not index %s now (%s); it stays, and the next start tries again",
                        relpath, result.reason)

    def _quarantine(self, path: Path, relpath: str, reason: str, summary: ReconcileSummary) -> None:
        try:
            moved = quarantine_file(self.settings.home, path, reason)
        except (OSError, StorageError) as exc:
            summary.left += 1
            log.error("could not move %s to quarantine (%s): %s; it stays, and the next start tries again",
                      relpath, reason, exc)
            return
        summary.quarantined += 1
        log.warning("quarantined %s: %s; moved to %s", relpath, reason, moved)

    # -- steps ----------------------------------------------------------------------------
    def _reject(self, status: int, reason: str, calling_ae: str, source: str,
                study_uid: str = "", sop_uid: str = "") -> StoreResult:
        log.warning("rejected instance %s from %s (%s), status 0x%04X: %s",
                    sop_uid or "?", calling_ae or "?", source, status, reason)
        return StoreResult(status, "rejected", reason, study_uid, sop_uid)

    def _store(self, ds: Dataset, encoded: bytes | None, calling_ae: str, source: str,
               on_disk: str | None = None) -> StoreResult:
        """``on_disk``: the file is already stored at this path (relative to home; the reconcile):
        it is indexed there, never written nor removed, and a new study gets no site."""
        uids = {}
        for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            try:
                value = _text(ds, keyword, 100)
            except Exception as exc:  # noqa: BLE001 - a malformed element fails on access
                return self._reject(CANNOT_UNDERSTAND, f"cannot parse the dataset: {exc}", calling_ae, source)
            if not value:
                return self._reject(MISSING_UID, f"{keyword} is missing", calling_ae, source,
                                    uids.get("StudyInstanceUID", ""), uids.get("SOPInstanceUID", ""))
            if keyword != "SOPClassUID" and not is_valid_uid(value):
                return self._reject(MISSING_UID, f"{keyword} {value!r} is not a valid UID", calling_ae, source)
            if not is_conformant_uid(value):
                log.warning("%s %r from %s is not a conformant DICOM UID; stored anyway", keyword, value,
                            calling_ae or "?")
            uids[keyword] = value
        study_uid, series_uid, sop_uid = uids["StudyInstanceUID"], uids["SeriesInstanceUID"], uids["SOPInstanceUID"]

        if self.settings.dicom.verify_pixel_data and "PixelData" in ds:
            problem = pixel_data_problem(ds)
            if problem:
                return self._reject(UNDECODABLE_PIXELS, f"pixel data cannot be decoded: {problem}",
                                    calling_ae, source, study_uid, sop_uid)

        try:
            data = encoded if encoded is not None else encode_file(ds)
        except Exception as exc:  # noqa: BLE001
            return self._reject(CANNOT_UNDERSTAND, f"cannot encode the dataset: {exc}", calling_ae, source,
                                study_uid, sop_uid)

        relpath = on_disk or instance_relpath(study_uid, series_uid, sop_uid).as_posix()
        path = self.settings.home / relpath
        try:
            outcome, detail = self._write_and_index(ds, uids, path, relpath, data, calling_ae,
                                                    write=on_disk is None)
        except StorageError as exc:
            return self._reject(OUT_OF_RESOURCES, str(exc), calling_ae, source, study_uid, sop_uid)
        except SQLAlchemyError as exc:
            return self._reject(OUT_OF_RESOURCES_DATABASE, f"database error, try again later: {exc}",
                                calling_ae, source, study_uid, sop_uid)
        if outcome == "conflict":
            return self._reject(UID_CONFLICT, f"SOP Instance UID already stored in study {detail[0]}, "
                                f"series {detail[1]}", calling_ae, source, study_uid, sop_uid)
        if outcome == "duplicate":
            log.info("duplicate instance %s from %s: already stored", sop_uid, calling_ae or "?")
            return StoreResult(SUCCESS, "duplicate", "already stored", study_uid, sop_uid)
        site_name, received_at = detail

        log.debug("stored %s (%d bytes) from %s", relpath, len(data), calling_ae or "?")
        if self.on_instance is not None:
            self.on_instance(study_uid, site_name, received_at)
        return StoreResult(SUCCESS, "stored", "", study_uid, sop_uid)

    def _site_id(self, conn: Connection, calling_ae: str, assign: bool = True) -> tuple[int | None, str | None]:
        if not assign:
            return None, None          # a reconciled instance of an unknown study: no site
        site = self.settings.site_for_ae(calling_ae)
        name = site.name if site else UNKNOWN_SITE
        if name not in self._site_ids:
            site_id = conn.scalar(_FIND_SITE, {"name": name})
            if site_id is None:  # not cached: this transaction may still roll back
                return conn.execute(insert(Site), {"name": name, "created_at": utcnow()}).inserted_primary_key[0], name
            self._site_ids[name] = site_id
        return self._site_ids[name], name

    @staticmethod
    def _link_order(conn: Connection, ds: Dataset, study_id: int, study_uid: str) -> None:
        """Link a new study to its order (accession, worklist UID, or patient + procedure + date)."""
        from orders.linking import dicom_procedure_facts, link_new_study

        description, codes = dicom_procedure_facts(ds)
        link_new_study(conn, study_id, study_uid, accession=_text(ds, "AccessionNumber", 64),
                       patient_id=_text(ds, "PatientID", 64), study_date=_text(ds, "StudyDate", 8),
                       description=description, codes=codes)

    def _write_and_index(self, ds: Dataset, uids: dict[str, str], path: Path, relpath: str, data: bytes,
                         calling_ae: str, write: bool = True) -> tuple[str, tuple]:
        """Write the file under a temporary name, then, in one database transaction: check for a
        duplicate, rename the file into place, insert the rows.

        Returns ("stored", (site name, received at)), ("duplicate", ()) or ("conflict", (study, series)).
        If the transaction fails after the file was renamed, the file is removed again: no row, no file.
        ``write`` False (the reconcile): the file is already there; it is only indexed, and stays.
        """
        request = _IndexRequest(ds, uids, relpath, len(data), hashlib.sha256(data).hexdigest(), calling_ae, write)
        if write:
            # Written and fsynced under a temporary name before the lock, so that concurrent
            # associations overlap their fsyncs; put in place only if the instance is new.
            request.pending = write_pending(path, data)
        try:
            return self._index(request)
        finally:
            if request.pending is not None and not request.installed:
                request.pending.discard()

    def _index(self, request: "_IndexRequest") -> tuple[str, tuple]:
        """Group commit: the thread that gets the lock indexes every request waiting for it (other
        associations' instances) in one transaction, with one fsync of each series folder and one
        commit; the others find theirs done."""
        with self._queue_lock:
            self._queue.append(request)
        with self._write_lock:
            if not request.finished:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                with self._other_processes_wait():
                    self._index_batch(batch)
        if request.error is not None:
            raise request.error
        assert request.result is not None
        return request.result

    @contextmanager
    def _other_processes_wait(self) -> Iterator[None]:
        """Hold the lock file (SQLite only) while this process writes."""
        if self._lock_file is None:
            yield
            return
        if self._lock_fd is None:
            self._lock_file.parent.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _index_batch(self, batch: list["_IndexRequest"]) -> None:
        """Index ``batch`` in one transaction; when that fails (another process created one of its
        studies meanwhile, say), undo it and index each request on its own."""
        if len(batch) > 1:
            try:
                with self.db.engine.begin() as conn:
                    results = [self._index_in(conn, request, sync_folders=False) for request in batch]
                    fsync_folders(folder for request in batch if request.installed and request.pending
                                  for folder in request.pending.folders)
            except Exception as exc:  # noqa: BLE001 - each request is tried again on its own below
                log.info("group commit of %d instances failed (%s); indexing them one by one", len(batch), exc)
                for request in batch:
                    request.uninstall()
            else:
                for request, result in zip(batch, results):
                    request.result = result
                return
        for request in batch:
            try:
                request.result = self._index_alone(request)
            except BaseException as exc:  # noqa: BLE001 - raised in the request's own thread
                request.error = exc

    def _index_in(self, conn: Connection, request: "_IndexRequest", sync_folders: bool = True) -> tuple[str, tuple]:
        """One request inside the caller's transaction."""
        study_uid, series_uid = request.uids["StudyInstanceUID"], request.uids["SeriesInstanceUID"]
        existing = conn.execute(_EXISTING, {"sop_uid": request.uids["SOPInstanceUID"]}).first()
        if existing is not None:
            if tuple(existing) != (study_uid, series_uid):
                return "conflict", tuple(existing)
            return "duplicate", ()
        if request.pending is not None and not request.installed:
            request.installed = True   # from here a failure removes the file: no file without its row
            request.pending.install(sync_folders=sync_folders)   # in place before the rows commit
        return "stored", self._insert_rows(conn, request.ds, request.uids, request.relpath, request.size,
                                           request.digest, request.calling_ae, assign_site=request.write)

    def _index_alone(self, request: "_IndexRequest") -> tuple[str, tuple]:
        """One request in its own transaction, tried again when another process created its study
        or series meanwhile."""
        study_uid, series_uid = request.uids["StudyInstanceUID"], request.uids["SeriesInstanceUID"]
        for attempt in range(1, INDEX_ATTEMPTS + 1):
            try:
                with self.db.engine.begin() as conn:
                    return self._index_in(conn, request)
            except IntegrityError:
                # Another process (another listener, on PostgreSQL) inserted in between: the same
                # instance (its row points at this very path, so the file stays), or the first
                # rows of the same new study or series, which the next attempt joins.
                found = self._existing(request.uids["SOPInstanceUID"])
                if found == (study_uid, series_uid):
                    return "duplicate", ()
                if found is None and attempt < INDEX_ATTEMPTS:
                    log.info("study %s or its series was created by another process meanwhile; indexing %s "
                             "again (attempt %d)", study_uid, request.uids["SOPInstanceUID"], attempt + 1)
                    continue
                request.uninstall()
                raise
            except BaseException:
                request.uninstall()  # the transaction did not commit: no row points at the file
                raise
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _existing(self, sop_uid: str) -> tuple[str, str] | None:
        """(study UID, series UID) of a stored instance, or None."""
        with self.db.read_engine.connect() as conn:
            row = conn.execute(_EXISTING, {"sop_uid": sop_uid}).first()
        return None if row is None else (row[0], row[1])

    def _insert_rows(self, conn: Connection, ds: Dataset, uids: dict[str, str], relpath: str, size: int,
                     digest: str, calling_ae: str, assign_site: bool = True) -> tuple[str | None, datetime]:
        """Insert the instance, and its study and series when new (inside the caller's transaction)."""
        now = utcnow()
        study_uid, series_uid = uids["StudyInstanceUID"], uids["SeriesInstanceUID"]
        meta = getattr(ds, "file_meta", None)
        site_id, site_name = self._site_id(conn, calling_ae, assign_site)
        study = conn.execute(_FIND_STUDY, {"uid": study_uid}).first()
        if study is None:
            study_id = conn.execute(_INSERT_STUDY, {
                "study_uid": study_uid, "site_id": site_id, "calling_ae": calling_ae,
                "patient_id": _text(ds, "PatientID", 64), "patient_name": _text(ds, "PatientName"),
                "patient_birth_date": _text(ds, "PatientBirthDate", 8),
                "patient_sex": _text(ds, "PatientSex", 16), "accession": _text(ds, "AccessionNumber", 64),
                "study_date": _text(ds, "StudyDate", 8), "study_time": _text(ds, "StudyTime", 32),
                "description": _text(ds, "StudyDescription"),
                "referring_physician": _text(ds, "ReferringPhysicianName"),
                "status": "receiving", "received_at": now, "last_received_at": now, "ai_status": "pending",
                "order_priority": order_priority(ds),
            }).inserted_primary_key[0]
            self._link_order(conn, ds, study_id, study_uid)
        else:
            study_id, status = study.id, study.status
            if status in ("new", "triaged"):
                log.info("late instance for study %s: reopened, will be triaged again", study_uid)
                status = "receiving"
            elif status != "receiving":
                log.warning("instance arrived for study %s which is already %s", study_uid, status)
            conn.execute(_TOUCH_STUDY, {"study_id": study_id, "now": now, "new_status": status})
        series_id = conn.scalar(_FIND_SERIES, {"uid": series_uid})
        if series_id is None:
            series_id = conn.execute(_INSERT_SERIES, {
                "series_uid": series_uid, "study_id": study_id, "modality": _text(ds, "Modality", 16),
                "series_number": _int(ds, "SeriesNumber"), "description": _text(ds, "SeriesDescription"),
                "body_part": _text(ds, "BodyPartExamined", 64),
            }).inserted_primary_key[0]
        conn.execute(_INSERT_INSTANCE, {
            "sop_uid": uids["SOPInstanceUID"], "series_id": series_id, "sop_class_uid": uids["SOPClassUID"],
            "transfer_syntax_uid": str(meta.get("TransferSyntaxUID", "")) if meta else "",
            "instance_number": _int(ds, "InstanceNumber"), "rows": _int(ds, "Rows"),
            "columns": _int(ds, "Columns"), "number_of_frames": _int(ds, "NumberOfFrames") or 1,
            "path": relpath, "size_bytes": size, "sha256": digest, "calling_ae": calling_ae,
            "received_at": now,
        })
        return site_name, now
