"""compliance: withdrawal and cancel-button declarations"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0016'
down_revision = '0015'


def upgrade() -> None:
    op.create_table('declaration',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('contract', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('cancellation', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('language', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('dedupe_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('session_id', sa.Integer(), nullable=True),
    sa.Column('customer_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('subscription_id', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('plan_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('detail', sa.Text(), nullable=True),
    sa.Column('effective_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refund_mode', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True),
    sa.Column('refund_amount', sa.BigInteger(), nullable=True),
    sa.Column('refund_currency', sqlmodel.sql.sqltypes.AutoString(length=3), nullable=True),
    sa.Column('refunds', sa.JSON(), nullable=True),
    sa.Column('ack_key', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('apply_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('undone_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('dedupe_key')
    )
    with op.batch_alter_table('declaration', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_declaration_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_declaration_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_declaration_subscription_id'), ['subscription_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('declaration', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_declaration_subscription_id'))
        batch_op.drop_index(batch_op.f('ix_declaration_status'))
        batch_op.drop_index(batch_op.f('ix_declaration_received_at'))
    op.drop_table('declaration')
