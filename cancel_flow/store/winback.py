"""Win-back's rows: subscriptions that ended (written from Stripe's `customer.subscription.deleted`), the comeback
steps planned for them, the client's return, and addresses the mail server refused for good."""

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import (BillingEmail, CancelSession, EmailRefusal, EmailUnsubscribe,
                                WinbackClient, WinbackStep)

clients = WinbackClient.__table__
steps = WinbackStep.__table__
refusals = EmailRefusal.__table__
sessions = CancelSession.__table__
emails = BillingEmail.__table__
unsubscribes = EmailUnsubscribe.__table__


def _insert(connection: Connection, table):
    return (postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)


# Ended subscriptions ------------------------------------------------------------------------------

def losing_session(connection: Connection, subscription_id: str):
    """The subscription's newest session that decided something (the one that lost the client), else its newest."""
    query = sa.select(sessions.c.id, sessions.c.reason, sessions.c.outcome, sessions.c.plan_name,
                      sessions.c.customer_email).where(
        sessions.c.subscription_id == subscription_id).order_by(
        (sessions.c.outcome == "open").asc(), sessions.c.decided_at.desc().nulls_last(), sessions.c.id.desc()).limit(1)
    return connection.execute(query).first()


def record_ended(engine: Engine, values: dict) -> bool:
    """One row per ended subscription, written once (a repeated or late event changes nothing); False when it
    was written before. `values` are the columns; the flow's reason and session are looked up here."""
    with engine.begin() as connection:
        session = losing_session(connection, values["subscription_id"])
        from cancel_flow.winback import recorded_reason

        row = {**values, "created_at": utc_now(), "session_id": session.id if session else None}
        flow_reason = session.reason if session else None
        if session is not None:
            row["plan_name"] = row.get("plan_name") or session.plan_name
            row["customer_email"] = row.get("customer_email") or session.customer_email
        row["reason"], row["reason_source"] = recorded_reason(flow_reason, row.pop("stripe_feedback", None))
        return connection.execute(_insert(connection, clients).values(row)
                                  .on_conflict_do_nothing(index_elements=["subscription_id"])
                                  .returning(clients.c.subscription_id)).first() is not None


def ended(engine: Engine, subscription_id: str):
    with engine.connect() as connection:
        return connection.execute(sa.select(clients).where(clients.c.subscription_id == subscription_id)).first()


def waiting_clients(engine: Engine, since: datetime) -> list:
    """Clients who left since `since` and have not come back (alone or through a comeback)."""
    query = sa.select(clients).where(clients.c.ended_at >= since, clients.c.won_back_at.is_(None),
                                     clients.c.returned_at.is_(None)).order_by(clients.c.ended_at)
    with engine.connect() as connection:
        return connection.execute(query).all()


def planned_steps(engine: Engine, subscription_ids: list[str]) -> dict[str, dict[int, int]]:
    """Per subscription: step number → days_after, for every step written or skipped."""
    found: dict[str, dict[int, int]] = {}
    with engine.connect() as connection:
        for first in range(0, len(subscription_ids), 500):
            for row in connection.execute(sa.select(steps.c.subscription_id, steps.c.step, steps.c.days_after).where(
                    steps.c.subscription_id.in_(subscription_ids[first:first + 500]))):
                found.setdefault(row.subscription_id, {})[row.step] = row.days_after
    return found


def note_email(engine: Engine, subscription_id: str, email: str, name: str | None) -> None:
    """The client's address as Stripe has it when a step is written (the shared link finds them by it)."""
    with engine.begin() as connection:
        connection.execute(sa.update(clients).where(clients.c.subscription_id == subscription_id).values(
            customer_email=email[:512], customer_name=(name or None) and name[:512]))


def waiting_customer(engine: Engine, email: str) -> str | None:
    """The newest client with this address who left and hasn't come back (for a fresh comeback link)."""
    query = sa.select(clients.c.customer_id).where(
        sa.func.lower(clients.c.customer_email) == email.strip().lower(), clients.c.won_back_at.is_(None),
        clients.c.returned_at.is_(None)).order_by(clients.c.ended_at.desc()).limit(1)
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def mark_returned(engine: Engine, subscription_id: str, new_subscription: str | None) -> None:
    """The client subscribed again without a comeback link: no more steps."""
    with engine.begin() as connection:
        connection.execute(sa.update(clients).where(clients.c.subscription_id == subscription_id,
                                                    clients.c.returned_at.is_(None), clients.c.won_back_at.is_(None))
                           .values(returned_at=utc_now(), returned_subscription_id=new_subscription))


def step_row(client, step, email_key: str, **terms) -> dict:
    return {"subscription_id": client.subscription_id, "customer_id": client.customer_id, "step": step.number,
            "days_after": step.days_after, "email_key": email_key, "created_at": utc_now(), "price_replaced": False,
            **terms}


def write_step(connection: Connection, row: dict) -> None:
    """The planned step, in the transaction that writes its email."""
    connection.execute(_insert(connection, steps).values(row)
                       .on_conflict_do_nothing(index_elements=["subscription_id", "step"]))


def skip_step(engine: Engine, row: dict, reason: str) -> bool:
    """A step that is not sent (and never will be), with why; False when the step was planned before."""
    with engine.begin() as connection:
        return connection.execute(_insert(connection, steps).values({**row, "skipped": reason[:500]})
                                  .on_conflict_do_nothing(index_elements=["subscription_id", "step"])
                                  .returning(steps.c.id)).first() is not None


