"""Withdrawals and cancel-button declarations: stored as received, decided once (with the acknowledgement, the
event and the coach's alert in the same transaction), what Stripe then did, and their deletion after
`[compliance] records_keep_days`."""

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from cancel_flow.clock import utc_now
from cancel_flow.config.schema import Alerts
from cancel_flow.hooks import AlertText
from cancel_flow.models import CancelSession, Declaration, OutboxDelivery
from cancel_flow.outbox.queue import emit, enqueue_alert, enqueue_email

declarations = Declaration.__table__
deliveries = OutboxDelivery.__table__
sessions = CancelSession.__table__
PAGE_SIZE = 50
# A declaration still "received" this long after it arrived was left by a worker that stopped: the sweep takes it up.
LEFT_AFTER = timedelta(minutes=2)
MAX_ATTEMPTS = 50  # Stripe writes tried by the sweep (every 10 minutes: about 8 hours), then the coach acts


def _insert(connection: Connection, table):
    return (postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert)(table)


def ack_key(declaration_id: int) -> str:
    return f"declaration-ack:{declaration_id}"


@dataclass
class Acknowledgement:
    to: str
    subject: str
    text: str
    html: str


@dataclass
class Decision:
    """What a declaration comes to, written once with everything that follows from it."""

    status: str  # accepted | needs_coach | not_eligible
    detail: str
    ack: Acknowledgement | None
    customer_id: str | None = None
    subscription_id: str | None = None
    plan_name: str | None = None
    effective_at: datetime | None = None
    refund_mode: str | None = None
    refund_amount: int | None = None
    refund_currency: str | None = None
    event: tuple[str, dict, Alerts] | None = None  # (type, data, alerts) of the outgoing event
    alert: tuple[Alerts, AlertText] | None = None  # a message to the coach that is no event
    withdrawn_session: int | None = None  # the cancel session whose outcome becomes `withdrawn`


class DeclarationStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def receive(self, values: dict) -> tuple[object, bool]:
        """Store a declaration as received (to the second); with a `dedupe_key` seen before, the first one
        (False: not new)."""
        row = {"status": "received", "attempts": 0, "language": "en", **values,
               "received_at": values["received_at"].replace(microsecond=0)}
        with self.engine.begin() as connection:
            statement = _insert(connection, declarations).values(row)
            if row.get("dedupe_key"):
                statement = statement.on_conflict_do_nothing(index_elements=["dedupe_key"])
            inserted = connection.execute(statement.returning(declarations.c.id)).first()
            if inserted is None:
                found = connection.execute(sa.select(declarations).where(
                    declarations.c.dedupe_key == row["dedupe_key"])).first()
                return found, False
            return connection.execute(sa.select(declarations).where(declarations.c.id == inserted.id)).first(), True

    def get(self, declaration_id: int):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(declarations).where(declarations.c.id == declaration_id)).first()

    def decide(self, declaration_id: int, decision: Decision) -> bool:
        """The decision, its acknowledgement (through the outbox), event, alert and the session's outcome, in one
        transaction; False (and nothing written) when the declaration was decided before."""
        now = utc_now()
        key = ack_key(declaration_id)
        with self.engine.begin() as connection:
            updated = connection.execute(sa.update(declarations).where(
                declarations.c.id == declaration_id, declarations.c.status == "received").values(
                status=decision.status, detail=decision.detail, customer_id=decision.customer_id,
                subscription_id=decision.subscription_id, plan_name=decision.plan_name,
                effective_at=decision.effective_at, refund_mode=decision.refund_mode,
                refund_amount=decision.refund_amount, refund_currency=decision.refund_currency,
                ack_key=key if decision.ack else None)).rowcount
            if updated != 1:
                return False
            if decision.ack:
                enqueue_email(connection, decision.ack.to, decision.ack.subject, decision.ack.text, decision.ack.html,
                              key=key, event_type="declaration.acknowledgement")
            if decision.event:
                event_type, data, alerts = decision.event
                emit(connection, event_type, data, alerts, key=f"{event_type}:declaration:{declaration_id}")
            if decision.alert:
                alerts, text = decision.alert
                enqueue_alert(connection, alerts, "declaration.alert", text, key=f"declaration-alert:{declaration_id}")
            if decision.withdrawn_session is not None:
                self._withdrawn(connection, decision.withdrawn_session, now)
        return True

    @staticmethod
    def _withdrawn(connection: Connection, session_id: int, now: datetime) -> None:
        """The session's outcome is `withdrawn`; the subscription's other sessions step aside (as a decision does)."""
        row = connection.execute(sa.select(sessions.c.subscription_id).where(sessions.c.id == session_id)).first()
        if row is None:
            return
        connection.execute(sa.update(sessions).where(sessions.c.id == session_id).values(
            outcome="withdrawn", decided_at=now, updated_at=now, rolled_up=False, superseded=False, snapshot_at=None))
        connection.execute(sa.update(sessions).where(
            sessions.c.subscription_id == row.subscription_id, sessions.c.id != session_id,
            sessions.c.superseded.is_(False)).values(superseded=True, rolled_up=False))

    def applied(self, declaration_id: int, refunds: list[tuple[str | None, int]] | None) -> None:
        """Stripe did what was decided (with these refunds)."""
        with self.engine.begin() as connection:
            connection.execute(sa.update(declarations).where(declarations.c.id == declaration_id).values(
                applied_at=utc_now(), apply_error=None, refunds=[list(r) for r in refunds] if refunds else None,
                attempts=declarations.c.attempts + 1))

    def failed(self, declaration_id: int, error: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.update(declarations).where(declarations.c.id == declaration_id).values(
                apply_error=error[:500], attempts=declarations.c.attempts + 1))

    def undo(self, declaration_id: int, alert: tuple[Alerts, AlertText] | None) -> bool:
        """"This wasn't me": the cancellation is taken back; the coach hears of it. False when done before."""
        now = utc_now()
        with self.engine.begin() as connection:
            done = connection.execute(sa.update(declarations).where(
                declarations.c.id == declaration_id, declarations.c.status == "accepted",
                declarations.c.kind == "cancellation").values(status="undone", undone_at=now)).rowcount == 1
            if done and alert:
                enqueue_alert(connection, alert[0], "declaration.alert", alert[1], key=f"declaration-undone:{declaration_id}")
        return done

    def due(self, now: datetime | None = None) -> list:
        """Declarations a worker left before deciding them, and decisions Stripe hasn't carried out yet."""
        now = now or utc_now()
        with self.engine.connect() as connection:
            return connection.execute(sa.select(declarations).where(sa.or_(
                sa.and_(declarations.c.status == "received", declarations.c.received_at < now - LEFT_AFTER),
                sa.and_(declarations.c.status == "accepted", declarations.c.applied_at.is_(None),
                        declarations.c.attempts < MAX_ATTEMPTS, declarations.c.received_at < now - LEFT_AFTER),
            )).order_by(declarations.c.id).limit(100)).all()

    # the dashboard --------------------------------------------------------------------------------------
    def _listing(self):
        ack = deliveries.alias("ack")
        return sa.select(declarations, ack.c.status.label("ack_status"), ack.c.delivered_at.label("ack_sent_at"),
                         ack.c.attempts.label("ack_attempts"), ack.c.last_error.label("ack_error"),
                         ack.c.target.label("ack_to")) \
            .select_from(declarations.outerjoin(ack, ack.c.key == declarations.c.ack_key))

    def page(self, page: int) -> tuple[list, int]:
        with self.engine.connect() as connection:
            total = connection.execute(sa.select(sa.func.count()).select_from(declarations)).scalar_one()
            rows = connection.execute(self._listing().order_by(declarations.c.received_at.desc(), declarations.c.id.desc())
                                      .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)).all()
        return rows, total

    def export_rows(self):
        """Every declaration, newest first, read in pages (for the CSV)."""
        last = None
        while True:
            query = self._listing().order_by(declarations.c.id.desc()).limit(500)
            if last is not None:
                query = query.where(declarations.c.id < last)
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
            if not rows:
                return
            yield from rows
            last = rows[-1].id

    def prune(self, keep_days: int, now: datetime | None = None) -> int:
        """Delete declarations received more than `keep_days` ago, with their acknowledgements and alerts in the outbox."""
        cutoff = (now or utc_now()) - timedelta(days=keep_days)
        with self.engine.begin() as connection:
            old = connection.execute(sa.select(declarations.c.id).where(declarations.c.received_at < cutoff)).scalars().all()
            for first in range(0, len(old), 500):
                chunk = old[first:first + 500]
                keys = [key for i in chunk for key in (ack_key(i), *(f"declaration-{what}:{i}:{channel}"
                        for what in ("alert", "undone") for channel in ("slack", "email")))]
                connection.execute(sa.delete(deliveries).where(deliveries.c.key.in_(keys)))
                connection.execute(sa.delete(declarations).where(declarations.c.id.in_(chunk)))
            return len(old)
