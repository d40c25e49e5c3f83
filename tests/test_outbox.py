"""The outbox against real local receivers: signed deliveries, retries, two workers, crashes, unsafe addresses."""

import asyncio
import http.server
import json
import secrets
import threading
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from standardwebhooks.webhooks import Webhook

from cancel_flow.errors import BadRequest
from cancel_flow.config.schema import Alerts
from cancel_flow.hooks import is_test_mode, session_data
from cancel_flow.models import CancelSession, OutboxDelivery, OutboxEvent, WebhookEndpoint
from cancel_flow.outbox import Dispatcher, dispatch_periodically, emit, enqueue_email
from cancel_flow.outbox.endpoints import add_endpoint
from cancel_flow.outbox.queue import claim
from cancel_flow.outbox.safe_http import DeliveryFailed, DeliveryRefused, post
from cancel_flow.settings import Settings
from cancel_flow.store import make_engine
from tests.conftest import SECRET, free_port
from tests.helpers import Receiver, stopped_afterwards

deliveries = OutboxDelivery.__table__


@pytest.fixture
def receivers():
    with stopped_afterwards(Receiver) as start:
        yield start


@pytest.fixture
def outbox_settings(database_url):
    return Settings(database_url=database_url, secret_key=SECRET, env="production", base_url="http://testserver",
                    stripe_api_key="sk_test_cancelflow", allow_private_urls=True)


