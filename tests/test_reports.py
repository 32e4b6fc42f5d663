"""Report lifecycle in a real (SQLite) database: drafts, checks, signing, immutability, audit."""

import pytest
from sqlalchemy import text

from readingroom.schema import Study
from reporting.errors import ChecksNotResolved, ReportError
from reporting.lifecycle import ReportService
from reporting.versions import content_hash, verify_signature
from tests.conftest import TEST_SITES, make_settings
from tests.report_helpers import add_study

CLEAN_FINDINGS = {"hemorrhage": "No acute intracranial hemorrhage.", "brain": "No mass effect or midline shift.",
                  "ventricles": "Normal.", "extra_axial": "No extra-axial collection.", "bones": "Intact.",
                  "sinuses": "Clear."}


@pytest.fixture
def service(db, settings, queue):
    return ReportService(db, settings, queue)


def draft(service, db, **study):
    uid = add_study(db, **study)
    view = service.create(uid, "dr_lee", "ct_head")
    return service.save_draft(view.id, "dr_lee", fields={"findings": CLEAN_FINDINGS},
                              sections={"impression": "No acute intracranial abnormality."})


def test_create_returns_the_existing_report_and_autosave_keeps_every_save(service, db):
    view = draft(service, db)
    assert service.create(view.study_uid, "dr_kim").id == view.id
    assert view.revision == 1 and view.status == "draft"
    saved = service.save_draft(view.id, "dr_lee", sections={"clinical_information": "Fall."}, revision=1)
    assert saved.revision == 2 and saved.sections["clinical_information"] == "Fall."
    with pytest.raises(ReportError, match="saved by someone else"):
        service.save_draft(view.id, "dr_kim", sections={"clinical_information": "x"}, revision=1)
    with pytest.raises(ReportError, match="unknown section"):
        service.save_draft(view.id, "dr_lee", sections={"conclusion": "x"})
    with pytest.raises(ReportError, match="no field"):
        service.save_draft(view.id, "dr_lee", fields={"findings": {"liver": "x"}})
    assert service.get(view.id).sections["clinical_information"] == "Fall."


def test_unknown_study_and_template_are_clear_errors(service, db):
    with pytest.raises(ReportError, match="no study"):
        service.create("1.2.3.4", "dr_lee")
    uid = add_study(db)
    with pytest.raises(Exception, match="choose one of"):
        service.create(uid, "dr_lee", "ct_knee")


def test_sign_final_records_the_signature_and_freezes_the_report(service, db):
    view = draft(service, db)
    version = service.sign(view.id, "dr_lee", final=True)
    assert version.status == "final" and version.number == 1 and version.signed_by == "dr_lee"
    assert version.sha256 == content_hash(version.content) and verify_signature(version)
    assert "No acute intracranial abnormality." in version.text and "UNVERIFIED" in version.text
    with db.reader() as s:
        assert s.query(Study).one().status == "final"
    with pytest.raises(ReportError, match="cannot change; add an addendum"):
        service.save_draft(view.id, "dr_lee", sections={"impression": "changed"})
    with pytest.raises(ReportError, match="already final"):
        service.sign(view.id, "dr_lee")
    # the database itself refuses to change a signed version or the audit log
    for statement in ("UPDATE report_versions SET text = 'x'", "DELETE FROM report_versions",
                      "UPDATE audit_log SET user = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"):
            with db.session() as s:
                s.execute(text(statement))
    assert verify_signature(service.get(view.id).versions[0])


def test_blocking_checks_need_an_override_with_a_reason(service, db):
    uid = add_study(db, uid="1.2.826.0.1.3680043.8.498.2", sex="M")
    view = service.create(uid, "dr_lee", "ct_head")
    service.save_draft(view.id, "dr_lee", fields={"findings": {**CLEAN_FINDINGS, "bones": ""}},
                       sections={"impression": "No acute abnormality. The uterus is unremarkable."})
    with pytest.raises(ChecksNotResolved) as refused:
        service.sign(view.id, "dr_lee", final=True)
    open_keys = sorted(c.issue.key for c in refused.value.open_issues)
    assert open_keys == ["sex:M:uterus", "template:field:findings:Calvarium"]
    with pytest.raises(ReportError, match="needs a reason"):
        service.override(view.id, "sex:M:uterus", "dr_lee", " ")
    with pytest.raises(ReportError, match="no open check"):
        service.override(view.id, "sex:F:prostate", "dr_lee", "reason")
    for key in open_keys:
        service.override(view.id, key, "dr_lee", "verified with the technologist")
    assert all(c.resolved for c in service.run_checks(view.id))
    service.sign(view.id, "dr_lee", final=True)
    overrides = service.audit(action="override", report_id=view.id)
    assert sorted(r.detail["check"] for r in overrides) == open_keys
    assert sorted(service.audit(action="sign")[0].detail["overridden"]) == open_keys


