"""The Lab tab's plain core: which data folder to suggest, the sample set its button makes, and
the evaluation it runs. The Lab tab (workstation/tab_lab.py) only wires these to its components.

A suggestion is only ever a folder that exists: a new user's first click must not meet "No such
folder". When there is none, the box stays empty and the "Make a sample set" button writes one
with the same code as ``readingroom phantoms`` (models.phantoms.write_dataset).

What the Lab may read (security issue #19, finding 9): a folder under a data root
(``lab.data_roots``, default ``<home>/phantoms``), or files uploaded on the page (unpacked under
``<home>/lab/uploads/<random>/``), for every user, admins included. Paths are resolved first
(symlinks, ``..``), and the Lab never opens a database: a path that is, or a folder that holds,
a SQLite file (by name, by its 16-byte header, or by being the live database under another name)
is refused before anything in it is read. Opening and closing the live database from the server's
own process once released SQLite's locks under it, and acknowledged images were lost.
"""

from __future__ import annotations

import csv
import logging
import os
import secrets
import shutil
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Sequence

from readingroom.errors import ReadingRoomError
from readingroom.storage import PRIVATE_DIR, PRIVATE_FILE

log = logging.getLogger(__name__)

SAMPLE_STUDIES = 20
# Held-out seeds are 9000 and above (models/weights/*/metadata.json): never seen in training.
SAMPLE_SEED = 9000
PHANTOMS_FOLDER = "phantoms"      # under home, like `readingroom phantoms --out var/phantoms/...`
UPLOADS_FOLDER = Path("lab") / "uploads"    # under home: one <random> folder per upload
KEEP_UPLOADS = 20                 # the newest upload folders kept; older ones are removed
MAX_ZIP_MEMBERS = 100_000
SQLITE_HEADER = b"SQLite format 3\x00"
# Names of SQLite files: databases, their write-ahead logs, shared memory and journals.
DATABASE_ENDINGS = (".db", ".db3", ".sqlite", ".sqlite3", "-wal", "-shm", "-journal")


class LabError(ReadingRoomError):
    """A Lab action that cannot be done; the message says what to do on the page."""


def model_task(card: Any) -> str | None:
    """The phantom task (``ich`` or ``cxr``) a model reads: its card's ``task``, or the task
    whose findings cover all of the model's findings; None for a model no phantom fits."""
    from models.phantoms import TASK_FINDINGS

    task = (getattr(card, "metadata", None) or {}).get("task")
    if task in TASK_FINDINGS:
        return str(task)
    findings = set(getattr(card, "findings", ()) or ())
    for name, covered in TASK_FINDINGS.items():
        if findings and findings <= set(covered):
            return name
    return None


def sample_folder(home: Path, task: str) -> Path:
    """Where the sample button writes: ``<home>/phantoms/<task>-sample``."""
    return Path(home) / PHANTOMS_FOLDER / f"{task}-sample"


def _labelled(folder: Path) -> bool:
    return folder.is_dir() and (folder / "labels.csv").is_file()


def default_folder(home: Path, task: str | None) -> str:
    """The data folder to pre-fill for a task: the sample set if it was made, else another
    labelled ``<home>/phantoms/<task>-*`` folder (first by name), else "" (nothing to suggest).
    Computed when the page loads, so a folder made since then is suggested at the next load."""
    if not task:
        return ""
    sample = sample_folder(home, task)
    if _labelled(sample):
        return str(sample)
    root = Path(home) / PHANTOMS_FOLDER
    others = sorted(p for p in root.glob(f"{task}-*") if _labelled(p)) if root.is_dir() else []
    return str(others[0]) if others else ""


def data_for_model(home: Path, task: str | None, current: str) -> str:
    """The data folder box after the model changed: a folder the user typed stays; an empty box,
    or one that holds another task's suggestion, gets this task's suggestion (maybe empty)."""
    current = (current or "").strip()
    root = (Path(home) / PHANTOMS_FOLDER).resolve()
    if current and Path(current).expanduser().resolve().parent != root:
        return current
    return default_folder(home, task)


def _rows(labels: Path) -> int:
    with labels.open(newline="", encoding="utf-8") as fh:
        return sum(1 for _ in csv.DictReader(fh))


