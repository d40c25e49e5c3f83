"""/dashboard/stripe: "Set up Stripe" stores the webhook signing secret and the portal configuration in the database,
encrypted, and the running service verifies Stripe's webhooks with it at once; the environment still wins; the
check runs on demand; the signing secret rolls with both secrets accepted for 24 hours."""

import json
import secrets
import time
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
import stripe
from freezegun import freeze_time

from cancel_flow.models import AuditEntry, StripeConnectionValue, StripeEvent
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from cancel_flow.stripe_connection import Cipher, Created, keep_created, read_connection
from tests.helpers import csrf_of

PASSWORD = "correct horse battery"
OWNER = "owner@example.com"
# the test settings name the emulator's portal configurations, as the environment would: these tests read stored ones
STORED = {"stripe_portal_configuration": None, "stripe_billing_portal_configuration": None}


def sign_in(http, email=OWNER):
    page = http.get("/dashboard/login")
    assert http.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email,
                                               "password": PASSWORD}).status_code == 303


def press(http, action: str):
    page = http.get("/dashboard/stripe")
    return http.post(f"/dashboard/stripe/{action}", data={"csrf_token": csrf_of(page.text)})


def events_stored(engine) -> dict[str, str]:
    table = StripeEvent.__table__
    with engine.connect() as connection:
        return dict(connection.execute(sa.select(table.c.id, table.c.type)).all())