@pytest.fixture
def engine(outbox_settings):
    engine = make_engine(outbox_settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def dispatchers(engine, outbox_settings):
    def make(**options) -> Dispatcher:
        settings = options.pop("settings", outbox_settings)
        return Dispatcher(engine, settings, notify_email=options.pop("notify_email", "coach@example.com"),
                          sender="coach@example.com", **options)

    with stopped_afterwards(make, stop=Dispatcher.close) as making:
        yield making


def a_session(engine, **changes):
    """A cancel session as the flow leaves it, read back from the database."""
    now = datetime.now(timezone.utc)
    row = dict(nonce=secrets.token_hex(8), customer_id="cus_Casey123", subscription_id="sub_Casey123",
               customer_email="casey@example.com", plan_name="Coaching Plan", price_amount=4900, interval="month",
               interval_count=1, monthly_amount=4900, currency="usd", reason="too_expensive",
               comment="Money is tight <this> quarter", outcome="canceled", created_at=now, updated_at=now)
    row.update(changes)
    sessions = CancelSession.__table__
    with engine.begin() as connection:
        session_id = connection.execute(sa.insert(sessions).values(row)).inserted_primary_key[0]
        return connection.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()


def emit_now(engine, event_type="session.canceled", alerts=None, **data_changes):
    session = a_session(engine)
    data = session_data(session, test_mode=True, customer_name="Casey Client", **data_changes)
    with engine.begin() as connection:
        return emit(connection, event_type, data, alerts)


def rows(engine, table=deliveries, *where):
    with engine.connect() as connection:
        return connection.execute(sa.select(table).where(*where).order_by(table.c.id if "id" in table.c else None)).all()


def test_each_event_arrives_signed_and_verifies_with_the_standard_webhooks_library(engine, receivers, dispatchers):
    receiver = receivers()
    endpoint = add_endpoint(engine, receiver.url + "/hooks", [], source="cli", allow_private=True)
    event_id = emit_now(engine)
    assert dispatchers().run_due() == 1
    [request] = receiver.requests
    assert request["path"] == "/hooks"
    assert request["headers"]["webhook-id"] == event_id
    assert request["headers"]["content-type"] == "application/json"
    payload = Webhook(endpoint.secret).verify(request["body"], request["headers"])
    assert payload["id"] == event_id and payload["type"] == "session.canceled"
    data = payload["data"]
    assert data["customer"] == {"id": "cus_Casey123", "email": "casey@example.com", "name": "Casey Client",
                                "stripe_url": "https://dashboard.stripe.com/test/customers/cus_Casey123"}
    assert (data["subscription"], data["plan"], data["monthly_amount"], data["currency"]) == \
        ("sub_Casey123", "Coaching Plan", 4900, "usd")
    assert data["monthly_amount_text"] == "$49.00"
    assert (data["reason"], data["comment"]) == ("too_expensive", "Money is tight <this> quarter")
    with pytest.raises(Exception):
        Webhook("whsec_" + "QUJD" * 8).verify(request["body"], request["headers"])
    [delivered] = rows(engine)
    assert (delivered.status, delivered.last_status_code, delivered.attempts) == ("delivered", 200, 1)
    assert not any(value in json.dumps(request["headers"]) for value in (endpoint.secret, SECRET, "sk_test_cancelflow"))
    assert dispatchers().run_due() == 0 and len(receiver.requests) == 1


def test_the_event_commits_with_the_change_or_not_at_all(engine, receivers, dispatchers):
    receiver = receivers()
    add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    session = a_session(engine)
    with pytest.raises(RuntimeError), engine.begin() as connection:
        emit(connection, "session.canceled", session_data(session, test_mode=True))
        raise RuntimeError("the change failed")
    assert rows(engine) == [] and rows(engine, OutboxEvent.__table__) == []
    assert dispatchers().run_due() == 0
    assert receiver.requests == []


def test_endpoints_get_only_the_events_they_asked_for_and_a_key_emits_once(engine, receivers, dispatchers):
    canceled, everything = receivers(), receivers()
    add_endpoint(engine, canceled.url, ["session.canceled"], source="api", allow_private=True)
    add_endpoint(engine, everything.url, [], source="cli", allow_private=True)
    session = a_session(engine)
    with engine.begin() as connection:
        emit(connection, "session.saved", session_data(session, test_mode=True))
        assert emit(connection, "session.canceled", session_data(session, test_mode=True), key="evt_stripe_1")
        assert emit(connection, "session.canceled", session_data(session, test_mode=True), key="evt_stripe_1") is None
    dispatchers().run_due()
    assert [json.loads(r["body"])["type"] for r in canceled.requests] == ["session.canceled"]
    assert sorted(json.loads(r["body"])["type"] for r in everything.requests) == ["session.canceled", "session.saved"]


def test_two_workers_deliver_every_event_once_and_never_the_same_one_at_the_same_time(engine, receivers, dispatchers):
    receiver = receivers(delay=0.05)
    add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    event_ids = [emit_now(engine) for _ in range(24)]
    workers = [dispatchers(worker="worker-a"), dispatchers(worker="worker-b")]
    errors = []

    def work(dispatcher):
        try:
            deadline = time.monotonic() + 60
            while len(receiver.requests) < len(event_ids) and time.monotonic() < deadline:
                dispatcher.run_due()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(worker,)) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(receiver.ids()) == sorted(event_ids)  # each exactly once
    assert receiver.most_in_flight_per_id == 1
    claimed_by = {row.claimed_by.split(":")[0] for row in rows(engine)}
    assert claimed_by == {"worker-a", "worker-b"}  # both took part
    assert {row.status for row in rows(engine)} == {"delivered"}


def test_a_crash_before_sending_or_before_recording_redelivers_with_the_same_webhook_id(engine, receivers, dispatchers):
    receiver = receivers()
    endpoint = add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    with freeze_time("2026-12-01 10:00:00") as frozen:
        first = emit_now(engine)
        crashed = dispatchers(worker="crashes")
        [claimed] = claim(engine, crashed.worker, 10)  # claimed, then the worker died before sending
        survivor = dispatchers(worker="survives")
        assert survivor.run_due() == 0  # the claim still holds: no double in flight
        frozen.tick(timedelta(minutes=3))
        assert survivor.run_due() == 1
        assert receiver.ids() == [first]

        second = emit_now(engine)
        [claimed] = claim(engine, crashed.worker, 10)
        assert crashed.deliver(claimed).ok  # sent; the worker died before recording it
        frozen.tick(timedelta(minutes=3))
        assert survivor.run_due() == 1
    assert receiver.ids() == [first, second, second]
    for request in receiver.requests[1:]:
        with freeze_time(request["at"]):
            assert Webhook(endpoint.secret).verify(request["body"], request["headers"])["id"] == second
    assert [row.status for row in rows(engine)] == ["delivered", "delivered"]


