"""win-back: ended subscriptions, comeback steps, refused addresses; sessions won back"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0015'
down_revision = '0014'


def upgrade() -> None:
    op.create_table('winback_client',
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('customer_email', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('customer_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('reason_source', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
    sa.Column('stripe_reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('plan_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('price_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('product_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('unit_amount', sa.BigInteger(), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=False),
    sa.Column('interval', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('interval_count', sa.Integer(), nullable=False),
    sa.Column('monthly_amount', sa.BigInteger(), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('returned_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('returned_subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('won_back_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('won_back_step', sa.Integer(), nullable=True),
    sa.Column('won_back_subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('checkout_session_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('mrr_won_back', sa.BigInteger(), nullable=True),
    sa.Column('won_back_currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('subscription_id')
    )
    with op.batch_alter_table('winback_client', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_winback_client_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_winback_client_ended_at'), ['ended_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_winback_client_reason'), ['reason'], unique=False)
        batch_op.create_index(batch_op.f('ix_winback_client_won_back_at'), ['won_back_at'], unique=False)
    op.create_table('winback_step',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('days_after', sa.Integer(), nullable=False),
    sa.Column('offer_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('percent_off', sa.Float(), nullable=True),
    sa.Column('payments', sa.Integer(), nullable=True),
    sa.Column('price_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('unit_amount', sa.BigInteger(), nullable=True),
    sa.Column('price_replaced', sa.Boolean(), nullable=False),
    sa.Column('email_key', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('skipped', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('opened_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('subscription_id', 'step', name='uq_winback_step_subscription_step')
    )
    with op.batch_alter_table('winback_step', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_winback_step_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_winback_step_customer_id'), ['customer_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_winback_step_subscription_id'), ['subscription_id'], unique=False)
    op.create_table('email_refusal',
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('code', sa.Integer(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('refused_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('email')
    )
    with op.batch_alter_table('email_refusal', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_email_refusal_customer_id'), ['customer_id'], unique=False)
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('won_back_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('won_back_subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cancel_session', schema=None) as batch_op:
        batch_op.drop_column('won_back_subscription_id')
        batch_op.drop_column('won_back_at')
    with op.batch_alter_table('email_refusal', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_email_refusal_customer_id'))
    op.drop_table('email_refusal')
    with op.batch_alter_table('winback_step', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_winback_step_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_winback_step_customer_id'))
        batch_op.drop_index(batch_op.f('ix_winback_step_created_at'))
    op.drop_table('winback_step')
    with op.batch_alter_table('winback_client', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_winback_client_won_back_at'))
        batch_op.drop_index(batch_op.f('ix_winback_client_reason'))
        batch_op.drop_index(batch_op.f('ix_winback_client_ended_at'))
        batch_op.drop_index(batch_op.f('ix_winback_client_customer_id'))
    op.drop_table('winback_client')
