"""Every database query. Decisions are single conditional UPDATEs, so concurrent requests decide once."""

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

import sqlalchemy as sa
from alembic import command
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from alembic.config import Config as AlembicConfig
from sqlalchemy.engine import Engine

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.errors import CancelFlowError
from cancel_flow.flow import ACTIVE, DEFLECTION_DELAY, ENDED, SessionView, StripeState, state_changes
from cancel_flow.logs import log_event
from cancel_flow.metrics import DECISIONS
from cancel_flow.store.prepared import PreparedInsert, PreparedRead
from cancel_flow.models import (OFFER_OUTCOMES, CancelSession, InvoiceRecord, OutsideCancellation, SessionOffer,
                                StripeEvent)

sessions = CancelSession.__table__
events = StripeEvent.__table__
session_offers = SessionOffer.__table__
invoices = InvoiceRecord.__table__
outside = OutsideCancellation.__table__
# Outcomes a later session of the same subscription replaces in the dashboard's counts.
UNDECIDED = ("open", "deflected")
MIGRATIONS = Path(__file__).parent.parent / "migrations"
_MIGRATION_LOCK = 0x63616E63  # PostgreSQL advisory lock id held while migrating
# A claim whose request gave no answer is held this long before another choice may take it over (asking
# Stripe first): the request may still be running at Stripe. Stripe doesn't say how long a request can run
# there; its own SDK waits 80 s for an answer (stripe-python's default request timeout), ten times our
# STRIPE_DEADLINE, and the hold is that long.
CLAIM_TIMEOUT = timedelta(seconds=80)
# A claim younger than this is taken for a request applying it now (a double submit waits for it).
CLAIM_FRESH = timedelta(seconds=2)
# Built once: every page view of a link runs it.
_SESSION_BY_NONCE = sa.select(sessions).where(sessions.c.nonce == sa.bindparam("nonce"))
# Every first view of a link runs it (a new link after an offer was accepted on another one shows that decision).
_LATEST_OFFER_SAVE = sa.select(sessions).where(
    sessions.c.subscription_id == sa.bindparam("subscription"), sessions.c.nonce != sa.bindparam("other_than_nonce"),
    sessions.c.outcome.in_([sa.literal(outcome) for outcome in OFFER_OUTCOMES]), sessions.c.decided_at >= sa.bindparam("since", type_=sessions.c.decided_at.type),
    sessions.c.canceled_at.is_(None),
).order_by(sessions.c.decided_at.desc(), sessions.c.id.desc()).limit(1)


# A statement waits at most this long for a lock, and runs at most STATEMENT_TIMEOUT; the request that
# hits either gets the 503 page instead of hanging (PostgreSQL lock_timeout / statement_timeout, SQLite
# busy timeout). Migrations lift both for their own transaction.
LOCK_TIMEOUT_MS = 5000
STATEMENT_TIMEOUT_MS = 30000
# The event loop's own connections (store/offload.py): they give up at once instead of waiting.
QUICK_LOCK_TIMEOUT_MS = 20
QUICK_STATEMENT_TIMEOUT_MS = 250


