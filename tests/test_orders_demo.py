"""Demo orders go through the HL7 path, link to the demo studies, and leave work for review."""

from models.phantoms import DEMO_STUDIES
from orders import review
from orders.demo import PENDING, seed_demo_orders


def test_demo_orders(db, settings):
    assert seed_demo_orders(db, settings, DEMO_STUDIES) == len(DEMO_STUDIES) + len(PENDING)
    assert seed_demo_orders(db, settings, DEMO_STUDIES) == 0  # a second start adds nothing
    waiting = {o["accession"]: o for o in review.list_orders(db, status="new")}
    assert {p[0] for p in PENDING} <= set(waiting)
    assert review.get_order(db, "SM24201", settings)["suggestion"]["name"] == "ct_head_sah"
    assert any("red flags" in h for h in waiting["SM24202"]["hints"])
    assert any("side" in h for h in waiting["NS8901"]["hints"])
    assert any("eGFR" in h for h in waiting["SM24203"]["hints"])
    ct_head = review.get_order(db, "SM24001")
    assert ct_head["status"] == "approved" and ct_head["priority"] == "STAT"


def test_demo_images_link_to_their_orders(db, settings):
    from triage.demo import demo_datasets
    from triage.intake import Intake
    from triage.worklist import open_studies

    seed_demo_orders(db, settings, DEMO_STUDIES)
    intake = Intake(settings, db)
    sender, datasets = demo_datasets()[0]  # the STAT CT head
    for ds in datasets:
        assert intake.store(ds, calling_ae="TEST_SCU").ok
    (item,) = open_studies(db, settings)
    assert item["order"]["accession"] == "SM24001" and item["order_priority"] == "STAT"
    assert item["order"]["indication"].startswith("Fall at home on apixaban")