def test_failures_retry_with_exponential_back_off_for_three_days_then_the_endpoint_is_switched_off(
        engine, receivers, dispatchers, outbox_settings, inbox):
    from dataclasses import replace

    receiver = receivers(status=500)
    endpoint = add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    dispatcher = dispatchers(settings=replace(outbox_settings, smtp_url=inbox.url), notify_email="coach@example.com")
    start = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
    with freeze_time(start) as frozen:
        emit_now(engine)
        for _ in range(40):
            dispatcher.run_due()
            [row] = rows(engine, deliveries, deliveries.c.kind == "webhook")
            if row.status == "failed":
                break
            frozen.move_to(row.next_attempt_at)
        dispatcher.run_due()  # the coach's notice goes out through the outbox too
    times = [(request["at"] - start).total_seconds() for request in receiver.requests]
    gaps = [later - earlier for earlier, later in zip(times, times[1:])]
    assert gaps[:12] == [30, 60, 120, 240, 480, 960, 1920, 3840, 7680, 15360, 30720, 43200]
    assert times[-1] == 3 * 86400  # the last try exactly three days after the event
    assert all(gap <= 43200 for gap in gaps)
    assert row.status == "failed" and row.attempts == len(times) == 17 and row.last_status_code == 500
    [state] = rows(engine, WebhookEndpoint.__table__)
    assert not state.enabled and state.disabled_at is not None
    [notice] = inbox.messages
    assert notice["To"] == "coach@example.com"
    assert notice["Subject"] == "Webhook endpoint switched off after failing for 3 days"
    assert receiver.url in notice.get_body(("plain",)).get_content()
    with freeze_time(start + timedelta(days=4)):
        emit_now(engine)  # nothing more is written for a switched-off endpoint
    assert len(rows(engine, deliveries, deliveries.c.kind == "webhook")) == 1
    assert endpoint.id == state.id


def test_a_410_answer_unsubscribes_the_endpoint_as_zapier_asks(engine, receivers, dispatchers):
    receiver = receivers(status=410)
    add_endpoint(engine, receiver.url, [], source="api", allow_private=True)
    emit_now(engine)
    emit_now(engine)
    dispatchers(concurrency=1).run_due()
    assert len(receiver.requests) == 1
    assert [row.status for row in rows(engine)] == ["failed", "failed"]
    [state] = rows(engine, WebhookEndpoint.__table__)
    assert not state.enabled


def test_redirects_are_not_followed(engine, receivers, dispatchers):
    elsewhere = receivers()
    redirecting = receivers(status=307, answer_headers={"Location": elsewhere.url + "/stolen"})
    add_endpoint(engine, redirecting.url, [], source="cli", allow_private=True)
    emit_now(engine)
    dispatchers().run_due()
    assert len(redirecting.requests) == 1 and elsewhere.requests == []
    [row] = rows(engine)
    assert (row.status, row.last_status_code) == ("pending", 307)


