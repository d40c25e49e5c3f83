"""A save sends its session.saved event exactly once, whichever path decides it first: the accept, Stripe's webhook,
or the reconcile after the worker applying it was killed. Counted by a real HTTP receiver of the outgoing webhooks."""

import json
import logging
import sqlite3
import threading
import time
from dataclasses import replace

import httpx
import pytest
import sqlalchemy as sa
import stripe

from cancel_flow.outbox import Dispatcher
from cancel_flow.outbox.endpoints import add_endpoint
from tests.conftest import WHSEC
from tests.helpers import Receiver, csrf_of, stopped_afterwards

HOOK_SECRET = "whsec_events_" + "e" * 24
# offer: (the reason it is shown for, the form's other fields, the outcome it records)
OFFERS = {"half-off-3-payments": ("too_expensive", {}, "saved_discount"), "pause": ("unused", {"payments": "2"}, "saved_pause")}


@pytest.fixture
def receiver(store):
    """A receiver of every outgoing event, as an integrator's endpoint."""
    with stopped_afterwards(Receiver) as start:
        made = start()
        add_endpoint(store.engine, made.url, [], source="cli", allow_private=True)
        yield made


def events(receiver: Receiver, event_type: str) -> list[dict]:
    bodies = [json.loads(request["body"]) for request in receiver.requests]
    return [body["data"] for body in bodies if body["type"] == event_type]


def deliver(settings, engine) -> None:
    dispatcher = Dispatcher(engine, replace(settings, allow_private_urls=True))
    try:
        dispatcher.run_due()
    finally:
        dispatcher.close()


def stripe_event(stripe_client, subscription_id: str, secret: str) -> tuple[str, dict]:
    """Stripe's customer.subscription.updated for the subscription as Stripe has it now, signed."""
    state = stripe_client.v1.subscriptions.retrieve(subscription_id).to_dict()
    payload = json.dumps({"id": f"evt_{subscription_id}_{time.monotonic_ns()}", "object": "event",
                          "type": "customer.subscription.updated", "created": int(time.time()),
                          "data": {"object": state}}, default=float)
    return payload, {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret),
                     "Content-Type": "application/json"}


def opened(client, catalogue, signer, reason: str):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = client.get(f"/cancel/{token}")
    csrf = csrf_of(page.text)
    assert client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf, "reason": reason}).status_code == 303
    return sub, f"/cancel/{token}", csrf, signer.read_cancel(token).nonce


class HeldRecord:
    """The accept's record of the save (its UPDATE that checks the claim) waits at the database until released, as
    it does when Stripe's webhook reaches another worker first. The event loop's quick connection answers "locked",
    as SQLite and PostgreSQL do there, so the record moves to the threads and waits there."""

    def __init__(self, app):
        self.reached, self.released = threading.Event(), threading.Event()
        sa.event.listen(app.state.quick_store.engine, "before_cursor_execute", self.on_quick)
        sa.event.listen(app.state.store.engine, "before_cursor_execute", self.on_pool)

    @staticmethod
    def is_record(statement: str, parameters) -> bool:
        return statement.lstrip().upper().startswith("UPDATE CANCEL_SESSION") and \
            "cancel_session.claimed_offer =" in statement and "saved_" in str(parameters)

    def on_quick(self, conn, cursor, statement, parameters, context, executemany):
        if not self.released.is_set() and self.is_record(statement, parameters):
            raise sa.exc.OperationalError(statement, parameters, Exception("database is locked"))

    def on_pool(self, conn, cursor, statement, parameters, context, executemany):
        if not self.released.is_set() and self.is_record(statement, parameters):
            self.reached.set()
            assert self.released.wait(30)


@pytest.mark.parametrize("offer", OFFERS)
def test_a_save_stripes_webhook_settles_first_sends_one_session_saved(make_client, catalogue, signer, stripe_client,
                                                                      store, settings, receiver, offer, caplog):
    accepting = make_client(stripe_webhook_secret=HOOK_SECRET)
    webhooks = make_client(stripe_webhook_secret=HOOK_SECRET)  # another worker, on the same database
    reason, fields, saved_as = OFFERS[offer]
    sub, url, csrf, nonce = opened(accepting, catalogue, signer, reason)
    held = HeldRecord(accepting.app)
    answers = []
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        accept = threading.Thread(target=lambda: answers.append(
            accepting.post(f"{url}/accept", data={"csrf_token": csrf, "offer": offer, **fields})))
        accept.start()
        assert held.reached.wait(20), "the accept never got to record the save"
        payload, headers = stripe_event(stripe_client, sub.id, HOOK_SECRET)  # Stripe applied it: its event comes first
        assert webhooks.post("/webhooks/stripe", content=payload, headers=headers).json()["duplicate"] is False
        assert store.find_session(nonce).outcome == saved_as
        held.released.set()
        accept.join(30)
    [answer] = answers
    assert answer.status_code == 303 and answer.headers["location"].endswith("/done")
    deliver(settings, store.engine)
    [saved] = events(receiver, "session.saved")
    assert saved["session"]["outcome"] == saved_as and saved["offer"]["id"] == offer
    assert saved["offer"]["terms"]  # the promise the subscriber was shown, written with the claim
    assert events(receiver, "session.canceled") == []
    decided = [record for record in caplog.records if record.getMessage() == "cancel_session.decided"]
    assert len(decided) == 1 and decided[0].fields["session"] == store.find_session(nonce).id
    assert accepting.get(f"{url}/done").status_code == 200
    deliver(settings, store.engine)
    assert len(events(receiver, "session.saved")) == 1


