"""Operations: health, readiness, request logs with ids, metrics, proxies, workers on PostgreSQL."""

import asyncio
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
import stripe
from freezegun import freeze_time

from cancel_flow.errors import CancelFlowError
from cancel_flow.logs import JsonLineFormatter
from cancel_flow.store import DATABASE_WAIT, Store, make_engine, wait_for_database
from bench.harness import wait_for
from tests.conftest import POSTGRES_URL, WHSEC, Served, free_port, on_postgres
from tests.helpers import csrf_of



def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


class TcpProxy:
    """A database the test owns, as far as the app can tell: stop it and the database is gone."""

    def __init__(self, target_port: int):
        self.port, self.target_port = free_port(), target_port
        self.loop = asyncio.new_event_loop()
        self.server = None
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    async def _pipe(self, reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader, writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.connections.append((writer, upstream_writer))
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    def start(self):
        self.connections = []

        async def begin():
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        asyncio.run_coroutine_threadsafe(begin(), self.loop).result(5)

    def stop(self):
        async def end():
            self.server.close()
            for a, b in self.connections:
                a.close()
                b.close()
            await self.server.wait_closed()
        asyncio.run_coroutine_threadsafe(end(), self.loop).result(5)


@on_postgres
def test_readyz_is_503_while_the_database_is_down_and_200_when_back(make_client, database_url):
    url = sa.engine.make_url(database_url)
    proxy = TcpProxy(url.port or 5432)
    proxy.start()
    client = make_client(database_url=url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
    assert client.get("/readyz").status_code == 200
    proxy.stop()
    down = client.get("/readyz")
    assert down.status_code == 503 and down.json()["database"] == "unreachable"
    proxy.start()
    assert client.get("/readyz").status_code == 200


def _logged(served: Served, event: str, timeout: float = 30) -> dict:
    """The first JSON line of that event the served process wrote (waiting for it up to `timeout` s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in list(served.lines):
            if line.startswith("{") and json.loads(line).get("event") == event:
                return json.loads(line)
        if served.process.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {event} line; the process wrote: {''.join(served.lines)[-2000:]}")


@on_postgres
def test_serve_waits_for_a_database_that_is_not_up_yet_then_migrates_and_serves(serve):
    """Containers start together: the database may not answer yet when `serve` starts."""
    import secrets as _secrets

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"cancel_flow_wait_{_secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name)
    proxy = TcpProxy(url.port or 5432)  # not listening yet: the database is still starting
    served = serve(database=url.set(host="127.0.0.1", port=proxy.port, password="pw-never-logged")
                   .render_as_string(hide_password=False), wait=False)
    try:
        waiting = _logged(served, "database.waiting")
        assert waiting["level"] == "warning" and "Connection refused" in waiting["reason"]
        assert waiting["database"] == f"postgresql+psycopg://{url.username}:***@127.0.0.1:{proxy.port}/{name}"
        assert 0 < waiting["gives_up_in_s"] <= DATABASE_WAIT
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{served.url}/healthz")  # nothing is served before the database answers
        proxy.start()
        assert _logged(served, "database.ready")["attempts"] >= 2
        wait_for(f"{served.url}/healthz", timeout=30)
        assert httpx.get(f"{served.url}/readyz").status_code == 200
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert len(connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()) == 1
        engine.dispose()
        assert "pw-never-logged" not in "".join(served.lines)
    finally:
        served.stop()
        proxy.stop()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_serve_stops_with_one_line_when_the_database_never_answers(caplog):
    port = free_port()
    engine = make_engine(f"postgresql+psycopg://cancel_flow:pw-never-logged@127.0.0.1:{port}/cancel_flow")
    with freeze_time("2026-11-24 10:00:00") as frozen, caplog.at_level(logging.INFO, logger="cancel_flow"):
        started = time.monotonic()
        with pytest.raises(CancelFlowError) as stopped:
            wait_for_database(engine, sleep=frozen.tick)
        waited = time.monotonic() - started
    engine.dispose()
    where = f"postgresql+psycopg://cancel_flow:***@127.0.0.1:{port}/cancel_flow"
    assert stopped.value.message.startswith(f"the database at {where} did not answer within {DATABASE_WAIT} s: ")
    assert "Connection refused" in stopped.value.message
    assert waited == DATABASE_WAIT  # bounded: it gives up when the time is up, not later
    waits = [record.fields for record in caplog.records if record.getMessage() == "database.waiting"]
    assert 5 < len(waits) < 30 and all(wait["database"] == where for wait in waits)
    assert [wait["attempt"] for wait in waits] == list(range(1, len(waits) + 1))
    assert max(wait["retry_in_s"] for wait in waits) <= 5  # a database that comes up is found within seconds
    assert "pw-never-logged" not in "".join(JsonLineFormatter().format(record) for record in caplog.records)


def test_readyz_names_the_database_and_the_configuration(client):
    assert client.get("/readyz").json() == {"status": "ok", "database": "ok", "config": "loaded"}


def _hold_the_write_lock(database_url: str):
    """Another connection that holds what every write needs; returns a function that lets go."""
    if database_url.startswith("sqlite"):
        import sqlite3

        holder = sqlite3.connect(sa.engine.make_url(database_url).database, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    else:
        engine = make_engine(database_url)
        holder = engine.connect()
        holder.execute(sa.text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))

    def release():
        if database_url.startswith("sqlite"):
            holder.execute("ROLLBACK")
        else:
            holder.rollback()
            engine.dispose()
        holder.close()
    return release


def test_readyz_is_503_while_another_connection_holds_the_write_lock(client, database_url):
    assert client.get("/readyz").status_code == 200
    release = _hold_the_write_lock(database_url)
    try:
        started = time.monotonic()
        locked = client.get("/readyz")
        assert time.monotonic() - started < 10
        assert locked.status_code == 503 and locked.json()["database"] == "locked"
        assert client.get("/healthz").status_code == 200
    finally:
        release()
    assert client.get("/readyz").status_code == 200


@on_postgres
def test_readyz_is_503_while_the_database_is_read_only(make_client, database_url):
    name = sa.engine.make_url(database_url).database
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'))
        read_only = make_client().get("/readyz")  # a new app: its connections start read-only
        assert read_only.status_code == 503 and read_only.json()["database"] == "read_only"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'ALTER DATABASE "{name}" RESET default_transaction_read_only'))
        admin.dispose()
    assert make_client().get("/readyz").status_code == 200


def test_every_request_is_one_json_line_with_an_echoed_request_id_and_no_token(client, catalogue, signer, caplog):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        given = client.get(f"/cancel/{token}", headers={"X-Request-ID": "req-from-proxy-1"})
        fresh = client.get("/healthz")
    assert given.headers["x-request-id"] == "req-from-proxy-1"
    assert len(fresh.headers["x-request-id"]) == 32
    lines = [json.loads(JsonLineFormatter().format(r)) for r in caplog.records if r.getMessage() == "http.request"]
    assert [line["route"] for line in lines] == ["/cancel/{token}", "/healthz"]
    assert lines[0]["request_id"] == "req-from-proxy-1" and lines[0]["status"] == 200 and lines[0]["method"] == "GET"
    assert lines[0]["duration_ms"] >= 0
    assert all(token not in JsonLineFormatter().format(r) for r in caplog.records)


def test_metrics_count_requests_decisions_and_stripe_calls(client, catalogue, signer):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = client.get(f"/cancel/{token}")
    client.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf_of(page.text)})
    text = client.get("/metrics").text
    assert 'cancel_flow_http_requests_total{method="GET",route="/cancel/{token}",status="200"}' in text
    assert 'cancel_flow_decisions_total{outcome="sent_to_portal"}' in text
    assert 'cancel_flow_stripe_calls_total{error="none",operation="billing_portal.session.create"}' in text
    assert "cancel_flow_http_request_duration_seconds_bucket" in text


def _json_lines(served: Served, event: str) -> list[dict]:
    found = []
    for line in served.lines:
        try:
            parsed = json.loads(line)
        except ValueError:
            continue
        if parsed.get("event") == event:
            found.append(parsed)
    return found


@pytest.mark.parametrize("trusted, expected", [("127.0.0.1", "203.0.113.9"), ("10.9.9.9", "127.0.0.1")])
def test_forwarded_headers_count_only_from_trusted_proxies(serve, trusted, expected):
    served = serve("--forwarded-allow-ips", trusted)
    httpx.get(f"{served.url}/healthz", headers={"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https",
                                                "X-Request-ID": "forwarded-probe"})
    deadline = time.monotonic() + 10
    while not (found := [x for x in _json_lines(served, "http.request") if x["request_id"] == "forwarded-probe"]):
        assert time.monotonic() < deadline, "no log line for the request"
        time.sleep(0.05)
    line = found[0]
    assert line["client"] == expected
    assert line["scheme"] == ("https" if expected != "127.0.0.1" else "http")


def test_sigterm_lets_in_flight_requests_finish(serve, catalogue, signer, emulator):
    served = serve()
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "hang_seconds": 2})
    result = {}
    worker = threading.Thread(target=lambda: result.setdefault("r", httpx.get(f"{served.url}/cancel/{token}", timeout=30)))
    worker.start()
    time.sleep(0.7)
    served.process.send_signal(signal.SIGTERM)
    worker.join(30)
    assert result["r"].status_code == 200 and "Continue to cancel" in result["r"].text
    # uvicorn finishes in-flight requests, then ends by the signal it was sent (or exit 0)
    assert served.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert not any("Traceback" in line for line in served.lines)


# --- several workers on PostgreSQL ---------------------------------------------------------------

def _page_and_reason(url: str, reason: str = "unused") -> str:
    with httpx.Client(timeout=30) as http:
        page = http.get(url)
        http.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
        return csrf_of(http.get(url).text)


@on_postgres
def test_fifty_simultaneous_accepts_on_one_link_apply_one_discount(serve, catalogue, signer, stripe_client, store):
    served = serve(workers=2)
    sub = catalogue.settled_subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"{served.url}/cancel/{token}"
    csrf = _page_and_reason(url)

    async def burst():
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*[http.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
                                          for _ in range(50)])

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [303] * 50
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert len(after.discounts) == 1
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1
    with store.engine.connect() as connection:
        decided = connection.execute(sa.text("SELECT outcome FROM cancel_session")).scalars().all()
    assert decided == ["saved_discount"]


COUPON = "cancel-flow_half-off-3-payments_50pct_3m"


def coupon_and_links(stripe_client, catalogue, signer, count: int, base: str = "") -> list[tuple[str, str]]:
    """The offer's coupon, and `count` subscriptions with a cancel link each: (subscription id, link)."""
    stripe_client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    links = []
    for _ in range(count):
        sub = catalogue.subscription()
        token, _ = signer.cancel_token(sub.customer, sub.id)
        links.append((sub.id, f"{base}/cancel/{token}"))
    return links


@on_postgres
def test_simultaneous_accepts_on_fifty_links_apply_fifty(serve, catalogue, signer, stripe_client, store):
    served = serve(workers=2)
    links = coupon_and_links(stripe_client, catalogue, signer, 50, served.url)
    with ThreadPoolExecutor(max_workers=10) as pool:
        tokens = list(pool.map(lambda link: _page_and_reason(link[1]), links))

    async def burst():
        async with httpx.AsyncClient(timeout=60) as http:
            return await asyncio.gather(*[http.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
                                          for (_, url), csrf in zip(links, tokens)])

    assert [r.status_code for r in asyncio.run(burst())] == [303] * 50
    assert all(len(stripe_client.v1.subscriptions.retrieve(sub_id).discounts) == 1 for sub_id, _ in links)
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 50
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM cancel_session WHERE outcome = 'saved_discount'")).scalar() == 50


@on_postgres
def test_one_event_delivered_to_two_workers_at_once_is_handled_once(serve, store, catalogue, signer):
    served = serve(workers=2)
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"{served.url}/cancel/{token}"
    with httpx.Client() as http:
        page = http.get(url)
        http.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text)})
    now = int(time.time())
    payload = json.dumps({"id": "evt_same_once", "object": "event", "type": "customer.subscription.updated", "created": now,
                          "data": {"object": {"id": sub.id, "object": "subscription", "status": "active",
                                              "cancel_at_period_end": True, "canceled_at": now,
                                              "cancellation_details": {"feedback": "unused", "reason": "cancellation_requested"}}}})
    header = stripe.WebhookSignature.generate_signature_header(payload, WHSEC)

    async def deliver():
        async with httpx.AsyncClient(timeout=30) as http:
            return await asyncio.gather(*[http.post(f"{served.url}/webhooks/stripe", content=payload,
                                                    headers={"Stripe-Signature": header}) for _ in range(20)])

    answers = asyncio.run(deliver())
    assert all(a.status_code == 200 for a in answers)
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 19
    with store.engine.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM stripe_event")).scalar() == 1
        assert connection.execute(sa.text("SELECT outcome FROM cancel_session")).scalar() == "canceled"