def test_private_and_loopback_addresses_are_refused_without_the_setting(engine, receivers, dispatchers, outbox_settings):
    from dataclasses import replace

    receiver = receivers()
    port = receiver.server.server_address[1]
    for url in (f"http://127.0.0.1:{port}/", f"http://localhost:{port}/", "http://10.1.2.3/", "http://192.168.1.10/",
                "http://169.254.169.254/latest/meta-data", "http://[::1]/", f"http://[::ffff:127.0.0.1]:{port}/",
                "http://2130706433/", "http://0.0.0.0/", "http://100.64.0.1/", "http://[fe80::1]/"):
        with pytest.raises(BadRequest, match="private, loopback or link-local"):
            add_endpoint(engine, url, [], source="api", allow_private=False)
    for url in ("ftp://example.com/", "https://user:pw@example.com/", "file:///etc/passwd", "https:///nohost"):
        with pytest.raises(BadRequest):
            add_endpoint(engine, url, [], source="api", allow_private=False)
    # A name that passed when it was added but resolves to a loopback address when sending (DNS rebinding):
    # refused, and failed at once (no retry can change it) instead of retried for three days.
    add_endpoint(engine, f"http://localhost:{port}/", [], source="cli", allow_private=True)
    emit_now(engine)
    dispatchers(settings=replace(outbox_settings, allow_private_urls=False)).run_due()
    assert receiver.requests == []
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error.startswith("Refused: localhost is a private, loopback or link-local address")
    with pytest.raises(DeliveryRefused):
        post(f"http://localhost:{port}/", b"{}", {}, allow_private=False)


def test_a_slow_or_huge_answer_costs_bounded_time_and_bytes():
    class Slow(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(200)
            self.send_header("content-length", "1000000")
            self.end_headers()
            try:
                if self.path == "/huge":
                    self.wfile.write(b"x" * 1_000_000)
                else:
                    for _ in range(50):  # a trickle: one byte every 0.2 s
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.2)
            except OSError:
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        answer = post(url + "/huge", b"{}", {}, allow_private=True)
        assert answer.status == 200 and len(answer.body) == 4096
        began = time.monotonic()
        with pytest.raises(DeliveryFailed, match="no answer within 1 s"):
            post(url + "/trickle", b"{}", {}, allow_private=True, timeout=1)
        assert time.monotonic() - began < 2
    finally:
        server.shutdown()
        server.server_close()


def test_the_background_sender_delivers_within_seconds(engine, receivers, dispatchers):
    receiver = receivers()
    add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    dispatcher = dispatchers()

    async def scenario():
        sender = asyncio.create_task(dispatch_periodically(dispatcher, every=0.5))
        await asyncio.sleep(0.2)
        began = time.monotonic()
        event_id = await asyncio.to_thread(emit_now, engine)
        arrived = await asyncio.to_thread(receiver.arrived.wait, 10)
        elapsed = time.monotonic() - began
        sender.cancel()
        return event_id, arrived, elapsed

    event_id, arrived, elapsed = asyncio.run(scenario())
    assert arrived and receiver.ids() == [event_id]
    assert elapsed < 3


def test_two_hanging_receivers_hold_up_only_their_own_deliveries(engine, receivers, dispatchers):
    from cancel_flow.outbox.dispatcher import PER_ENDPOINT

    hanging = [receivers(delay=30), receivers(delay=30)]  # take the request, never answer in time
    healthy = receivers()
    ids = {add_endpoint(engine, receiver.url, [], source="cli", allow_private=True).id: receiver
           for receiver in (*hanging, healthy)}
    dispatcher = dispatchers(timeout=3)
    in_flight = Counter()  # the most deliveries in flight to each endpoint at once, as the outbox records them

    def sample():
        with engine.connect() as connection:
            for endpoint_id, count in connection.execute(
                    sa.select(deliveries.c.endpoint_id, sa.func.count()).where(deliveries.c.status == "delivering")
                    .group_by(deliveries.c.endpoint_id)):
                in_flight[endpoint_id] = max(in_flight[endpoint_id], count)

    async def scenario():
        sender = asyncio.create_task(dispatch_periodically(dispatcher, every=0.5))
        written = {}
        for _ in range(20):  # an event every 50 ms, each to all three receivers
            event_id = await asyncio.to_thread(emit_now, engine)
            written[event_id] = datetime.now(timezone.utc)
            await asyncio.to_thread(sample)
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + 15
        while len(healthy.requests) < len(written) and time.monotonic() < deadline:
            await asyncio.to_thread(sample)
            await asyncio.sleep(0.05)
        sender.cancel()
        return written

    written = asyncio.run(scenario())
    assert sorted(healthy.ids()) == sorted(written)
    waits = sorted((request["at"] - written[request["headers"]["webhook-id"]]).total_seconds()
                   for request in healthy.requests)
    assert waits[-1] <= 2, waits  # not one waited for a hanging receiver's 3-second timeout
    for endpoint_id, receiver in ids.items():
        if receiver is not healthy:  # the hanging ones: a few at once, the rest queued behind them
            assert in_flight[endpoint_id] == PER_ENDPOINT and receiver.began < len(written)


