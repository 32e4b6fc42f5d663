"""User accounts, web sessions and login throttling.

Accounts: hashed passwords (scrypt, salted) and three roles: ``radiologist``, ``admin`` and
``site`` (a machine account bound to exactly one site, e.g. a RIS posting FHIR). A new user is
credentialed for no site until an admin gives them some (``["*"]``: every site).

    add_user(db, "dr_lee", password, "radiologist", ["Northside Clinic"])
    set_sites(db, "dr_lee", ["*"]); set_password(db, "dr_lee", new); set_disabled(db, "dr_lee")

Sessions live on the server (``web_sessions``), keyed by the SHA-256 of a random token that only
the browser holds; a new password, a disabled account or a log-out ends them at once:

    token = create_session(db, "dr_lee", ttl_s=12 * 3600)
    session_user(db, token, idle_s=30 * 60)    # "dr_lee", or None (unknown, expired, idle, disabled)

``LoginThrottle`` slows password guessing: after a few failures a user, or an address, waits.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Callable, Iterable, Sequence

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from readingroom.access import ALL_SITES
from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.schema import Site, User, WebSession, utcnow

log = logging.getLogger(__name__)

ROLES = ("radiologist", "admin", "site")
MIN_PASSWORD_CHARS = 8
# A session's last_seen is written at most this often (every request would be a write).
LAST_SEEN_WRITE_S = 30.0
USERNAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_N, _R, _P = 2**14, 8, 1


class AccountError(ReadingRoomError):
    """A user account cannot be created or changed as asked; the message says why and what to do."""


class UserExists(AccountError):
    """A user of that name exists already."""


class UnknownUser(AccountError):
    """No user of that name."""


@dataclass(frozen=True)
class UserRow:
    """One account as ``list_users`` shows it (never the password hash)."""

    username: str
    role: str
    sites: list[str]
    disabled: bool
    created_at: datetime


def hash_password(password: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P)
    return f"scrypt${_N}${_R}${_P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash to verify against when the user does not exist, so that both cases take as long."""
    return hash_password(secrets.token_hex(16))


# --------------------------------------------------------------------------- checks
def _check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
        raise AccountError(f"user name {username!r} is invalid; use 1 to 64 letters, digits, '.', '_', '-' "
                           "or '@', starting with a letter or digit")
    return username


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"role {role!r} is invalid; use one of {', '.join(ROLES)}")
    return role


def _check_password(password: str, allow_short: bool) -> None:
    if not isinstance(password, str) or not password:
        raise AccountError("the password is empty; give one of at least "
                           f"{MIN_PASSWORD_CHARS} characters")
    if not allow_short and len(password) < MIN_PASSWORD_CHARS:
        raise AccountError(f"the password has {len(password)} characters; give one of at least "
                           f"{MIN_PASSWORD_CHARS}")


def parse_sites(text: str) -> list[str]:
    """``"A, B"`` -> ``["A", "B"]`` (empty names dropped, duplicates removed, order kept)."""
    return list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))


def _check_sites(session: Session, role: str, sites: Iterable[str], known_sites: Iterable[str] | None) -> list[str]:
    names = list(dict.fromkeys(str(name).strip() for name in sites if str(name).strip()))
    if ALL_SITES in names and len(names) > 1:
        raise AccountError(f"{ALL_SITES!r} means every site; give it alone, or list the sites without it")
    if role == "site" and (len(names) != 1 or names == [ALL_SITES]):
        raise AccountError(f"a site account is bound to exactly one site; give one site name (not "
                           f"{ALL_SITES!r}), got {len(names)}: {', '.join(names) or '(none)'}")
    known = set(known_sites) if known_sites is not None else set(session.scalars(select(Site.name)))
    unknown = [name for name in names if name != ALL_SITES and name not in known]
    if unknown:
        raise AccountError(f"unknown site(s): {', '.join(map(repr, unknown))}; the configured sites are "
                           f"{', '.join(sorted(known)) or '(none)'} (see `readingroom sites list`), "
                           f"or {ALL_SITES!r} for every site")
    return names


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise UnknownUser(f"no user {username!r}; see `readingroom users list`")
    return user


