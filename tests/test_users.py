"""Accounts (issue 19, finding 3), server-side sessions and login throttling (finding 5).

The clocks are injected: no sleeps, and nothing depends on the date, the hour or the time zone.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from readingroom import auth
from readingroom.auth import (AccountError, LoginThrottle, UnknownUser, UserExists, add_user, authenticate,
                              create_session, end_session, ensure_user, list_users, revoke_sessions, session_user,
                              set_disabled, set_password, set_sites, user_role)
from readingroom.schema import User, WebSession, utcnow
from tests.conftest import TEST_SITES

PASSWORD = "correct horse"
T0 = utcnow().replace(microsecond=0)   # naive UTC, today: the sessions are given `now`
IDLE_S = 30 * 60


def _sites_of(db, name):
    return next(u.sites for u in list_users(db) if u.username == name)


# --------------------------------------------------------------------------- accounts
def test_a_new_user_has_no_site_until_an_admin_gives_some(db):
    assert ensure_user(db, "ana", "pw") is True
    assert ensure_user(db, "ana", "other") is False           # exists: unchanged
    assert _sites_of(db, "ana") == []
    ensure_user(db, "ben", "pw", sites=["*"])
    assert _sites_of(db, "ben") == ["*"]
    with db.session() as session:                              # the column default, too
        session.add(User(username="raw", password_hash="x"))
    assert _sites_of(db, "raw") == []


def test_add_user_and_list_users(db):
    add_user(db, "dr_lee", PASSWORD, "radiologist", ["Test Hospital", "Other Hospital", "Test Hospital"])
    add_user(db, "ris.test", PASSWORD, "site", ["Test Hospital"])
    add_user(db, "boss", PASSWORD, "admin")
    rows = list_users(db)
    assert [r.username for r in rows] == ["boss", "dr_lee", "ris.test"]
    lee = rows[1]
    assert (lee.role, lee.sites, lee.disabled) == ("radiologist", ["Test Hospital", "Other Hospital"], False)
    assert isinstance(lee.created_at, datetime)
    assert not hasattr(lee, "password_hash")
    assert authenticate(db, "dr_lee", PASSWORD).username == "dr_lee"
    assert authenticate(db, "dr_lee", "wrong password") is None


@pytest.mark.parametrize("name, password, role, sites, message", [
    ("ana", PASSWORD, "root", [], "role 'root' is invalid; use one of radiologist, admin, site"),
    ("ana", "", "radiologist", [], "password is empty"),
    ("ana", "short", "radiologist", [], "at least 8"),
    ("ana", PASSWORD, "site", [], "exactly one site"),
    ("ana", PASSWORD, "site", ["Test Hospital", "Other Hospital"], "exactly one site"),
    ("ana", PASSWORD, "site", ["*"], "exactly one site"),
    ("ana", PASSWORD, "radiologist", ["Nowhere"], "unknown site.*'Nowhere'.*Other Hospital, Test Hospital"),
    ("ana", PASSWORD, "radiologist", ["*", "Test Hospital"], "give it alone"),
    ("", PASSWORD, "radiologist", [], "user name '' is invalid"),
    ("a b", PASSWORD, "radiologist", [], "is invalid"),
    ("x|y", PASSWORD, "radiologist", [], "is invalid"),
])
def test_add_user_refuses_bad_accounts_saying_why(db, name, password, role, sites, message):
    with pytest.raises(AccountError, match=message):
        add_user(db, name, password, role, sites)
    assert list_users(db) == []


def test_add_user_refuses_a_duplicate_and_short_passwords_only_when_allowed(db):
    add_user(db, "ana", PASSWORD)
    with pytest.raises(UserExists, match="exists already"):
        add_user(db, "ana", PASSWORD)
    add_user(db, "demo", "demo", allow_short_password=True)
    assert authenticate(db, "demo", "demo") is not None


def test_sites_are_checked_against_the_given_known_sites(db):
    add_user(db, "ana", PASSWORD, "radiologist", ["Elsewhere"], known_sites=["Elsewhere"])
    with pytest.raises(AccountError, match="unknown site"):
        set_sites(db, "ana", ["Test Hospital"], known_sites=["Elsewhere"])
    set_sites(db, "ana", ["Test Hospital"])                      # default: the sites in the database
    assert _sites_of(db, "ana") == ["Test Hospital"]
    set_sites(db, "ana", [])
    assert _sites_of(db, "ana") == []
    add_user(db, "ris", PASSWORD, "site", ["Test Hospital"])
    with pytest.raises(AccountError, match="exactly one site"):
        set_sites(db, "ris", ["*"])
    with pytest.raises(UnknownUser, match="no user 'nobody'"):
        set_sites(db, "nobody", [])


def test_set_password_replaces_it_and_ends_the_sessions(db):
    add_user(db, "ana", PASSWORD)
    token = create_session(db, "ana", 3600, now=T0)
    with pytest.raises(AccountError, match="at least 8"):
        set_password(db, "ana", "short")
    assert session_user(db, token, IDLE_S, now=T0) == "ana"      # a refused change ends nothing
    set_password(db, "ana", "a new passphrase")
    assert session_user(db, token, IDLE_S, now=T0) is None
    assert authenticate(db, "ana", PASSWORD) is None
    assert authenticate(db, "ana", "a new passphrase") is not None
    with pytest.raises(UnknownUser):
        set_password(db, "nobody", PASSWORD)


def test_a_disabled_user_cannot_log_in_and_loses_their_sessions(db):
    add_user(db, "boss", PASSWORD, "admin")
    add_user(db, "ana", PASSWORD, "radiologist", ["*"])
    token = create_session(db, "ana", 3600, now=T0)
    set_disabled(db, "ana")
    assert authenticate(db, "ana", PASSWORD) is None
    assert session_user(db, token, IDLE_S, now=T0) is None
    assert user_role(db, "ana") is None
    assert [r.disabled for r in list_users(db) if r.username == "ana"] == [True]
    with pytest.raises(AccountError, match="disabled"):
        create_session(db, "ana", 3600, now=T0)
    set_disabled(db, "ana", disabled=False)
    assert authenticate(db, "ana", PASSWORD) is not None
    assert user_role(db, "ana") == "radiologist"


def test_the_last_active_admin_cannot_be_disabled(db):
    add_user(db, "boss", PASSWORD, "admin")
    with pytest.raises(AccountError, match="only active administrator"):
        set_disabled(db, "boss")
    add_user(db, "deputy", PASSWORD, "admin")
    set_disabled(db, "boss")
    with pytest.raises(AccountError, match="only active administrator"):
        set_disabled(db, "deputy")


def test_authenticate_checks_a_password_even_for_a_missing_user(db, monkeypatch):
    """The same scrypt work whether or not the name exists: the answer's time tells nothing."""
    add_user(db, "ana", PASSWORD)
    calls = []
    real = auth.verify_password
    monkeypatch.setattr(auth, "verify_password", lambda pw, stored: calls.append(stored) or real(pw, stored))
    assert authenticate(db, "nobody", PASSWORD) is None
    assert authenticate(db, "ana", "wrong password") is None
    assert len(calls) == 2 and all(stored.startswith("scrypt$16384$8$1$") for stored in calls)