def test_slack_and_email_alerts_say_who_what_plan_reason_comment_and_link(engine, receivers, dispatchers,
                                                                          outbox_settings, inbox):
    from dataclasses import replace

    slack = receivers()
    alerts = Alerts(slack_webhook_url=slack.url + "/services/T000/B000/XXX", email="coach@example.com",
                    events=("session.canceled", "session.saved"))
    emit_now(engine, "session.canceled", alerts)
    emit_now(engine, "session.deflected", alerts)  # not in the alert events
    dispatchers(settings=replace(outbox_settings, smtp_url=inbox.url)).run_due()
    [request] = slack.requests
    assert request["path"] == "/services/T000/B000/XXX"
    message = json.loads(request["body"])
    assert message["text"] == "Casey Client (casey@example.com) canceled Coaching Plan"
    assert message["blocks"][0]["text"]["text"] == (
        "*Casey Client (casey@example.com) canceled Coaching Plan*\n"
        "Plan: Coaching Plan, $49.00 a month\n"
        "Reason: It's too expensive\n"
        "Comment: “Money is tight &lt;this&gt; quarter”\n"
        "Chose: Canceled\n"
        "<https://dashboard.stripe.com/test/customers/cus_Casey123|Open the customer in Stripe>")
    [mail] = inbox.messages
    assert mail["To"] == "coach@example.com" and mail["From"] == "coach@example.com"
    assert mail["Subject"] == "Casey Client (casey@example.com) canceled Coaching Plan"
    text = mail.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "Reason: It's too expensive\n" in text and "Comment: “Money is tight <this> quarter”" in text
    assert "\n\nOpen the customer in Stripe:\nhttps://dashboard.stripe.com/test/customers/cus_Casey123\n" in text
    assert "Money is tight &lt;this&gt; quarter" in mail.get_body(("html",)).get_content()
    assert {(row.kind, row.status) for row in rows(engine)} == {("slack", "delivered"), ("email", "delivered")}


LINE_BREAKS = "Casey\r\nBcc: intruder@example.com\nX-Injected: yes"


def test_line_breaks_in_a_customers_name_and_email_never_stop_or_bend_the_coachs_alert(engine, dispatchers,
                                                                                       outbox_settings, inbox):
    from dataclasses import replace

    alerts = Alerts(email="coach@example.com", events=("session.canceled",))
    session = a_session(engine, customer_email="casey@example.com\r\nBcc: intruder@example.com",
                        plan_name="Coaching\r\nPlan")
    with engine.begin() as connection:
        emit(connection, "session.canceled", session_data(session, test_mode=True, customer_name=LINE_BREAKS), alerts)
    dispatchers(settings=replace(outbox_settings, smtp_url=inbox.url)).run_due()
    [mail] = inbox.messages
    assert inbox.recipients == [["coach@example.com"]]
    assert mail["Subject"] == ("Casey Bcc: intruder@example.com X-Injected: yes (casey@example.com Bcc: "
                               "intruder@example.com) canceled Coaching Plan")
    assert mail["Bcc"] is None and mail["X-Injected"] is None and mail["To"] == "coach@example.com"
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("delivered", 1)


