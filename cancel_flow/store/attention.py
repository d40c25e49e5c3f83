"""Who needs the coach this week: failed payments not recovered, pauses and discounts ending soon,
cancellations about to take effect, and "talk to your coach" requests not yet handled.

Each list is read through an index that holds only the rows it can contain (cancel_flow/models.py), with
its condition written exactly as the index's, so a database of millions of sessions answers as fast as a
new one."""

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.flow import ENDED, NOT_CHURN_REASONS
from cancel_flow.models import (CANCELED, OFFER_ENDS, TALK_NOT_HANDLED, UNPAID_FAILURE, BillingEmail, CancelSession,
                                InvoiceRecord)

sessions = CancelSession.__table__
invoices = InvoiceRecord.__table__
emails = BillingEmail.__table__
HORIZON = timedelta(days=14)
# A failure or a request older than this has had its answer (Stripe's retries end within weeks); the
# list is for this week's work.
LOOK_BACK = timedelta(days=90)
KINDS = ("failed_payments", "pauses_ending", "discounts_ending", "cancellations", "talk_requests")


@dataclass(frozen=True)
class Row:
    """One client on the list. `at`: when the payment failed, the offer ends, the cancellation takes effect,
    or the client asked to talk."""

    kind: str
    customer_id: str
    subscription_id: str | None
    at: datetime
    customer_email: str | None = None
    plan: str | None = None
    amount: int | None = None  # the failed payment, or the price per period (minor units)
    currency: str | None = None
    interval: str | None = None
    interval_count: int = 1
    reason: str | None = None
    comment: str | None = None
    offer: str | None = None
    promise: str | None = None
    outcome: str | None = None
    failure_message: str | None = None
    card: str | None = None
    attempts: int | None = None  # Stripe's payment attempts so far
    emails_sent: tuple[int, ...] = ()  # the failed-payment emails sent, as days after the first failure
    session_id: int | None = None


@dataclass
class Attention:
    now: datetime
    failed_payments: list[Row] = field(default_factory=list)
    pauses_ending: list[Row] = field(default_factory=list)
    discounts_ending: list[Row] = field(default_factory=list)
    cancellations: list[Row] = field(default_factory=list)
    talk_requests: list[Row] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(len(getattr(self, kind)) for kind in KINDS)


def _latest_per_subscription(rows) -> list:
    """One row per subscription: its newest session."""
    latest = {}
    for row in rows:
        if row.subscription_id not in latest or row.id > latest[row.subscription_id].id:
            latest[row.subscription_id] = row
    return list(latest.values())


def _session_row(kind: str, session, at: datetime) -> Row:
    return Row(kind=kind, customer_id=session.customer_id, subscription_id=session.subscription_id, at=as_utc(at),
               customer_email=session.customer_email, plan=session.plan_name, amount=session.price_amount,
               currency=session.currency, interval=session.interval, interval_count=session.interval_count,
               reason=session.reason, comment=session.comment, offer=session.chosen_offer, promise=session.promise,
               outcome=session.outcome, session_id=session.id)