# --------------------------------------------------------------------------- sessions
def test_a_session_stores_only_the_hash_of_its_token(db):
    add_user(db, "ana", PASSWORD)
    token = create_session(db, "ana", 3600, now=T0)
    assert len(token) >= 40
    with db.reader() as session:
        row = session.scalars(select(WebSession)).one()
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in (row.token_hash, row.username)
    assert (row.created_at, row.last_seen, row.expires_at) == (T0, T0, T0 + timedelta(hours=1))
    assert create_session(db, "ana", 3600, now=T0) != token
    with pytest.raises(UnknownUser):
        create_session(db, "nobody", 3600, now=T0)


def test_unknown_tokens_have_no_user(db):
    add_user(db, "ana", PASSWORD)
    create_session(db, "ana", 3600, now=T0)
    for token in (None, "", "ana", "x" * 10_000):
        assert session_user(db, token, IDLE_S, now=T0) is None
    assert end_session(db, "not a token") is False


def test_end_session_logs_out_that_session_only(db):
    add_user(db, "ana", PASSWORD)
    first, second = create_session(db, "ana", 3600, now=T0), create_session(db, "ana", 3600, now=T0)
    assert end_session(db, first) is True
    assert session_user(db, first, IDLE_S, now=T0) is None
    assert session_user(db, second, IDLE_S, now=T0) == "ana"
    assert end_session(db, first) is False