def make_sample(home: Path, task: str | None, *, n: int = SAMPLE_STUDIES, seed: int = SAMPLE_SEED,
                size: int | None = None, progress: bool = True) -> tuple[Path, bool]:
    """Write ``n`` SYNTHETIC studies of ``task`` and their labels.csv into the sample folder (the
    code of ``readingroom phantoms``); returns (folder, written). A complete set already there
    (labels.csv is written last, with ``n`` rows) is kept: ``written`` is False."""
    from models.phantoms import TASK_FINDINGS, write_dataset

    if task not in TASK_FINDINGS:
        raise LabError("This model reads no kind of study that the sample generator makes; "
                       f"choose a model for {' or '.join(sorted(TASK_FINDINGS))} phantoms.")
    folder = sample_folder(home, task)
    labels = folder / "labels.csv"
    if labels.is_file() and _rows(labels) == n:
        return folder, False
    write_dataset(task, n, seed, folder, size=size, progress=progress)
    log.info("Lab: wrote a sample set of %d %s studies to %s", n, task, folder)
    return folder, True


# -- what the Lab may read --------------------------------------------------------------------
def is_database_name(name: str) -> bool:
    """Whether a file name is one SQLite uses (``x.db``, ``x.sqlite``, ``x.db-wal``, ``x-shm``...)."""
    return name.lower().endswith(DATABASE_ENDINGS)


@dataclass(frozen=True)
class LabPaths:
    """Where the Lab may read (the data roots and the upload folder, resolved) and the database
    files it must never open (the live database, its -wal, -shm and -journal)."""

    home: Path
    roots: tuple[Path, ...]
    databases: tuple[Path, ...]
    max_upload_bytes: int = 2048 * 1024 * 1024

    @classmethod
    def at(cls, home: Path, data_roots: Iterable[str] = (PHANTOMS_FOLDER,), database: Path | None = None,
           max_upload_mb: int = 2048) -> "LabPaths":
        """The Lab's paths for a home: roots relative to it (or absolute), ``database`` besides
        ``<home>/readingroom.db`` (a SQLite database configured elsewhere)."""
        home = Path(home).expanduser().resolve()
        roots = tuple(dict.fromkeys((home / Path(r).expanduser()).resolve() for r in data_roots if str(r).strip()))
        mains = [home / "readingroom.db"] + ([Path(database)] if database else [])
        files = [Path(f"{m.resolve()}{end}") for m in mains for end in ("", "-wal", "-shm", "-journal")]
        return cls(home, roots, tuple(dict.fromkeys(files)), max_upload_mb * 1024 * 1024)

    @classmethod
    def from_settings(cls, settings: Any) -> "LabPaths":
        """The Lab's paths of these settings (``lab.data_roots``, the SQLite database in use)."""
        from sqlalchemy.engine import make_url

        database = None
        url = make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            database = Path(url.database)
        return cls.at(settings.home, settings.lab.data_roots, database, settings.lab.max_upload_mb)

    @property
    def uploads(self) -> Path:
        """``<home>/lab/uploads``: where uploaded files are kept, one random folder each."""
        return self.home / UPLOADS_FOLDER

    def what_to_do(self) -> str:
        """The advice of every refusal: where a folder may be, or upload."""
        where = " or ".join(str(r) for r in self.roots) or "the Lab's data folders (none are set: lab.data_roots)"
        return f"Choose a folder under {where}, or upload the files (a zip of studies and a labels CSV)."

    def allowed(self, resolved: Path) -> bool:
        """Whether a resolved path is under a data root or the upload folder."""
        return any(resolved.is_relative_to(root) for root in (*self.roots, self.uploads.resolve()))

    def database_problem(self, path: Path) -> str:
        """Why ``path`` (a file, followed if a link) is or may be a database, or "". The name and
        the identity (the same file as the live database under another name) are checked
        before the file is opened to read its header; only regular files are opened at all."""
        resolved = path.resolve()
        if resolved in self.databases or is_database_name(path.name) or is_database_name(resolved.name):
            return f"{path} is a database file"
        try:
            info = os.stat(resolved)
            live = {(s.st_dev, s.st_ino) for s in (_stat(d) for d in self.databases) if s is not None}
            if (info.st_dev, info.st_ino) in live:
                return f"{path} is the ReadingRoom database under another name"
            if not stat.S_ISREG(info.st_mode):
                return f"{path} is not a regular file"
            with open(resolved, "rb") as fh:
                if fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                    return f"{path} is a SQLite database"
        except OSError as exc:
            return f"{path} cannot be read: {exc.strerror or exc}"
        return ""

    def resolve(self, text: str, base: Path | None = None, what: str = "folder") -> Path:
        """The resolved path a box names (relative: to ``base``, else home), if the Lab may read
        it; LabError saying what to do otherwise."""
        given = Path(text.strip()).expanduser()
        resolved = ((base or self.home) / given).resolve()
        if resolved in self.databases or is_database_name(given.name) or is_database_name(resolved.name):
            raise LabError(f"{text.strip()} is a database, which the Lab never opens. {self.what_to_do()}")
        if not self.allowed(resolved):
            shown = text.strip() if str(resolved) == text.strip() else f"{text.strip()} ({resolved})"
            raise LabError(f"The Lab reads no {what} outside its data folders, and {shown} is outside them. "
                           f"{self.what_to_do()}")
        return resolved

    def tree_problem(self, folder: Path) -> str:
        """Why the Lab may not read the (resolved) folder: an entry that is or links to a database,
        a link out of the allowed folders, a file that is not a regular file; "" when none."""
        pending, seen = [folder], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                entries = sorted(os.scandir(current), key=lambda e: e.name)
            except OSError as exc:
                return f"{current} cannot be read: {exc.strerror or exc}"
            for entry in entries:
                path = Path(entry.path)
                target = path.resolve() if entry.is_symlink() else path
                if not self.allowed(target):
                    return f"{path} links to {target}, outside the Lab's data folders"
                if entry.is_dir():
                    pending.append(target)
                elif problem := self.database_problem(path):
                    return problem
        return ""


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def check_folder(paths: LabPaths, data: str) -> Path:
    """The data folder a box names, resolved, once the Lab may read all of it."""
    if not (data or "").strip():
        raise LabError("No data folder given. Give a folder of DICOM studies with a labels.csv, upload one, "
                       "or press Make a sample set.")
    folder = paths.resolve(data)
    if not folder.is_dir():
        raise LabError(f"No such folder: {data.strip()!r}. {paths.what_to_do()} Or press Make a sample set.")
    problem = paths.tree_problem(folder)
    if problem:
        raise LabError(f"The Lab does not read {data.strip()}: {problem}, and the Lab never opens a database "
                       f"nor follows a link out of its folders. {paths.what_to_do()}")
    return folder


