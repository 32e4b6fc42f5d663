"""Database engine and sessions: SQLite in WAL mode by default, PostgreSQL by URL.

The schema is created and upgraded only by Alembic (``upgrade()``), from the first
migration on, so that an installation can always move forward.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from readingroom.errors import ConfigError
from readingroom.settings import Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


class Database:
    """A writer engine, a reader engine and their sessions. One per process; thread-safe.

    ``session()`` is a write transaction. On SQLite it starts with BEGIN IMMEDIATE, so that two
    writers queue on the lock instead of failing when one upgrades a read to a write.
    ``reader()`` is a read-only session on its own engine: in WAL mode readers never wait for
    the writer, so the worklist stays responsive while studies arrive.
    """

    def __init__(self, settings: Settings) -> None:
        self.url = settings.database_url
        self.is_sqlite = self.url.startswith("sqlite")
        if self.is_sqlite:
            settings.home.mkdir(parents=True, exist_ok=True)
            self.engine = self._sqlite_engine(settings, immediate=True)
            self.read_engine = self._sqlite_engine(settings, immediate=False)
        else:
            try:
                self.engine = create_engine(self.url, pool_pre_ping=True, pool_size=10, max_overflow=20)
            except Exception as exc:  # noqa: BLE001 - bad URL or missing driver
                raise ConfigError(
                    f"setting 'database.url' = {self.url!r} cannot be used: {exc}. "
                    "Use an empty value for SQLite, or postgresql+psycopg://user:pass@host/db "
                    "after pip install 'readingroom[postgres]'"
                ) from None
            self.read_engine = self.engine
        self._writer = sessionmaker(self.engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)

    def _sqlite_engine(self, settings: Settings, immediate: bool) -> Engine:
        engine = create_engine(
            self.url,
            connect_args={"timeout": settings.database.busy_timeout_s, "check_same_thread": False},
            pool_size=20,
            max_overflow=20,
        )
        synchronous = settings.database.sqlite_synchronous
        busy_ms = int(settings.database.busy_timeout_s * 1000)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute(f"PRAGMA busy_timeout={busy_ms}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on error."""
        with self._writer() as session:
            with session.begin():
                yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session (never committed; closing it ends the transaction)."""
        with self._reader() as session:
            yield session

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (creates it on a new database)."""
        upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()
        if self.read_engine is not self.engine:
            self.read_engine.dispose()


def alembic_config(engine: Engine):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection_engine"] = engine
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(engine), revision)
    log.debug("database schema is at %s", revision)


def sync_sites(db: Database, site_names: list[str]) -> None:
    """Make sure every configured site has a row (studies refer to sites by id)."""
    from sqlalchemy import select

    from readingroom.schema import Site

    with db.session() as session:
        known = set(session.scalars(select(Site.name)))
        for name in site_names:
            if name not in known:
                session.add(Site(name=name))


def get_kv(db: Database, key: str) -> str | None:
    from readingroom.schema import KeyValue

    with db.reader() as session:
        row = session.get(KeyValue, key)
        return row.value if row else None


def set_kv(db: Database, key: str, value: str) -> None:
    from readingroom.schema import KeyValue

    with db.session() as session:
        session.merge(KeyValue(key=key, value=value))