@on_postgres
def test_concurrent_sweeps_mark_each_session_once(store, history):
    from datetime import datetime, timedelta, timezone

    old = datetime.now(timezone.utc) - timedelta(days=2)
    for _ in range(40):
        history(old, "sent_to_portal", decided=old)
    with ThreadPoolExecutor(max_workers=4) as pool:
        marked = list(pool.map(lambda _: Store(make_engine(store.engine.url.render_as_string(hide_password=False))).sweep_deflected(), range(4)))
    assert sum(marked) == 40


@on_postgres
def test_metrics_add_up_across_workers(serve):
    served = serve(workers=2)

    def healthz_count(http) -> float:
        text = http.get(f"{served.url}/metrics").text
        return next(float(line.split()[-1]) for line in text.splitlines()
                    if line.startswith('cancel_flow_http_requests_total{method="GET",route="/healthz",status="200"}'))

    with httpx.Client() as http:
        before = healthz_count(http)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda _: httpx.get(f"{served.url}/healthz"), range(40)))
        assert healthz_count(http) - before == 40


@on_postgres
def test_replicas_starting_together_migrate_once(serve):
    import secrets as _secrets

    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    name = f"cancel_flow_replicas_{_secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        with ThreadPoolExecutor(max_workers=3) as pool:
            replicas = list(pool.map(lambda _: serve(database=url), range(3)))
        for replica in replicas:
            assert httpx.get(f"{replica.url}/readyz").status_code == 200
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            assert len(connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()) == 1
        engine.dispose()
    finally:
        for replica in replicas:
            replica.stop()
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_short_load_of_subscribers_against_two_workers(serve, catalogue, signer, stripe_client, database_url):
    """The short version of the load scenario that `make bench` runs at 200 subscribers over 60 s."""
    from bench.load import corrections, run_load, verify

    served = serve(workers=2)
    links = coupon_and_links(stripe_client, catalogue, signer, 24)
    result = asyncio.run(run_load(served.url, links, seconds=4))
    assert result.server_errors == 0, result.statuses
    assert set(result.actions.values()) == {"discount", "pause", "cancel"}
    replaced = corrections("".join(served.lines))
    assert verify(result, stripe_client, database_url, (COUPON, COUPON.replace("_3m", "_4m")), corrected=replaced) == []
