"""Security issue #19, finding 9: the Lab reads only folders under its data roots, or uploads, and
never opens a database. With the live readingroom.db as its labels file, the server once opened
and closed its own database, which released SQLite's locks under it; acknowledged images were
lost. Here a lock is held on the database while the Lab's checks run: a second process must still
find it locked afterwards (an open and close from this process would have released it)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from workstation.lab import LabError, LabPaths, evaluation_inputs, save_upload

LABELS = "study_uid,path,pneumothorax\n1.2.3,study1,0\n"


def studies(folder: Path, labels: str = LABELS) -> Path:
    """A folder the Lab's checks accept: one study sub-folder and a labels.csv."""
    (folder / "study1").mkdir(parents=True)
    (folder / "study1" / "1.dcm").write_bytes(b"\0" * 128 + b"DICM")
    (folder / "labels.csv").write_text(labels)
    return folder


def still_locked(db: Path) -> bool:
    """Whether another process finds the database locked (this test holds an exclusive lock)."""
    probe = ("import sqlite3, sys\n"
             "c = sqlite3.connect(sys.argv[1], timeout=0, isolation_level=None)\n"
             "try:\n    c.execute('BEGIN EXCLUSIVE')\nexcept sqlite3.OperationalError:\n    sys.exit(3)\n")
    return subprocess.run([sys.executable, "-c", probe, str(db)], timeout=60).returncode == 3


@pytest.fixture
def home(tmp_path):
    home = tmp_path / "home"
    studies(home / "phantoms" / "ich-heldout")
    studies(tmp_path / "elsewhere")
    return home


@pytest.fixture
def locked_db(home):
    """The home's live database, with an exclusive lock held by this process."""
    db = home / "readingroom.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE instances (id INTEGER PRIMARY KEY)")
    conn.execute("BEGIN EXCLUSIVE")
    conn.execute("INSERT INTO instances VALUES (1)")
    assert still_locked(db)
    yield db
    conn.execute("ROLLBACK")
    conn.close()


def test_the_homes_database_is_refused_as_labels_file_without_being_opened(home, locked_db):
    paths = LabPaths.at(home)
    folder = home / "phantoms" / "ich-heldout"
    with pytest.raises(LabError, match=r"is a database.*Choose a folder under .*phantoms, or upload the files"):
        evaluation_inputs(paths, str(folder), str(locked_db))
    with pytest.raises(LabError, match="is a database"):
        evaluation_inputs(paths, str(folder), "../../readingroom.db")         # relative to the folder
    with pytest.raises(LabError, match="is a database"):
        evaluation_inputs(paths, str(folder), str(home / "readingroom.db-wal"))
    (folder / "labels-copy.csv").hardlink_to(locked_db)                       # the same file, another name
    with pytest.raises(LabError, match="the ReadingRoom database under another name"):
        evaluation_inputs(paths, str(folder), "labels-copy.csv")
    (folder / "labels-copy.csv").unlink()
    (home / "phantoms" / "link.csv").symlink_to(locked_db)                    # a link to it, outside the folder
    with pytest.raises(LabError, match="is a database"):
        evaluation_inputs(paths, str(folder), "../link.csv")
    (folder / "link.csv").symlink_to(locked_db)                               # or inside it
    with pytest.raises(LabError, match="link.csv links to .*readingroom.db, outside"):
        evaluation_inputs(paths, str(folder), "")
    assert still_locked(locked_db), "a check opened the live database and released its lock"


def test_a_folder_that_holds_a_database_is_refused(home, locked_db):
    paths = LabPaths.at(home)
    folder = home / "phantoms" / "ich-heldout"
    (folder / "study1" / "2.dcm").hardlink_to(locked_db)
    with pytest.raises(LabError, match="the ReadingRoom database under another name.*never opens a database"):
        evaluation_inputs(paths, str(folder), "")
    (folder / "study1" / "2.dcm").unlink()
    other = sqlite3.connect(folder / "study1" / "scores.bin")                 # any SQLite file, by its header
    other.execute("CREATE TABLE t (x)")
    other.close()
    with pytest.raises(LabError, match="scores.bin is a SQLite database"):
        evaluation_inputs(paths, str(folder), "")
    (folder / "study1" / "scores.bin").unlink()
    (folder / "study1" / "old.sqlite").write_bytes(b"")                       # or by its name
    with pytest.raises(LabError, match="old.sqlite is a database file"):
        evaluation_inputs(paths, str(folder), "")
    with pytest.raises(LabError, match="readingroom.db is a database"):      # a root that holds the home's
        evaluation_inputs(LabPaths.at(home, data_roots=(".",)), str(home), "")
    assert still_locked(locked_db)


def test_paths_outside_the_data_root_are_refused(home, tmp_path):
    paths = LabPaths.at(home)
    elsewhere = tmp_path / "elsewhere"
    advice = r"Choose a folder under .*phantoms, or upload the files"
    with pytest.raises(LabError, match=r"outside them\. " + advice):
        evaluation_inputs(paths, str(elsewhere), "")
    with pytest.raises(LabError, match=advice):                               # `..` out of the root
        evaluation_inputs(paths, str(home / "phantoms" / ".." / ".." / "elsewhere"), "")
    with pytest.raises(LabError, match=advice):                               # relative: from home
        evaluation_inputs(paths, "../elsewhere", "")
    with pytest.raises(LabError, match=advice):                               # a labels file outside
        evaluation_inputs(paths, str(home / "phantoms" / "ich-heldout"), str(elsewhere / "labels.csv"))
    with pytest.raises(LabError, match="No such folder.*Make a sample set"):
        evaluation_inputs(paths, str(home / "phantoms" / "missing"), "")
    with pytest.raises(LabError, match="none are set.*or upload the files"):   # no root: uploads only
        evaluation_inputs(LabPaths.at(home, data_roots=()), str(home / "phantoms" / "ich-heldout"), "")


