"""A first view's session insert on the quick store (the event loop's, which gives up at once on a lock): refused
while another writer holds the table, applying nothing, and the next one afterwards is inserted and committed,
on a connection left with nothing open."""

import threading
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa

from cancel_flow.store import Store, make_engine, make_quick_engine
from tests.test_database_stalls import hold_lock


def _values(nonce: str) -> dict:
    return {"nonce": nonce, "customer_id": "cus_insert", "subscription_id": "sub_insert", "customer_email": "a@example.com",
            "plan_name": "Coaching", "price_amount": 4900, "price_note": None, "interval": "month", "interval_count": 1,
            "monthly_amount": 4900, "currency": "usd", "had_discount": False, "was_paused": False,
            "cancel_at_period_end": False, "period_end": datetime(2027, 1, 1, tzinfo=timezone.utc), "stripe_snapshot": "{}"}


def _nonces(engine) -> list[str]:
    with engine.connect() as connection:
        return list(connection.execute(sa.text("SELECT nonce FROM cancel_session WHERE customer_id = 'cus_insert' "
                                               "ORDER BY nonce")).scalars())


def test_an_insert_refused_under_a_lock_applies_nothing_and_the_next_one_commits(settings, store):
    quick_engine = make_quick_engine(settings.database_url)
    quick = Store(quick_engine)
    try:
        first = quick.open_session(_values("nonce-before-the-lock"))
        assert first.id and _nonces(store.engine) == ["nonce-before-the-lock"]
        locked = threading.Event()
        holder = hold_lock(settings.database_url, 2, locked)
        assert locked.wait(10)
        with pytest.raises(sa.exc.OperationalError):
            quick.open_session(_values("nonce-under-the-lock"))
        holder.join(30)
        assert _nonces(store.engine) == ["nonce-before-the-lock"]
        # another writer commits meanwhile: a connection still inside the refused insert's transaction would read
        # the database as it was, and could never write again
        store.open_session(_values("nonce-by-another-writer"))
        after = quick.open_session(_values("nonce-after-the-lock"))
        assert after.id != first.id
        # committed: another connection sees it, and the insert's connection holds no transaction (on SQLite a
        # transaction left open would keep the write lock and stop this other writer)
        other = make_engine(settings.database_url)
        try:
            with other.begin() as connection:
                connection.execute(sa.text("UPDATE cancel_session SET updated_at = updated_at WHERE customer_id = 'cus_insert'"))
        finally:
            other.dispose()
        assert _nonces(store.engine) == ["nonce-after-the-lock", "nonce-before-the-lock", "nonce-by-another-writer"]
        # the same link inserted again: the session the first insert made
        assert quick.open_session(_values("nonce-after-the-lock")).id == after.id
    finally:
        quick_engine.dispose()
