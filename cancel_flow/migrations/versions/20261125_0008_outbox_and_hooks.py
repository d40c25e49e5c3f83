"""durable outbox, outgoing webhook endpoints, alerts"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'


def upgrade() -> None:
    op.create_table(
        'webhook_endpoint',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('url', sa.String(length=2048), nullable=False),
        sa.Column('secret', sa.String(length=100), nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('source', sa.String(length=8), nullable=False),
        sa.Column('failing_since', sa.DateTime(timezone=True), nullable=True),
        sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'outbox_event',
        sa.Column('id', sa.String(length=40), primary_key=True),
        sa.Column('type', sa.String(length=64), nullable=False, index=True),
        sa.Column('key', sa.String(length=255), nullable=True, unique=True),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        'outbox_delivery',
        sa.Column('id', sa.Integer(), primary_key=True),
        sa.Column('kind', sa.String(length=8), nullable=False),
        sa.Column('target', sa.String(length=2048), nullable=False),
        sa.Column('endpoint_id', sa.String(length=32), nullable=True, index=True),
        sa.Column('event_id', sa.String(length=40), nullable=False, index=True),
        sa.Column('event_type', sa.String(length=64), nullable=False),
        sa.Column('key', sa.String(length=255), nullable=True, unique=True),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=12), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('claimed_by', sa.String(length=64), nullable=True),
        sa.Column('last_status_code', sa.Integer(), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
        sa.Index('ix_outbox_delivery_due', 'status', 'next_attempt_at'),
    )


def downgrade() -> None:
    op.drop_table('outbox_delivery')
    op.drop_table('outbox_event')
    op.drop_table('webhook_endpoint')