def test_revoke_sessions_ends_every_session_of_one_user(db):
    add_user(db, "ana", PASSWORD)
    add_user(db, "ben", PASSWORD)
    tokens = [create_session(db, "ana", 3600, now=T0) for _ in range(3)]
    ben = create_session(db, "ben", 3600, now=T0)
    assert revoke_sessions(db, "ana") == 3
    assert all(session_user(db, t, IDLE_S, now=T0) is None for t in tokens)
    assert session_user(db, ben, IDLE_S, now=T0) == "ben"


def test_a_session_ends_when_it_expires(db):
    add_user(db, "ana", PASSWORD)
    token = create_session(db, "ana", 600, now=T0)
    for minute in range(1, 10):                                  # used every minute: never idle
        assert session_user(db, token, IDLE_S, now=T0 + timedelta(minutes=minute)) == "ana"
    assert session_user(db, token, IDLE_S, now=T0 + timedelta(minutes=10)) is None
    with db.reader() as session:
        assert session.scalars(select(WebSession)).all() == []   # a dead session is deleted


def test_a_session_ends_when_idle_and_last_seen_is_written_at_most_every_30_s(db):
    add_user(db, "ana", PASSWORD)
    token = create_session(db, "ana", 12 * 3600, now=T0)

    def last_seen():
        with db.reader() as session:
            return session.scalar(select(WebSession.last_seen))

    assert session_user(db, token, IDLE_S, now=T0 + timedelta(seconds=10)) == "ana"
    assert last_seen() == T0                                     # within 30 s: no write
    use = T0 + timedelta(seconds=IDLE_S - 1)
    assert session_user(db, token, IDLE_S, now=use) == "ana"
    assert last_seen() == use
    assert session_user(db, token, IDLE_S, now=use + timedelta(seconds=IDLE_S - 1)) == "ana"
    later = T0 + timedelta(hours=5)
    other = create_session(db, "ana", 12 * 3600, now=T0)
    assert session_user(db, other, IDLE_S, now=later) is None    # idle for hours
    assert session_user(db, other, IDLE_S, now=T0) is None       # and gone


def test_creating_a_session_purges_expired_ones(db):
    add_user(db, "ana", PASSWORD)
    create_session(db, "ana", 60, now=T0)
    create_session(db, "ana", 60, now=T0 + timedelta(hours=1))
    with db.reader() as session:
        assert len(session.scalars(select(WebSession)).all()) == 1


def test_the_session_idle_setting_has_a_default(settings):
    assert settings.web.session_idle_min == 30


# --------------------------------------------------------------------------- throttling
class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_throttle_locks_a_user_after_max_failures_then_lets_them_try_again(clock):
    throttle = LoginThrottle(max_failures=5, window_s=300, lockout_s=300, clock=clock)
    for n in range(4):
        assert throttle.allowed("ana", f"10.0.0.{n}") == 0
        throttle.failed("ana", f"10.0.0.{n}")
    assert throttle.allowed("ana", "10.0.0.9") == 0
    throttle.failed("ana", "10.0.0.9")                         # the 5th, from yet another address
    assert throttle.allowed("ana", "10.0.0.50") == 300         # the user is locked everywhere
    assert throttle.allowed("ben", "10.0.0.1") == 0            # the addresses are not
    clock.now += 120
    assert throttle.allowed("ana", "10.0.0.50") == 180
    clock.now += 180
    assert throttle.allowed("ana", "10.0.0.50") == 0


def test_throttle_locks_an_address_that_guesses_many_users(clock):
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=120, clock=clock)
    for user in ("a", "b", "c"):
        throttle.failed(user, "203.0.113.7")
    assert throttle.allowed("d", "203.0.113.7") == 120
    assert throttle.allowed("a", "198.51.100.1") == 0


