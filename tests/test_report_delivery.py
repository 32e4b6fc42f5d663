"""Delivery with real parsers and real peers: hl7apy + an MLLP listener, fhir.resources + an HTTP
server, dcmtk's storescp (PACS) and dsrdump, and the outbox's exactly-once behaviour across an
outage and a restart."""

from __future__ import annotations

import base64
import http.server
import json
import re
import subprocess
import threading
import time
import zlib
from pathlib import Path

import pydicom
import pytest
from fhir.resources.R4B.diagnosticreport import DiagnosticReport

from readingroom.db import Database, sync_sites
from readingroom.jobs import DatabaseJobQueue, WorkerPool
from readingroom.mllp import MLLPServer
from reporting.delivery import hl7
from reporting.delivery.document import load_document
from reporting.delivery.outbox import Deliverer
from reporting.delivery.outbox import DELIVERY_JOB
from reporting.lifecycle import ReportService
from tests.conftest import TEST_SITES, free_port, make_settings
from tests.report_helpers import add_study

DCMTK = Path("/usr/bin")
FINDINGS = {"hemorrhage": "No acute intracranial hemorrhage.", "brain": "No mass effect or midline shift.",
            "ventricles": "Normal.", "extra_axial": "No extra-axial collection.", "bones": "Intact.",
            "sinuses": "Clear."}
# Text with every HL7 delimiter, a non-ASCII character and a blank line.
IMPRESSION = "1. No acute intracranial abnormality.\n2. Sinus disease: R > L & mild ~ 3|4 mm ^ \\ (Müller)."