def make_engine(url: str, pool_size: int = 5, pool_timeout: float = 30, *, lock_timeout_ms: int = LOCK_TIMEOUT_MS,
                statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> Engine:
    if url.startswith("sqlite"):
        # SQLite's only wait is for the write lock (WAL readers never wait): a quick engine doesn't wait at all
        busy = 0 if lock_timeout_ms < LOCK_TIMEOUT_MS else lock_timeout_ms
        engine = sa.create_engine(url, connect_args={"timeout": busy / 1000, "check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={busy}")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=pool_size, pool_timeout=pool_timeout,
                            max_overflow=pool_size, connect_args={
                                "connect_timeout": 5,
                                "options": f"-c lock_timeout={lock_timeout_ms} -c statement_timeout={statement_timeout_ms}"})


def make_quick_engine(url: str, pool_size: int = 5) -> Engine:
    """Connections for calls made on the event loop: a lock or a slow statement fails them at once."""
    return make_engine(url, pool_size, pool_timeout=0.05, lock_timeout_ms=QUICK_LOCK_TIMEOUT_MS,
                       statement_timeout_ms=QUICK_STATEMENT_TIMEOUT_MS)


def alembic_config(engine: Engine) -> AlembicConfig:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return config


# `serve` waits this long for a database server that doesn't answer yet (containers start together: the
# database may still be starting, or not even resolvable), retrying with back-off, then stops with one line.
DATABASE_WAIT = 60
_RETRY_DELAYS = (0.5, 1, 2, 3, 5)


def wait_for_database(engine: Engine, timeout: float = DATABASE_WAIT, *, sleep=time.sleep) -> None:
    """Return once the database accepts a connection; log `database.waiting` before each retry and give
    up with CancelFlowError after `timeout` seconds. A SQLite file has nothing to wait for."""
    if engine.dialect.name == "sqlite":
        return
    where = engine.url.render_as_string(hide_password=True)
    started, attempt = time.monotonic(), 0
    while True:
        attempt += 1
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
        except sa.exc.OperationalError as error:
            reason = (str(error.orig).strip().splitlines() or [type(error.orig).__name__])[0]
            left = timeout - (time.monotonic() - started)
            if left <= 0:
                raise CancelFlowError(f"the database at {where} did not answer within {timeout:g} s: {reason}") from None
            delay = min(_RETRY_DELAYS[min(attempt, len(_RETRY_DELAYS)) - 1], left)
            log_event("database.waiting", level=30, database=where, attempt=attempt, reason=reason,
                      retry_in_s=delay, gives_up_in_s=round(left))
            sleep(delay)
        else:
            if attempt > 1:
                log_event("database.ready", database=where, attempts=attempt,
                          waited_s=round(time.monotonic() - started, 1))
            return
class NotMigrated(Exception):
    """The database lacks cancel-flow's tables, or has an older revision of them."""


def schema_is_current(engine: Engine) -> bool:
    """Whether the database is at the newest migration (False for an empty database or an older one)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    with engine.connect() as connection:
        current = set(MigrationContext.configure(connection).get_current_heads())
    return current == set(ScriptDirectory.from_config(alembic_config(engine)).get_heads())


def require_migrated(engine: Engine) -> None:
    """Raise NotMigrated unless the schema is current (commands that only read or sweep don't migrate)."""
    if not schema_is_current(engine):
        raise NotMigrated


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision; on PostgreSQL only one process migrates at a time."""
    config = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SET LOCAL lock_timeout = 0"))
            connection.execute(sa.text("SET LOCAL statement_timeout = 0"))
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:id)"), {"id": _MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


@dataclass(frozen=True)
class Claim:
    """How a claim on an offer went: claimed (with its attempt number), busy (another offer is being
    applied), stale (a claim left by a failed request: ask Stripe first) or decided (an offer was
    already accepted for this customer)."""

    status: str
    attempt: int = 0
    other_nonce: str | None = None


def _as_session(row) -> CancelSession | None:
    """The row itself: it reads like a CancelSession (same attribute names) and, unlike building an
    ORM instance, costs nothing on the subscriber's hot path."""
    return row


# A new session's columns before its first write: the table's constant defaults, else NULL. The columns with
# computed defaults (created_at, updated_at) are always given by open_session.
_UNSET = {column.name: column.default.arg if column.default is not None and column.default.is_scalar else None
          for column in sessions.c}


# The columns a first view inserts (any other takes its default); a value left out takes the column's default.
_OPENED_COLUMNS = ("nonce", "customer_id", "subscription_id", "customer_email", "plan_name", "price_amount", "price_note",
                   "interval", "interval_count", "monthly_amount", "currency", "had_discount", "was_paused",
                   "cancel_at_period_end", "period_end", "stripe_snapshot", "outcome", "created_at", "updated_at",
                   "rolled_up", "claim_attempt", "superseded", "snapshot_at")


class OpenedSession(SimpleNamespace):
    """A session just inserted, read like the row `find_session` returns (same attribute names and
    values, times in UTC) without reading every column back: the subscriber's first view writes it."""


class Store:
    def __init__(self, engine: Engine, on_event=None):
        self.engine = engine
        # Called as on_event(connection, event_type, session_id) inside a decision's transaction
        # (cancel_flow/outbox/session_events.py): the change and its outgoing event commit together.
        self.on_event = on_event
        # Built once: every webhook runs them, and building them costs more than running them.
        self._store_event = self._insert(events).values(
            {column: sa.bindparam(column) for column in ("id", "type", "created", "payload", "received_at", "handled_at")}
        ).on_conflict_do_nothing(index_elements=["id"]).returning(events.c.id)
        query = sa.select(sessions.c.id, sessions.c.outcome, sessions.c.decided_at, sessions.c.stripe_state_at,
                          sessions.c.claimed_offer, sessions.c.offer_kind, sessions.c.had_discount, sessions.c.was_paused) \
            .where(sessions.c.subscription_id == sa.bindparam("subscription"))
        self._sessions_of_subscription = query.with_for_update() if engine.dialect.name == "postgresql" else query
        # Every view of a link reads its session, and a first view the subscription's latest accepted offer.
        self._session_by_nonce = PreparedRead(engine, _SESSION_BY_NONCE, "SessionRow")
        self._latest_offer_save = PreparedRead(engine, _LATEST_OFFER_SAVE, "SessionRow")
        # Every first view of a link inserts its session, with these columns (cancel_service `_session_values`).
        self._open_session = PreparedInsert(
            engine, self._insert(sessions).on_conflict_do_nothing(index_elements=["nonce"]).returning(sessions.c.id),
            _OPENED_COLUMNS)

    def ping(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))

    # cancel sessions -------------------------------------------------------------------------
    def find_session(self, nonce: str) -> CancelSession | None:
        return _as_session(self._session_by_nonce.first(nonce=nonce))

    def open_session(self, values: dict) -> CancelSession:
        """Insert the session for this link, or return the one a concurrent request inserted."""
        now = utc_now()
        row = {"outcome": "open", "created_at": now, "updated_at": now, "rolled_up": False, "claim_attempt": 0,
               "superseded": False, "snapshot_at": now, **values}
        inserted = self._open_session.returning(row)
        if inserted is not None:
            # earlier undecided sessions of the subscription step aside when the roll-ups are next
            # refreshed (store/stats.py), not here on the subscriber's first view
            return OpenedSession(**{**_UNSET, **row, "id": inserted})
        return self.find_session(values["nonce"])  # inserted, and committed, by a concurrent request

    def save_snapshot(self, session_id: int, snapshot: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(sa.update(sessions).where(sessions.c.id == session_id)
                               .values(stripe_snapshot=snapshot, snapshot_at=utc_now()))

    def _event(self, connection, event_type: str, session_id: int) -> None:
        if self.on_event is not None:
            self.on_event(connection, event_type, session_id)

    @staticmethod
    def _supersede_others(connection, session_id: int, subscription_id: str) -> None:
        """A decision in this session: the subscription's other sessions no longer count."""
        connection.execute(sa.update(sessions).where(
            sessions.c.subscription_id == subscription_id, sessions.c.id != session_id,
            sessions.c.superseded.is_(False)).values(superseded=True, rolled_up=False))
        connection.execute(sa.update(sessions).where(sessions.c.id == session_id, sessions.c.superseded.is_(True))
                           .values(superseded=False, rolled_up=False))

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

    def record_reason(self, session_id: int, reason: str, comment: str | None, offers_shown: list[str],
                      experiment: tuple[str, str] | None = None) -> bool:
        now = utc_now()
        experiment_id, arm = experiment or (None, None)
        with self.engine.begin() as connection:
            updated = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome == "open",
            ).values(reason=reason, comment=comment, offers_shown=offers_shown, reason_at=now, updated_at=now,
                     rolled_up=False, experiment_id=experiment_id, experiment_arm=arm))
            if updated.rowcount != 1:
                return False
            connection.execute(sa.delete(session_offers).where(session_offers.c.session_id == session_id))
            if offers_shown:
                connection.execute(sa.insert(session_offers), [
                    {"session_id": session_id, "offer_id": offer_id, "shown_at": now} for offer_id in offers_shown])
        return True

    def claim_offer(self, session: CancelSession, offer_id: str, terms: dict, cooldown_since: datetime) -> Claim:
        """One live offer per customer, across all their links and workers: the customer's sessions are
        locked, checked and the claim written in one transaction. `terms` are kept with the claim, so a
        failure between Stripe and our record can be reconciled from Stripe later."""
        now = utc_now()
        with self.engine.begin() as connection:
            # SQLite: take the database's write lock before reading, so no other writer reads the same.
            # PostgreSQL: lock the customer's rows, always in id order (no deadlock between two links).
            query = sa.select(sessions.c.id, sessions.c.nonce, sessions.c.outcome, sessions.c.claimed_offer,
                              sessions.c.claimed_at, sessions.c.decided_at) \
                .where(sessions.c.customer_id == session.customer_id).order_by(sessions.c.id)
            if self.engine.dialect.name == "postgresql":
                query = query.with_for_update()
            else:
                connection.execute(sa.update(sessions).where(sessions.c.id == session.id).values(updated_at=now))
            rows = connection.execute(query).all()
            for row in rows:
                if row.id != session.id and row.outcome in OFFER_OUTCOMES and row.decided_at \
                        and as_utc(row.decided_at) >= cooldown_since:
                    return Claim("decided", other_nonce=row.nonce)
            for row in rows:
                if row.outcome == "open" and row.claimed_offer:
                    if as_utc(row.claimed_at) >= now - CLAIM_TIMEOUT:
                        return Claim("busy", other_nonce=row.nonce)
                    return Claim("stale", other_nonce=row.nonce)
            mine = next((row for row in rows if row.id == session.id), None)
            if mine is None or mine.outcome != "open":
                return Claim("decided", other_nonce=session.nonce)
            attempt = connection.execute(sa.update(sessions).where(sessions.c.id == session.id).values(
                claimed_offer=offer_id, claimed_at=now, claim_attempt=sessions.c.claim_attempt + 1, rolled_up=False,
                **terms).returning(sessions.c.claim_attempt)).scalar_one()
            return Claim("claimed", attempt=attempt)

    def mark_claim_unsure(self, session_id: int, offer_id: str, in_flight: bool) -> None:
        """The request applying this claim ended without knowing whether Stripe applied it. When Stripe
        answered (a server error), the claim is made stale at once, so the next try asks Stripe instead of
        waiting; when no answer came, the request may still be running there, and the claim is held for
        CLAIM_TIMEOUT (less CLAIM_FRESH, so that it is no longer taken for a request running in one of our
        workers) from now."""
        self._update(session_id, [sessions.c.claimed_offer == offer_id, sessions.c.outcome == "open"],
                     claimed_at=utc_now() - (CLAIM_FRESH if in_flight else CLAIM_TIMEOUT + timedelta(seconds=1)))

    def renew_claim(self, session_id: int, offer_id: str, attempt: int) -> bool:
        """The held claim is sent to Stripe again under its own key: it is held anew from now. False when the
        claim changed meanwhile (decided, released, or claimed again by another request)."""
        with self.engine.begin() as connection:
            return connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome == "open", sessions.c.claimed_offer == offer_id,
                sessions.c.claim_attempt == attempt).values(claimed_at=utc_now())).rowcount == 1

    def release_claim(self, session_id: int, offer_id: str) -> None:
        self._update(session_id, [sessions.c.claimed_offer == offer_id, sessions.c.outcome == "open"],
                     claimed_offer=None, claimed_at=None, offer_kind=None, discount_percent=None,
                     discount_months=None, discount_payments=None, pause_payments=None, pause_resumes_at=None,
                     coupon_id=None, switch_price=None, free_months=None, promise=None, promise_texts=None, offer_cost=None,
                     schedule=None, next_payment_at=None, offer_ends_at=None)

    def record_saved(self, session_id: int, subscription_id: str, outcome: str, offer_id: str, terms: dict,
                     snapshot: str | None = None) -> bool:
        """The claimed offer is confirmed by Stripe: the decision, written once, with the terms as Stripe has them."""
        now = utc_now()
        with self.engine.begin() as connection:
            done = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome == "open", sessions.c.claimed_offer == offer_id,
            ).values(outcome=outcome, chosen_offer=offer_id, decided_at=now, updated_at=now, rolled_up=False,
                     stripe_snapshot=snapshot, snapshot_at=now if snapshot else None, **terms)).rowcount == 1
            if done:
                self._supersede_others(connection, session_id, subscription_id)
                self._event(connection, "session.saved", session_id)
        return done

    def record_sent_to_portal(self, session_id: int, subscription_id: str, reason: str | None, comment: str | None,
                              outcomes: tuple[str, ...] = ("open",)) -> bool:
        values = {"outcome": "sent_to_portal", "decided_at": utc_now(), "updated_at": utc_now(), "rolled_up": False}
        if reason:
            values.update(reason=reason, comment=comment, reason_at=utc_now())
        with self.engine.begin() as connection:
            done = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome.in_(outcomes)).values(**values)).rowcount == 1
            if done:
                self._supersede_others(connection, session_id, subscription_id)
        return done

    def record_reason_only(self, session_id: int, reason: str, comment: str | None) -> None:
        """The reason given on a form that then failed (e.g. Stripe unavailable): kept for the retry."""
        self._update(session_id, [sessions.c.outcome == "open"], reason=reason, comment=comment, reason_at=utc_now())

    def record_kept(self, session_id: int, subscription_id: str, snapshot: str | None = None) -> None:
        """A scheduled cancellation undone: a save (`saved_keep`) when nothing else was decided here."""
        now = utc_now()
        with self.engine.begin() as connection:
            connection.execute(sa.update(sessions).where(sessions.c.id == session_id).values(
                cancel_at_period_end=False, kept_at=now, updated_at=now, rolled_up=False,
                stripe_snapshot=snapshot, snapshot_at=now if snapshot else None))
            kept = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome.in_(("open", "sent_to_portal", "canceled", "deflected")),
            ).values(outcome="saved_keep", decided_at=now, canceled_at=None)).rowcount == 1
            if kept:
                self._supersede_others(connection, session_id, subscription_id)
                self._event(connection, "session.saved", session_id)

    def record_contact(self, session_id: int, subscription_id: str, offer_id: str) -> bool:
        now = utc_now()
        with self.engine.begin() as connection:
            done = connection.execute(sa.update(sessions).where(
                sessions.c.id == session_id, sessions.c.outcome == "open").values(
                outcome="contact_requested", chosen_offer=offer_id, offer_kind="contact", decided_at=now,
                updated_at=now, rolled_up=False)).rowcount == 1
            if done:
                self._supersede_others(connection, session_id, subscription_id)
                self._event(connection, "contact.requested", session_id)
        return done

    def newest_session_of(self, subscription_id: str) -> CancelSession | None:
        """The subscription's newest session (where a keep from the "changed your mind?" email is recorded)."""
        query = sa.select(sessions).where(sessions.c.subscription_id == subscription_id) \
            .order_by(sessions.c.id.desc()).limit(1)
        with self.engine.connect() as connection:
            return _as_session(connection.execute(query).first())

    def accepted_offer_since(self, customer_id: str, since: datetime) -> bool:
        query = sa.select(sa.literal(1)).where(
            sessions.c.customer_id == customer_id, sessions.c.outcome.in_(OFFER_OUTCOMES),
            sessions.c.decided_at >= since).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).first() is not None

    def latest_offer_save(self, subscription_id: str, other_than_nonce: str, since: datetime) -> CancelSession | None:
        """The subscription's newest offer accepted since `since` on another link, if any (and not canceled since)."""
        return _as_session(self._latest_offer_save.first(subscription=subscription_id, other_than_nonce=other_than_nonce,
                                                         since=since))

    def find_by_nonce(self, nonce: str) -> CancelSession | None:
        return self.find_session(nonce)

    # Stripe events ------------------------------------------------------------------------------
    def record_stripe_event(self, event_id: str, event_type: str, created: int, payload: str,
                            state: StripeState | None, invoice: dict | None = None) -> bool:
        """Store the event once and apply it, in one transaction; False for an event seen before."""
        with self.engine.begin() as connection:
            now = utc_now()
            # handled in this same transaction, so it is marked handled as it is stored
            inserted = connection.execute(self._store_event, {
                "id": event_id, "type": event_type, "created": created, "payload": payload,
                "received_at": now, "handled_at": now}).first()
            if inserted is None:
                return False
            decided = []
            if state is not None:
                decided = self._apply_state(connection, state)
                self._apply_outside(connection, state)
            if invoice is not None:
                self._apply_invoice(connection, invoice)
        for session_id, outcome, offer_id in decided:  # the same line and count as a decision the flow records
            DECISIONS.labels(outcome).inc()
            log_event("cancel_session.decided", session=session_id, outcome=outcome, offer=offer_id, by="stripe_event",
                      stripe_event=event_id)
        return True

    # Later states win over earlier ones at the same event second (paid after failed, void after open).
    _INVOICE_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}

    def _apply_invoice(self, connection, invoice: dict) -> None:
        """Keep our record of the invoice as its newest event tells it; events may arrive out of order.
        The first failure of a subscription invoice is a payment.failed event, its payment after a failure
        a payment.recovered one, written in the same transaction."""
        now = utc_now()
        who = {key: invoice.pop(key) for key in list(invoice) if key.startswith("_")}
        current = connection.execute(sa.select(invoices).where(invoices.c.id == invoice["id"])).first()
        failed_before = current is not None and current.first_failed_at is not None
        paid_before = current is not None and current.paid_at is not None
        if invoice["subscription_id"] and self.on_event is not None and hasattr(self.on_event, "payment"):
            failed_now = invoice["first_failed_at"] is not None
            paid_now = invoice["paid_at"] is not None or invoice["status"] == "paid"
            if failed_now and not failed_before and not paid_before:
                self.on_event.payment(connection, "payment.failed", {**invoice, **who})
            if paid_now and not paid_before and (failed_before or failed_now):
                self.on_event.payment(connection, "payment.recovered", {**invoice, **who})
        if current is None:
            connection.execute(sa.insert(invoices).values(**invoice, updated_at=now))
            return
        newer = (invoice["event_created"], self._INVOICE_RANK.get(invoice["status"], 0)) >= (
            current.event_created, self._INVOICE_RANK.get(current.status, 0))
        values = {"updated_at": now,
                  # the first failure and the payment are facts, whatever order their events come in
                  "first_failed_at": min(filter(None, [current.first_failed_at and as_utc(current.first_failed_at),
                                                       invoice["first_failed_at"]]), default=None),
                  "paid_at": current.paid_at or invoice["paid_at"], "voided_at": current.voided_at or invoice["voided_at"]}
        if newer:
            values.update({k: v for k, v in invoice.items() if k not in ("id", "first_failed_at", "paid_at", "voided_at")})
        connection.execute(sa.update(invoices).where(invoices.c.id == invoice["id"]).values(**values))

    def experiment_arm_of(self, subscription_id: str, experiment_id: str) -> str | None:
        """The arm this subscription already has in the experiment (from any of its links)."""
        query = sa.select(sessions.c.experiment_arm).where(
            sessions.c.subscription_id == subscription_id, sessions.c.experiment_id == experiment_id,
            sessions.c.experiment_arm.is_not(None)).order_by(sessions.c.id).limit(1)
        with self.engine.connect() as connection:
            return connection.execute(query).scalar()

    def reason_to_report(self, subscription_id: str) -> tuple[str, str | None] | None:
        """The reason a subscriber gave us before canceling this subscription, for Stripe's own records."""
        query = sa.select(sessions.c.reason, sessions.c.comment).where(
            sessions.c.subscription_id == subscription_id, sessions.c.outcome == "canceled",
            sessions.c.reason.is_not(None)).order_by(sessions.c.decided_at.desc()).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return (row.reason, row.comment) if row else None

    def invoices_of(self, subscription_id: str) -> list:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(invoices).where(invoices.c.subscription_id == subscription_id)
                                      .order_by(invoices.c.created)).all()

    def _apply_state(self, connection, state: StripeState) -> list[tuple[int, str, str | None]]:
        """Apply a subscription's state to its sessions; the saves it decided (session, outcome, offer).

        A save Stripe's event settles (the event came before the accept recorded it, or the worker applying it
        stopped) is decided here, with its session.saved event in this transaction; the accept's own record
        then finds it decided and adds nothing, so the event goes out once whichever path decides first."""
        decided = []
        for row in connection.execute(self._sessions_of_subscription, {"subscription": state.subscription_id}).all():
            if row.stripe_state_at is not None and row.stripe_state_at > state.version:
                continue  # an older event: never undo what a newer one said
            view = SessionView(row.outcome, as_utc(row.decided_at) if row.decided_at else None, row.claimed_offer,
                               row.offer_kind, row.had_discount, row.was_paused)
            changes = state_changes(view, state)
            connection.execute(sa.update(sessions).where(sessions.c.id == row.id).values(
                stripe_state_at=state.version, updated_at=utc_now(), rolled_up=False, snapshot_at=None, **changes))
            outcome = changes.get("outcome", row.outcome)
            if outcome.startswith("saved_") and row.outcome == "open":
                self._supersede_others(connection, row.id, state.subscription_id)
                self._event(connection, "session.saved", row.id)
                decided.append((row.id, outcome, changes.get("chosen_offer")))
            if outcome == "canceled" and row.outcome != "canceled":
                self._event(connection, "session.canceled", row.id)
        return decided

    def _apply_outside(self, connection, state: StripeState) -> None:
        """A cancellation that didn't go through our flow (Stripe's portal from elsewhere, the coach in Stripe, Stripe
        itself after failed payments or its test-mode clean-up) is kept with Stripe's cancellation_details, so the
        dashboard counts it; taken back, it is removed. Older events never undo newer ones."""
        current = connection.execute(sa.select(outside.c.event_created).where(
            outside.c.subscription_id == state.subscription_id)).first()
        if current is not None and current.event_created > state.event_created:
            return
        if state.stage == ACTIVE:
            if current is not None:
                connection.execute(sa.delete(outside).where(outside.c.subscription_id == state.subscription_id))
            return
        through_flow = connection.execute(sa.select(sa.literal(1)).where(
            sessions.c.subscription_id == state.subscription_id, sessions.c.outcome == "canceled",
            sessions.c.canceled_outside_flow.is_(False)).limit(1)).first() is not None
        if through_flow:
            if current is not None:
                connection.execute(sa.delete(outside).where(outside.c.subscription_id == state.subscription_id))
            return
        values = {"customer_id": (state.customer_id or "")[:255],
                  "canceled_at": state.cancel_requested_at or datetime.fromtimestamp(state.event_created, timezone.utc),
                  "ended": state.stage == ENDED, "feedback": state.feedback, "comment": state.comment,
                  "reason": state.reason, "monthly_amount": state.monthly_amount, "currency": state.currency,
                  "event_created": state.event_created}
        if current is None:
            connection.execute(sa.insert(outside).values(subscription_id=state.subscription_id, **values))
        else:
            connection.execute(sa.update(outside).where(outside.c.subscription_id == state.subscription_id).values(**values))

    def sweep_deflected(self) -> int:
        """Sessions left open, or sent to the portal, 24 h ago with no cancellation: deflected.
        One idempotent UPDATE, so two sweeps at once mark each session once."""
        now = utc_now()
        cutoff = now - DEFLECTION_DELAY
        statement = sa.update(sessions).where(
            sessions.c.canceled_at.is_(None),
            sa.or_(sa.and_(sessions.c.outcome.in_(("sent_to_portal", "contact_requested")), sessions.c.decided_at < cutoff),
                   sa.and_(sessions.c.outcome == "open", sessions.c.created_at < cutoff)),
        ).values(outcome="deflected", updated_at=now, rolled_up=False).returning(sessions.c.id)
        with self.engine.begin() as connection:
            marked = connection.execute(statement).scalars().all()
            for session_id in marked:
                self._event(connection, "session.deflected", session_id)
            return len(marked)
