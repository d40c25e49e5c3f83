"""Every database query. Decisions are single conditional UPDATEs, so concurrent requests decide once."""

from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.flow import DEFLECTION_DELAY, SessionView, StripeState, state_changes
from cancel_flow.models import SAVED_OUTCOMES, CancelSession, SessionOffer, StripeEvent

sessions = CancelSession.__table__
events = StripeEvent.__table__
session_offers = SessionOffer.__table__
MIGRATIONS = Path(__file__).parent.parent / "migrations"
_MIGRATION_LOCK = 0x63616E63  # PostgreSQL advisory lock id held while migrating
CLAIM_TIMEOUT = timedelta(seconds=60)
# Built once: every page view of a link runs it.
_SESSION_BY_NONCE = sa.select(sessions).where(sessions.c.nonce == sa.bindparam("nonce"))


def make_engine(url: str, pool_size: int = 5, pool_timeout: float = 30) -> Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=pool_size, pool_timeout=pool_timeout,
                            max_overflow=pool_size, connect_args={"connect_timeout": 5})


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; on PostgreSQL only one process migrates at a time."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _as_session(row) -> CancelSession | None:
    """The row itself: it reads like a CancelSession (same attribute names) and, unlike building an
    ORM instance, costs nothing on the subscriber's hot path."""
    return row


