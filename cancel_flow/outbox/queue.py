"""The outbox's rows: events written in the caller's transaction, deliveries claimed by one worker at a time."""

import json
import secrets
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.config.schema import Alerts
from cancel_flow.hooks import EVENTS, email_message, event_body, new_event_id, sample_data, slack_message
from cancel_flow.models import OutboxDelivery, OutboxEvent, WebhookEndpoint

deliveries = OutboxDelivery.__table__
events = OutboxEvent.__table__
endpoints = WebhookEndpoint.__table__

RETRY_FOR = timedelta(days=3)
FIRST_RETRY = timedelta(seconds=30)
LONGEST_WAIT = timedelta(hours=12)
# Longer than any one delivery can take (10 s per HTTP exchange, SMTP's own timeouts), so a claim
# still held is a delivery still in flight; a worker that died leaves its claim to expire.
LEASE = timedelta(minutes=2)
KINDS = ("webhook", "slack", "email")
DUE_STATUSES = ("pending", "delivering")


def retry_delay(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed attempt: 30 s, 1 min, 2 min, … doubling, at most 12 h."""
    return min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_WAIT)


def next_attempt(created_at: datetime, attempts: int, now: datetime) -> datetime | None:
    """When to try again, or None once 3 days have passed since the delivery was written.
    The last try falls exactly at the 3-day mark."""
    give_up_at = as_utc(created_at) + RETRY_FOR
    if now >= give_up_at:
        return None
    return min(now + retry_delay(attempts), give_up_at)


def _insert(connection: Connection, table):
    return (postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)


def _delivery(kind: str, target: str, event_id: str, event_type: str, payload: str, now: datetime, **extra) -> dict:
    return {"kind": kind, "target": target, "event_id": event_id, "event_type": event_type, "payload": payload,
            "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now, "endpoint_id": None,
            "key": None, **extra}


def emit(connection: Connection, event_type: str, data: dict, alerts: Alerts | None = None, *,
         key: str | None = None) -> str | None:
    """Record an event and one delivery per subscribed endpoint and alert, in the caller's transaction.

    Returns the event id (the `webhook-id` every delivery of it carries), or None when an event with
    the same `key` was recorded before (a Stripe event delivered twice emits once)."""
    if event_type not in EVENTS:
        raise ValueError(f"unknown event type {event_type!r}")
    now = utc_now()
    event_id = new_event_id()
    body = event_body(event_id, event_type, data, now)
    row = {"id": event_id, "type": event_type, "key": key, "body": body, "created_at": now}
    if key is None:
        connection.execute(sa.insert(events).values(row))
    elif connection.execute(_insert(connection, events).values(row).on_conflict_do_nothing(index_elements=["key"])
                            .returning(events.c.id)).first() is None:
        return None
    rows = [
        _delivery("webhook", url, event_id, event_type, body, now, endpoint_id=endpoint_id)
        for endpoint_id, url, wanted in connection.execute(
            sa.select(endpoints.c.id, endpoints.c.url, endpoints.c.events).where(endpoints.c.enabled))
        if not wanted or event_type in wanted
    ]
    if alerts is not None and alerts.wants(event_type):
        if alerts.slack_webhook_url:
            rows.append(_delivery("slack", alerts.slack_webhook_url, event_id, event_type,
                                  json.dumps(slack_message(event_type, data)), now))
        if alerts.email:
            rows.append(_delivery("email", alerts.email, event_id, event_type,
                                  json.dumps(email_message(event_type, data)), now))
    if rows:
        connection.execute(sa.insert(deliveries), rows)
    return event_id


TEST_ALERT = "alert.test"


def enqueue_test_alert(connection: Connection, alerts: Alerts) -> str | None:
    """The coach's "send a test alert": a sample event (a cancellation) to the alerts' Slack URL and email
    only, never to webhook endpoints, delivered, retried and listed like every alert. None when the alerts
    have nowhere to go."""
    if not (alerts.slack_webhook_url or alerts.email):
        return None
    now, event_id, sample = utc_now(), new_event_id(), "session.canceled"
    data = sample_data(sample)
    note = "Test alert from cancel-flow: your alerts arrive here. The client below is a sample."
    rows = []
    if alerts.slack_webhook_url:
        message = slack_message(sample, data)
        message = {"text": f"Test alert: {message['text']}",
                   "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"*{note}*"}}, *message["blocks"]]}
        rows.append(_delivery("slack", alerts.slack_webhook_url, event_id, TEST_ALERT, json.dumps(message), now))
    if alerts.email:
        message = email_message(sample, data)
        message = {"subject": f"Test alert: {message['subject']}"[:200], "text": f"{note}\n\n{message['text']}",
                   "html": f"<p><em>{note}</em></p>{message['html']}"}
        rows.append(_delivery("email", alerts.email, event_id, TEST_ALERT, json.dumps(message), now))
    connection.execute(sa.insert(deliveries), rows)
    return event_id


def enqueue_email(connection: Connection, to: str, subject: str, text: str, html: str, *, key: str | None = None,
                  event_type: str = "email", event_id: str | None = None,
                  headers: tuple[tuple[str, str], ...] = ()) -> int | None:
    """An email sent by the outbox (retried with back-off, recorded), in the caller's transaction; `headers`
    are more headers it carries (List-Unsubscribe…). With `key`, at most one email per key is ever written:
    None when it was written before."""
    now = utc_now()
    content = {"subject": subject, "text": text, "html": html}
    if headers:
        content["headers"] = [list(header) for header in headers]
    payload = json.dumps(content)
    row = _delivery("email", to, event_id or "eml_" + secrets.token_hex(12), event_type, payload, now, key=key)
    statement = _insert(connection, deliveries).values(row)
    if key is not None:
        statement = statement.on_conflict_do_nothing(index_elements=["key"])
    found = connection.execute(statement.returning(deliveries.c.id)).first()
    return found[0] if found else None


# The receiver a delivery waits on: its webhook endpoint, its Slack address, or the SMTP server for every email.
LANE = sa.case((deliveries.c.endpoint_id.is_not(None), deliveries.c.endpoint_id),
               (deliveries.c.kind == "email", sa.literal("email")), else_=deliveries.c.target)
# How many due deliveries one claim looks at for each one it may take: a lane's backlog ahead of the others
# fills the window for one round at most, as the lane is full from then on.
WINDOW = 8


def lane_of(row) -> str:
    """LANE for a row read back."""
    return row.endpoint_id or ("email" if row.kind == "email" else row.target)


def claim(engine: Engine, worker: str, limit: int, lease: timedelta = LEASE, per_lane: int | None = None) -> list:
    """Take up to `limit` due deliveries for this worker: none is held by two workers at once.

    PostgreSQL skips rows another worker is claiming (FOR UPDATE SKIP LOCKED); SQLite runs one
    write at a time, so the conditional UPDATE alone decides. A claim whose lease ran out (its
    worker died between claiming and recording) is due again and goes out with the same webhook-id.

    With `per_lane`, a receiver (LANE) that already has that many deliveries in flight, in any worker,
    gets none more, and this claim takes at most that many for one receiver: a receiver that hangs holds
    up its own deliveries only. (Two workers claiming at the same instant may each take up to the bound.)"""
    now = utc_now()
    due_now = sa.and_(deliveries.c.status.in_(DUE_STATUSES), deliveries.c.next_attempt_at <= now)
    due = sa.select(deliveries.c.id).where(due_now).order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(limit)
    with engine.connect() as connection:
        # Most polls find nothing: a read first, so an idle outbox never takes a write lock.
        if connection.execute(due.with_only_columns(sa.literal(1)).limit(1)).first() is None:
            return []
        if per_lane is not None:
            chosen = _share_out(connection, now, due_now, limit, per_lane)
            if not chosen:
                return []
            due = due.where(deliveries.c.id.in_(chosen))
    if engine.dialect.name == "postgresql":
        due = due.with_for_update(skip_locked=True)
    # A materialized CTE, run once: written as `id IN (subquery)`, PostgreSQL claimed more than `limit` rows.
    due = due.cte("due").prefix_with("MATERIALIZED")
    token = f"{worker[:40]}:{secrets.token_hex(6)}"
    with engine.begin() as connection:
        return list(connection.execute(
            sa.update(deliveries)
            .where(deliveries.c.id == due.c.id, due_now)
            .values(status="delivering", claimed_at=now, claimed_by=token, attempts=deliveries.c.attempts + 1,
                    next_attempt_at=now + lease)
            .returning(*deliveries.c)).all())


def _share_out(connection: Connection, now: datetime, due_now, limit: int, per_lane: int) -> list[int]:
    """The ids of the due deliveries to take, oldest first, at most `per_lane` in flight per receiver."""
    in_flight = dict(connection.execute(
        sa.select(LANE, sa.func.count()).where(deliveries.c.status == "delivering", deliveries.c.next_attempt_at > now)
        .group_by(LANE)).all())
    full = [lane for lane, count in in_flight.items() if count >= per_lane]
    candidates = sa.select(deliveries.c.id, deliveries.c.kind, deliveries.c.endpoint_id, deliveries.c.target) \
        .where(due_now).order_by(deliveries.c.next_attempt_at, deliveries.c.id).limit(limit * WINDOW)
    if full:
        candidates = candidates.where(LANE.not_in(full))
    chosen = []
    for row in connection.execute(candidates):
        lane = lane_of(row)
        if in_flight.get(lane, 0) < per_lane:
            in_flight[lane] = in_flight.get(lane, 0) + 1
            chosen.append(row.id)
            if len(chosen) == limit:
                break
    return chosen


def endpoint_secret(engine: Engine, endpoint_id: str | None) -> str | None:
    if endpoint_id is None:
        return None
    with engine.connect() as connection:
        return connection.execute(sa.select(endpoints.c.secret).where(endpoints.c.id == endpoint_id)).scalar()


def resend(engine: Engine, delivery_id: int) -> int | None:
    """A new delivery of the same message (same webhook-id), due now; None if there is no such delivery."""
    now = utc_now()
    with engine.begin() as connection:
        old = connection.execute(sa.select(deliveries).where(deliveries.c.id == delivery_id)).first()
        if old is None:
            return None
        target = old.target
        if old.kind == "webhook":
            target = connection.execute(sa.select(endpoints.c.url).where(endpoints.c.id == old.endpoint_id)).scalar()
            if target is None:
                return None
        row = _delivery(old.kind, target, old.event_id, old.event_type, old.payload, now, endpoint_id=old.endpoint_id)
        return connection.execute(sa.insert(deliveries).values(row).returning(deliveries.c.id)).scalar_one()


def recent_deliveries(engine: Engine, limit: int = 100, before_id: int | None = None) -> list:
    query = sa.select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(deliveries.c.id < before_id)
    with engine.connect() as connection:
        return list(connection.execute(query).all())
