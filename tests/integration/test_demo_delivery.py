"""A demo sign-off is delivered for real: the demo seeding goes through the DICOM listener and the
HL7 order path, the demo sites get the demo RIS (MLLP, answers AA) and PDF/FHIR folders, a signed
report is delivered by the delivery worker, and the RIS holds an ORU that hl7apy reads."""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import select

from readingroom.db import Database, sync_sites
from readingroom.jobs import DatabaseJobQueue, WorkerPool
from readingroom.schema import Study
from readingroom.settings import PROJECT_ROOT
from tests.conftest import make_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
STMARY = "St. Mary's Hospital"


def shipped_sites() -> list[dict]:
    return yaml.safe_load((PROJECT_ROOT / "configs" / "sites.yaml").read_text())["sites"]


def test_demo_destinations_only_fill_sites_without_their_own(tmp_path):
    from reporting.delivery.outbox import destinations_for
    from triage.demo_site import apply_demo_destinations

    own = {"name": "Own RIS", "destinations": {"pdf_folder": "their-pdfs"}}
    settings = make_settings(tmp_path / "home", sites=[*shipped_sites(), own])
    assert destinations_for(settings, STMARY) == []            # as shipped: a site with nowhere to send to
    changed = apply_demo_destinations(settings, ris_port=2999)
    assert STMARY in changed and "Own RIS" not in changed
    assert destinations_for(settings, STMARY) == ["hl7", "fhir", "pdf"]
    assert destinations_for(settings, "Own RIS") == ["pdf"]
    peer = next(s for s in settings.sites if s.name == STMARY).destinations.hl7
    assert (peer.port, peer.facility) == (2999, STMARY)          # the facility the demo orders come from
    # Other settings loaded from the same files are untouched (the demo changes its own copy only).
    assert destinations_for(make_settings(tmp_path / "other", sites=shipped_sites()), STMARY) == []


def test_a_demo_sign_off_is_delivered_to_the_demo_ris_and_folders(tmp_path):
    from reporting.delivery import hl7
    from reporting.delivery.outbox import DELIVERY_JOB, Deliverer, report_site, sign_message
    from reporting.lifecycle import ReportService
    from triage.demo import seed_demo
    from triage.demo_site import start_demo_site
    from models.phantoms import DEMO_STUDIES
    from orders.demo import seed_demo_orders
    from triage.service import IntakeService

    home = tmp_path / "home"
    settings = make_settings(home, sites=shipped_sites())
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    queue = DatabaseJobQueue(db, settings.jobs)
    ris = start_demo_site(settings)
    intake = IntakeService(settings, db, queue)
    intake.start()
    try:
        seed_demo_orders(db, settings, DEMO_STUDIES)
        assert seed_demo(settings, port=intake.listener.port) > 0
        with db.reader() as session:
            uid = session.scalar(select(Study.study_uid).where(Study.accession == "SM24001"))   # DOE^JOHN
        reports = ReportService(db, settings, queue)
        view = reports.create(uid, "demo", template="free")
        normal = "No acute intracranial abnormality."
        reports.save_draft(view.id, "demo", sections={"findings": normal, "impression": normal})
        open_issues = [r.issue.key for r in reports.run_checks(view.id) if not r.resolved]
        assert open_issues == [], open_issues
        version = reports.sign(view.id, "demo", final=True)
        rows = reports.delivery_status(report_id=view.id)
        assert sorted((r["destination"], r["status"]) for r in rows) == [("fhir", "pending"), ("hl7", "pending"),
                                                                         ("pdf", "pending")]
        said = sign_message(version.status, version.number, report_site(db, view.id), rows)
        assert said.startswith(f"Signed final (version 1). Delivery to {STMARY}: RIS (HL7 ORU over MLLP) "
                               "queued"), said

        worker = WorkerPool(queue, settings.jobs, {DELIVERY_JOB: Deliverer(db, settings)})
        ran = 0
        while worker.run_once():
            ran += 1
        assert ran == 3
        rows = reports.delivery_status(report_id=view.id)
        assert sorted((r["destination"], r["status"]) for r in rows) == [("fhir", "delivered"),
                                                                         ("hl7", "delivered"), ("pdf", "delivered")]
        assert next(r for r in rows if r["destination"] == "hl7")["acknowledgement"].startswith("AA RR")
        said = sign_message(version.status, version.number, report_site(db, view.id), rows)
        assert "RIS (HL7 ORU over MLLP) delivered; FHIR DiagnosticReport delivered; PDF report delivered" in said

        # The demo RIS kept the ORU under home/demo-ris/, and it is a valid ORU^R01 of this report.
        orus = [p for p in ris.received if p.name.startswith("ORU")]
        assert len(orus) == 1 and orus[0].parent == home / "demo-ris"
        message = hl7.parse(orus[0].read_text())
        assert message.msh.msh_9.to_er7() == "ORU^R01^ORU_R01"
        assert message.msh.msh_6.to_er7() == STMARY
        order = message.oru_r01_patient_result.oru_r01_order_observation
        assert order.obr.obr_25.to_er7() == "F" and order.obr.obr_3.to_er7() == "SM24001"
        assert normal in hl7.report_text(message)
        # ...and the PDF and FHIR folders of the demo site hold the report.
        site_dir = home / "demo-site" / "St._Mary_s_Hospital"
        assert [p.read_bytes()[:4] for p in (site_dir / "pdf").glob("*.pdf")] == [b"%PDF"]
        fhir = [json.loads(p.read_text()) for p in (site_dir / "fhir").glob("*.json")]
        assert [(r["resourceType"], r["status"]) for r in fhir] == [("DiagnosticReport", "final")]
    finally:
        intake.stop()
        ris.stop()
        db.dispose()
