"""priority policy: order priority, claims, credentialed sites, notifications

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 01:46:47.586790
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('notifications',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_notifications_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_notifications_study_uid'), ['study_uid'], unique=False)

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('order_priority', sa.String(length=16), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('claimed_until', sa.DateTime(), nullable=True))
        batch_op.drop_column('priority_reason')
        batch_op.drop_column('priority_score')
        batch_op.drop_column('priority_label')

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sites', sa.JSON(), nullable=False, server_default='["*"]'))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('sites')

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority_label', sa.VARCHAR(length=16), nullable=False, server_default='routine'))
        batch_op.add_column(sa.Column('priority_score', sa.FLOAT(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('priority_reason', sa.TEXT(), nullable=False, server_default=''))
        batch_op.drop_column('claimed_until')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('order_priority')

    with op.batch_alter_table('notifications', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_notifications_study_uid'))
        batch_op.drop_index(batch_op.f('ix_notifications_created_at'))

    op.drop_table('notifications')