def test_throttle_forgets_failures_older_than_the_window(clock):
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=60, clock=clock)
    for _ in range(10):
        throttle.failed("ana", "10.0.0.1")
        clock.now += 31                                        # never 3 within 60 s
        assert throttle.allowed("ana", "10.0.0.1") == 0


def test_a_success_clears_the_user_but_not_the_address(clock):
    throttle = LoginThrottle(max_failures=3, window_s=300, lockout_s=300, clock=clock)
    throttle.failed("ana", "10.0.0.1")
    throttle.failed("ana", "10.0.0.1")
    throttle.succeeded("ana", "10.0.0.1")
    throttle.failed("ana", "10.0.0.2")
    throttle.failed("ana", "10.0.0.2")
    assert throttle.allowed("ana", "10.0.0.2") == 0            # the user's count started again
    throttle.failed("ben", "10.0.0.1")                         # the address's third failure
    assert throttle.allowed("carl", "10.0.0.1") == 300


def test_throttle_memory_stays_bounded(clock):
    throttle = LoginThrottle(max_failures=5, clock=clock, max_keys=100)
    for n in range(1000):
        throttle.failed(f"user{n}", f"10.0.{n // 256}.{n % 256}")
    assert len(throttle._failures) + len(throttle._locked) <= 102


def test_throttle_refuses_nonsense_limits():
    with pytest.raises(ValueError):
        LoginThrottle(max_failures=0)


