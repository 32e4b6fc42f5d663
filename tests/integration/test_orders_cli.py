"""Orders end to end with real processes: HL7 over MLLP to `readingroom receive`, review with
`readingroom orders`, dcmtk findscu -W on the same DICOM port, images linked to their order."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date

import pytest

from readingroom import dicom_net as scu
from readingroom.mllp import send
from tests.conftest import free_port
from tests.integration.helpers import env_for, readingroom, start, stop, wait_for_echo
from tests.integration.test_worklist_mwl import STANDARD_KEYS, findscu
from tests.orders_helpers import build_orm, hl7_file
from orders.hl7 import ack_code
from models.phantoms import ct_series, head_phantom

pytestmark = pytest.mark.integration
TODAY = date.today().strftime("%Y%m%d")


def orders(*args, home):
    return readingroom("orders", *args, home=home)


def test_orders_from_hl7_to_worklist_to_linked_study(tmp_path):
    home, port, hl7_port = tmp_path / "home", free_port(), free_port()
    proc = start("receive", "--port", str(port), home=home, log=tmp_path / "receive.log",
                 READINGROOM_HL7__PORT=str(hl7_port))
    try:
        wait_for_echo(port, proc)
        thunderclap = hl7_file("orm_o01_v23_zsegments.hl7").replace("|STMARY|", "|Test Hospital|", 1)
        assert ack_code(send("127.0.0.1", hl7_port, thunderclap)) == "AA"
        assert ack_code(send("127.0.0.1", hl7_port, build_orm("SM24002", facility="Test Hospital",
                                                             start=TODAY + "0800"))) == "AA"
        assert ack_code(send("127.0.0.1", hl7_port, build_orm("SM24003", facility="Test Hospital"))) == "AA"
        assert ack_code(send("127.0.0.1", hl7_port, build_orm("SM24004", facility="Test Hospital"))) == "AA"
        bad = send("127.0.0.1", hl7_port, "MSH|^~\\&|RIS|X|||20261129||ORM^O01|BAD1|P|2.3\rPID|1||\rORC|NW|P\rOBR")
        assert ack_code(bad) == "AE" and "PID-3" in bad

        listed = json.loads(orders("list", "--json", home=home).stdout)
        assert sorted(o["accession"] for o in listed) == ["SM24002", "SM24003", "SM24004", "SM24101"]
        assert all(o["status"] == "new" and o["site"] == "Test Hospital" for o in listed)
        shown = json.loads(orders("show", "SM24101", "--json", home=home).stdout)
        assert shown["suggestion"]["name"] == "ct_head_sah" and shown["priority"] == "STAT"
        text = orders("show", "SM24101", home=home).stdout
        assert "Suggested    ct_head_sah" in text and "HINT" in text and "eGFR: 54.0" in text

        bad_edit = orders("approve", "SM24101", "--set", "contrast", home=home)
        assert bad_edit.returncode == 2 and "KEY=VALUE" in bad_edit.stderr
        approved = orders("approve", "SM24101", "--user", "dr.a", home=home)
        assert approved.returncode == 0 and "ct_head_sah" in approved.stdout
        edited = orders("approve", "SM24002", "--protocol", "xr_chest", "--set", "phases=[AP]", home=home)
        assert edited.returncode == 0, edited.stderr
        rejected = orders("reject", "SM24003", "--reason", "Duplicate request", home=home)
        assert rejected.returncode == 0 and "no HL7 destination" in rejected.stdout

        asked = orders("question", "SM24004", "--text", "Which side?", home=home)
        assert asked.returncode == 0 and "question recorded" in asked.stdout
        assert json.loads(orders("list", "--status", "question", "--json", home=home).stdout)[0]["accession"] \
            == "SM24004"

        wrong = orders("reject", "SM24002", "--reason", "x", home=home)
        assert wrong.returncode == 2 and "is approved" in wrong.stderr
        missing = orders("approve", "NOPE", home=home)
        assert missing.returncode == 2 and "no order with accession 'NOPE'" in missing.stderr
        assert orders("reject", "SM24002", home=home).returncode == 2  # --reason is required

        items = findscu(port, tmp_path / "mwl", *STANDARD_KEYS)
        assert sorted(i.AccessionNumber for i in items) == ["SM24002", "SM24101"]
        head = next(i for i in items if i.AccessionNumber == "SM24101")
        assert head.ScheduledProcedureStepSequence[0].ScheduledProcedureStepDescription.startswith("CT head")

        series = ct_series(head_phantom(2, size=32), key="orders-e2e", accession="SM24101", patient_id="SM100231")
        assert scu.send(series, "127.0.0.1", port, calling_ae="TEST_SCU") == [0, 0]
        worklist = json.loads(readingroom("worklist", "--json", home=home).stdout)
        (item,) = worklist
        assert item["order"]["accession"] == "SM24101" and item["unlinked"] is False
        assert item["order_priority"] == "STAT" and item["priority"]["label"] == "critical"
        assert "thunderclap" in item["order"]["indication"]
        assert json.loads(orders("show", "SM24101", "--json", home=home).stdout)["studies"] == [item["study_uid"]]

        kept = json.loads(orders("messages", "--errors", "--json", home=home).stdout)
        assert [m["control_id"] for m in kept] == ["BAD1"] and "PID-3" in kept[0]["error"]
    finally:
        stop(proc)
    assert proc.returncode == 0


def test_orders_cli_keeps_gradio_and_torch_out(tmp_path):
    code = ("import sys; from app import main; main(['orders', 'list']); "
            "print(sorted(m for m in ('gradio', 'torch', 'monai') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], env=env_for(tmp_path / "home"), capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "[]"
