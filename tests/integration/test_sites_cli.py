"""``readingroom sites list|check`` on a real sites file, against real sockets.

One good site whose RIS and PACS are a socket this test listens on, one with bad AE titles, one
whose destinations are a closed port: the check names each problem, one line each, and exits 1.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from readingroom.sites_check import check_ae_title, tls_problems
from tests.conftest import free_port
from tests.integration.helpers import env_for

pytestmark = pytest.mark.integration


def _sites(*args: str, home: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app", "sites", *args], capture_output=True,
                          text=True, timeout=60, env=env_for(home, **env))


@pytest.fixture
def peer():
    """A real listening TCP socket: the good site's RIS and PACS."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def sites_file(tmp_path, peer) -> Path:
    closed = free_port()                       # bound, then closed: nothing listens there
    (tmp_path / "not-a-folder").write_text("a file")
    sites = [
        {"name": "Good Hospital", "ae_titles": ["GOOD_CT", "GOOD_CR"],
         "destinations": {"hl7": {"host": "127.0.0.1", "port": peer},
                          "dicom": {"ae_title": "GOOD_PACS", "host": "127.0.0.1", "port": peer},
                          "pdf_folder": "reports/good"}},
        {"name": "Bad Titles", "ae_titles": ["THIS_TITLE_IS_TOO_LONG", "BAD\\AE", "READINGROOM", "GOOD_CT"]},
        {"name": "Closed Port", "ae_titles": ["CLOSED_CT"],
         "destinations": {"hl7": {"host": "127.0.0.1", "port": closed},
                          "fhir_url": f"http://127.0.0.1:{closed}/fhir",
                          "pdf_folder": str(tmp_path / "not-a-folder")}},
    ]
    path = tmp_path / "sites.yaml"
    path.write_text(yaml.safe_dump({"sites": sites}), encoding="utf-8")
    return path


def test_check_names_each_problem_and_fails(tmp_path, sites_file):
    run = _sites("check", "--file", str(sites_file), "--timeout", "1", home=tmp_path / "home")
    assert run.returncode == 1, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert not [line for line in lines if line.startswith("Good Hospital:")], run.stdout

    def line_with(*parts: str) -> str:
        found = [line for line in lines if all(part in line for part in parts)]
        assert len(found) == 1, f"{parts} in:\n{run.stdout}"
        return found[0]

    assert "shorten it" in line_with("Bad Titles: ae_titles:", "THIS_TITLE_IS_TOO_LONG", "22 characters")
    assert "backslash" in line_with("Bad Titles: ae_titles:", "'BAD\\\\AE'")
    assert "dicom.ae_title" in line_with("Bad Titles: ae_titles:", "'READINGROOM'", "our own AE title")
    assert "keep it in one entry" in line_with("Bad Titles: ae_titles:", "'GOOD_CT'", "'Good Hospital'")
    assert "check host and port" in line_with("Closed Port: destinations.hl7:", "not reachable")
    line_with("Closed Port: destinations.fhir_url:", "not reachable")
    line_with("Closed Port: destinations.pdf_folder:", "not-a-folder", "is a file, not a folder")
    assert lines[-1].startswith("7 problem(s) in " + str(sites_file))


def test_check_json_marks_each_site(tmp_path, sites_file, peer):
    run = _sites("check", "--file", str(sites_file), "--timeout", "1", "--json", home=tmp_path / "home")
    assert run.returncode == 1, run.stderr
    result = json.loads(run.stdout)
    assert result["ok"] is False
    sites = {site["name"]: site for site in result["sites"]}
    assert sites["Good Hospital"]["ok"] is True
    assert sites["Good Hospital"]["destinations"]["hl7"] == f"127.0.0.1:{peer}"
    assert sites["Good Hospital"]["destinations"]["dicom"] == f"GOOD_PACS@127.0.0.1:{peer}"
    assert sites["Bad Titles"]["ae_titles"] == ["THIS_TITLE_IS_TOO_LONG", "BAD\\AE", "READINGROOM", "GOOD_CT"]
    assert len(sites["Bad Titles"]["problems"]) == 4         # every one of its titles is refused
    assert {p["field"] for p in sites["Closed Port"]["problems"]} == {
        "destinations.hl7", "destinations.fhir_url", "destinations.pdf_folder"}
    assert len(result["problems"]) == 7


def test_list_shows_every_site_even_a_bad_one(tmp_path, sites_file, peer):
    run = _sites("list", "--file", str(sites_file), home=tmp_path / "home")
    assert run.returncode == 0, run.stderr
    for text in ("3 site(s)", "- Good Hospital", "GOOD_CT, GOOD_CR", f"GOOD_PACS@127.0.0.1:{peer}",
                 "- Bad Titles", "THIS_TITLE_IS_TOO_LONG", "- Closed Port", "CLOSED_CT"):
        assert text in run.stdout, run.stdout


def test_the_live_sites_are_checked_by_default(tmp_path):
    """Without --file: the sites the server would load (here READINGROOM_SITES), all fine."""
    run = _sites("check", home=tmp_path / "home")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.splitlines()[-1] == "all 1 site(s) in READINGROOM_SITES are fine"


def test_ae_title_rules():
    assert check_ae_title("STMARY_CT") == ""
    assert check_ae_title(" PADDED ") == ""                  # spaces at the ends do not count
    assert "17 characters" in check_ae_title("A" * 17)
    assert "empty" in check_ae_title("   ")
    assert "control character" in check_ae_title("CT\t1")
    assert "ASCII" in check_ae_title("CRÂNE")
    assert "not text" in check_ae_title(1234)


def test_tls_files_must_exist(tmp_path):
    cert = tmp_path / "server.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n")
    tree = {"dicom": {"tls_certfile": str(cert), "tls_keyfile": "missing/key.pem", "port": 104},
            "hl7": {"tls_ca_file": ""}}
    assert tls_problems(tree, tmp_path) == [
        ("dicom.tls_keyfile", f"TLS file {tmp_path / 'missing/key.pem'} does not exist; put the file there "
                              "or fix the path")]
