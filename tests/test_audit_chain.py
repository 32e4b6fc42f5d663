"""The audit log is tamper-evident (issue 19, finding 10): a hash chain over every entry, checked
by ``readingroom audit verify``; a changed entry, a removed one and a dropped trigger are found."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from readingroom import audit
from readingroom.schema import utcnow


def _write(db, n: int) -> None:
    for k in range(n):
        audit.record_access(db, "ana", "view", study_uid=f"1.2.{k}", what="study", source="10.0.0.7",
                            detail={"k": k, "name": "Ærø^Zoë"})


def test_an_untouched_log_verifies_and_its_head_moves_with_each_entry(db):
    assert audit.verify(db).ok and audit.verify(db).entries == 0
    _write(db, 3)
    first = audit.verify(db)
    assert first.ok and first.entries == 3 and len(first.head) == 64
    _write(db, 1)
    assert audit.verify(db).head != first.head


def test_a_changed_entry_is_found_once_the_trigger_is_gone(db):
    _write(db, 4)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_no_update"))
        conn.execute(text("""UPDATE audit_log SET "user" = 'someone else' WHERE id = 2"""))
    check = audit.verify(db)
    assert not check.ok
    assert any("audit_log_no_update is missing" in p for p in check.problems)
    assert any(p.startswith("entry 2: its content was changed") for p in check.problems)


def test_a_removed_entry_breaks_the_chain(db):
    _write(db, 4)
    with db.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        conn.execute(text("DELETE FROM audit_log WHERE id = 2"))
    problems = audit.verify(db).problems
    assert any(p.startswith("entry 3: the chain breaks") for p in problems)


def test_the_triggers_still_refuse_changes(db):
    import pytest
    from sqlalchemy.exc import DatabaseError

    _write(db, 1)
    with pytest.raises(DatabaseError, match="append-only"), db.engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log"))
    assert audit.verify(db).ok


def test_entries_written_before_the_chain_are_chained_by_the_migration(tmp_path):
    from alembic import command

    from readingroom.db import Database, alembic_config
    from tests.conftest import make_settings

    database = Database(make_settings(tmp_path / "home"))
    config = alembic_config(database.engine)
    command.upgrade(config, "0006")
    days_ago = [(utcnow() - timedelta(days=3 - k)).strftime("%Y-%m-%d %H:%M:%S.%f") for k in range(3)]
    with database.engine.begin() as conn:
        for k in range(3):
            conn.execute(text("""INSERT INTO audit_log (at, "user", action, study_uid, detail) VALUES """
                              f"""('{days_ago[k]}', 'old', 'view', '1.2', '{{"k": {k}}}')"""))
    command.upgrade(config, "head")
    check = audit.verify(database)
    database.dispose()
    assert check.ok and check.entries == 3, check.problems
