"""`readingroom report` as an operator uses it: draft, checks, sign, delivery by `readingroom worker`."""

from __future__ import annotations

import json

import pytest

from readingroom.db import Database, sync_sites
from readingroom.mllp import MLLPServer
from reporting.delivery import hl7
from tests.conftest import make_settings
from tests.integration.helpers import SITES, readingroom
from tests.report_helpers import add_study

pytestmark = pytest.mark.integration


def test_report_lifecycle_from_the_command_line(tmp_path):
    received: list[str] = []
    ris = MLLPServer(("127.0.0.1", 0), lambda m: received.append(m) or hl7.build_ack(m)).start()
    home = tmp_path / "home"
    sites = [{**SITES[0], "destinations": {"hl7": {"host": "127.0.0.1", "port": ris.port}, "pdf_folder": "pdf"}}]
    env = {"READINGROOM_SITES": json.dumps(sites)}
    settings = make_settings(home, sites=sites)
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    uid = add_study(db)
    db.dispose()

    def rr(*args: str) -> tuple[int, str]:
        """Exit code, and stdout only for --json (logs go to stderr), else both."""
        done = readingroom("report", *args, home=home, **env)
        return done.returncode, done.stdout if "--json" in args else done.stdout + done.stderr

    try:
        rc, out = rr("new", uid, "--user", "dr_lee")
        assert rc == 0 and out.startswith("report 1 "), out
        rc, out = rr("set", "1", "--section", "findings", "--text", "Acute left subdural hematoma. No fracture.",
                     "--user", "dr_lee")
        assert rc == 0, out
        assert rr("set", "1", "--section", "impression", "--text", "Acute left subdural hematoma.")[0] == 0
        rc, out = rr("check", "1", "--json")
        assert rc == 1 and [i["key"] for i in json.loads(out)] == ["critical:intracranial_hematoma"]
        rc, out = rr("sign", "1", "--user", "dr_lee", "--final")
        assert rc == 3 and "critical:intracranial_hematoma" in out
        rc, out = rr("communicate", "1", "--recipient", "Dr Smith, ED", "--method", "phone", "--read-back",
                     "--user", "dr_lee")
        assert rc == 0 and "read back and confirmed" in out, out
        rc, out = rr("sign", "1", "--user", "dr_lee", "--final")
        assert rc == 0 and "v1 signed final" in out and "queued for delivery to hl7, pdf" in out, out
        rc, out = rr("set", "1", "--section", "impression", "--text", "changed")
        assert rc == 2 and "add an addendum" in out
        assert received == []
        done = readingroom("worker", "--once", home=home, **env)
        assert done.returncode == 0 and "ran 2 job(s)" in done.stdout, done.stdout + done.stderr
        assert len(received) == 1 and hl7.parse(received[0]).msh.msh_10.value.startswith("RR")
        rc, out = rr("outbox", "--json")
        assert sorted((r["destination"], r["status"]) for r in json.loads(out)) == [("hl7", "delivered"),
                                                                                     ("pdf", "delivered")]
        rc, out = rr("show", "1", "--json", "--user", "dr_kim")
        shown = json.loads(out)
        assert shown["status"] == "final" and "CRITICAL RESULT COMMUNICATION" in shown["versions"][0]["text"]
        assert "v1 final: ok" in rr("verify", "1")[1]
        rc, out = rr("list", "--json")
        assert [(r["id"], r["status"]) for r in json.loads(out)] == [(1, "final")]
        rc, out = rr("export", "1", "--format", "pdf", "--out", str(tmp_path / "r.pdf"))
        assert rc == 0 and (tmp_path / "r.pdf").read_bytes().startswith(b"%PDF")
        rc, out = rr("audit", "--json")
        assert rc == 0, out
        actions = [r["action"] for r in json.loads(out)]
        assert {"create", "edit", "communicate", "sign", "deliver", "view", "export"} <= set(actions)
        rc, out = rr("show", "99")
        assert rc == 2 and "no report 99" in out
    finally:
        ris.stop()


def test_report_check_lists_contradictions_and_units_without_a_number(tmp_path):
    home = tmp_path / "home"
    settings = make_settings(home)
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    uid = add_study(db)
    db.dispose()

    def rr(*args: str) -> tuple[int, str]:
        done = readingroom("report", *args, home=home)
        return done.returncode, done.stdout if "--json" in args else done.stdout + done.stderr

    rc, out = rr("new", uid, "--user", "dr_lee", "--template", "ct_head")
    assert rc == 0, out
    rc, out = rr("set", "1", "--section", "findings", "--field", "hemorrhage", "--text",
                 "No acute intracranial hemorrhage.", "--user", "dr_lee")
    assert rc == 0, out
    rc, out = rr("set", "1", "--section", "findings", "--text",
                 "Acute right frontal subdural hematoma measuring millimeters.", "--user", "dr_lee")
    assert rc == 0, out
    rc, out = rr("check", "1", "--json")
    assert rc == 1, out
    issues = {i["key"]: i for i in json.loads(out)}
    contradiction = [i for k, i in issues.items() if k.startswith("contradiction:")]
    unitless = [i for k, i in issues.items() if k.startswith("unit_without_number:")]
    assert [i["key"] for i in contradiction] == ["contradiction:intracranial_hematoma"]
    assert [i["key"] for i in unitless] == ["unit_without_number:findings:hematoma measuring millimeters"]
    assert all(i["severity"] == "blocking" and not i["resolved"] for i in contradiction + unitless)
    assert "No acute intracranial hemorrhage." in contradiction[0]["message"]
    assert "without a number" in unitless[0]["message"]
    rc, out = rr("check", "1")                       # the text form names them too
    assert "[blocking] contradiction:intracranial_hematoma" in out and "unit_without_number:" in out


def test_signing_for_a_site_without_destinations_says_that_nothing_was_sent(tmp_path):
    """Issue 17, item 5: the CLI does not claim a delivery that cannot happen."""
    home = tmp_path / "home"
    settings = make_settings(home, sites=SITES)                  # Test Hospital: no destinations
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    uid = add_study(db)
    db.dispose()
    normal = "No acute intracranial abnormality."
    for args in (("new", uid), ("set", "1", "--section", "findings", "--text", normal),
                 ("set", "1", "--section", "impression", "--text", normal)):
        done = readingroom("report", *args, "--user", "dr_lee", home=home)
        assert done.returncode == 0, done.stdout + done.stderr
    done = readingroom("report", "sign", "1", "--user", "dr_lee", "--final", home=home)
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("Signed final (version 1). Site Test Hospital has no delivery destination configured in "
            "configs/sites.yaml: nothing was sent.") in done.stdout
    assert "queued for delivery" not in done.stdout
    outbox = readingroom("report", "outbox", "--json", home=home)
    assert json.loads(outbox.stdout) == []
