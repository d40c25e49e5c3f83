"""cancellations outside the flow

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 06:25:38.120152
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('canceled_outside_flow', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_cancel_session_canceled_at'), ['canceled_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cancel_session_canceled_at'))
        batch_op.drop_column('canceled_outside_flow')

