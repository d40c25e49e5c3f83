"""The audit log: every change of settings, team, keys, endpoints or the Stripe connection, with who made
it, when, and from which address. Shown at /dashboard/audit and exported as CSV.

Record a change with `record_audit`, inside the change's own transaction when there is one, so the change
and its row commit together:

    with engine.begin() as connection:
        ...the change...
        record_audit(connection, "settings.saved", "version 4: brand colour", actor=coach.email,
                     address=client_address(request))
"""

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import AuditEntry

entries = AuditEntry.__table__
COMMAND_LINE = "command line"  # the actor of a change made with `cancel-flow …`
MAX_DETAIL = 2000


def record_audit(db: Engine | Connection, action: str, detail: str = "", *, actor: str,
                 address: str | None = None) -> None:
    """Write one audit row: `action` a dotted name ("team.invited", "settings.saved"), `detail` what changed in
    words (never a secret), `actor` the coach's email (or COMMAND_LINE, or "API key 'name'"), `address` where
    the request came from (cancel_flow.web.coach_auth.client_address). Given a Connection it writes in that
    transaction; given an Engine, in a transaction of its own."""
    row = {"at": utc_now(), "actor": actor[:320], "action": action[:64], "detail": (detail or "")[:MAX_DETAIL],
           "address": address[:64] if address else None}
    if isinstance(db, Engine):
        with db.begin() as connection:
            connection.execute(sa.insert(entries).values(row))
    else:
        db.execute(sa.insert(entries).values(row))


def endpoint_words(endpoint_id: str, url: str, events) -> str:
    """An outgoing webhook endpoint as the audit log names it: its id, its host (not its path, which for Zapier and
    Make is a capability) and its events."""
    from urllib.parse import urlsplit

    host = urlsplit(url).hostname or "?"
    return f"{endpoint_id} → {host} ({', '.join(events) if events else 'every event'})"


def recent_entries(engine: Engine, limit: int = 100, before_id: int | None = None) -> list:
    """The newest entries first, `limit` of them, older than `before_id` when given."""
    query = sa.select(entries).order_by(entries.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(entries.c.id < before_id)
    with engine.connect() as connection:
        return list(connection.execute(query).all())


def all_entries(engine: Engine, batch: int = 1000) -> Iterator:
    """Every entry, newest first, read a batch at a time (for the CSV export)."""
    before = None
    while True:
        rows = recent_entries(engine, batch, before)
        yield from rows
        if len(rows) < batch:
            return
        before = rows[-1].id