class Stack:
    """A settings home whose site sends to the given destinations, with its database and workers."""

    def __init__(self, home: Path, destinations: dict) -> None:
        sites = [{**TEST_SITES[0], "destinations": destinations}, TEST_SITES[1]]
        self.settings = make_settings(home, sites=sites)
        self.open()

    def open(self) -> None:
        self.db = Database(self.settings)
        self.db.upgrade()
        sync_sites(self.db, [s.name for s in self.settings.sites])
        self.queue = DatabaseJobQueue(self.db, self.settings.jobs)
        self.pool = WorkerPool(self.queue, self.settings.jobs, {DELIVERY_JOB: Deliverer(self.db, self.settings)})
        self.service = ReportService(self.db, self.settings, self.queue, wake=self.pool.wake)

    def restart(self) -> None:
        self.db.dispose()
        self.open()

    def signed(self, final: bool = True, **study) -> int:
        uid = add_study(self.db, **study)
        view = self.service.create(uid, "dr_lee", "ct_head")
        self.service.save_draft(view.id, "dr_lee", fields={"findings": FINDINGS},
                                sections={"impression": IMPRESSION, "clinical_information": "Headache."})
        self.service.sign(view.id, "dr_lee", final=final)
        return view.id

    def drain(self, timeout_s: float = 10) -> None:
        """Run due jobs until none is left queued (waiting out backoff), or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.pool.run_once() and not any(j.status in ("queued", "running") for j in self.queue.list()):
                return
            time.sleep(0.02)


@pytest.fixture
def ris():
    received: list[str] = []
    answer = {"code": "AA"}

    def handle(message: str) -> str:
        received.append(message)
        return hl7.build_ack(message, answer["code"], "" if answer["code"] == "AA" else "RIS busy")

    server = MLLPServer(("127.0.0.1", 0), handle).start()
    yield server, received, answer
    server.stop()


def test_oru_for_every_state_parses_and_validates(tmp_path, ris):
    server, received, _ = ris
    stack = Stack(tmp_path / "home", {"hl7": {"host": "127.0.0.1", "port": server.port, "facility": "STMARY"}})
    report_id = stack.signed(final=False)
    stack.service.sign(report_id, "dr_lee", final=True)
    stack.service.addendum(report_id, "dr_lee", "Compared with the outside CT: unchanged.")
    stack.service.correct(report_id, "dr_lee", {"clinical_information": "Headache after a fall."}, "history")
    stack.drain()
    assert len(received) == 4
    versions = stack.service.get(report_id).versions
    for message, version, status in zip(received, versions, ["P", "F", "C", "C"], strict=True):
        parsed = hl7.parse(message)  # strict hl7apy validation
        assert parsed.msh.msh_9.value == "ORU^R01^ORU_R01" and parsed.msh.msh_12.value == "2.5.1"
        assert parsed.msh.msh_6.value == "STMARY"
        obr = parsed.oru_r01_patient_result.oru_r01_order_observation.obr
        assert obr.obr_25.value == status and obr.obr_3.value == "ACC1"
        assert hl7.report_text(parsed).splitlines() == [line.rstrip() for line in version.text.splitlines()]
    assert "R > L & mild ~ 3|4 mm ^ \\ (Müller)" in hl7.report_text(hl7.parse(received[1]))
    assert "UNVERIFIED" in hl7.report_text(hl7.parse(received[1]))
    rows = stack.service.delivery_status(report_id)
    assert {r["status"] for r in rows} == {"delivered"} and all(r["acknowledgement"].startswith("AA") for r in rows)
    stack.db.dispose()


def test_destination_down_at_sign_off_gets_the_report_exactly_once_after_a_restart(tmp_path):
    port = free_port()
    received: list[str] = []
    stack = Stack(tmp_path / "home", {"hl7": {"host": "127.0.0.1", "port": port, "timeout_s": 2}})
    report_id = stack.signed()
    assert stack.pool.run_once()  # the RIS is down: the try fails and is scheduled again
    row = stack.service.delivery_status(report_id)[0]
    assert row["status"] == "pending" and row["attempts"] == 1 and "cannot deliver HL7" in row["last_error"]
    assert row["next_try"] is not None
    stack.restart()  # ReadingRoom restarts while the RIS is still down
    server = MLLPServer(("127.0.0.1", port), lambda m: received.append(m) or hl7.build_ack(m)).start()
    try:
        stack.drain()
        stack.drain(timeout_s=1)
        assert len(received) == 1
        row = stack.service.delivery_status(report_id)[0]
        assert row["status"] == "delivered" and row["attempts"] == 2
        # a worker that died after the ACK runs the job again: nothing is sent twice
        Deliverer(stack.db, stack.settings)({"outbox_id": row["id"]})
        assert len(received) == 1
    finally:
        server.stop()
        stack.db.dispose()


def test_a_refused_message_is_retried_then_shown_as_failed_then_retried_by_the_admin(tmp_path, ris):
    server, received, answer = ris
    stack = Stack(tmp_path / "home", {"hl7": {"host": "127.0.0.1", "port": server.port}})
    stack.settings.reports.delivery_max_attempts = 2
    answer["code"] = "AE"
    report_id = stack.signed()
    stack.drain()
    assert len(received) == 2
    failed = stack.service.delivery_status(status="failed")
    assert [r["report_id"] for r in failed] == [report_id] and "answered AE" in failed[0]["last_error"]
    assert failed[0]["job_status"] == "dead"
    assert stack.service.audit(action="delivery_failed")[0].detail["destination"] == "hl7"
    answer["code"] = "AA"
    stack.service.retry_delivery(failed[0]["id"], "admin")
    stack.drain()
    assert len(received) == 3 and stack.service.delivery_status(report_id)[0]["status"] == "delivered"
    assert stack.service.audit(action="retry")[0].user == "admin"
    stack.db.dispose()


def test_oru_fits_long_and_odd_values_into_hl7_field_lengths():
    from datetime import datetime

    from reporting.delivery.document import DeliveryDoc

    text = "IMPRESSION:\n" + "Very long sentence about the findings, " * 30 + "\nR > L & ~ | ^ \\ é"
    doc = DeliveryDoc(report_id=1, version_id=7, version=1, status="final", text=text, sections={}, body="",
                      communications=[], sha256="0" * 64, signed_by="dr_" + "x" * 250,
                      signed_at=datetime(2026, 11, 29, 4, 0), reason="", study_uid="1.2.3", accession="A" * 16,
                      patient_id="P1", patient_name="FAMILY" * 40 + "^GIVEN", patient_birth_date="19600101",
                      patient_sex="X", study_date="20261129", study_time="031500.123", description="CT " * 100,
                      referring_physician="", site="St. Mary's Regional Medical Center (North Campus)")
    parsed = hl7.parse(hl7.build_oru(doc, sending_facility="A facility name longer than twenty"))
    lines = hl7.report_text(parsed).splitlines()
    assert len(lines) > 3 and all(len(line) <= 199 for line in lines)
    assert " ".join(lines).replace("  ", " ").split() == text.split()
    assert parsed.oru_r01_patient_result.oru_r01_patient.pid.pid_8.value == "U"


class _FhirHandler(http.server.BaseHTTPRequestHandler):
    posted: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        DiagnosticReport.model_validate(body)
        _FhirHandler.posted.append(body)
        self.send_response(201)
        self.send_header("Location", f"/DiagnosticReport/{body['id']}/_history/1")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_fhir_diagnostic_report_validates_to_a_folder_and_to_a_server(tmp_path):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FhirHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stack = Stack(tmp_path / "home", {"fhir_folder": "fhir", "pdf_folder": "pdf"})
        report_id = stack.signed()
        stack.drain()
        files = sorted((stack.settings.home / "fhir").glob("*.json"))
        assert [f.name for f in files] == ["ACC1-r1-v1-final.json"]
        resource = json.loads(files[0].read_text())
        report = DiagnosticReport.model_validate(resource)
        assert report.status == "final" and report.code.coding[0].code == "18748-4"
        assert [o.valueString for o in report.contained] == ["No acute intracranial abnormality.",
                                                             "Sinus disease: R > L & mild ~ 3|4 mm ^ \\ (Müller)."]
        assert [r.reference for r in report.result] == ["#impression-1", "#impression-2"]
        pdf = base64.b64decode(resource["presentedForm"][0]["data"])
        assert pdf.startswith(b"%PDF") and "UNVERIFIED" in resource["text"]["div"]
        assert pdf == (stack.settings.home / "pdf" / "ACC1-r1-v1-final.pdf").read_bytes()
        assert "UNVERIFIED" in pdf_text(pdf) and "dr_lee" in pdf_text(pdf)
        stack.service.addendum(report_id, "dr_lee", "Addendum text.")
        stack.settings.sites[0].destinations.fhir_url = f"http://127.0.0.1:{server.server_port}/fhir"
        stack.drain()
        assert [p["status"] for p in _FhirHandler.posted] == ["appended"]
        row = stack.service.delivery_status(report_id)[0]
        assert row["destination"] in ("fhir", "pdf") and row["status"] == "delivered"
        assert any(r["acknowledgement"].startswith("HTTP 201") for r in stack.service.delivery_status(report_id))
        stack.db.dispose()
    finally:
        server.shutdown()


def pdf_text(pdf: bytes) -> str:
    """The text drawn by the PDF's content streams (fpdf2 core fonts: '(text) Tj')."""
    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", pdf, re.S):
        try:
            stream = zlib.decompress(stream)
        except zlib.error:
            pass
        out += [s.decode("latin-1") for s in re.findall(rb"\(((?:[^()\\]|\\.)*)\)\s*Tj", stream)]
    return " ".join(out)


