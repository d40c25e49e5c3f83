"""cancellations outside the flow"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('canceled_outside_flow', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index(batch_op.f('ix_cancel_session_canceled_at'), ['canceled_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cancel_session_canceled_at'))
        batch_op.drop_column('canceled_outside_flow')

