"""Webhook endpoints: added from the command line or by Zapier/Make as REST hooks, removed the same ways."""

import secrets
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from cancel_flow.clock import utc_now
from cancel_flow.errors import BadRequest
from cancel_flow.hooks import EVENTS, new_secret, url_problem
from cancel_flow.outbox.queue import deliveries, endpoints
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