def test_critical_finding_needs_a_communication_before_final(service, db):
    view = draft(service, db)
    # (the extra-axial field changes too: "No extra-axial collection." would contradict the hematoma)
    service.save_draft(view.id, "dr_lee", fields={"findings": {**CLEAN_FINDINGS,
                                                               "hemorrhage": "Acute left subdural hematoma.",
                                                               "extra_axial": "As above."}},
                       sections={"impression": "Acute left subdural hematoma."})
    with pytest.raises(ChecksNotResolved, match="critical:intracranial_hematoma"):
        service.sign(view.id, "dr_lee", final=True)
    with pytest.raises(ReportError, match="record the critical-result communication"):
        service.override(view.id, "critical:intracranial_hematoma", "dr_lee", "no")
    prelim = service.sign(view.id, "dr_lee", final=False)  # a preliminary report may go out first
    assert prelim.status == "preliminary"
    with pytest.raises(ReportError, match="unknown communication method"):
        service.record_communication(view.id, "dr_lee", recipient="Dr Smith", method="fax", read_back=True)
    out = service.record_communication(view.id, "dr_lee", recipient="Dr Smith, ED", method="phone",
                                       read_back=True, finding="subdural hematoma")
    assert "Dr Smith, ED by phone" in out["statement"] and "read back" in out["statement"]
    final = service.sign(view.id, "dr_lee", final=True)
    assert final.number == 2 and "CRITICAL RESULT COMMUNICATION" in final.text and out["statement"] in final.text
    assert [v.status for v in service.get(view.id).versions] == ["preliminary", "final"]


def test_a_communication_that_differs_from_the_report_blocks_signing(service, db):
    view = draft(service, db)
    service.save_draft(view.id, "dr_lee", fields={"findings": {
        **CLEAN_FINDINGS, "hemorrhage": "Acute right frontal subdural hematoma measuring 8 mm.",
        "extra_axial": "As above."}},
        sections={"impression": "Acute right subdural hematoma."})
    service.record_communication(view.id, "dr_lee", recipient="Dr Smith, ED", method="phone", read_back=True,
                                 finding="10 mm left subdural hematoma")
    with pytest.raises(ChecksNotResolved) as refused:
        service.sign(view.id, "dr_lee", final=True)
    issues = {c.issue.key: c.issue for c in refused.value.open_issues}
    assert sorted(issues) == ["communication_mismatch:intracranial_hematoma:length",
                              "communication_mismatch:intracranial_hematoma:side"]
    assert all(i.severity == "blocking" for i in issues.values())
    assert "10 mm" in issues["communication_mismatch:intracranial_hematoma:length"].message
    # the report was right: a corrected communication alone does not clear the first one; an override does
    service.record_communication(view.id, "dr_lee", recipient="Dr Smith, ED", method="phone", read_back=True,
                                 finding="8 mm right subdural hematoma")
    for key in issues:
        service.override(view.id, key, "dr_lee", "corrected by a second call, read back")
    assert service.sign(view.id, "dr_lee", final=True).status == "final"


def test_ai_discordance_must_be_acknowledged_and_qa_is_logged(service, db):
    view = draft(service, db, ai=[("ich", True, 0.88), ("pneumothorax", False, 0.02)])
    results = service.run_checks(view.id)
    assert [(c.issue.key, c.resolved) for c in results] == [("ai:ich", False)]
    with pytest.raises(ChecksNotResolved):
        service.sign(view.id, "dr_lee", final=True)
    service.acknowledge(view.id, "ai:ich", "dr_lee", "reviewed; no hemorrhage")
    version = service.sign(view.id, "dr_lee", final=True)
    assert "ich positive (p=0.88" in version.text and "UNVERIFIED" in version.text


def test_report_critical_with_negative_ai_is_logged_for_model_qa(service, db):
    view = draft(service, db, ai=[("ich", False, 0.03)])
    service.save_draft(view.id, "dr_lee", fields={"findings": {**CLEAN_FINDINGS, "hemorrhage":
                                                               "Acute subarachnoid hemorrhage."}},
                       sections={"impression": "Acute subarachnoid hemorrhage."})
    service.record_communication(view.id, "dr_lee", recipient="Dr Smith", method="phone", read_back=True)
    service.sign(view.id, "dr_lee", final=True)
    qa = service.audit(action="model_qa")
    assert [r.detail["check"] for r in qa] == ["ai_qa:ich"]


