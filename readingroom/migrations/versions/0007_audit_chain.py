"""audit log hash chain; append-only tables refuse TRUNCATE on PostgreSQL (issue 19, finding 10)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def _triggers(create: bool) -> None:
    """The append-only triggers of migration 0004 on audit_log, dropped (to fill in the chain of the
    entries written before it) and created again."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS audit_log_no_{action}")
            if create:
                op.execute(f"CREATE TRIGGER audit_log_no_{action} BEFORE {action.upper()} ON audit_log "
                           "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")
    elif dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        if create:
            op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                       "FOR EACH ROW EXECUTE FUNCTION audit_log_append_only()")


# PostgreSQL fires no row trigger on TRUNCATE: a statement trigger refuses it (SQLite has none).
_NO_TRUNCATE = ("report_versions", "audit_log")


def _no_truncate(create: bool) -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _NO_TRUNCATE:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        if create:
            op.execute(f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
                       f"FOR EACH STATEMENT EXECUTE FUNCTION {table}_append_only()")


def upgrade() -> None:
    from readingroom.audit import entry_hash

    _no_truncate(create=True)

    op.add_column('audit_log', sa.Column('prev_hash', sa.String(length=64), nullable=False, server_default=''))
    op.add_column('audit_log', sa.Column('hash', sa.String(length=64), nullable=False, server_default=''))
    bind = op.get_bind()
    rows = bind.execute(sa.text('SELECT id, at, "user", action, study_uid, report_id, detail FROM audit_log '
                                'ORDER BY id')).all()
    if not rows:
        return
    import json
    from datetime import datetime

    _triggers(create=False)
    prev = ""
    for row in rows:
        at = row.at if isinstance(row.at, datetime) else datetime.fromisoformat(str(row.at))
        detail = row.detail if isinstance(row.detail, dict) else json.loads(row.detail or "{}")
        digest = entry_hash(prev, at, row.user, row.action, row.study_uid, row.report_id, detail)
        bind.execute(sa.text("UPDATE audit_log SET prev_hash = :p, hash = :h WHERE id = :i"),
                     {"p": prev, "h": digest, "i": row.id})
        prev = digest
    _triggers(create=True)


def downgrade() -> None:
    _no_truncate(create=False)
    _triggers(create=False)
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
    _triggers(create=True)
