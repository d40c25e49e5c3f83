"""A slow or locked database holds only the requests that need it: /healthz and static files answer at
once, and a request that waits past the lock timeout gets the 503 page, not a hang."""

import threading
import time

import httpx
import sqlalchemy as sa

from cancel_flow.store import LOCK_TIMEOUT_MS, make_engine


def hold_lock(database_url: str, seconds: float, locked: threading.Event) -> threading.Thread:
    """Another connection takes the cancel_session table for `seconds` (PostgreSQL: an exclusive table
    lock; SQLite: the database's write lock, which is what a long write holds)."""
    def run():
        engine = make_engine(database_url)
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                connection.execute(sa.text("LOCK TABLE cancel_session IN ACCESS EXCLUSIVE MODE"))
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
                connection.execute(sa.text("UPDATE cancel_session SET updated_at = updated_at"))
            locked.set()
            time.sleep(seconds)
            connection.rollback()
        engine.dispose()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_locked_table_stalls_only_the_requests_that_need_it(live_server, settings, catalogue, signer):
    server = live_server()
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    locked = threading.Event()
    holder = hold_lock(settings.database_url, LOCK_TIMEOUT_MS / 1000 + 2, locked)
    assert locked.wait(10)
    results = {}

    def open_link():
        started = time.monotonic()
        response = httpx.get(f"{server.url}/cancel/{token}", timeout=60)
        results["link"] = (response.status_code, time.monotonic() - started, response.text)

    waiting = threading.Thread(target=open_link)
    waiting.start()
    time.sleep(0.5)  # the link's request is now waiting on the lock
    # pages that don't need the locked rows: health, static files, the coach's sign-in, the shared link
    for path in ("/healthz", "/static/app.css", "/dashboard/login", "/", "/healthz"):
        started = time.monotonic()
        assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 200
        assert time.monotonic() - started < 0.5, f"{path} waited on the locked table"
    waiting.join(60)
    holder.join(30)
    status, took, text = results["link"]
    # PostgreSQL: the read waits on the exclusive lock; SQLite: the read goes on (WAL), and the session's
    # insert waits on the write lock. Either way the lock timeout ends the wait with the 503 page.
    assert status == 503 and "try again" in text.lower()
    assert LOCK_TIMEOUT_MS / 1000 - 0.5 < took < LOCK_TIMEOUT_MS / 1000 + 3
