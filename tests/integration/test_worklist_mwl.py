"""DICOM Modality Worklist: dcmtk's findscu -W against our listener (same AE title and port as intake)."""

import subprocess
from datetime import date, timedelta
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.conftest import DCMTK
from tests.orders_helpers import build_orm
from orders import review
from orders.store import receive_hl7

TODAY = date.today().strftime("%Y%m%d")
# W3 is scheduled a month from the day the tests run, and queried by a range around it: never a
# fixed calendar date, so the test holds on any day.
LATER = (date.today() + timedelta(days=30)).strftime("%Y%m%d")
LATER_RANGE = f"{(date.today() + timedelta(days=20)):%Y%m%d}-{(date.today() + timedelta(days=40)):%Y%m%d}"
SPS = "ScheduledProcedureStepSequence"


def findscu(port: int, out: Path, *keys: str, calling: str = "TEST_SCU") -> list:
    """Run dcmtk findscu -W and read back the responses it extracted (rsp0001.dcm...)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("rsp*.dcm"):
        old.unlink()
    args = [str(DCMTK / "findscu"), "-W", "-aet", calling, "-aec", "READINGROOM", "-X", "-od", str(out)]
    for key in keys:
        args += ["-k", key]
    result = subprocess.run(args + ["127.0.0.1", str(port)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


STANDARD_KEYS = ("PatientName", "PatientID", "AccessionNumber", "StudyInstanceUID", "RequestedProcedurePriority",
                 "ReasonForTheRequestedProcedure", f"{SPS}[0].Modality", f"{SPS}[0].ScheduledStationAETitle",
                 f"{SPS}[0].ScheduledProcedureStepStartDate", f"{SPS}[0].ScheduledProcedureStepDescription")


@pytest.fixture
def orders(settings, db):
    """Four orders of the test site, in several states."""
    def new(accession, **kw):
        kw.setdefault("start", TODAY + "0900")
        assert "|AA|" in receive_hl7(db, settings, build_orm(accession, facility="Test Hospital", **kw))

    new("W1", procedure="CTHEAD^CT HEAD WITHOUT CONTRAST", modality="CT", indication="Thunderclap headache",
        patient_id="PW1", patient_name="HEAD^ANNA", priority="S")
    new("W2", procedure="XRCHEST^XR CHEST 2 VIEWS", modality="CR", patient_id="PW2", patient_name="CHEST^BEN")
    new("W3", procedure="CTHEAD^CT HEAD WITHOUT CONTRAST", modality="CT", patient_id="PW3", start=LATER + "090000")
    new("W4", procedure="CTHEAD^CT HEAD WITHOUT CONTRAST", modality="CT", patient_id="PW4")  # not approved
    for accession in ("W1", "W2", "W3"):
        review.approve(db, settings, accession)
    review.ask(db, "W4", "Which side?")


def test_only_approved_orders_appear_with_the_protocol(listener, orders, tmp_path):
    items = findscu(listener.listener.port, tmp_path, *STANDARD_KEYS, f"{SPS}[0].ScheduledProcedureStepStartDate=")
    assert sorted(i.AccessionNumber for i in items) == ["W1", "W2", "W3"]
    w1 = next(i for i in items if i.AccessionNumber == "W1")
    step = w1[SPS][0]
    assert step.ScheduledProcedureStepDescription == "CT head without contrast plus CTA head and neck [iv]"
    assert step.Modality == "CT" and step.ScheduledProcedureStepStartDate == TODAY
    assert step.ScheduledStationAETitle == "TEST_SCU"
    assert str(w1.PatientName) == "HEAD^ANNA" and w1.RequestedProcedurePriority == "STAT"
    assert w1.ReasonForTheRequestedProcedure == "Thunderclap headache"
    assert w1.StudyInstanceUID  # the images will carry it back and link


@pytest.mark.parametrize("keys, expected", [
    ((f"{SPS}[0].Modality=CT",), ["W1", "W3"]),
    ((f"{SPS}[0].Modality=CR",), ["W2"]),
    ((f"{SPS}[0].ScheduledProcedureStepStartDate={TODAY}",), ["W1", "W2"]),
    ((f"{SPS}[0].ScheduledProcedureStepStartDate={LATER_RANGE}",), ["W3"]),
    ((f"{SPS}[0].ScheduledStationAETitle=TEST_SCU",), ["W1", "W2", "W3"]),
    ((f"{SPS}[0].ScheduledStationAETitle=NOT_OURS",), []),
    (("PatientID=PW2",), ["W2"]),
    (("AccessionNumber=W3",), ["W3"]),
    (("AccessionNumber=W4",), []),
    (("PatientName=HEAD*",), ["W1"]),
    ((f"{SPS}[0].Modality=CT", f"{SPS}[0].ScheduledProcedureStepStartDate={TODAY}"), ["W1"]),
])
def test_matching_keys(listener, orders, tmp_path, keys, expected):
    base = [k for k in STANDARD_KEYS if not any(k.split("=")[0] == q.split("=")[0] for q in keys)]
    items = findscu(listener.listener.port, tmp_path, *base, *keys)
    assert sorted(i.AccessionNumber for i in items) == expected


def test_another_site_sees_none_of_these_orders(listener, orders, tmp_path):
    assert findscu(listener.listener.port, tmp_path, *STANDARD_KEYS, calling="OTHER_PACS") == []


def test_a_cancelled_order_leaves_the_worklist(listener, orders, settings, db, tmp_path):
    receive_hl7(db, settings, build_orm("W2", control="CA", facility="Test Hospital"))
    items = findscu(listener.listener.port, tmp_path, *STANDARD_KEYS)
    assert sorted(i.AccessionNumber for i in items) == ["W1", "W3"]


def test_odd_queries_are_answered_not_crashed(listener, orders):
    """pynetdicom SCU: one key only, a garbage date range, an empty sequence."""
    from pydicom import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import ModalityWorklistInformationFind

    ae = AE(ae_title="TEST_SCU")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate("127.0.0.1", listener.listener.port, ae_title="READINGROOM")
    assert assoc.is_established
    try:
        def ask(query):
            replies = list(assoc.send_c_find(query, ModalityWorklistInformationFind))
            statuses = [int(status.Status) for status, _ in replies]
            return statuses, [ds for _, ds in replies if ds is not None]

        only = Dataset()
        only.AccessionNumber = ""
        statuses, found = ask(only)
        assert statuses[-1] == 0x0000 and sorted(ds.AccessionNumber for ds in found) == ["W1", "W2", "W3"]
        assert all(list(ds.keys()) == [0x00080005, 0x00080050] for ds in found)  # only what was asked

        query = Dataset()
        query.AccessionNumber = ""
        step = Dataset()
        step.ScheduledProcedureStepStartDate = "garbage-"
        query.ScheduledProcedureStepSequence = [step]
        statuses, found = ask(query)
        assert statuses[-1] == 0x0000 and found == []

        query = Dataset()
        query.PatientID = "PW1"
        query.ScheduledProcedureStepSequence = []
        statuses, found = ask(query)
        assert statuses[-1] == 0x0000 and [ds.PatientID for ds in found] == ["PW1"]
    finally:
        assoc.release()
