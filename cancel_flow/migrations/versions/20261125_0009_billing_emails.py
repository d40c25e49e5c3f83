"""billing emails sent, per invoice and session"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'


def upgrade() -> None:
    op.create_table(
        "billing_email",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key", sa.String(length=255), nullable=False, unique=True),
        sa.Column("kind", sa.String(length=32), nullable=False, index=True),
        sa.Column("customer_id", sa.String(length=255), nullable=False, index=True),
        sa.Column("email", sa.String(length=512), nullable=True),
        sa.Column("invoice_id", sa.String(length=255), nullable=True, index=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=True),
        sa.Column("delivery_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "email_unsubscribe",
        sa.Column("customer_id", sa.String(length=255), primary_key=True),
        sa.Column("kind", sa.String(length=32), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "email_scan",
        sa.Column("name", sa.String(length=32), primary_key=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("email_scan")
    op.drop_table("email_unsubscribe")
    op.drop_table("billing_email")
