"""Shared fixtures: settings in a temporary home, a migrated database, a running listener.

Real parts only: the listener is pynetdicom on a free port, the clients are pynetdicom's SCU and
dcmtk's storescu/echoscu (Debian; by absolute path, because the virtualenv has pynetdicom apps
with the same names), the files are the real samples of pydicom-data.
"""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest

from readingroom.db import Database, sync_sites
from readingroom.jobs import DatabaseJobQueue
from readingroom.settings import Settings, load_settings

DCMTK = Path("/usr/bin")
TEST_SITES = [
    {"name": "Test Hospital", "ae_titles": ["TEST_SCU", "STORESCU", "ECHOSCU"], "quiet_period_s": 0.5},
    {"name": "Other Hospital", "ae_titles": ["OTHER_PACS"]},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_settings(home: Path, **overrides) -> Settings:
    base = {
        "home": str(home),
        "sites": TEST_SITES,
        "dicom": {"port": free_port()},
        "intake": {"quiet_period_s": 0.5, "rescan_interval_s": 0.5},
        "jobs": {"poll_interval_s": 0.1, "backoff_base_s": 0.1, "backoff_max_s": 1, "max_attempts": 3},
        "web": {"port": free_port()},
        "hl7": {"port": 0},  # the order listener on any free port
    }
    for key, value in overrides.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_settings(environ={}, overrides=base)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "home")


@pytest.fixture
def db(settings: Settings):
    database = Database(settings)
    database.upgrade()
    sync_sites(database, [s.name for s in settings.sites])
    yield database
    database.dispose()


@pytest.fixture
def queue(db: Database, settings: Settings) -> DatabaseJobQueue:
    return DatabaseJobQueue(db, settings.jobs)


@pytest.fixture(scope="session")
def samples() -> Path:
    from models.phantoms import sample_dir

    return sample_dir()


@pytest.fixture(autouse=True)
def _quiet_pydicom_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


# --- PostgreSQL (tests/postgres.py): one throwaway server per session, a fresh database per test ---------
@pytest.fixture(scope="session")
def postgres_url():
    """The SQLAlchemy URL of a database on a throwaway PostgreSQL server (one per session)."""
    from tests.postgres import PostgresUnavailable, postgres_server

    try:
        with postgres_server() as url:
            yield url
    except PostgresUnavailable as exc:   # an error, never a skip: the message says what to install
        pytest.fail(f"cannot start the PostgreSQL test server: {exc}", pytrace=False)


@pytest.fixture
def pg_settings(postgres_url: str, tmp_path: Path):
    """Settings whose database is a new, empty PostgreSQL database (dropped after the test)."""
    from tests.postgres import fresh_database

    with fresh_database(postgres_url) as url:
        yield make_settings(tmp_path / "pg-home", database={"url": url})


@pytest.fixture
def pg_db(pg_settings: Settings):
    """A migrated ``Database`` on PostgreSQL with the test sites, like ``db`` on SQLite."""
    database = Database(pg_settings)
    database.upgrade()
    sync_sites(database, [s.name for s in pg_settings.sites])
    yield database
    database.dispose()


@pytest.fixture
def pg_queue(pg_db: Database, pg_settings: Settings) -> DatabaseJobQueue:
    return DatabaseJobQueue(pg_db, pg_settings.jobs)


# --- Redis (tests/redis_server.py): one throwaway broker per session, for the Celery job engine -----------
@pytest.fixture(scope="session")
def redis_url():
    """The URL of a throwaway Redis server (one per session; no persistence)."""
    from tests.redis_server import RedisUnavailable, redis_server

    try:
        with redis_server() as url:
            yield url
    except RedisUnavailable as exc:   # an error, never a skip: the message says what to install
        pytest.fail(f"cannot start the Redis test server: {exc}", pytrace=False)
