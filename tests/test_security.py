"""Security issue 19: patient data reaches only those who may see it.

Two sites (Test Hospital, Other Hospital); "ana" is credentialed for Test Hospital only. Each
viewer route answers her 404 for the other site's study, series, slices and heatmaps, exactly as
for a missing one; the priors she is shown are her sites' only; every view is audited; a cross-site
browser POST is refused; every answer carries the security headers; and there is no known
password outside --demo.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from models.phantoms import ct_series, head_phantom
from readingroom.audit import query
from readingroom.auth import authenticate, ensure_user
from readingroom.schema import Study, User
from triage.intake import Intake
from triage.pipeline import ModelOutput, record_results
from workstation.web import SECURITY_HEADERS, install_routes

PASSWORD = "correct horse battery"


def _store(settings, db, key: str, calling_ae: str, patient_id: str = "P1") -> tuple[str, str]:
    intake = Intake(settings, db)
    series = ct_series(head_phantom(1, size=32), key=key, accession=f"A{key}", patient_id=patient_id)
    for ds in series:
        intake.store(ds, calling_ae=calling_ae)
    return series[0].StudyInstanceUID, series[0].SeriesInstanceUID


def _user(db, name: str, sites: list[str]) -> None:
    ensure_user(db, name, PASSWORD)
    with db.session() as session:
        session.scalar(select(User).where(User.username == name)).sites = sites


@pytest.fixture
def world(settings, db):
    """One patient with a study at each site, an AI finding on each, and a client logged in as ana."""
    mine = _store(settings, db, "mine", "TEST_SCU")            # Test Hospital
    theirs = _store(settings, db, "theirs", "OTHER_PACS")      # Other Hospital, same patient ID
    for study_uid, series_uid in (mine, theirs):
        record_results(db, settings, None, study_uid, [ModelOutput("ich", 0.2, "m", "1", 0.5, series_uid)])
    _user(db, "ana", ["Test Hospital"])
    app = FastAPI()
    install_routes(app, settings, db)
    client = TestClient(app)
    assert client.post("/login", data={"username": "ana", "password": PASSWORD}).status_code == 200
    return client, mine, theirs


def _finding_ids(db) -> dict[str, int]:
    from readingroom.schema import AIFinding

    with db.reader() as session:
        return {uid: fid for fid, uid in session.execute(
            select(AIFinding.id, Study.study_uid).join(Study, Study.id == AIFinding.study_id))}


def test_another_sites_study_series_slices_and_heatmaps_are_answered_like_missing_ones(world, db):
    client, mine, theirs = world
    ok = client.get(f"/api/viewer/study/{mine[0]}")
    assert ok.status_code == 200 and ok.json()["info"]["site"] == "Test Hospital"
    assert client.get(f"/api/viewer/series/{mine[1]}/info").status_code == 200
    assert client.get(f"/api/viewer/series/{mine[1]}/0.png").headers["content-type"] == "image/png"

    for url in (f"/api/viewer/study/{theirs[0]}", f"/api/viewer/series/{theirs[1]}/info",
                f"/api/viewer/series/{theirs[1]}/0.png"):
        refused, missing = client.get(url), client.get(url.replace(theirs[0], "1.2.3").replace(theirs[1], "1.2.3"))
        assert refused.status_code == missing.status_code == 404, url
        assert "not in your sites" in refused.json()["detail"]
        assert "SYNTHETIC" not in refused.text and refused.json() != ok.json()

    ids = _finding_ids(db)
    own, other = client.get(f"/api/viewer/heatmap/{ids[mine[0]]}/0.png"), \
        client.get(f"/api/viewer/heatmap/{ids[theirs[0]]}/0.png")
    assert own.status_code == 404 and "no heatmap" in own.json()["detail"]        # checked, then not found
    assert other.status_code == 404 and "not in your sites" in other.json()["detail"]


def test_priors_are_listed_from_the_users_sites_only(world, settings, db):
    client, mine, theirs = world
    third = _store(settings, db, "third", "STORESCU")           # Test Hospital, the same patient
    priors = {p["study_uid"] for p in client.get(f"/api/viewer/study/{mine[0]}").json()["priors"]}
    assert priors == {third[0]}                                 # not the Other Hospital study
    _user(db, "admin2", ["*"])
    with db.session() as session:
        session.scalar(select(User).where(User.username == "admin2")).role = "admin"
    admin = TestClient(client.app)
    admin.post("/login", data={"username": "admin2", "password": PASSWORD})
    everyone = {p["study_uid"] for p in admin.get(f"/api/viewer/study/{mine[0]}").json()["priors"]}
    assert everyone == {third[0], theirs[0]}


def test_a_user_with_no_sites_sees_nothing_and_the_status_counts_only_visible_studies(world, db):
    client, mine, _theirs = world
    assert client.get("/api/status").json()["studies"] == 1
    _user(db, "newcomer", [])
    other = TestClient(client.app)
    other.post("/login", data={"username": "newcomer", "password": PASSWORD})
    assert other.get("/api/status").json()["studies"] == 0
    assert other.get(f"/api/viewer/study/{mine[0]}").status_code == 404


def test_every_view_is_audited_with_who_what_and_from_where(world, db):
    client, mine, theirs = world
    client.get(f"/api/viewer/study/{mine[0]}")
    for _ in range(3):                                          # slices of one series: one row
        client.get(f"/api/viewer/series/{mine[1]}/0.png")
    client.get(f"/api/viewer/study/{theirs[0]}")                # refused: nothing was viewed
    rows = query(db, user="ana", action="view")
    assert [(r.study_uid, r.detail["what"]) for r in reversed(rows)] == [
        (mine[0], "study"), (mine[0], f"images {mine[1]}")]
    assert all(r.detail["from"] == "testclient" for r in rows)


def test_a_cross_site_browser_post_is_refused_and_headers_are_sent(world):
    client, *_ = world
    evil = client.post("/login", data={"username": "ana", "password": PASSWORD},
                       headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
    same = client.post("/login", data={"username": "ana", "password": PASSWORD},
                       headers={"Origin": "http://testserver"})
    assert same.status_code == 200
    answer = client.get("/api/status")
    for name, value in SECURITY_HEADERS.items():
        assert answer.headers[name] == value
    assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    assert "strict-transport-security" not in answer.headers     # plain HTTP: no HSTS
    assert TestClient(client.app).get("/api/status").status_code == 401


def test_without_demo_the_first_start_makes_an_admin_with_a_password_nobody_knows(settings, db):
    from app import initial_logins

    line = initial_logins(settings, db, demo=False, environ={})
    password = line.split("admin / ")[1].split()[0]
    assert len(password) >= 12 and authenticate(db, "admin", password) is not None
    for known in ("admin", "demo"):
        assert authenticate(db, "admin", known) is None and authenticate(db, "demo", known) is None
    again = initial_logins(settings, db, demo=False, environ={})
    assert password not in again and "readingroom users list" in again


def test_the_admin_password_may_come_from_the_environment_and_is_not_printed(settings, db):
    from app import initial_logins

    line = initial_logins(settings, db, demo=False, environ={"READINGROOM_ADMIN_PASSWORD": PASSWORD})
    assert PASSWORD not in line and authenticate(db, "admin", PASSWORD) is not None


def test_demo_logins_exist_only_with_demo_and_demo_stays_on_loopback(settings, db, tmp_path):
    from app import demo_hosts_problem, initial_logins
    from tests.conftest import make_settings

    assert "demo / demo" in initial_logins(settings, db, demo=True, environ={})
    assert authenticate(db, "demo", "demo") is not None
    assert demo_hosts_problem(settings) is None
    wide = make_settings(tmp_path / "wide", web={"host": "0.0.0.0"})
    problem = demo_hosts_problem(wide)
    assert problem and "web.host=0.0.0.0" in problem and "loopback" in problem


def test_logout_ends_the_session_on_the_server(world):
    client, mine, _theirs = world
    token = client.cookies.get("rr_session")
    assert client.get("/api/status").status_code == 200
    client.get("/logout", follow_redirects=False)
    replay = TestClient(client.app)
    replay.cookies.set("rr_session", token)                    # the old cookie, kept by an attacker
    assert replay.get("/api/status").status_code == 401


def test_disabling_a_user_or_changing_the_password_ends_their_sessions(world, db):
    from readingroom.auth import set_disabled, set_password

    client, *_ = world
    set_password(db, "ana", PASSWORD + "!")
    assert client.get("/api/status").status_code == 401
    client.post("/login", data={"username": "ana", "password": PASSWORD + "!"})
    assert client.get("/api/status").status_code == 200
    set_disabled(db, "ana")
    assert client.get("/api/status").status_code == 401
    assert client.post("/login", data={"username": "ana", "password": PASSWORD + "!"}).status_code == 401


def test_failed_logins_are_throttled_and_audited(world, db):
    client, *_ = world
    answers = [client.post("/login", data={"username": "ana", "password": "guess"}).status_code for _ in range(6)]
    assert answers == [401] * 5 + [429]
    locked = client.post("/login", data={"username": "ana", "password": PASSWORD})   # even the right one
    assert locked.status_code == 429 and "try again" in locked.json()["error"]
    assert len(query(db, user="ana", action="login_failed")) == 5