def wait_for(condition, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def signed(payload: str, secret: str) -> dict:
    return {"Stripe-Signature": stripe.WebhookSignature.generate_signature_header(payload, secret),
            "Content-Type": "application/json"}


def an_event(sub_id: str = "sub_forged") -> str:
    return json.dumps({"id": "evt_" + secrets.token_hex(8), "object": "event", "type": "customer.subscription.deleted",
                       "created": int(time.time()), "data": {"object": {"id": sub_id, "object": "subscription",
                                                                        "status": "canceled"}}})


@pytest.fixture
def owner(store):
    CoachStore(store.engine).add(OWNER, hash_password(PASSWORD), "owner")


def test_set_up_from_the_page_then_stripes_signed_webhooks_are_accepted_and_forged_ones_refused(
        live_server, settings, owner, store, catalogue, stripe_client, emulator):
    assert settings.stripe_webhook_secret is None  # nothing in the environment
    server = live_server(**STORED)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        sign_in(http)
        before = http.get("/dashboard/stripe").text
        assert "not set: webhooks from Stripe are refused" in before
        refused = http.post("/webhooks/stripe", content=an_event(), headers=signed(an_event(), "whsec_" + "x" * 32))
        assert refused.status_code == 401

        done = press(http, "setup")
        assert done.status_code == 200 and "Stored in the database, encrypted" in done.text
        assert "whsec_" not in done.text
        page = http.get("/dashboard/stripe").text
        assert "set, stored in the database (encrypted)" in page and "whsec_" not in page
        [endpoint] = stripe_client.v1.webhook_endpoints.list().data
        assert endpoint.url == f"{server.url}/webhooks/stripe" and endpoint.id in page

        # a real event: Stripe (the emulator) signs it with the endpoint's secret; the service accepts and stores it
        sub = catalogue.subscription()
        stripe_client.v1.subscriptions.cancel(sub.id)
        wait_for(lambda: "customer.subscription.deleted" in events_stored(store.engine).values())
        deliveries = emulator.get("/_emulator/deliveries").json()
        assert deliveries and all(attempt["status"] == 200 for attempt in deliveries)

        forged = an_event(sub.id)
        answer = http.post("/webhooks/stripe", content=forged, headers=signed(forged, "whsec_" + "f" * 32))
        assert answer.status_code == 401
        assert json.loads(forged)["id"] not in events_stored(store.engine)

    with store.engine.connect() as connection:
        stored = dict(connection.execute(sa.select(StripeConnectionValue.__table__.c.name,
                                                   StripeConnectionValue.__table__.c.value)).all())
    assert set(stored) == {"webhook_secret", "webhook_endpoint", "portal_configuration", "billing_portal_configuration"}
    assert not any("whsec_" in value or "bpc_" in value or "we_" in value for value in stored.values())
    secret = Cipher(settings.secret_key).decrypt(stored["webhook_secret"])
    assert secret.startswith("whsec_") and Cipher("another-secret-key-0123456789").decrypt(stored["webhook_secret"]) is None
    with store.engine.connect() as connection:
        [(actor, detail)] = connection.execute(sa.select(AuditEntry.__table__.c.actor, AuditEntry.__table__.c.detail)
                                               .where(AuditEntry.__table__.c.action == "stripe.setup")).all()
    assert actor == OWNER and endpoint.id in detail and secret not in detail


def test_the_stored_portal_configuration_is_used_for_the_cancel_portal(make_client, owner, store, catalogue, signer):
    client = make_client(**STORED)
    assert client.portal.call(client.app.state.gateway.portal_configuration) is None
    sign_in(client)
    assert press(client, "setup").status_code == 200
    configuration = read_connection(store.engine, client.app.state.settings).portal_configuration
    assert configuration.startswith("bpc_")
    assert client.portal.call(client.app.state.gateway.portal_configuration) == configuration  # no restart
    billing = read_connection(store.engine, client.app.state.settings).billing_portal_configuration
    assert billing.startswith("bpc_") and billing != configuration
    assert client.portal.call(client.app.state.gateway.portal_configuration, True) == billing
    page = client.get("/dashboard/stripe").text
    assert f"{configuration}, stored in the database" in page and f"{billing}, stored in the database" in page
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = client.get(f"/cancel/{token}")
    assert client.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    env = make_client(**{**STORED, "stripe_portal_configuration": "bpc_from_env"})
    assert env.portal.call(env.app.state.gateway.portal_configuration) == "bpc_from_env"


def test_the_environment_wins_and_the_page_says_which_source_is_in_use(make_client, owner, store):
    env_secret = "whsec_env_" + "e" * 32
    client = make_client(stripe_webhook_secret=env_secret, stripe_portal_configuration="bpc_from_env")
    sign_in(client)
    assert press(client, "setup").status_code == 200
    page = client.get("/dashboard/stripe").text
    assert "set, from the environment" in page and "bpc_from_env, from the environment" in page
    assert "STRIPE_WEBHOOK_SECRET is set in the environment and wins" in press(client, "setup").text
    stored_secret = read_connection(store.engine, replace(client.app.state.settings, stripe_webhook_secret=None))
    assert stored_secret.webhook_secret_source == "database"
    payload = an_event()
    assert client.post("/webhooks/stripe", content=payload, headers=signed(payload, env_secret)).status_code == 200
    payload = an_event()
    refused = client.post("/webhooks/stripe", content=payload, headers=signed(payload, stored_secret.webhook_secrets[0]))
    assert refused.status_code == 401
    rolled = press(client, "roll")
    assert rolled.status_code == 409 and "STRIPE_WEBHOOK_SECRET is set in the environment" in rolled.text


def test_a_secret_another_worker_stored_works_without_a_restart(make_client, settings, store):
    worker = make_client()
    payload = an_event()
    assert worker.post("/webhooks/stripe", content=payload, headers=signed(payload, "whsec_" + "n" * 32)).status_code == 401
    secret = "whsec_" + "w" * 32
    keep_created(settings, Created(webhook_endpoint="we_elsewhere", webhook_secret=secret), engine=store.engine,
                 actor="elsewhere@example.com")
    with freeze_time(tick=True) as frozen:
        frozen.tick(timedelta(seconds=2))  # the worker's copy is older than a second: a refusal reads again
        payload = an_event()
        assert worker.post("/webhooks/stripe", content=payload, headers=signed(payload, secret)).status_code == 200


def test_stored_values_that_another_secret_key_encrypted_are_not_used_and_the_page_says_so(make_client, owner, store,
                                                                                          settings):
    keep_created(replace(settings, secret_key="an-earlier-secret-key-0123456789"),
                 Created(portal_configuration="bpc_old", webhook_endpoint="we_old", webhook_secret="whsec_" + "o" * 32),
                 engine=store.engine, actor="x@example.com")
    client = make_client()
    sign_in(client)
    page = client.get("/dashboard/stripe").text
    assert "can't be read with the current" in page and "not set: webhooks from Stripe are refused" in page
    payload = an_event()
    assert client.post("/webhooks/stripe", content=payload, headers=signed(payload, "whsec_" + "o" * 32)).status_code == 401


def test_the_check_runs_on_demand_and_the_page_shows_its_lines_and_when(make_client, owner, store):
    client = make_client(**STORED)
    client.app.state.stripe_check_timeouts = {"events_timeout": 2, "delivery_timeout": 1}
    sign_in(client)
    assert "Not run yet." in client.get("/dashboard/stripe").text
    press(client, "setup")
    started = press(client, "check")
    assert started.status_code == 303 and started.headers["location"] == "/dashboard/stripe?done=running#check"
    page = client.get("/dashboard/stripe").text
    assert "Last run" in page and f"by {OWNER}" in page and "Check again" in page
    assert 'class="check-pass"><strong class="check-status">PASS</strong> API key' in page
    assert "PASS</strong> webhook secret: the webhook signing secret is set." in page
    # the service at http://testserver can't be reached by Stripe here: that line fails, with its fix
    assert "FAIL</strong> webhook delivery" in page and "To fix:" in page
    assert "FAILED</strong> summary" in page


def test_rolling_the_secret_accepts_both_for_24_hours_then_deletes_the_old_endpoint(make_client, owner, store,
                                                                                    stripe_client, settings):
    client = make_client()
    sign_in(client)
    press(client, "setup")
    first = read_connection(store.engine, settings)
    [old_endpoint] = stripe_client.v1.webhook_endpoints.list().data
    with freeze_time(tick=True) as frozen:
        rolled = press(client, "roll")
        assert rolled.status_code == 200 and "keeps working with its secret until" in rolled.text
        assert "whsec_" not in rolled.text
        now = read_connection(store.engine, settings)
        assert len(now.webhook_secrets) == 2 and now.webhook_secrets[1] == first.webhook_secrets[0]
        assert now.previous_endpoint == old_endpoint.id and now.webhook_endpoint != old_endpoint.id
        assert {e.id for e in stripe_client.v1.webhook_endpoints.list().data} == {old_endpoint.id, now.webhook_endpoint}
        assert "A roll is under way." in client.get("/dashboard/stripe").text
        assert press(client, "roll").status_code == 409

        payload = an_event("sub_rolled")
        for secret in now.webhook_secrets:  # Stripe sends the event to both endpoints: each verifies, one is kept
            assert client.post("/webhooks/stripe", content=payload, headers=signed(payload, secret)).status_code == 200
        assert list(events_stored(store.engine)) == [json.loads(payload)["id"]]

        frozen.tick(timedelta(hours=23, minutes=59))
        sign_in(client)  # a session lasts 12 hours
        assert client.get("/dashboard/stripe").status_code == 200
        assert old_endpoint.id in {e.id for e in stripe_client.v1.webhook_endpoints.list().data}
        frozen.tick(timedelta(minutes=2))
        client.app.state.stripe_connection.forget()
        payload = an_event()
        assert client.post("/webhooks/stripe", content=payload, headers=signed(payload, first.webhook_secrets[0])).status_code == 401
        assert client.get("/dashboard/stripe").status_code == 200  # the page (and the periodic sweep) finish the roll
        assert [e.id for e in stripe_client.v1.webhook_endpoints.list().data] == [now.webhook_endpoint]
        assert read_connection(store.engine, settings).previous_endpoint is None
    with store.engine.connect() as connection:
        actions = [row[0] for row in connection.execute(sa.select(AuditEntry.__table__.c.action)
                                                        .order_by(AuditEntry.__table__.c.id))]
    assert actions == ["stripe.setup", "stripe.secret_rolled", "stripe.old_endpoint_deleted"]