@pytest.fixture
def pacs(tmp_path):
    """dcmtk's storescp as the site's PACS, writing what it receives to a folder."""
    port, folder = free_port(), tmp_path / "pacs"
    folder.mkdir()
    proc = subprocess.Popen([str(DCMTK / "storescp"), "-aet", "PACS", "-od", str(folder), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(0.5)
    yield port, folder
    proc.terminate()
    proc.wait(10)


def test_dicom_sr_is_stored_by_a_pacs_and_read_by_dsrdump(tmp_path, pacs):
    port, folder = pacs
    stack = Stack(tmp_path / "home", {"dicom": {"ae_title": "PACS", "host": "127.0.0.1", "port": port}})
    report_id = stack.signed()
    stack.drain()
    row = stack.service.delivery_status(report_id)[0]
    assert row["status"] == "delivered" and row["acknowledgement"].startswith("C-STORE 0x0000"), row
    stored = list(folder.iterdir())
    assert len(stored) == 1
    dump = subprocess.run([str(DCMTK / "dsrdump"), str(stored[0])], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and "E:" not in dump.stderr, dump.stderr
    assert "Diagnostic Imaging Report" in dump.stdout and "Impressions" in dump.stdout
    assert "VERIFIED" in dump.stdout and "Findings" in dump.stdout
    ds = pydicom.dcmread(stored[0])
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.1" and ds.AccessionNumber == "ACC1"
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == \
        "1.2.826.0.1.3680043.8.498.1.1.1"
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    texts = [item.TextValue for c in ds.ContentSequence if "ContentSequence" in c
             for item in c.ContentSequence if "TextValue" in item]
    assert any("UNVERIFIED" in t for t in texts)
    # an addendum is a new SR that names the first one as its predecessor
    stack.service.addendum(report_id, "dr_lee", "Compared with the outside study: unchanged.")
    stack.drain()
    second = [p for p in folder.iterdir() if p != stored[0]]
    assert len(second) == 1
    addendum = pydicom.dcmread(second[0])
    predecessor = addendum.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert predecessor.ReferencedSOPInstanceUID == ds.SOPInstanceUID
    dump = subprocess.run([str(DCMTK / "dsrdump"), str(second[0])], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and "E:" not in dump.stderr and "Addendum" in dump.stdout, dump.stderr
    stack.db.dispose()


def test_export_writes_every_format(tmp_path):
    stack = Stack(tmp_path / "home", {})
    report_id = stack.signed()
    out = tmp_path / "out"
    for fmt in ("hl7", "fhir", "sr", "pdf"):
        stack.service.export(report_id, fmt, out / f"r.{fmt}", user="dr_lee")
    hl7.parse((out / "r.hl7").read_text())
    DiagnosticReport.model_validate_json((out / "r.fhir").read_text())
    assert (out / "r.pdf").read_bytes().startswith(b"%PDF")
    dump = subprocess.run([str(DCMTK / "dsrdump"), str(out / "r.sr")], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and "E:" not in dump.stderr
    assert [r.detail["format"] for r in stack.service.audit(action="export")] == ["pdf", "sr", "fhir", "hl7"]
    with stack.db.reader() as session:
        doc = load_document(session, stack.service.get(report_id).versions[0].id)
    assert doc.modality == "CT"
    stack.db.dispose()