def check_labels(paths: LabPaths, labels: str, folder: Path) -> Path:
    """The labels CSV a box names (relative: to the data folder; empty: its labels.csv), resolved,
    once the Lab may read it and every study it names is inside the folder."""
    path = paths.resolve((labels or "").strip() or "labels.csv", base=folder, what="labels file")
    if not path.exists():
        raise LabError(f"No labels file {labels.strip() or path}. Put a labels.csv in the data folder, "
                       "or upload one.")
    problem = paths.database_problem(path)
    if problem:
        raise LabError(f"The Lab does not read {path}: {problem}. {paths.what_to_do()}")
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise LabError(f"Cannot read the labels file {path}: {exc}. Give a CSV (the format: docs/models.md).") from None
    for n, row in enumerate(rows, start=2):
        study = (row.get("path") or "").strip()
        if study and not (folder / study).resolve().is_relative_to(folder):
            raise LabError(f"{path} line {n}: the study path {study!r} leaves the data folder. Give paths "
                           "relative to the data folder, inside it.")
    return path


def evaluation_inputs(paths: LabPaths, data: str, labels: str) -> tuple[Path, Path]:
    """The data folder and labels CSV the Lab's boxes name (labels default to the folder's),
    resolved and checked: under a data root or an upload, and no database anywhere in them."""
    folder = check_folder(paths, data)
    return folder, check_labels(paths, labels, folder)


# -- uploads -----------------------------------------------------------------------------------
def _private_dir(folder: Path) -> None:
    for new in reversed([p for p in [folder, *folder.parents] if not p.exists()]):
        new.mkdir(mode=PRIVATE_DIR, exist_ok=True)


def _prune_uploads(uploads: Path, keep: int = KEEP_UPLOADS) -> None:
    """Remove all but the ``keep`` newest upload folders."""
    folders = []
    for entry in os.scandir(uploads):
        try:
            if entry.is_dir(follow_symlinks=False):
                folders.append((entry.stat(follow_symlinks=False).st_mtime, Path(entry.path)))
        except OSError:
            continue                        # removed meanwhile
    folders.sort(reverse=True)
    for _, old in folders[keep:]:
        shutil.rmtree(old, ignore_errors=True)
        log.info("Lab: removed the old upload %s", old)