# --------------------------------------------------------------------------- accounts
def add_user(db: Database, username: str, password: str, role: str = "radiologist", sites: Sequence[str] = (),
             *, known_sites: Iterable[str] | None = None, allow_short_password: bool = False) -> None:
    """Create a user. ``sites`` are checked against ``known_sites`` (default: the sites in the
    database, mirrored from the settings). Raises UserExists, or AccountError for a bad name,
    role, password (under 8 characters unless ``allow_short_password``, for the demo) or sites."""
    _check_username(username)
    _check_role(role)
    _check_password(password, allow_short_password)
    try:
        with db.session() as session:
            if session.scalar(select(User.id).where(User.username == username)) is not None:
                raise UserExists(f"user {username!r} exists already; choose another name, or change it with "
                                 "`readingroom users passwd|sites|disable`")
            names = _check_sites(session, role, sites, known_sites)
            session.add(User(username=username, password_hash=hash_password(password), role=role, sites=names))
    except IntegrityError:   # created at the same moment by another process
        raise UserExists(f"user {username!r} exists already; choose another name") from None
    log.info("created %s account %r (sites: %s)", role, username, ", ".join(names) or "none")


def ensure_user(db: Database, username: str, password: str, role: str = "radiologist",
                sites: Sequence[str] | None = None) -> bool:
    """Create the user if missing (the demo's accounts, tests); short passwords are allowed here.
    ``sites`` None: no site (pass ``["*"]`` for every site). Returns True when created."""
    try:
        add_user(db, username, password, role, list(sites or []), allow_short_password=True)
    except UserExists:
        return False
    return True


def set_password(db: Database, username: str, password: str, *, allow_short_password: bool = False) -> None:
    """Give the user a new password, and end their sessions."""
    _check_password(password, allow_short_password)
    with db.session() as session:
        _user(session, username).password_hash = hash_password(password)
    ended = revoke_sessions(db, username)
    log.info("new password for %r (%d session(s) ended)", username, ended)


def set_disabled(db: Database, username: str, disabled: bool = True) -> None:
    """Disable (or, with ``disabled=False``, enable) a user; a disabled user's sessions end. The last
    active administrator cannot be disabled."""
    with db.session() as session:
        user = _user(session, username)
        if disabled and user.role == "admin" and not user.disabled:
            others = session.scalar(select(func.count(User.id)).where(
                User.role == "admin", User.disabled.is_(False), User.username != username))
            if not others:
                raise AccountError(f"{username!r} is the only active administrator; add or enable another "
                                   "one first (`readingroom users add NAME --role admin`)")
        user.disabled = disabled
    ended = revoke_sessions(db, username)
    log.info("%s user %r (%d session(s) ended)", "disabled" if disabled else "enabled", username, ended)


def set_sites(db: Database, username: str, sites: Sequence[str], *, known_sites: Iterable[str] | None = None) -> None:
    """Credential the user for exactly ``sites`` (``["*"]``: every site; ``[]``: none)."""
    with db.session() as session:
        user = _user(session, username)
        user.sites = _check_sites(session, user.role, sites, known_sites)
        names = list(user.sites)
    log.info("user %r is credentialed for: %s", username, ", ".join(names) or "no site")


def list_users(db: Database) -> list[UserRow]:
    """Every account, by name."""
    with db.reader() as session:
        return [UserRow(u.username, u.role, list(u.sites or []), bool(u.disabled), u.created_at)
                for u in session.scalars(select(User).order_by(User.username))]


def authenticate(db: Database, username: str, password: str) -> User | None:
    """The user, when the password is right and the account enabled; None otherwise. A missing
    user costs the same password check as an existing one (no telling which names exist)."""
    with db.reader() as session:
        user = session.scalar(select(User).where(User.username == username))
    ok = verify_password(password, user.password_hash if user is not None else _dummy_hash())
    if user is not None and ok and not user.disabled:
        return user
    log.info("failed login for %r%s", username, " (disabled)" if user is not None and user.disabled and ok else "")
    return None


def user_role(db: Database, username: str) -> str | None:
    """The role of an enabled user; None for a missing or disabled one."""
    with db.reader() as session:
        row = session.execute(select(User.role, User.disabled).where(User.username == username)).first()
    return row[0] if row is not None and not row[1] else None


