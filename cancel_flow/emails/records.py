"""The billing emails' rows: each email written once per key with its outbox delivery, the send guard
that keeps a crash from sending twice, unsubscribes, and the once-per-period reminder scans."""

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import (OFFER_OUTCOMES, BillingEmail, CancelSession, Declaration, EmailScan, EmailUnsubscribe,
                                InvoiceRecord, OutsideCancellation)
from cancel_flow.outbox import enqueue_email
from cancel_flow.emails.kinds import WINBACK_KINDS
from cancel_flow.store.winback import winback_no_longer_wanted

emails = BillingEmail.__table__
unsubscribes = EmailUnsubscribe.__table__
scans = EmailScan.__table__
invoices = InvoiceRecord.__table__
sessions = CancelSession.__table__
outside = OutsideCancellation.__table__
declarations = Declaration.__table__
UNPAID = ("open", "uncollectible")
# Stripe's cancellation_details.reason when the customer or the account asked (the portal, the Dashboard, the API);
# not `payment_failed`, `payment_disputed` or test mode's `canceled_by_retention_policy`
# (https://docs.stripe.com/api/subscriptions/object#subscription_object-cancellation_details-reason).
REQUESTED = "cancellation_requested"
OUTSIDE_KEY = "cancellation_confirmed:outside:"
# Our own Stripe writes for a withdrawal or a cancel-button declaration name it in cancellation_details.comment
# (cancel_flow/compliance_service.py): its acknowledgement is that cancellation's receipt.
_DECLARATION = re.compile(r"\bdeclaration (\d+)\b")


def _insert(connection: Connection, table):
    return (postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)


@dataclass
class Planned:
    """Who an email goes to and what it is about (the columns of its row)."""

    key: str
    kind: str
    customer_id: str
    email: str | None = None  # None until known: a failed payment's is looked up when its email is composed
    invoice_id: str | None = None
    subscription_id: str | None = None
    session_id: int | None = None
    step: int | None = None


def _row(planned: Planned, status: str, now: datetime, error: str | None = None) -> dict:
    return {"key": planned.key, "kind": planned.kind, "customer_id": planned.customer_id, "email": planned.email,
            "invoice_id": planned.invoice_id, "subscription_id": planned.subscription_id,
            "session_id": planned.session_id, "step": planned.step, "status": status, "attempts": 0,
            "last_error": error, "created_at": now}


def write(engine: Engine, planned: Planned, subject: str, text: str, html: str,
          headers: tuple[tuple[str, str], ...] = (), along=None) -> bool:
    """The email (with its extra headers) and its outbox delivery, in one transaction; False when this key was
    written before. `along(connection)` writes what goes with the email in that transaction (a win-back step)."""
    now = utc_now()
    with engine.begin() as connection:
        inserted = connection.execute(_insert(connection, emails).values(_row(planned, "pending", now))
                                      .on_conflict_do_nothing(index_elements=["key"]).returning(emails.c.id)).first()
        if inserted is None:
            return False
        delivery = enqueue_email(connection, planned.email, subject, text, html, key=planned.key,
                                 event_type=f"email.{planned.kind}", headers=headers)
        connection.execute(sa.update(emails).where(emails.c.id == inserted.id).values(delivery_id=delivery))
        if along is not None:
            along(connection)
    return True


def skip(engine: Engine, planned: Planned, reason: str) -> None:
    """Nothing to send for this key (and nothing to ask Stripe again about it)."""
    with engine.begin() as connection:
        connection.execute(_insert(connection, emails).values(_row(planned, "skipped", utc_now(), reason[:500]))
                           .on_conflict_do_nothing(index_elements=["key"]))