def test_an_email_to_no_usable_address_fails_at_once_with_the_reason(engine, dispatchers, outbox_settings, inbox):
    from dataclasses import replace

    with engine.begin() as connection:
        enqueue_email(connection, "\r\nBcc: intruder@example.com", "Hello", "text", "<p>html</p>")
    dispatchers(settings=replace(outbox_settings, smtp_url=inbox.url)).run_due()
    assert inbox.messages == []
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("failed", 1) and "is not an email address" in row.last_error


def test_a_saved_session_alert_names_the_offer_and_its_terms(engine, receivers, dispatchers):
    slack = receivers()
    alerts = Alerts(slack_webhook_url=slack.url, events=("session.saved",))
    session = a_session(engine, outcome="saved_discount", chosen_offer="half-off-3-payments", offer_kind="discount")
    data = session_data(session, test_mode=False, customer_name="Casey Client", offer_title="Stay for half price")
    data["offer"]["terms"] = "50% off your next 3 payments"
    with engine.begin() as connection:
        emit(connection, "session.saved", data, alerts)
    dispatchers().run_due()
    text = json.loads(slack.requests[0]["body"])["blocks"][0]["text"]["text"]
    assert text.startswith("*Casey Client (casey@example.com) stays on Coaching Plan*")
    assert "Chose: Accepted “Stay for half price”: 50% off your next 3 payments" in text
    assert "https://dashboard.stripe.com/customers/cus_Casey123|" in text  # live mode: no /test


def test_an_email_with_a_key_is_written_once_and_an_smtp_outage_delays_it(engine, dispatchers, outbox_settings, inbox):
    from dataclasses import replace

    with freeze_time("2026-12-01 10:00:00") as frozen:
        with engine.begin() as connection:
            assert enqueue_email(connection, "member@example.com", "Your payment failed", "text", "<p>html</p>",
                                 key="failed:in_1:day0")
            assert enqueue_email(connection, "member@example.com", "Your payment failed", "text", "<p>html</p>",
                                 key="failed:in_1:day0") is None
        dispatchers(settings=replace(outbox_settings, smtp_url=f"smtp://127.0.0.1:{free_port()}")).run_due()
        [row] = rows(engine)
        assert row.status == "pending" and row.last_error
        frozen.tick(timedelta(seconds=30))
        dispatchers(settings=replace(outbox_settings, smtp_url=inbox.url)).run_due()
    [mail] = inbox.messages
    assert mail["Subject"] == "Your payment failed"
    [row] = rows(engine)
    assert (row.status, row.attempts) == ("delivered", 2)


def test_test_and_live_keys_link_to_the_matching_stripe_dashboard():
    assert is_test_mode("sk_test_abc") and is_test_mode("rk_test_abc")
    assert not is_test_mode("sk_live_abc") and not is_test_mode("rk_live_abc") and not is_test_mode(None)


def test_payment_alerts_give_the_amount_and_why_it_failed():
    from cancel_flow.hooks import email_message, event_data, invoice_fields

    data = event_data(customer_id="cus_Casey123", test_mode=True, customer_email="casey@example.com",
                      customer_name="Casey Client", subscription_id="sub_Casey123", plan="Coaching Plan",
                      monthly_amount=4900, currency="usd",
                      invoice=invoice_fields("in_123", 4900, "usd", "Your card has insufficient funds."))
    failed = email_message("payment.failed", data)
    assert failed["subject"] == "Casey Client (casey@example.com): a payment of $49.00 for Coaching Plan failed"
    assert "Why: Your card has insufficient funds.\n" in failed["text"]
    data["invoice"]["failure_message"] = None
    assert email_message("payment.recovered", data)["subject"] == \
        "Casey Client (casey@example.com): the payment of $49.00 for Coaching Plan went through"
