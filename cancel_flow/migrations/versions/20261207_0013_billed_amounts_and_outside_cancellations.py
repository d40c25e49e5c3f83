"""what the plan line says beside the billed amount; cancellations made outside the flow"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'


def upgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('price_note', sa.String(length=64), nullable=True))
    op.create_table(
        'outside_cancellation',
        sa.Column('subscription_id', sa.String(length=255), nullable=False),
        sa.Column('customer_id', sa.String(length=255), nullable=False),
        sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('ended', sa.Boolean(), nullable=False),
        sa.Column('feedback', sa.String(length=32), nullable=True),
        sa.Column('comment', sa.Text(), nullable=True),
        sa.Column('reason', sa.String(length=64), nullable=True),
        sa.Column('monthly_amount', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('event_created', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('subscription_id'),
    )
    with op.batch_alter_table('outside_cancellation', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outside_cancellation_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outside_cancellation_canceled_at'), ['canceled_at'], unique=False)


def downgrade() -> None:
    op.drop_table('outside_cancellation')
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_column('price_note')
