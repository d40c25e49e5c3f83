"""offer terms in payments, saved_keep, invoices seen through webhooks"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'


def upgrade() -> None:
    with op.batch_alter_table("cancel_session") as batch:
        batch.add_column(sa.Column("discount_payments", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pause_payments", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("coupon_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("switch_price", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("free_months", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("next_payment_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("promise", sa.Text(), nullable=True))
        batch.add_column(sa.Column("schedule", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("offer_cost", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("claim_attempt", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("superseded", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("stripe_snapshot", sa.Text(), nullable=True))
        batch.add_column(sa.Column("snapshot_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "invoice_record",
        sa.Column("id", sa.String(length=255), primary_key=True),
        sa.Column("customer_id", sa.String(length=255), nullable=False, index=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True, index=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("billing_reason", sa.String(length=40), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal", sa.BigInteger(), nullable=False),
        sa.Column("total_discount", sa.BigInteger(), nullable=False),
        sa.Column("amount_due", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid", sa.BigInteger(), nullable=False),
        sa.Column("attempt_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False, index=True),
        sa.Column("first_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paid_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("voided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failure_message", sa.String(length=500), nullable=True),
        sa.Column("card_brand", sa.String(length=32), nullable=True),
        sa.Column("card_last4", sa.String(length=4), nullable=True),
        sa.Column("event_created", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("invoice_record")
    with op.batch_alter_table("cancel_session") as batch:
        for column in ("snapshot_at", "stripe_snapshot", "superseded", "claim_attempt", "offer_cost", "promise", "next_payment_at", "schedule", "free_months",
                       "switch_price", "coupon_id", "pause_payments", "discount_payments"):
            batch.drop_column(column)
