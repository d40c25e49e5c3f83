"""Failed payments and billing emails for the dashboard, `/api/stats` and the CSV: computed by the database."""

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.emails.kinds import KINDS
from cancel_flow.models import BillingEmail, InvoiceRecord
from cancel_flow.store.stats import DateRange

invoices = InvoiceRecord.__table__
emails = BillingEmail.__table__


def billing_stats(engine: Engine, period: DateRange) -> dict:
    """For subscription invoices whose first payment failed in `period` (start inclusive, end exclusive):

        {"failed_payments": 4,           # invoices that failed in the range
         "failed_amount": {"usd": 19600},
         "recovered": 3,                 # of those, paid since, however (Stripe's retry, a new card, our link)
         "recovered_amount": {"usd": 14700},
         "recovery_rate": 0.75,          # recovered / failed_payments; None when nothing failed
         "still_open": 1,                # of those, still being collected (open: neither paid, voided nor written off)
         "lost": 0,                      # of those, given up: marked uncollectible (retries ran out) and not paid
         "emails_sent": {"payment_failed": 6, "renewal_reminder": 1, "discount_ending": 0,
                         "offer_accepted": 2, "cancellation_confirmed": 1}}   # sent in the range, every kind listed

    Amounts are in the currency's minor units, per currency."""
    failed = sa.and_(invoices.c.subscription_id.is_not(None), period.contains(invoices.c.first_failed_at))
    # recovered: money came in after the failure (a zero amount is no recovery)
    paid = sa.and_(invoices.c.paid_at.is_not(None), invoices.c.amount_paid > 0)
    unpaid = sa.and_(invoices.c.paid_at.is_(None), invoices.c.voided_at.is_(None))
    open_ = sa.and_(unpaid, invoices.c.status == "open")
    lost = sa.and_(unpaid, invoices.c.status == "uncollectible")
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(invoices.c.currency, sa.func.count(), sa.func.sum(invoices.c.amount_due),
                      sa.func.sum(sa.case((paid, 1), else_=0)), sa.func.sum(sa.case((paid, invoices.c.amount_paid), else_=0)),
                      sa.func.sum(sa.case((open_, 1), else_=0)), sa.func.sum(sa.case((lost, 1), else_=0)))
            .where(failed).group_by(invoices.c.currency).order_by(invoices.c.currency)).all()
        sent = dict(connection.execute(
            sa.select(emails.c.kind, sa.func.count()).where(emails.c.status == "sent", period.contains(emails.c.sent_at))
            .group_by(emails.c.kind)).all())
    failed_count = sum(int(row[1]) for row in rows)
    recovered = sum(int(row[3] or 0) for row in rows)
    return {
        "failed_payments": failed_count,
        "failed_amount": {row[0]: int(row[2] or 0) for row in rows},
        "recovered": recovered,
        "recovered_amount": {row[0]: int(row[4] or 0) for row in rows if row[4]},
        "recovery_rate": recovered / failed_count if failed_count else None,
        "still_open": sum(int(row[5] or 0) for row in rows),
        "lost": sum(int(row[6] or 0) for row in rows),
        "emails_sent": {kind: int(sent.get(kind, 0)) for kind in KINDS},
    }
