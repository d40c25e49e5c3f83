"""cancel sessions and stripe events"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0001'
down_revision = None


def upgrade() -> None:
    op.create_table('cancel_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('customer_email', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('plan_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('price_amount', sa.Integer(), nullable=False),
    sa.Column('interval', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('interval_count', sa.Integer(), nullable=False),
    sa.Column('monthly_amount', sa.Integer(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('had_discount', sa.Boolean(), nullable=False),
    sa.Column('was_paused', sa.Boolean(), nullable=False),
    sa.Column('cancel_at_period_end', sa.Boolean(), nullable=False),
    sa.Column('period_end', sa.DateTime(timezone=True), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('offers_shown', sa.JSON(), nullable=True),
    sa.Column('claimed_offer', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('chosen_offer', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('offer_kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('discount_percent', sa.Float(), nullable=True),
    sa.Column('discount_months', sa.Integer(), nullable=True),
    sa.Column('pause_resumes_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('reason_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kept_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('canceled_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('stripe_feedback', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('stripe_comment', sa.Text(), nullable=True),
    sa.Column('stripe_cancellation_reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('stripe_state_at', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('nonce')
    )
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_cancel_session_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_cancel_session_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_cancel_session_outcome'), ['outcome'], unique=False)
        batch_op.create_index(batch_op.f('ix_cancel_session_reason'), ['reason'], unique=False)
        batch_op.create_index(batch_op.f('ix_cancel_session_subscription_id'), ['subscription_id'], unique=False)

    op.create_table('stripe_event',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('created', sa.BigInteger(), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('handled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )


def downgrade() -> None:
    op.drop_table('stripe_event')
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_cancel_session_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_cancel_session_reason'))
        batch_op.drop_index(batch_op.f('ix_cancel_session_outcome'))
        batch_op.drop_index(batch_op.f('ix_cancel_session_customer_id'))
        batch_op.drop_index(batch_op.f('ix_cancel_session_created_at'))

    op.drop_table('cancel_session')
