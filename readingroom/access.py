"""Who may see which patient's data: the one site-scoping rule.

A user sees the studies, series, images, AI results, priors and reports of the sites they are
credentialed for (``User.sites``). Admins, and users holding ``"*"``, see every site. A study of
another site is answered exactly like a missing one, so its existence is not revealed.

    allowed = user_sites(db, "dr_lee")                   # {"Northside Clinic"} or None (every site)
    study_id = study_for_user(db, "dr_lee", uid)         # raises NotVisible
    series_for_user(db, "dr_lee", series_uid)            # the series' study UID, or raises NotVisible
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.schema import AIFinding, Series, Site, Study, User

log = logging.getLogger(__name__)

ALL_SITES = "*"


class NotVisible(ReadingRoomError):
    """The object does not exist, or belongs to a site the user is not credentialed for."""


def user_sites(db: Database, username: str | None) -> set[str] | None:
    """The sites a user may read; None means every site (admins, users with "*", and the
    command line, which runs as the server's operator with ``username=None``)."""
    if username is None:
        return None
    with db.reader() as session:
        user = session.scalar(select(User).where(User.username == username))
    if user is None or getattr(user, "disabled", False):
        raise NotVisible(f"no active user {username!r}; create one or check the name")
    if user.role == "admin" or ALL_SITES in (user.sites or []):
        return None
    return set(user.sites or [])


def may_see(allowed: set[str] | None, site_name: str | None) -> bool:
    """Whether a user with ``allowed`` sites (from ``user_sites``) may see data of ``site_name``.
    Data with no site is visible to every-site users only."""
    return allowed is None or (site_name is not None and site_name in allowed)


def _site_of_study(db: Database, study_uid: str) -> tuple[bool, str | None]:
    with db.reader() as session:
        row = session.execute(select(Study.id, Site.name).outerjoin(Site, Site.id == Study.site_id)
                              .where(Study.study_uid == study_uid)).first()
    return (row is not None, row[1] if row else None)


def study_for_user(db: Database, username: str | None, study_uid: str) -> str:
    """``study_uid`` when the user may see it; raises NotVisible otherwise (also when it is missing)."""
    found, site = _site_of_study(db, study_uid)
    if not found or not may_see(user_sites(db, username), site):
        if found:
            log.warning("user %r asked for study %s of site %r, outside their sites", username, study_uid, site)
        raise NotVisible(f"study {study_uid} is not in the database, or not in your sites")
    return study_uid


def visible_to(db: Database, username: str | None, study_uid: str) -> bool:
    """Whether the user may see the study (False for a missing one)."""
    try:
        study_for_user(db, username, study_uid)
    except NotVisible:
        return False
    return True


def series_for_user(db: Database, username: str | None, series_uid: str) -> str:
    """The study UID of ``series_uid`` when the user may see it; raises NotVisible otherwise."""
    with db.reader() as session:
        study_uid = session.scalar(select(Study.study_uid).join(Series, Series.study_id == Study.id)
                                   .where(Series.series_uid == series_uid))
    if study_uid is None:
        raise NotVisible(f"series {series_uid} is not in the database, or not in your sites")
    study_for_user(db, username, study_uid)
    return study_uid


def finding_for_user(db: Database, username: str | None, finding_id: int) -> str:
    """The study UID of AI finding ``finding_id`` when the user may see it; raises NotVisible otherwise."""
    with db.reader() as session:
        study_uid = session.scalar(select(Study.study_uid).join(AIFinding, AIFinding.study_id == Study.id)
                                   .where(AIFinding.id == finding_id))
    if study_uid is None:
        raise NotVisible(f"AI finding {finding_id} is not in the database, or not in your sites")
    study_for_user(db, username, study_uid)
    return study_uid
