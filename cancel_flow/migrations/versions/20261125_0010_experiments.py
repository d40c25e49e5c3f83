"""experiment arm per session"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('experiment_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('experiment_arm', sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f('ix_cancel_session_experiment_id'), ['experiment_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cancel_session_experiment_id'))
        batch_op.drop_column('experiment_arm')
        batch_op.drop_column('experiment_id')