def known_keys(engine: Engine, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    found = set()
    with engine.connect() as connection:
        for first in range(0, len(keys), 500):
            found |= set(connection.execute(sa.select(emails.c.key).where(emails.c.key.in_(keys[first:first + 500])))
                         .scalars())
    return found


# Sending: record the intent, then send -------------------------------------------------------------

def begin_send(engine: Engine, key: str) -> str:
    """Before the SMTP exchange: 'send' (marked as being sent, in its own transaction), 'sent' (a previous
    attempt sent it and stopped before the outbox recorded it), 'unknown' (a previous attempt stopped during
    the exchange: it may have arrived, so it is never sent again), or 'skip: …' (no longer wanted)."""
    now = utc_now()
    with engine.begin() as connection:
        row = connection.execute(sa.select(emails).where(emails.c.key == key)).first()
        if row is None:
            return "send"  # not one of ours
        if row.status == "sent":
            return "sent"
        if row.status in ("sending", "unknown"):
            connection.execute(sa.update(emails).where(emails.c.id == row.id, emails.c.status == "sending").values(
                status="unknown", last_error="The sender stopped while sending; not sent again so it can't arrive twice."))
            return "unknown"
        if row.status in ("skipped", "failed"):
            return f"skip: {row.last_error or row.status}"
        reason = _no_longer_wanted(connection, row)
        if reason:
            connection.execute(sa.update(emails).where(emails.c.id == row.id).values(status="skipped", last_error=reason))
            return f"skip: {reason}"
        marked = connection.execute(sa.update(emails).where(emails.c.id == row.id, emails.c.status == "pending").values(
            status="sending", sending_at=now, attempts=emails.c.attempts + 1)).rowcount
        return "send" if marked == 1 else "unknown"


def _no_longer_wanted(connection: Connection, row) -> str | None:
    if row.kind == "payment_failed" and row.invoice_id:
        invoice = connection.execute(sa.select(invoices.c.status, invoices.c.paid_at, invoices.c.voided_at)
                                     .where(invoices.c.id == row.invoice_id)).first()
        if invoice is not None and (invoice.paid_at or invoice.voided_at or invoice.status not in UNPAID):
            return f"Not sent: the invoice is {invoice.status} now."
    elif connection.execute(sa.select(sa.literal(1)).where(unsubscribes.c.customer_id == row.customer_id,
                                                          unsubscribes.c.kind == row.kind)).first():
        return "Not sent: the subscriber turned these emails off."
    elif row.kind in WINBACK_KINDS:
        return winback_no_longer_wanted(connection, row)
    elif row.kind == "cancellation_confirmed" and row.key.startswith(OUTSIDE_KEY) and not connection.execute(
            sa.select(sa.literal(1)).where(outside.c.subscription_id == row.subscription_id)).first():
        return "Not sent: the cancellation was taken back."
    return None


def finish_send(engine: Engine, key: str, sent: bool, error: str | None = None) -> None:
    now = utc_now()
    with engine.begin() as connection:
        if sent:
            connection.execute(sa.update(emails).where(emails.c.key == key, emails.c.status.in_(("sending", "unknown")))
                               .values(status="sent", sent_at=now, last_error=None))
        else:
            connection.execute(sa.update(emails).where(emails.c.key == key, emails.c.status == "sending")
                               .values(status="pending", last_error=(error or "")[:500]))


def give_up(engine: Engine, key: str, error: str | None) -> None:
    """The outbox stopped retrying (3 days of failures)."""
    with engine.begin() as connection:
        connection.execute(sa.update(emails).where(emails.c.key == key, emails.c.status == "pending")
                           .values(status="failed", last_error=(error or "")[:500]))


# Unsubscribes -------------------------------------------------------------------------------------

def unsubscribe(engine: Engine, customer_id: str, kind: str) -> None:
    with engine.begin() as connection:
        connection.execute(_insert(connection, unsubscribes).values(customer_id=customer_id, kind=kind,
                                                                    created_at=utc_now())
                           .on_conflict_do_nothing(index_elements=["customer_id", "kind"]))


def resubscribe(engine: Engine, customer_id: str, kind: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.delete(unsubscribes).where(unsubscribes.c.customer_id == customer_id,
                                                         unsubscribes.c.kind == kind))


def unsubscribed(engine: Engine, customer_id: str, kind: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.literal(1)).where(unsubscribes.c.customer_id == customer_id,
                                                                 unsubscribes.c.kind == kind)).first() is not None


# What is due ----------------------------------------------------------------------------------------

def failing_invoices(engine: Engine, since: datetime) -> list:
    """Subscription invoices that failed since `since` and are still unpaid, as their webhooks told it."""
    query = sa.select(invoices).where(
        invoices.c.subscription_id.is_not(None), invoices.c.first_failed_at.is_not(None),
        invoices.c.first_failed_at >= since, invoices.c.paid_at.is_(None), invoices.c.voided_at.is_(None),
        invoices.c.status.in_(UNPAID), invoices.c.amount_due > 0).order_by(invoices.c.first_failed_at)
    with engine.connect() as connection:
        return connection.execute(query).all()


def sessions_to_confirm(engine: Engine, since: datetime) -> tuple[list, list]:
    """Sessions with an offer accepted, and sessions whose cancellation Stripe confirmed, since `since`."""
    saved = sa.select(sessions).where(sessions.c.outcome.in_(OFFER_OUTCOMES), sessions.c.decided_at >= since,
                                      sessions.c.promise.is_not(None))
    canceled = sa.select(sessions).where(sessions.c.outcome == "canceled", sessions.c.canceled_at.is_not(None),
                                         sessions.c.canceled_at >= since, sessions.c.canceled_outside_flow.is_(False))
    with engine.connect() as connection:
        return connection.execute(saved).all(), connection.execute(canceled).all()


def outside_key(subscription_id: str, canceled_at: datetime) -> str:
    """One receipt per cancellation: a cancellation taken back and made again is a new one (Stripe's canceled_at)."""
    return f"{OUTSIDE_KEY}{subscription_id}:{int(canceled_at.timestamp())}"


def outside_cancellations_to_confirm(engine: Engine, since: datetime) -> list[tuple[object, int | None]]:
    """Cancellations asked for without our flow (Stripe's portal from its emails, the coach in Stripe) since `since`,
    each with the declaration whose acknowledgement already confirmed it (a withdrawal, the cancel button), if any."""
    query = sa.select(outside).where(outside.c.reason == REQUESTED, outside.c.canceled_at >= since) \
        .order_by(outside.c.canceled_at)
    with engine.connect() as connection:
        rows = connection.execute(query).all()
        named = {row.subscription_id: int(found.group(1)) for row in rows
                 if (found := _DECLARATION.search(row.comment or ""))}
        acknowledged = set()
        if named:
            acknowledged = {(found.subscription_id, found.id) for found in connection.execute(
                sa.select(declarations.c.id, declarations.c.subscription_id).where(
                    declarations.c.id.in_(set(named.values())), declarations.c.ack_key.is_not(None)))}
    return [(row, named[row.subscription_id] if (row.subscription_id, named.get(row.subscription_id)) in acknowledged
             else None) for row in rows]


def start_scan(engine: Engine, name: str, every: timedelta) -> bool:
    """True for the one worker that starts this scan in this period (a conditional upsert decides)."""
    now = utc_now()
    with engine.begin() as connection:
        statement = _insert(connection, scans).values(name=name, started_at=now)
        statement = statement.on_conflict_do_update(index_elements=["name"], set_={"started_at": now},
                                                    where=scans.c.started_at <= now - every)
        return connection.execute(statement.returning(scans.c.name)).first() is not None
