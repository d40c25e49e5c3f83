"""Webhook endpoints: added from the command line or by Zapier/Make as REST hooks, removed the same ways."""

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.errors import BadRequest
from cancel_flow.hooks import EVENTS, event_body, new_event_id, new_secret, sample_data, url_problem
from cancel_flow.outbox.queue import deliveries, endpoints, events
from cancel_flow.outbox.safe_http import registration_problem


@dataclass(frozen=True)
class NewEndpoint:
    id: str
    secret: str


def check_events(names) -> list[str]:
    unknown = [name for name in names if name not in EVENTS]
    if unknown:
        raise BadRequest(f"Unknown event '{unknown[0]}'; events: {', '.join(EVENTS)}")
    return list(dict.fromkeys(names))


def add_endpoint(engine: Engine, url: str, events: list[str], *, source: str, allow_private: bool) -> NewEndpoint:
    """Check the URL (form and, unless allowed, that it is not a private address) and store it with a new secret."""
    problem = url_problem(url)
    if problem:
        raise BadRequest(f"That URL can't receive webhooks: {problem}.")
    refused = registration_problem(url, allow_private)
    if refused:
        raise BadRequest(f"That URL can't receive webhooks: {refused}.")
    endpoint = NewEndpoint(id="ep_" + secrets.token_hex(8), secret=new_secret())
    with engine.begin() as connection:
        connection.execute(sa.insert(endpoints).values(
            id=endpoint.id, url=url, secret=endpoint.secret, events=check_events(events), enabled=True, source=source,
            created_at=utc_now()))
    return endpoint


def stop_deliveries(connection, endpoint_id: str, reason: str) -> None:
    connection.execute(sa.update(deliveries).where(
        deliveries.c.endpoint_id == endpoint_id, deliveries.c.status.in_(("pending", "delivering")),
    ).values(status="failed", last_error=reason))


def remove_endpoint(engine: Engine, endpoint_id: str) -> bool:
    """Forget the endpoint; what was still waiting to go to it is marked failed (kept on the deliveries page)."""
    with engine.begin() as connection:
        removed = connection.execute(sa.delete(endpoints).where(endpoints.c.id == endpoint_id)).rowcount == 1
        if removed:
            stop_deliveries(connection, endpoint_id, "endpoint removed")
    return removed


def list_endpoints(engine: Engine) -> list:
    with engine.connect() as connection:
        return list(connection.execute(sa.select(endpoints).order_by(endpoints.c.created_at, endpoints.c.id)).all())


def send_test_event(engine: Engine, endpoint_id: str) -> int | None:
    """A sample event (marked `"test": true` in its data) written for this endpoint alone, sent by the outbox like
    any other; the delivery's id, or None when there is no such endpoint. Its type is the endpoint's first event."""
    now = utc_now()
    with engine.begin() as connection:
        endpoint = connection.execute(sa.select(endpoints).where(endpoints.c.id == endpoint_id)).first()
        if endpoint is None:
            return None
        event_type = (endpoint.events or list(EVENTS))[0]
        event_id = new_event_id()
        body = event_body(event_id, event_type, {**sample_data(event_type), "test": True}, now)
        connection.execute(sa.insert(events).values(id=event_id, type=event_type, key=None, body=body, created_at=now))
        return connection.execute(sa.insert(deliveries).values(
            kind="webhook", target=endpoint.url, endpoint_id=endpoint.id, event_id=event_id, event_type=event_type,
            payload=body, status="pending", attempts=0, next_attempt_at=now, created_at=now).returning(deliveries.c.id)).scalar_one()


def recent_deliveries_of(engine: Engine, endpoint_ids: list[str], per_endpoint: int = 5) -> dict[str, list]:
    """The newest deliveries of each endpoint, newest first."""
    found: dict[str, list] = {endpoint_id: [] for endpoint_id in endpoint_ids}
    with engine.connect() as connection:
        for endpoint_id in endpoint_ids:
            found[endpoint_id] = list(connection.execute(
                sa.select(deliveries).where(deliveries.c.endpoint_id == endpoint_id)
                .order_by(deliveries.c.id.desc()).limit(per_endpoint)).all())
    return found
