"""orders, request review, protocols (issue 6)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('orders',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('accession', sa.String(length=64), nullable=False),
    sa.Column('placer_order', sa.String(length=64), nullable=False),
    sa.Column('filler_order', sa.String(length=64), nullable=False),
    sa.Column('site_name', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('sending_application', sa.String(length=64), nullable=False),
    sa.Column('sending_facility', sa.String(length=64), nullable=False),
    sa.Column('hl7_version', sa.String(length=8), nullable=False),
    sa.Column('patient_id', sa.String(length=64), nullable=False),
    sa.Column('patient_name', sa.String(length=200), nullable=False),
    sa.Column('patient_birth_date', sa.String(length=8), nullable=False),
    sa.Column('patient_sex', sa.String(length=16), nullable=False),
    sa.Column('visit_number', sa.String(length=64), nullable=False),
    sa.Column('patient_class', sa.String(length=16), nullable=False),
    sa.Column('ordering_physician', sa.String(length=200), nullable=False),
    sa.Column('procedure_code', sa.String(length=64), nullable=False),
    sa.Column('procedure_description', sa.String(length=200), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('laterality', sa.String(length=16), nullable=False),
    sa.Column('indication', sa.Text(), nullable=False),
    sa.Column('contrast_allergy', sa.String(length=200), nullable=False),
    sa.Column('egfr', sa.Float(), nullable=True),
    sa.Column('scheduled_at', sa.DateTime(), nullable=True),
    sa.Column('study_uid', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('hints', sa.JSON(), nullable=False),
    sa.Column('protocol_name', sa.String(length=64), nullable=False),
    sa.Column('protocol', sa.JSON(), nullable=False),
    sa.Column('review_note', sa.Text(), nullable=False),
    sa.Column('reviewed_by', sa.String(length=64), nullable=False),
    sa.Column('reviewed_at', sa.DateTime(), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('updated_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('accession')
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_orders_patient_id'), ['patient_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_site_name'), ['site_name'], unique=False)
        batch_op.create_index(batch_op.f('ix_orders_status'), ['status'], unique=False)

    op.create_table('order_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('user', sa.String(length=64), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_events_order_id'), ['order_id'], unique=False)

    op.create_table('order_messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('peer', sa.String(length=128), nullable=False),
    sa.Column('message_type', sa.String(length=32), nullable=False),
    sa.Column('control_id', sa.String(length=64), nullable=False),
    sa.Column('accession', sa.String(length=64), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('ack_code', sa.String(length=2), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('order_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['order_id'], ['orders.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('order_messages', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_messages_control_id'), ['control_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_order_messages_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_order_messages_received_at'), ['received_at'], unique=False)

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('order_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_studies_order_id'), ['order_id'], unique=False)
        batch_op.create_foreign_key('fk_studies_order_id_orders', 'orders', ['order_id'], ['id'])



def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_constraint('fk_studies_order_id_orders', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_studies_order_id'))
        batch_op.drop_column('order_id')

    with op.batch_alter_table('order_messages', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_messages_received_at'))
        batch_op.drop_index(batch_op.f('ix_order_messages_order_id'))
        batch_op.drop_index(batch_op.f('ix_order_messages_control_id'))

    op.drop_table('order_messages')
    with op.batch_alter_table('order_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_events_order_id'))

    op.drop_table('order_events')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_orders_status'))
        batch_op.drop_index(batch_op.f('ix_orders_site_name'))
        batch_op.drop_index(batch_op.f('ix_orders_patient_id'))

    op.drop_table('orders')