@pytest.mark.parametrize("offer", OFFERS)
def test_a_save_recorded_before_stripes_webhook_sends_one_session_saved(make_client, catalogue, signer, stripe_client,
                                                                        store, settings, receiver, offer):
    client = make_client(stripe_webhook_secret=HOOK_SECRET)
    reason, fields, saved_as = OFFERS[offer]
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason)
    assert client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": offer, **fields}).status_code == 303
    deliver(settings, store.engine)
    assert len(events(receiver, "session.saved")) == 1
    payload, headers = stripe_event(stripe_client, sub.id, HOOK_SECRET)  # then Stripe's event of the change
    assert client.post("/webhooks/stripe", content=payload, headers=headers).json()["duplicate"] is False
    assert client.post("/webhooks/stripe", content=payload, headers=headers).json()["duplicate"] is True
    deliver(settings, store.engine)
    [saved] = events(receiver, "session.saved")
    assert saved["offer"]["id"] == offer and saved["session"]["outcome"] == saved_as == store.find_session(nonce).outcome


class WriteLock:
    """Holds the database's lock on cancel sessions' writes from another connection, as a long transaction does."""

    def __init__(self, database_url: str):
        url = sa.engine.make_url(database_url)
        self.sqlite = url.get_backend_name() == "sqlite"
        if self.sqlite:
            self.connection = sqlite3.connect(url.database, timeout=10, isolation_level=None)
            self.connection.execute("BEGIN IMMEDIATE")
        else:
            self.engine = sa.create_engine(database_url)
            self.connection = self.engine.connect()
            self.connection.execute(sa.text("LOCK TABLE cancel_session IN SHARE MODE"))

    def writer_waiting(self, engine) -> bool:
        """Whether a session's UPDATE waits on this lock (PostgreSQL says; on SQLite the writer polls quietly)."""
        if self.sqlite:
            time.sleep(1.0)
            return True
        with engine.connect() as connection:
            return bool(connection.execute(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query ILIKE 'UPDATE cancel_session%'")).scalar())

    def release(self):
        if self.sqlite:
            self.connection.execute("ROLLBACK")
            self.connection.close()
        else:
            self.connection.rollback()
            self.connection.close()
            self.engine.dispose()


def wait_until(check, timeout: float = 20, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(every)
    return found


@pytest.mark.parametrize("first", ["reconcile", "webhook"])
def test_a_worker_killed_between_stripes_answer_and_the_record_sends_one_session_saved(
        serve, database_url, catalogue, signer, stripe_client, store, emulator, receiver, first):
    """Killed with Stripe's change applied and not recorded; then the next view of the link reconciles it with Stripe
    before Stripe's event of the change arrives, or the event arrives first."""
    private = {"CANCEL_FLOW_ALLOW_PRIVATE_URLS": "1"}
    worker = serve(env=private)
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    nonce = signer.read_cancel(token).nonce
    with httpx.Client(base_url=worker.url, timeout=30) as browser:
        csrf = csrf_of(browser.get(f"/cancel/{token}").text)
        assert browser.post(f"/cancel/{token}/reason", data={"csrf_token": csrf, "reason": "too_expensive"}).status_code == 303
    # Stripe takes a moment over the change, long enough to hold our database's write lock before it answers.
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "slow_seconds": 1.5,
                                             "count": 1}).raise_for_status()
    outcome = []

    def accept():
        try:
            with httpx.Client(base_url=worker.url, timeout=30) as browser:
                outcome.append(browser.post(f"/cancel/{token}/accept",
                                            data={"csrf_token": csrf, "offer": "half-off-3-payments"}).status_code)
        except httpx.HTTPError as error:
            outcome.append(type(error).__name__)

    thread = threading.Thread(target=accept)
    thread.start()
    wait_until(lambda: (session := store.find_session(nonce)) is not None and session.claimed_offer, every=0.01)
    lock = WriteLock(database_url)
    try:
        wait_until(lambda: stripe_client.v1.subscriptions.retrieve(sub.id).discounts)  # Stripe applied it
        wait_until(lambda: lock.writer_waiting(store.engine))  # and our worker waits to record it
        worker.process.kill()
        worker.process.wait(10)
    finally:
        lock.release()
    thread.join(30)
    assert outcome and outcome[0] != 303  # the subscriber's request died with the worker
    left = store.find_session(nonce)
    assert left.outcome == "open" and left.claimed_offer == "half-off-3-payments"

    restarted = serve(env=private)
    payload, headers = stripe_event(stripe_client, sub.id, WHSEC)
    with httpx.Client(base_url=restarted.url, timeout=30) as browser:
        for step in ([first] + [other for other in ("reconcile", "webhook") if other != first]):
            if step == "reconcile":
                assert "50% off" in browser.get(f"/cancel/{token}").text  # the view asks Stripe and records it
            else:
                assert browser.post("/webhooks/stripe", content=payload, headers=headers).json()["duplicate"] is False
            assert store.find_session(nonce).outcome == "saved_discount"
            wait_until(lambda: events(receiver, "session.saved"))  # serve's own dispatcher sends it
        time.sleep(2.5)  # two rounds of the dispatcher: anything more would have gone out
    [saved] = events(receiver, "session.saved")
    assert saved["session"]["outcome"] == "saved_discount" and saved["offer"]["id"] == "half-off-3-payments"