def _copy_limited(src: Any, dest: Path, budget: int) -> int:
    """Copy a stream into a new private file, at most ``budget`` bytes; returns the bytes copied."""
    copied = 0
    with open(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE), "wb") as out:
        while chunk := src.read(1024 * 1024):
            copied += len(chunk)
            if copied > budget:
                raise LabError("The zip unpacks to more than the Lab accepts (lab.max_upload_mb). "
                               "Upload fewer studies.")
            out.write(chunk)
    return copied


def _unpack(paths: LabPaths, archive: Path, dest: Path) -> None:
    """Unpack a zip of studies into ``dest``: no absolute path, ``..``, link or database in it,
    and no more than ``max_upload_bytes`` unpacked."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise LabError(f"The upload is not a zip file ({exc}). Upload a .zip of study folders.") from None
    budget = paths.max_upload_bytes
    with zf:
        members = [m for m in zf.infolist() if not m.filename.startswith("__MACOSX/")]
        if len(members) > MAX_ZIP_MEMBERS or sum(m.file_size for m in members) > budget:
            raise LabError("The zip holds more than the Lab accepts (lab.max_upload_mb, "
                           f"{MAX_ZIP_MEMBERS} files). Upload fewer studies.")
        for member in members:
            parts = PurePosixPath(member.filename.replace("\\", "/")).parts
            if (not parts or member.filename.startswith("/") or ".." in parts or ":" in parts[0]
                    or stat.S_ISLNK(member.external_attr >> 16)):
                raise LabError(f"The zip holds {member.filename!r}, a link or a path out of the zip. "
                               "Upload a zip of plain study folders.")
            if is_database_name(parts[-1]):
                raise LabError(f"The zip holds {member.filename!r}, a database. Upload DICOM studies and a CSV.")
            target = dest.joinpath(*parts)
            if member.is_dir():
                _private_dir(target)
                continue
            _private_dir(target.parent)
            with zf.open(member) as src:
                budget -= _copy_limited(src, target, budget)
            with open(target, "rb") as fh:
                if fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER:
                    raise LabError(f"The zip holds {member.filename!r}, a SQLite database. "
                                   "Upload DICOM studies and a CSV.")


def _data_folder(unpacked: Path) -> Path:
    """The folder of studies in an unpacked zip: the zip's one top-level folder, if it is all."""
    entries = [p for p in unpacked.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir() and not (unpacked / "labels.csv").exists():
        return entries[0]
    return unpacked


def save_upload(paths: LabPaths, files: Sequence[str | Path] | str | Path | None) -> tuple[str, str]:
    """Keep what was uploaded in a new ``<home>/lab/uploads/<random>/``: a zip of studies is
    unpacked in ``studies/``, a labels CSV is copied beside it. Returns (data folder, labels
    file) for the Lab's boxes, "" for what was not uploaded (that box keeps its value)."""
    given = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else (files or []))]
    zips = [f for f in given if f.suffix.lower() == ".zip"]
    csvs = [f for f in given if f.suffix.lower() == ".csv"]
    for f in given:
        problem = paths.database_problem(f)
        if problem:
            raise LabError(f"The upload {f.name} was refused: {problem}. Upload DICOM studies and a CSV.")
    if not given or len(zips) > 1 or len(csvs) > 1 or len(zips) + len(csvs) != len(given):
        raise LabError("Upload a zip of study folders, a labels CSV, or one of each.")
    _private_dir(paths.uploads)
    _prune_uploads(paths.uploads, KEEP_UPLOADS - 1)
    folder = paths.uploads / secrets.token_hex(8)
    _private_dir(folder)
    try:
        data = labels = ""
        if zips:
            _unpack(paths, zips[0], folder / "studies")
            data = str(_data_folder(folder / "studies"))
        if csvs:
            target = folder / csvs[0].name
            with csvs[0].open("rb") as src:
                _copy_limited(src, target, paths.max_upload_bytes)
            labels = str(target)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("Lab: kept an upload in %s (%s)", folder, ", ".join(f.name for f in given))
    return data, labels


def evaluate_folder(card: Any, paths: LabPaths, data: str, labels: str, out: Path, rules: dict | None = None,
                    progress: bool = True) -> tuple[str, list[str]]:
    """What the Lab's "Run evaluation" does: score ``card`` on the folder, as
    ``readingroom evaluate``; returns the report (markdown) and the plots' paths."""
    from models.evaluate import evaluate, report

    folder, labels_path = evaluation_inputs(paths, data, labels)
    summary = evaluate(card, folder, labels_path, out, config_rules=rules, progress=progress)
    return report(summary), [str(p) for p in sorted(Path(out).glob("*.png"))]
