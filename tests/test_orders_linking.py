"""Order-to-study linking: accession, worklist Study UID, patient + procedure + date; priority flows."""

from datetime import date

from sqlalchemy import select

from readingroom.schema import Study
from tests.orders_helpers import build_orm
from triage.intake import Intake
from orders import review
from orders.store import receive_hl7
from models.phantoms import ct_series, head_phantom
from triage.worklist import open_studies

TODAY = date.today().strftime("%Y%m%d")  # the StudyDate models.phantoms writes


def _ct(key, **kw):
    return ct_series(head_phantom(1, size=16), key=key, **kw)


def _store(settings, db, series):
    intake = Intake(settings, db)
    for ds in series:
        assert intake.store(ds, calling_ae="TEST_SCU").ok
    with db.reader() as session:
        return session.scalar(select(Study).where(Study.study_uid == series[0].StudyInstanceUID))


def _order(db, settings, accession, **kw):
    kw.setdefault("procedure", "CTHEAD^CT HEAD WITHOUT CONTRAST")
    kw.setdefault("modality", "CT")
    kw.setdefault("start", TODAY + "0800")
    assert "|AA|" in receive_hl7(db, settings, build_orm(accession, **kw))
    return review.get_order(db, accession)


def test_study_links_by_accession_and_takes_the_stat_priority(settings, db):
    _order(db, settings, "SM30001", priority="S", indication="Fall, on warfarin", patient_id="PX1",
           laterality="L^Left")
    study = _store(settings, db, _ct("a", accession="SM30001", patient_id="PX1"))
    assert study.order_id is not None and study.order_priority == "STAT"
    (item,) = open_studies(db, settings)
    assert item["unlinked"] is False
    assert item["order"]["indication"] == "Fall, on warfarin" and item["order"]["laterality"] == "LEFT"
    assert item["order"]["ordering_physician"] == "WELBY^MARCUS^^^DR"
    assert item["priority"]["label"] == "critical" and "STAT" in item["priority"]["reason"]
    assert review.get_order(db, "SM30001")["studies"] == [study.study_uid]


def test_fallback_patient_procedure_and_date(settings, db):
    _order(db, settings, "SM30002", patient_id="PX2", priority="A")
    # The modality typed no accession; same patient, same procedure words, same day.
    study = _store(settings, db, _ct("b", accession="", patient_id="PX2", description="CT HEAD WO CONTRAST"))
    assert study.order_id is not None and study.order_priority == "ASAP"


def test_no_link_for_another_procedure_or_patient_and_the_study_is_flagged(settings, db):
    _order(db, settings, "SM30003", patient_id="PX3")
    other_procedure = _store(settings, db, _ct("c", accession="", patient_id="PX3", description="CT ABDOMEN"))
    other_patient = _store(settings, db, _ct("d", accession="", patient_id="PX9", description="CT HEAD"))
    assert other_procedure.order_id is None and other_patient.order_id is None
    assert all(item["unlinked"] and item["order"] is None for item in open_studies(db, settings))


def test_two_fitting_orders_link_neither(settings, db):
    _order(db, settings, "SM30004", patient_id="PX4")
    _order(db, settings, "SM30005", patient_id="PX4")
    assert _store(settings, db, _ct("e", accession="", patient_id="PX4")).order_id is None


def test_order_arriving_after_the_images_links_them(settings, db):
    study = _store(settings, db, _ct("f", accession="SM30006", patient_id="PX6"))
    assert study.order_id is None
    _order(db, settings, "SM30006", patient_id="PX6", priority="S")
    with db.reader() as session:
        linked = session.get(Study, study.id)
        assert linked.order_id is not None and linked.order_priority == "STAT"


def test_study_uid_from_the_worklist_links(settings, db):
    _order(db, settings, "SM30007", patient_id="PX7")
    order = review.approve(db, settings, "SM30007")
    series = _ct("g", accession="", patient_id="OTHERID")
    for ds in series:
        ds.StudyInstanceUID = order["study_uid"]
    assert _store(settings, db, series).order_id is not None


def test_a_changed_order_priority_moves_its_linked_study(settings, db):
    _order(db, settings, "SM30008", patient_id="PX8", priority="R")
    study = _store(settings, db, _ct("h", accession="SM30008", patient_id="PX8"))
    assert study.order_priority == "ROUTINE"
    assert "|AA|" in receive_hl7(db, settings, build_orm("SM30008", control="XO", priority="S", patient_id="PX8",
                                                         procedure="CTHEAD^CT HEAD WITHOUT CONTRAST", modality="CT"))
    (item,) = open_studies(db, settings)
    assert item["order_priority"] == "STAT" and item["priority"]["label"] == "critical"
