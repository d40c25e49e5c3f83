import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cancel_flow.models import SQLModel
from cancel_flow.store import make_engine, migrate


def test_migrations_build_exactly_the_models(database_url):
    engine = make_engine(database_url)
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


def test_migrating_twice_changes_nothing(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
    assert {"cancel_session", "stripe_event", "alembic_version"} <= tables
    engine.dispose()


def test_migrate_command_builds_a_new_database(tmp_path, monkeypatch):
    from cancel_flow.cli import main

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    try:
        main(["migrate"])
    except SystemExit as done:
        assert done.code == 0
    engine = make_engine(url)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    engine.dispose()


def _scratch_database(tmp_path):
    """A database of its own (SQLite file, or a new PostgreSQL database when the suite runs on PostgreSQL)."""
    import secrets

    from tests.conftest import POSTGRES_URL

    if not POSTGRES_URL:
        return f"sqlite:///{tmp_path / 'scratch.db'}", lambda: None
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"cancel_flow_scratch_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))

    def drop():
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False), drop


def test_the_attention_revision_fills_in_when_earlier_offers_end(tmp_path):
    """Sessions saved before the revision get their offer's end: a pause when it resumes, free time when the
    first payment falls due, a discount its coupon's months after the decision (month ends kept)."""
    from datetime import datetime, timezone

    from alembic import command

    from cancel_flow.store import alembic_config

    url, drop = _scratch_database(tmp_path)
    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(engine), "0010")
        decided = datetime(2026, 11, 30, 10, tzinfo=timezone.utc)
        resumes = datetime(2027, 1, 1, tzinfo=timezone.utc)
        base = dict(customer_id="cus_1", subscription_id="sub_1", plan_name="Coaching", price_amount=4900, interval="month",
                    interval_count=1, monthly_amount=4900, currency="usd", had_discount=False, was_paused=False,
                    cancel_at_period_end=False, created_at=decided, updated_at=decided, decided_at=decided, rolled_up=False,
                    canceled_outside_flow=False, claim_attempt=0, superseded=False, pause_resumes_at=None,
                    next_payment_at=None, discount_months=None)
        with engine.begin() as connection:
            table = sa.table("cancel_session", *[sa.column(name) for name in [*base, "nonce", "outcome"]])
            connection.execute(sa.insert(table), [
                {**base, "nonce": "a", "outcome": "saved_pause", "pause_resumes_at": resumes},
                {**base, "nonce": "b", "outcome": "saved_free_period", "next_payment_at": resumes},
                {**base, "nonce": "c", "outcome": "saved_discount", "discount_months": 3},
                {**base, "nonce": "d", "outcome": "canceled"},
            ])
        migrate(engine)
        with engine.connect() as connection:
            ends = dict(connection.execute(sa.text("SELECT nonce, offer_ends_at FROM cancel_session")).all())
        as_text = {nonce: None if end is None else str(end)[:19].replace("T", " ") for nonce, end in ends.items()}
        assert as_text == {"a": "2027-01-01 00:00:00", "b": "2027-01-01 00:00:00", "c": "2027-02-28 10:00:00", "d": None}
    finally:
        engine.dispose()
        drop()
