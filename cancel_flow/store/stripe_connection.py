"""The stored Stripe connection (encrypted values by name; cancel_flow/stripe_connection.py encrypts and reads
them) and the runs of `stripe check` started from the dashboard."""

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.models import StripeCheckRun, StripeConnectionValue

values = StripeConnectionValue.__table__
runs = StripeCheckRun.__table__
# A run not finished after this long died with its worker: another may start.
RUN_GIVES_UP = timedelta(minutes=5)
RUNS_KEPT = 20


def read_values(engine: Engine) -> list:
    """Every stored value (encrypted), with its expiry."""
    with engine.connect() as connection:
        return list(connection.execute(sa.select(values)).all())


def write_values(connection: Connection, changes: dict[str, tuple[str, datetime | None] | None]) -> None:
    """Set (encrypted value, expiry) per name, or delete the name (None), in the caller's transaction."""
    now = utc_now()
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    for name, change in changes.items():
        if change is None:
            connection.execute(sa.delete(values).where(values.c.name == name))
            continue
        value, expires_at = change
        statement = insert(values).values(name=name, value=value, expires_at=expires_at, updated_at=now)
        connection.execute(statement.on_conflict_do_update(index_elements=[values.c.name], set_={
            "value": statement.excluded.value, "expires_at": statement.excluded.expires_at, "updated_at": now}))


# --- stripe check runs --------------------------------------------------------------------------------

def start_check_run(engine: Engine, started_by: str) -> int | None:
    """A new run's id, or None while another run is going (one at a time for the whole deployment)."""
    now = utc_now()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("LOCK TABLE stripe_check_run IN SHARE ROW EXCLUSIVE MODE"))
        going = sa.exists(sa.select(runs.c.id).where(runs.c.finished_at.is_(None), runs.c.started_at > now - RUN_GIVES_UP))
        started = connection.execute(sa.insert(runs).from_select(
            ["started_at", "started_by", "lines"],
            sa.select(sa.literal(now, runs.c.started_at.type), sa.literal(started_by[:320]),
                      sa.literal([], runs.c.lines.type)).where(~going)).returning(runs.c.id)).first()
        if started is None:
            return None
        old = sa.select(runs.c.id).order_by(runs.c.id.desc()).offset(RUNS_KEPT).scalar_subquery()
        connection.execute(sa.delete(runs).where(runs.c.id <= old))
        return started.id


def finish_check_run(engine: Engine, run_id: int, lines: list[str], ok: bool) -> None:
    with engine.begin() as connection:
        connection.execute(sa.update(runs).where(runs.c.id == run_id).values(lines=lines, ok=ok, finished_at=utc_now()))


def last_check_run(engine: Engine):
    """The newest run (finished or going), or None."""
    with engine.connect() as connection:
        return connection.execute(sa.select(runs).order_by(runs.c.id.desc()).limit(1)).first()