# --------------------------------------------------------------------------- the command line
@pytest.fixture
def cli(tmp_path, monkeypatch):
    """``readingroom users ...`` in this process, on a temporary home with the test sites."""
    import os

    from app import main

    for key in [k for k in os.environ if k.startswith("READINGROOM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("READINGROOM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("READINGROOM_SITES", json.dumps(TEST_SITES))

    def run(*args: str, stdin: str = "") -> int:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        return main(["users", *args])
    return run


def test_cli_adds_lists_and_changes_users(cli, capsys):
    assert cli("add", "boss", "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n") == 0
    assert cli("add", "dr_lee", "--sites", "Test Hospital, Other Hospital", "--password-stdin",
               stdin="lee's password\n") == 0
    assert cli("add", "ris", "--role", "site", "--sites", "Test Hospital", "--password-stdin",
               stdin=PASSWORD) == 0
    capsys.readouterr()
    assert cli("list", "--json") == 0
    rows = {r["username"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["dr_lee"]["sites"] == ["Test Hospital", "Other Hospital"]
    assert (rows["boss"]["role"], rows["boss"]["sites"], rows["ris"]["role"]) == ("admin", [], "site")
    assert cli("sites", "dr_lee", "*") == 0
    assert cli("disable", "dr_lee") == 0
    assert cli("list") == 0
    out = capsys.readouterr().out
    assert "dr_lee" in out and "disabled" in out and "*" in out
    assert cli("disable", "dr_lee", "--enable") == 0
    assert cli("passwd", "dr_lee", "--password-stdin", stdin="another passphrase\n") == 0
    assert "new password for dr_lee" in capsys.readouterr().out


def test_cli_errors_say_what_to_do(cli, capsys):
    assert cli("add", "ana", "--sites", "Nowhere", "--password-stdin", stdin=PASSWORD) == 2
    err = capsys.readouterr().err
    assert "unknown site(s): 'Nowhere'" in err and "Test Hospital" in err and "readingroom sites list" in err
    assert cli("add", "ana", "--role", "site", "--sites", "Test Hospital,Other Hospital", "--password-stdin",
               stdin=PASSWORD) == 2
    assert "exactly one site" in capsys.readouterr().err
    assert cli("add", "ana", "--password-stdin", stdin="short\n") == 2
    assert "at least 8" in capsys.readouterr().err
    assert cli("add", "ana", stdin=PASSWORD) == 2                 # not a terminal, no --password-stdin
    assert "--password-stdin" in capsys.readouterr().err
    assert cli("passwd", "nobody", "--password-stdin", stdin=PASSWORD) == 2
    assert "no user 'nobody'" in capsys.readouterr().err
    assert cli("list") == 0
    assert "no users" in capsys.readouterr().out


def test_cli_as_a_real_process_reads_the_password_from_stdin(tmp_path):
    from tests.integration.helpers import env_for

    env = env_for(tmp_path / "home")
    add = subprocess.run([sys.executable, "-m", "app", "users", "add", "ana", "--sites", "Test Hospital",
                          "--password-stdin"], input=PASSWORD + "\n", capture_output=True, text=True, env=env,
                         timeout=120)
    assert add.returncode == 0, add.stderr
    assert PASSWORD not in add.stdout + add.stderr
    listed = subprocess.run([sys.executable, "-m", "app", "users", "list", "--json"], capture_output=True,
                            text=True, env=env, timeout=120)
    assert json.loads(listed.stdout)[0]["sites"] == ["Test Hospital"]


# --------------------------------------------------------------------------- the Admin tab
@pytest.fixture
def admin_page(settings, db, monkeypatch):
    """The Admin tab's callbacks by name, and the messages they showed (warnings, infos)."""
    import gradio as gr

    from readingroom.jobs import DatabaseJobQueue
    from reporting.lifecycle import ReportService
    from workstation.page_context import PageContext
    from workstation.tab_admin import build_admin

    said: list[str] = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: said.append(f"warning: {message}"))
    monkeypatch.setattr(gr, "Info", lambda message, *a, **k: said.append(f"info: {message}"))
    with gr.Blocks() as blocks:
        ctx = PageContext(settings=settings, db=db, queue=None, wake=None, blocks=blocks, tabs=gr.Tabs(),
                          reports=ReportService(db, settings, DatabaseJobQueue(db, settings.jobs)),
                          open_uid=gr.State(""), live=gr.State(None), critical_count=gr.Number(0, visible=False))
        build_admin(ctx)
    fns = {f.fn.__name__: f.fn for f in blocks.fns.values()}
    return fns, said


def test_admin_tab_manages_users_and_only_for_admins(db, admin_page):
    from types import SimpleNamespace

    fns, said = admin_page
    boss, lee = SimpleNamespace(username="boss"), SimpleNamespace(username="dr_lee")
    add_user(db, "boss", PASSWORD, "admin")
    tables = fns["create_user"]("dr_lee", PASSWORD, "radiologist", "Test Hospital", boss)
    users_table, cleared_password = tables[1], tables[-1]
    assert ["dr_lee", "radiologist", "Test Hospital", "active"] in [row[:4] for row in users_table]
    assert cleared_password == "" and said[-1] == "info: User dr_lee (radiologist) added."
    fns["set_sites"]("dr_lee", "*", boss)
    assert _sites_of(db, "dr_lee") == ["*"]
    token = create_session(db, "dr_lee", 3600)
    fns["set_password"]("dr_lee", "another passphrase", boss)
    assert session_user(db, token, IDLE_S) is None and authenticate(db, "dr_lee", "another passphrase")
    fns["disable_user"]("dr_lee", boss)
    assert user_role(db, "dr_lee") is None
    fns["enable_user"]("dr_lee", boss)
    assert user_role(db, "dr_lee") == "radiologist"

    fns["create_user"]("x", PASSWORD, "site", "Test Hospital, Other Hospital", boss)
    assert "exactly one site" in said[-1] and "x" not in [u.username for u in list_users(db)]
    fns["disable_user"]("boss", boss)
    assert "cannot disable your own account" in said[-1]
    said.clear()
    for name, args in (("create_user", ("eve", PASSWORD, "admin", "*")), ("set_sites", ("dr_lee", "")),
                       ("set_password", ("boss", "taken over!")), ("disable_user", ("boss",)),
                       ("table_values", ())):
        fns[name](*args, lee)
    assert len(said) == 5 and all(m.startswith("warning: Only an administrator may") for m in said)
    assert [u.username for u in list_users(db)] == ["boss", "dr_lee"] and _sites_of(db, "dr_lee") == ["*"]
    assert authenticate(db, "boss", PASSWORD) is not None