def test_addendum_and_correction_keep_every_version(service, db):
    view = draft(service, db)
    with pytest.raises(ReportError, match="follows a final report"):
        service.addendum(view.id, "dr_lee", "text")
    first = service.sign(view.id, "dr_lee", final=True)
    added = service.addendum(view.id, "dr_lee", "Small scalp hematoma on the left.")
    assert added.status == "addendum" and added.number == 2
    assert added.text.startswith(first.content["body"]) and "ADDENDUM (" in added.text
    with pytest.raises(ReportError, match="needs a reason"):
        service.correct(view.id, "dr_lee", {"impression": "x"}, " ")
    corrected = service.correct(view.id, "dr_lee", {"clinical_information": "Fall from standing."},
                                "wrong history")
    assert corrected.status == "corrected" and "Reason: wrong history" in corrected.text
    versions = service.get(view.id).versions
    assert [v.number for v in versions] == [1, 2, 3] and all(verify_signature(v) for v in versions)
    assert versions[0].text == first.text


def test_list_reports_by_state(service, db):
    first = draft(service, db)
    second = draft(service, db, uid="1.2.826.0.1.3680043.8.498.3", accession="ACC3")
    service.sign(first.id, "dr_lee", final=True)
    assert [r["id"] for r in service.list_reports(status="draft")] == [second.id]
    assert [r["status"] for r in service.list_reports()] == ["final", "draft"]
    assert service.list_reports(user="dr_kim") == []


def test_audit_query_filters(service, db):
    view = draft(service, db)
    service.get(view.id, user="dr_kim")
    service.get(view.id, user="dr_kim")  # views within the interval are one entry
    service.sign(view.id, "dr_lee", final=True)
    assert [r.action for r in service.audit(user="dr_kim")] == ["view"]
    assert {r.action for r in service.audit(study_uid=view.study_uid)} >= {"create", "edit", "view", "sign"}
    assert service.audit(action="sign", user="dr_kim") == []


def test_signing_queues_one_delivery_per_configured_destination(tmp_path, queue):
    from readingroom.db import Database, sync_sites
    from readingroom.jobs import DatabaseJobQueue

    sites = [{**TEST_SITES[0], "destinations": {"hl7": {"host": "127.0.0.1", "port": 1}, "pdf_folder": "pdf"}},
             TEST_SITES[1]]
    settings = make_settings(tmp_path / "h2", sites=sites)
    db = Database(settings)
    db.upgrade()
    sync_sites(db, [s.name for s in settings.sites])
    service = ReportService(db, settings, DatabaseJobQueue(db, settings.jobs))
    view = draft(service, db)
    service.sign(view.id, "dr_lee", final=True)
    rows = service.delivery_status(view.id)
    assert sorted(r["destination"] for r in rows) == ["hl7", "pdf"]
    assert all(r["status"] == "pending" and r["job_status"] == "queued" for r in rows)
    other = draft(service, db, uid="1.2.826.0.1.3680043.8.498.9", site="Other Hospital", accession="A9")
    service.sign(other.id, "dr_lee", final=True)
    assert service.delivery_status(other.id) == []
    db.dispose()


def test_ordered_side_comes_from_the_stored_images_dicom_laterality(service, db, settings):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    uid = add_study(db, uid="1.2.826.0.1.3680043.8.498.5", description="XR KNEE 3 VIEWS", accession="K1")
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid + ".1.1"
    ds.Laterality = "L"
    path = settings.home / f"dicom/{uid}/{uid}.1/{uid}.1.1.dcm"
    path.parent.mkdir(parents=True)
    ds.save_as(path, enforce_file_format=True)
    view = service.create(uid, "dr_lee")
    service.save_draft(view.id, "dr_lee", sections={"technique": "Three views of the right knee.",
                                                    "findings": "No fracture.", "impression": "Normal right knee."})
    assert [c.issue.key for c in service.run_checks(view.id)] == ["laterality:order:right"]


def test_two_signatures_at_once_make_one_version(service, db):
    import threading

    view = draft(service, db)
    outcomes: list[str] = []

    def sign() -> None:
        try:
            outcomes.append(service.sign(view.id, "dr_lee", final=True).status)
        except ReportError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=sign) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes)[0] == "final" and "already final" in sorted(outcomes)[1]
    assert [v.number for v in service.get(view.id).versions] == [1]
