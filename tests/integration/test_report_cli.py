"""`readingroom report` as an operator uses it: draft, checks, sign, delivery by `readingroom worker`."""

from __future__ import annotations

import json

import pytest

from readingroom.db import Database, sync_sites
from readingroom.mllp import MLLPServer
from dictation.delivery import hl7
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
