from datetime import timedelta

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text

from readingroom.db import alembic_config, upgrade
from readingroom.schema import Base, utcnow


def test_migrations_build_exactly_the_models(db):
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == [], f"schema.py and the migrations disagree; add a migration: {diff}"


def test_sqlite_runs_in_wal_mode_with_full_sync(db):
    with db.engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL


def test_upgrade_is_idempotent_and_reaches_head(db):
    db.upgrade()
    head = ScriptDirectory.from_config(alembic_config(db.engine)).get_current_head()
    with db.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_upgrade_keeps_the_data_of_an_older_installation(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    upgrade(engine, "0001")
    yesterday = utcnow() - timedelta(days=1)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO studies (study_uid, calling_ae, patient_id, patient_name, "
                          "patient_birth_date, patient_sex, accession, study_date, study_time, description, "
                          "referring_physician, status, received_at, last_received_at, ai_status, priority_label, "
                          "priority_score, priority_reason) VALUES ('1.2.3', 'X', 'P1', 'DOE^J', '', '', 'A1', '', "
                          "'', 'CT HEAD', '', 'new', :at, :at, 'pending', 'routine', 0, '')"), {"at": yesterday})
        conn.execute(text("INSERT INTO users (username, password_hash, role, created_at) "
                          "VALUES ('old', 'x', 'radiologist', :at)"), {"at": yesterday})
    upgrade(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT accession, order_priority FROM studies")).one() == ("A1", "")
        # An existing user keeps every site and stays enabled; only new users start with none.
        assert conn.execute(text("SELECT sites, disabled FROM users")).one() == ('["*"]', 0)
    engine.dispose()