class Store:
    def __init__(self, engine: Engine):
        self.engine = engine
        # Built once: every webhook runs them, and building them costs more than running them.
        self._store_event = self._insert(events).values(
            {column: sa.bindparam(column) for column in ("id", "type", "created", "payload", "received_at", "handled_at")}
        ).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        query = sa.select(sessions.c.id, sessions.c.outcome, sessions.c.decided_at, sessions.c.stripe_state_at,
                          sessions.c.claimed_offer, sessions.c.offer_kind, sessions.c.had_discount, sessions.c.was_paused) \
            .where(sessions.c.subscription_id == sa.bindparam("subscription"))
        self._sessions_of_subscription = query.with_for_update() if engine.dialect.name == "postgresql" else query
        # Every first view of a link runs it; the values come as parameters at execution.
        self._open_session = self._insert(sessions).on_conflict_do_nothing(index_elements=["nonce"]).returning(*sessions.c)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    # cancel sessions -------------------------------------------------------------------------
    def find_session(self, nonce: str) -> CancelSession | None:
        with self.engine.connect() as connection:
            return _as_session(connection.execute(_SESSION_BY_NONCE, {"nonce": nonce}).first())

    def open_session(self, values: dict) -> CancelSession:
        """Insert the session for this link, or return the one a concurrent request inserted."""
        now = utc_now()
        row = {"outcome": "open", "created_at": now, "updated_at": now, "rolled_up": False, **values}
        with self.engine.begin() as connection:
            inserted = connection.execute(self._open_session, row).first()
            if inserted is not None:
                return _as_session(inserted)
            return _as_session(connection.execute(_SESSION_BY_NONCE, {"nonce": values["nonce"]}).first())

    def _insert(self, table):
        """INSERT with ON CONFLICT support, in this database's dialect."""
        if self.engine.dialect.name == "postgresql":
            return postgresql_insert(table)
        return sqlite_insert(table)

    def _update(self, session_id: int, where, **values) -> bool:
        values.setdefault("updated_at", utc_now())
        values["rolled_up"] = False
        with self.engine.begin() as connection:
            result = connection.execute(sa.update(sessions).where(sessions.c.id == session_id, *where).values(**values))
            return result.rowcount == 1

    def bulk_insert_sessions(self, rows: list[dict], chunk: int = 5000) -> None:
        """Sessions with their offers shown, in bulk (demo history and benchmarks)."""
        with self.engine.begin() as connection:
            for first in range(0, len(rows), chunk):
                part = [{**row, "rolled_up": False} for row in rows[first:first + chunk]]
                connection.execute(sa.insert(sessions), part)
                offered = {row["nonce"]: row for row in part if row.get("offers_shown")}
                if not offered:
                    continue
                ids = connection.execute(sa.select(sessions.c.nonce, sessions.c.id)
                                         .where(sessions.c.nonce.in_(list(offered)))).all()
                connection.execute(sa.insert(session_offers), [
                    {"session_id": session_id, "offer_id": offer, "shown_at": offered[nonce]["created_at"]}
                    for nonce, session_id in ids for offer in offered[nonce]["offers_shown"]])

    def record_reason(self, session_id: int, reason: str, comment: str | None, offers_shown: list[str]) -> bool:
        now = utc_now()
        with self.engine.begin() as connection:
            updated = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome == "open",
            ).values(reason=reason, comment=comment, offers_shown=offers_shown, reason_at=now, updated_at=now,
                     rolled_up=False))
            if updated.rowcount != 1:
                return False
            connection.execute(sa.delete(session_offers).where(session_offers.c.session_id == session_id))
            if offers_shown:
                connection.execute(sa.insert(session_offers), [
                    {"session_id": session_id, "offer_id": offer_id, "shown_at": now} for offer_id in offers_shown])
        return True

    def claim_offer(self, session_id: int, offer_id: str, terms: dict) -> bool:
        """Only one offer is applied per session; a stale claim (a crashed request) can be taken over.
        `terms` (offer_kind, discount_percent, discount_months, pause_resumes_at) are kept with it."""
        now = utc_now()
        return self._update(session_id, [
            sessions.c.outcome == "open",
            sa.or_(sessions.c.claimed_offer.is_(None), sessions.c.claimed_offer == offer_id,
                   sessions.c.claimed_at < now - CLAIM_TIMEOUT),
        ], claimed_offer=offer_id, claimed_at=now, **terms)

    def release_claim(self, session_id: int, offer_id: str) -> None:
        self._update(session_id, [sessions.c.claimed_offer == offer_id, sessions.c.outcome == "open"],
                     claimed_offer=None, claimed_at=None, offer_kind=None, discount_percent=None,
                     discount_months=None, pause_resumes_at=None)

    def record_saved(self, session_id: int, outcome: str, offer_id: str) -> bool:
        """The claimed offer is confirmed by Stripe: the decision, written once."""
        return self._update(session_id, [sessions.c.outcome == "open", sessions.c.claimed_offer == offer_id],
                            outcome=outcome, chosen_offer=offer_id, decided_at=utc_now())

    def record_sent_to_portal(self, session_id: int, reason: str | None, comment: str | None) -> bool:
        values = {"outcome": "sent_to_portal", "decided_at": utc_now()}
        if reason:
            values.update(reason=reason, comment=comment, reason_at=utc_now())
        return self._update(session_id, [sessions.c.outcome == "open"], **values)

    def record_kept(self, session_id: int) -> None:
        self._update(session_id, [], cancel_at_period_end=False, kept_at=utc_now())

    def accepted_offer_since(self, customer_id: str, since: datetime) -> bool:
        query = sa.select(sa.literal(1)).where(
            sessions.c.customer_id == customer_id, sessions.c.outcome.in_(SAVED_OUTCOMES),
            sessions.c.decided_at >= since).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    # Stripe events ------------------------------------------------------------------------------
    def record_stripe_event(self, event_id: str, event_type: str, created: int, payload: str,
                            state: StripeState | None) -> bool:
        """Store the event once and apply it, in one transaction; False for an event seen before."""
        with self.engine.begin() as connection:
            now = utc_now()
            # handled in this same transaction, so it is marked handled as it is stored
            inserted = connection.execute(self._store_event, {
                "id": event_id, "type": event_type, "created": created, "payload": payload,
                "received_at": now, "handled_at": now}).first()
            if inserted is None:
                return False
            if state is not None:
                self._apply_state(connection, state)
        return True

    def _apply_state(self, connection, state: StripeState) -> None:
        for row in connection.execute(self._sessions_of_subscription, {"subscription": state.subscription_id}).all():
            if row.stripe_state_at is not None and row.stripe_state_at > state.version:
                continue  # an older event: never undo what a newer one said
            view = SessionView(row.outcome, as_utc(row.decided_at) if row.decided_at else None, row.claimed_offer,
                               row.offer_kind, row.had_discount, row.was_paused)
            changes = state_changes(view, state)
            connection.execute(sa.update(sessions).where(sessions.c.id == row.id).values(
                stripe_state_at=state.version, updated_at=utc_now(), rolled_up=False, **changes))

    def sweep_deflected(self) -> int:
        """Sessions left open, or sent to the portal, 24 h ago with no cancellation: deflected.
        One idempotent UPDATE, so two sweeps at once mark each session once."""
        now = utc_now()
        cutoff = now - DEFLECTION_DELAY
        statement = sa.update(sessions).where(
            sessions.c.canceled_at.is_(None),
            sa.or_(sa.and_(sessions.c.outcome == "sent_to_portal", sessions.c.decided_at < cutoff),
                   sa.and_(sessions.c.outcome == "open", sessions.c.created_at < cutoff)),
        ).values(outcome="deflected", updated_at=now, rolled_up=False)
        with self.engine.begin() as connection:
            return connection.execute(statement).rowcount