# --------------------------------------------------------------------------- server-side sessions
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_session(db: Database, username: str, ttl_s: float, now: datetime | None = None) -> str:
    """A new session for an enabled user, ending ``ttl_s`` from ``now`` (naive UTC) at the latest.
    Returns the token for the cookie; only its hash is stored. Expired sessions are purged here."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    with db.session() as session:
        user = _user(session, username)
        if user.disabled:
            raise AccountError(f"user {username!r} is disabled; an admin enables it with "
                               f"`readingroom users disable {username} --enable`")
        session.execute(delete(WebSession).where(WebSession.expires_at <= now))
        session.add(WebSession(token_hash=_token_hash(token), username=username, created_at=now, last_seen=now,
                               expires_at=now + timedelta(seconds=ttl_s)))
    return token


def session_user(db: Database, token: str | None, idle_s: float, now: datetime | None = None) -> str | None:
    """The user of a live session; None when the token is unknown, expired, unused for longer than
    ``idle_s``, or its user is disabled or gone. A dead session is deleted."""
    if not token or len(token) > 256:
        return None
    now = now or utcnow()
    digest = _token_hash(token)
    with db.reader() as session:
        row = session.execute(select(WebSession.username, WebSession.last_seen, WebSession.expires_at, User.disabled)
                              .outerjoin(User, User.username == WebSession.username)
                              .where(WebSession.token_hash == digest)).first()
    if row is None:
        return None
    username, last_seen, expires_at, disabled = row
    if disabled is None or disabled or expires_at <= now or (now - last_seen).total_seconds() > idle_s:
        end_session(db, token)
        return None
    if (now - last_seen).total_seconds() >= LAST_SEEN_WRITE_S:
        with db.session() as session:
            session.execute(update(WebSession).where(WebSession.token_hash == digest, WebSession.last_seen < now)
                            .values(last_seen=now))
    return username


def end_session(db: Database, token: str | None) -> bool:
    """Log out: forget the session. True when there was one."""
    if not token:
        return False
    with db.session() as session:
        result = session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))
        return bool(result.rowcount)  # type: ignore[attr-defined]  # a DELETE's CursorResult


def revoke_sessions(db: Database, username: str) -> int:
    """End every session of the user; returns how many."""
    with db.session() as session:
        result = session.execute(delete(WebSession).where(WebSession.username == username))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DELETE's CursorResult


# --------------------------------------------------------------------------- login throttling
class LoginThrottle:
    """Failed logins counted per user and per address, separately (in memory, thread-safe).

    ``max_failures`` failures of one key within ``window_s`` seconds lock it for ``lockout_s``.
    A success clears the user's count; the address's count ages out with the window, so that a
    valid login does not reset guessing from that address. ``clock`` is injectable for tests.
    """

    def __init__(self, max_failures: int = 5, window_s: float = 300, lockout_s: float = 300,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000) -> None:
        if max_failures < 1 or window_s <= 0 or lockout_s <= 0:
            raise ValueError("LoginThrottle needs max_failures >= 1, window_s > 0 and lockout_s > 0")
        self.max_failures, self.window_s, self.lockout_s = max_failures, window_s, lockout_s
        self.clock, self.max_keys = clock, max_keys
        self._failures: dict[tuple[str, str], deque[float]] = {}
        self._locked: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", username), ("address", address)

    def allowed(self, username: str, address: str) -> float:
        """Seconds to wait before the next try of this user or from this address; 0 when allowed."""
        now = self.clock()
        with self._lock:
            return max([self._locked.get(key, now) - now for key in self._keys(username, address)] + [0.0])

    def failed(self, username: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key in self._keys(username, address):
                times = self._failures.setdefault(key, deque())
                while times and times[0] <= now - self.window_s:
                    times.popleft()
                times.append(now)
                if len(times) >= self.max_failures:
                    self._locked[key] = now + self.lockout_s
                    del self._failures[key]
                    log.warning("login locked for %s %r for %g s after %d failures", key[0], key[1],
                                self.lockout_s, self.max_failures)
            if len(self._failures) + len(self._locked) > self.max_keys:
                self._prune(now)

    def succeeded(self, username: str, address: str) -> None:
        key = self._keys(username, address)[0]
        with self._lock:
            self._failures.pop(key, None)
            self._locked.pop(key, None)

    def _prune(self, now: float) -> None:
        """Forget stale keys; if there are still too many, the oldest failures (memory stays bounded)."""
        self._locked = {k: until for k, until in self._locked.items() if until > now}
        self._failures = {k: t for k, t in self._failures.items() if t and t[-1] > now - self.window_s}
        excess = len(self._failures) + len(self._locked) - self.max_keys
        for key in sorted(self._failures, key=lambda k: self._failures[k][-1])[:max(excess, 0)]:
            del self._failures[key]
