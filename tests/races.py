"""Races made certain on PostgreSQL: another transaction holds the row lock that every racer needs
until all of them wait for it (so all are past their reads), then lets go.

    with blocked_behind(db, "SELECT id FROM studies WHERE study_uid = :uid FOR UPDATE", {"uid": uid}, 2):
        threads = run_all(work, ["a", "b"])
    join_all(threads)

Used by tests/test_postgres.py and tests/integration/test_scale_out.py.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from sqlalchemy import text

from readingroom.db import Database


def waiting_on_locks(db: Database) -> int:
    """Sessions of this database waiting for a lock now."""
    with db.engine.connect() as conn:
        return conn.scalar(text("SELECT count(*) FROM pg_stat_activity "
                                "WHERE datname = current_database() AND wait_event_type = 'Lock'"))


@contextmanager
def blocked_behind(db: Database, lock_sql: str, params: dict, racers: int, commit: bool = False) -> Iterator[None]:
    """Hold the row lock ``lock_sql`` takes (it returns the row) while the body starts the racers; on
    leaving, wait until ``racers`` sessions wait for a lock, then roll back (or ``commit``: what
    ``lock_sql`` changed stays, as when another listener's write lands first)."""
    conn = db.engine.connect()
    tx = conn.begin()
    try:
        assert conn.execute(text(lock_sql), params).first() is not None, "the row to lock is missing"
        yield
        deadline = time.monotonic() + 20
        while waiting_on_locks(db) < racers:
            assert time.monotonic() < deadline, f"only {waiting_on_locks(db)} of {racers} racers got to the lock"
            time.sleep(0.02)
        if commit:
            tx.commit()
    finally:
        if tx.is_active:
            tx.rollback()
        conn.close()


def run_all(target: Callable[[Any], Any], args: list) -> list[threading.Thread]:
    """One thread per argument, started."""
    threads = [threading.Thread(target=target, args=(a,), daemon=True) for a in args]
    for t in threads:
        t.start()
    return threads


def join_all(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "a racer hung"
