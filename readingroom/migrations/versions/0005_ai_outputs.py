"""AI outputs: heatmaps and no-result reasons (issue 3)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ai_reason', sa.String(length=255), nullable=False, server_default=''))

    with op.batch_alter_table('ai_findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('threshold', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('series_uid', sa.String(length=64), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('heatmap_path', sa.String(length=255), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('ai_findings', schema=None) as batch_op:
        batch_op.drop_column('heatmap_path')
        batch_op.drop_column('series_uid')
        batch_op.drop_column('threshold')

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('ai_reason')