def comeback(engine: Engine, customer_id: str, step: int):
    """The newest planned (not skipped) step `step` of this customer, with its client's columns, or None."""
    query = sa.select(steps, clients.c.plan_name, clients.c.currency, clients.c.interval, clients.c.interval_count,
                      clients.c.quantity, clients.c.customer_email, clients.c.customer_name, clients.c.won_back_at,
                      clients.c.won_back_step, clients.c.product_id, clients.c.returned_at, clients.c.reason,
                      clients.c.unit_amount.label("old_unit_amount"), clients.c.price_id.label("old_price_id"),
                      clients.c.ended_at) \
        .join(clients, clients.c.subscription_id == steps.c.subscription_id) \
        .where(steps.c.customer_id == customer_id, steps.c.step == step, steps.c.skipped.is_(None)) \
        .order_by(steps.c.created_at.desc(), steps.c.id.desc()).limit(1)
    with engine.connect() as connection:
        return connection.execute(query).first()


def latest_comeback(engine: Engine, customer_id: str):
    """The newest step planned for this customer while they haven't come back (for a fresh comeback link)."""
    query = sa.select(steps.c.step).join(clients, clients.c.subscription_id == steps.c.subscription_id).where(
        steps.c.customer_id == customer_id, steps.c.skipped.is_(None), clients.c.won_back_at.is_(None),
        clients.c.returned_at.is_(None)).order_by(steps.c.created_at.desc(), steps.c.id.desc()).limit(1)
    with engine.connect() as connection:
        return connection.execute(query).scalar()


def mark_opened(engine: Engine, step_id: int) -> None:
    with engine.begin() as connection:
        connection.execute(sa.update(steps).where(steps.c.id == step_id, steps.c.opened_at.is_(None))
                           .values(opened_at=utc_now()))


def record_won_back(engine: Engine, subscription_id: str, step: int | None, *, new_subscription: str,
                    checkout_session: str, mrr: int, currency: str, at: datetime | None = None, emit=None) -> bool:
    """The client came back through a comeback checkout: the ended subscription's row, and the cancel session
    that lost them (outcome `won_back`, the new subscription linked), in one transaction with the outgoing event
    (`emit(connection, client_row, session_row)`); False when this return was recorded before. `at`: when Stripe
    completed the checkout (its event's time), else now."""
    now = at or utc_now()
    with engine.begin() as connection:
        done = connection.execute(sa.update(clients).where(
            clients.c.subscription_id == subscription_id, clients.c.won_back_at.is_(None)).values(
            won_back_at=now, won_back_step=step, won_back_subscription_id=new_subscription,
            checkout_session_id=checkout_session, mrr_won_back=mrr, won_back_currency=currency)).rowcount == 1
        if not done:
            return False
        client = connection.execute(sa.select(clients).where(clients.c.subscription_id == subscription_id)).first()
        session = None
        if client.session_id is not None:
            # The session's cancellation (outcome `canceled`) becomes `won_back`; a session that ended otherwise
            # (a save canceled later, a cancellation outside the flow) keeps its outcome. Both link the return.
            link = {"won_back_at": now, "won_back_subscription_id": new_subscription, "updated_at": now,
                    "rolled_up": False}
            connection.execute(sa.update(sessions).where(sessions.c.id == client.session_id,
                                                         sessions.c.outcome == "canceled").values(outcome="won_back"))
            connection.execute(sa.update(sessions).where(sessions.c.id == client.session_id).values(**link))
            session = connection.execute(sa.select(sessions).where(sessions.c.id == client.session_id)).first()
        if emit is not None:
            emit(connection, client, session)
    return True


# Sending: a win-back email no longer wanted ---------------------------------------------------------

def winback_no_longer_wanted(connection: Connection, row) -> str | None:
    """Checked as a win-back email is about to be sent: the client came back, or the address was refused."""
    if row.email and connection.execute(sa.select(sa.literal(1)).where(
            refusals.c.email == row.email.strip().lower())).first():
        return "Not sent: the mail server refused this address before."
    if row.kind == "winback" and row.subscription_id:
        client = connection.execute(sa.select(clients.c.won_back_at, clients.c.returned_at).where(
            clients.c.subscription_id == row.subscription_id)).first()
        if client is not None and (client.won_back_at or client.returned_at):
            return "Not sent: the client subscribed again."
    return None


def refused(engine: Engine, email: str | None) -> bool:
    if not email:
        return False
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.literal(1)).where(
            refusals.c.email == email.strip().lower())).first() is not None


def record_refusal(engine: Engine, email_key: str, address: str, code: int, message: str | None) -> None:
    """The mail server answered 5xx for the address of the email written under `email_key`."""
    with engine.begin() as connection:
        customer = connection.execute(sa.select(emails.c.customer_id).where(emails.c.key == email_key)).scalar()
        values = {"email": address.strip().lower()[:512], "customer_id": customer, "code": code,
                  "message": (message or "")[:500], "refused_at": utc_now()}
        connection.execute(_insert(connection, refusals).values(values).on_conflict_do_update(
            index_elements=["email"], set_={"code": code, "message": values["message"], "refused_at": values["refused_at"]}))


def unsubscribed(engine: Engine, customer_id: str, kind: str) -> bool:
    with engine.connect() as connection:
        return connection.execute(sa.select(sa.literal(1)).where(
            unsubscribes.c.customer_id == customer_id, unsubscribes.c.kind == kind)).first() is not None