def attention(engine: Engine, now: datetime | None = None) -> Attention:
    now = now or utc_now()
    soon = now + HORIZON
    found = Attention(now=now)
    counted = sessions.c.superseded.is_(False)
    with engine.connect() as connection:
        # "not canceled since" is checked on the rows found: in the query, SQLite's planner took it to the index on
        # canceled_at, NULL for most sessions, and read them all instead of the few in the window
        ending = connection.execute(sa.select(sessions).where(
            OFFER_ENDS, sessions.c.offer_ends_at >= now, sessions.c.offer_ends_at < soon, counted,
            sessions.c.outcome.in_(("saved_pause", "saved_discount")),
        ).order_by(sessions.c.offer_ends_at)).all()
        for session in _latest_per_subscription([row for row in ending if row.canceled_at is None]):
            kind = "pauses_ending" if session.outcome == "saved_pause" else "discounts_ending"
            getattr(found, kind).append(_session_row(kind, session, session.offer_ends_at))
        leaving = connection.execute(sa.select(sessions).where(
            CANCELED, sessions.c.period_end >= now, sessions.c.period_end < soon, counted,
            sa.or_(sessions.c.stripe_state_at.is_(None), sessions.c.stripe_state_at % 10 != ENDED),
            sa.or_(sessions.c.stripe_cancellation_reason.is_(None),
                   sessions.c.stripe_cancellation_reason.not_in(NOT_CHURN_REASONS)),
        )).all()
        found.cancellations = [_session_row("cancellations", session, session.period_end)
                               for session in _latest_per_subscription(leaving)]
        talks = connection.execute(sa.select(sessions).where(
            TALK_NOT_HANDLED, sessions.c.created_at >= now - LOOK_BACK, sessions.c.decided_at.is_not(None),
        )).all()
        found.talk_requests = [_session_row("talk_requests", session, session.decided_at)
                               for session in _latest_per_subscription(talks)]
        found.failed_payments = _failed_payments(connection, now)
    for kind in ("pauses_ending", "discounts_ending", "cancellations"):
        getattr(found, kind).sort(key=lambda row: row.at)
    found.talk_requests.sort(key=lambda row: row.at, reverse=True)
    return found


def _failed_payments(connection, now: datetime) -> list[Row]:
    unpaid = connection.execute(sa.select(invoices).where(
        UNPAID_FAILURE, invoices.c.first_failed_at >= now - LOOK_BACK, invoices.c.subscription_id.is_not(None),
        invoices.c.status.in_(("open", "uncollectible")),
    ).order_by(invoices.c.first_failed_at.desc())).all()
    if not unpaid:
        return []
    sent: dict[str, list] = {}
    for row in connection.execute(sa.select(emails.c.invoice_id, emails.c.step, emails.c.email).where(
            emails.c.kind == "payment_failed", emails.c.status == "sent",
            emails.c.invoice_id.in_([invoice.id for invoice in unpaid]))).all():
        sent.setdefault(row.invoice_id, []).append(row)
    known = {}
    for session in connection.execute(sa.select(
            sessions.c.id, sessions.c.subscription_id, sessions.c.customer_email, sessions.c.plan_name,
            sessions.c.interval, sessions.c.interval_count, sessions.c.reason, sessions.c.comment).where(
            sessions.c.subscription_id.in_({invoice.subscription_id for invoice in unpaid}))).all():
        if session.subscription_id not in known or session.id > known[session.subscription_id].id:
            known[session.subscription_id] = session
    rows = []
    for invoice in unpaid:
        session, mails = known.get(invoice.subscription_id), sent.get(invoice.id, [])
        email = next((mail.email for mail in mails if mail.email), None) or (session.customer_email if session else None)
        card = f"{invoice.card_brand.title()} ending in {invoice.card_last4}" if invoice.card_brand and invoice.card_last4 else None
        rows.append(Row(kind="failed_payments", customer_id=invoice.customer_id, subscription_id=invoice.subscription_id,
                        at=as_utc(invoice.first_failed_at), customer_email=email,
                        plan=session.plan_name if session else None, amount=invoice.amount_due, currency=invoice.currency,
                        interval=session.interval if session else None,
                        interval_count=session.interval_count if session else 1,
                        failure_message=invoice.failure_message, card=card, attempts=invoice.attempt_count,
                        emails_sent=tuple(sorted(mail.step for mail in mails if mail.step is not None))))
    return rows


def mark_talk_handled(engine: Engine, session_id: int, coach_email: str) -> bool:
    """The request of this session, and the earlier ones of its subscription, are handled; False when there was
    no such request left to handle."""
    now = utc_now()
    with engine.begin() as connection:
        subscription = connection.execute(sa.select(sessions.c.subscription_id).where(
            sessions.c.id == session_id, sessions.c.offer_kind == "contact")).scalar()
        if subscription is None:
            return False
        return connection.execute(sa.update(sessions).where(
            sessions.c.subscription_id == subscription, sessions.c.id <= session_id, TALK_NOT_HANDLED,
        ).values(contact_handled_at=now, contact_handled_by=coach_email[:320])).rowcount > 0
