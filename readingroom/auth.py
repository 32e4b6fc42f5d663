"""User accounts with hashed passwords (scrypt, salted). Roles: radiologist and admin."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os

from sqlalchemy import select

from readingroom.db import Database
from readingroom.schema import User

log = logging.getLogger(__name__)

ROLES = ("radiologist", "admin")
_N, _R, _P = 2**14, 8, 1


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


def ensure_user(db: Database, username: str, password: str, role: str = "radiologist") -> bool:
    """Create the user if missing. Returns True when created."""
    if role not in ROLES:
        raise ValueError(f"role {role!r} is invalid; use one of {', '.join(ROLES)}")
    with db.session() as session:
        if session.scalar(select(User).where(User.username == username)) is not None:
            return False
        session.add(User(username=username, password_hash=hash_password(password), role=role))
    log.info("created %s account %r", role, username)
    return True


def authenticate(db: Database, username: str, password: str) -> User | None:
    with db.reader() as session:
        user = session.scalar(select(User).where(User.username == username))
    if user is not None and verify_password(password, user.password_hash):
        return user
    log.info("failed login for %r", username)
    return None


# --------------------------------------------------------------------------- web sessions
# A session is a signed token "username|expires|signature" in an HttpOnly cookie. The signing
# key lives in the database (generated on first use), so sessions survive a restart and end
# when they expire or when the key is rotated (delete the ``web_session_key`` row).
SESSION_KEY_NAME = "web_session_key"


def session_key(db: Database) -> bytes:
    import secrets

    from readingroom.db import get_kv, set_kv

    key = get_kv(db, SESSION_KEY_NAME)
    if not key:
        key = secrets.token_hex(32)
        set_kv(db, SESSION_KEY_NAME, key)
    return bytes.fromhex(key)


def _sign(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()


def issue_session(key: bytes, username: str, ttl_s: float, now: float | None = None) -> str:
    import time

    expires = int((time.time() if now is None else now) + ttl_s)
    payload = f"{username}|{expires}"
    return f"{payload}|{_sign(key, payload)}"


def check_session(key: bytes, token: str | None, now: float | None = None) -> str | None:
    """The username of a valid, unexpired token; None otherwise."""
    import time

    if not token or token.count("|") != 2:
        return None
    username, expires, signature = token.split("|")
    if not hmac.compare_digest(signature, _sign(key, f"{username}|{expires}")):
        return None
    try:
        if int(expires) < (time.time() if now is None else now):
            return None
    except ValueError:
        return None
    return username


def user_role(db: Database, username: str) -> str | None:
    with db.reader() as session:
        return session.scalar(select(User.role).where(User.username == username))