def test_symlinks_out_of_the_data_root_are_refused(home, tmp_path):
    paths = LabPaths.at(home)
    (home / "phantoms" / "escape").symlink_to(tmp_path / "elsewhere")         # the folder itself
    with pytest.raises(LabError, match="outside them"):
        evaluation_inputs(paths, str(home / "phantoms" / "escape"), "")
    folder = home / "phantoms" / "ich-heldout"
    (folder / "study2").symlink_to(tmp_path / "elsewhere" / "study1")         # a link inside the folder
    with pytest.raises(LabError, match="links to .*outside the Lab's data folders"):
        evaluation_inputs(paths, str(folder), "")
    (folder / "study2").unlink()
    (folder / "labels.csv").write_text(LABELS + "1.2.4,../../../elsewhere/study1,1\n")   # a study outside
    with pytest.raises(LabError, match="line 3: the study path .* leaves the data folder"):
        evaluation_inputs(paths, str(folder), "")


def test_a_folder_under_the_root_is_accepted(home, locked_db):
    paths = LabPaths.at(home)
    folder = home / "phantoms" / "ich-heldout"
    (home / "phantoms" / "alias").symlink_to(folder)                          # a link inside the root is fine
    assert evaluation_inputs(paths, str(folder), "") == (folder.resolve(), folder.resolve() / "labels.csv")
    assert evaluation_inputs(paths, "phantoms/alias", "labels.csv") == (folder.resolve(),
                                                                         folder.resolve() / "labels.csv")
    extra = LabPaths.at(home, data_roots=("phantoms", str(home.parent / "elsewhere")))
    assert evaluation_inputs(extra, str(home.parent / "elsewhere"), "")[0] == (home.parent / "elsewhere").resolve()
    assert still_locked(locked_db)


def test_an_upload_is_kept_under_the_home_and_accepted(home, tmp_path):
    paths = LabPaths.at(home)
    source = studies(tmp_path / "mine" / "my-studies")
    archive = tmp_path / "studies.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted(source.rglob("*")):
            zf.write(f, f.relative_to(source.parent).as_posix())
    data, labels = save_upload(paths, [str(archive)])
    assert Path(data).parent.parent.parent == home.resolve() / "lab" / "uploads" and labels == ""
    assert (Path(data) / "study1" / "1.dcm").is_file() and (Path(data).stat().st_mode & 0o077) == 0
    assert evaluation_inputs(paths, data, labels) == (Path(data), Path(data) / "labels.csv")

    csv = tmp_path / "my-labels.csv"                                         # a CSV alone, for a folder
    csv.write_text(LABELS)
    data2, labels2 = save_upload(paths, [str(csv)])
    assert data2 == "" and Path(labels2).name == "my-labels.csv"
    folder = home / "phantoms" / "ich-heldout"
    assert evaluation_inputs(paths, str(folder), labels2) == (folder.resolve(), Path(labels2))


def test_an_upload_that_leaves_its_folder_or_holds_a_database_is_refused(home, tmp_path, locked_db):
    paths = LabPaths.at(home)
    other = sqlite3.connect(tmp_path / "other.bin")
    other.execute("CREATE TABLE t (x)")
    other.close()
    for name, payload in (("../../evil.dcm", b"x"), ("/abs.dcm", b"x"), ("s/readingroom.db", b"x"),
                          ("s/x.dcm", (tmp_path / "other.bin").read_bytes())):
        archive = tmp_path / "bad.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, payload)
        with pytest.raises(LabError, match="Upload"):
            save_upload(paths, [str(archive)])
    assert not (tmp_path / "evil.dcm").exists() and not list((home / "lab" / "uploads").iterdir())
    with pytest.raises(LabError, match="is a database"):
        save_upload(paths, [str(locked_db)])
    renamed = tmp_path / "labels.csv"
    renamed.hardlink_to(locked_db)
    with pytest.raises(LabError, match="under another name"):
        save_upload(paths, [str(renamed)])
    with pytest.raises(LabError, match="Upload a zip of study folders, a labels CSV, or one of each"):
        save_upload(paths, [str(csv_file) for csv_file in (tmp_path / "elsewhere").glob("*.csv")] * 2)
    (tmp_path / "notes.txt").write_text("not a CSV")
    with pytest.raises(LabError, match="Upload a zip of study folders, a labels CSV, or one of each"):
        save_upload(paths, [str(tmp_path / "notes.txt")])
    assert still_locked(locked_db)


def test_the_lab_needs_a_logged_in_user():
    from types import SimpleNamespace

    from workstation.page_context import Refused
    from workstation.tab_lab import logged_in

    with pytest.raises(Refused, match="Log in"):
        logged_in(None)
    assert logged_in(SimpleNamespace(username="admin")) == "admin"
