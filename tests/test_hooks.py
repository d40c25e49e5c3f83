"""Webhook endpoints as Zapier, Make and the coach manage them: REST hooks, the CLI, the deliveries page, [alerts]."""

import argparse
import json
import re
import secrets

import pytest
from standardwebhooks.webhooks import Webhook

from cancel_flow.config.validate import validate_alerts
from cancel_flow.errors import InvalidConfig
from cancel_flow.hooks import EVENTS, sample_event, session_data
from cancel_flow.outbox import Dispatcher, emit
from cancel_flow.outbox.endpoints import add_endpoint
from cancel_flow.passwords import hash_password
from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.coaches import CoachStore
from tests.conftest import ROOT
from tests.helpers import csrf_of
from tests.test_outbox import a_session, receivers  # noqa: F401  (fixture)

PASSWORD = "correct horse battery"


@pytest.fixture
def hooks_client(make_client):
    return make_client(allow_private_urls=True)


@pytest.fixture
def api_key(store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("zapier", key)
    return key


def deliver(client) -> int:
    dispatcher = Dispatcher(client.app.state.store.engine, client.app.state.settings)
    try:
        return dispatcher.run_due()
    finally:
        dispatcher.close()


def emit_for(client, event_type: str) -> str:
    engine = client.app.state.store.engine
    session = a_session(engine)
    with engine.begin() as connection:
        return emit(connection, event_type, session_data(session, test_mode=True, customer_name="Casey Client"))


def test_zapier_subscribes_gets_signed_events_and_unsubscribes(hooks_client, api_key, receivers):
    receiver = receivers()
    auth = {"Authorization": f"Bearer {api_key}"}
    subscribed = hooks_client.post("/api/hooks", headers=auth, json={
        "target_url": receiver.url + "/hooks/catch/123/abc/", "event": "session.canceled"})
    assert subscribed.status_code == 201
    hook = subscribed.json()
    assert set(hook) == {"id", "secret"} and hook["secret"].startswith("whsec_")
    emit_for(hooks_client, "session.saved")
    canceled = emit_for(hooks_client, "session.canceled")
    deliver(hooks_client)
    [request] = receiver.requests
    assert request["path"] == "/hooks/catch/123/abc/"
    payload = Webhook(hook["secret"]).verify(request["body"], request["headers"])
    assert payload["id"] == canceled and payload["type"] == "session.canceled"

    assert hooks_client.delete(f"/api/hooks/{hook['id']}", headers=auth).status_code == 204
    assert hooks_client.delete(f"/api/hooks/{hook['id']}", headers=auth).status_code == 404
    emit_for(hooks_client, "session.canceled")
    deliver(hooks_client)
    assert len(receiver.requests) == 1


def test_rest_hooks_need_a_key_and_a_body_they_can_use(make_client, api_key, receivers):
    client = make_client()  # private addresses not allowed
    for method, path in (("post", "/api/hooks"), ("get", "/api/hooks/sample?event=session.saved"),
                         ("delete", "/api/hooks/ep_0123456789abcdef")):
        response = getattr(client, method)(path, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    auth = {"Authorization": f"Bearer {api_key}"}
    receiver = receivers()
    bad_bodies = [
        (b"not json", "not valid JSON"),
        (b"[]", "JSON object"),
        (json.dumps({"target_url": "https://hooks.example.com/x", "event": "session.canceled", "x": 1}).encode(), "Unknown field 'x'"),
        (json.dumps({"target_url": "https://hooks.example.com/x"}).encode(), "'event' is required"),
        (json.dumps({"target_url": "https://hooks.example.com/x", "event": "session.exploded"}).encode(), "'event' must be one of"),
        (json.dumps({"target_url": "ftp://hooks.example.com/x", "event": "session.saved"}).encode(), "https://"),
        (json.dumps({"target_url": 42, "event": "session.saved"}).encode(), "'target_url' must be the URL"),
        (json.dumps({"target_url": receiver.url, "event": "session.saved"}).encode(), "private, loopback or link-local"),
        (json.dumps({"target_url": "http://169.254.169.254/latest", "event": "session.saved"}).encode(), "private"),
    ]
    for body, message in bad_bodies:
        response = client.post("/api/hooks", headers={**auth, "content-type": "application/json"}, content=body)
        assert response.status_code == 422, body
        assert message in response.json()["error"]["message"], body
    assert client.get("/api/hooks/sample?event=nope", headers=auth).status_code == 422
    assert client.get("/api/hooks/sample", headers=auth).status_code == 422
    assert client.delete("/api/hooks/" + "x" * 40, headers=auth).status_code == 422
    assert client.delete("/api/hooks/ep_0000000000000000", headers=auth).status_code == 404


def test_samples_are_lists_of_one_event_shaped_like_real_deliveries(hooks_client, api_key, store):
    auth = {"Authorization": f"Bearer {api_key}"}
    real = session_data(a_session(store.engine), test_mode=True, customer_name="Casey Client")
    for event_type in EVENTS:
        response = hooks_client.get(f"/api/hooks/sample?event={event_type}", headers=auth)
        assert response.status_code == 200
        [sample] = response.json()
        assert sample["type"] == event_type and set(sample) == {"id", "type", "timestamp", "data"}
        assert set(sample["data"]["customer"]) == {"id", "email", "name", "stripe_url"}
        if event_type.startswith(("session.", "contact.")):
            assert set(sample["data"]) == set(real)
        assert sample == sample_event(event_type)


def run_webhook_cli(args: list[str]) -> int:
    from cancel_flow import cli, hooks_cli

    parser = cli.build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    if "webhook" not in commands.choices:
        hooks_cli.register(commands)
    parsed = parser.parse_args(args)
    return parsed.handler(parsed)


def test_webhook_command_adds_lists_delivers_and_removes(monkeypatch, database_url, capsys, receivers, store):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    monkeypatch.setenv("CANCEL_FLOW_OFFERS", str(ROOT / "offers.toml"))
    receiver = receivers()
    assert run_webhook_cli(["webhook", "add", receiver.url]) == 1
    assert "private, loopback or link-local" in capsys.readouterr().err
    monkeypatch.setenv("CANCEL_FLOW_ALLOW_PRIVATE_URLS", "1")
    assert run_webhook_cli(["webhook", "add", receiver.url + "/in", "--events", "session.canceled,contact.requested"]) == 0
    out = capsys.readouterr().out
    endpoint_id = re.search(r"Endpoint (ep_\w+) added for session.canceled, contact.requested", out).group(1)
    secret = re.search(r"(whsec_\S+)", out).group(1)
    assert run_webhook_cli(["webhook", "add", receiver.url, "--events", "session.cancelled"]) == 1
    assert "Unknown event 'session.cancelled'" in capsys.readouterr().err
    assert run_webhook_cli(["webhook", "list"]) == 0
    listed = capsys.readouterr().out
    assert f"{endpoint_id}\t{receiver.url}/in\tsession.canceled,contact.requested\tenabled\tcli" in listed
    assert secret not in listed

    session = a_session(store.engine)
    with store.engine.begin() as connection:
        event_id = emit(connection, "contact.requested", session_data(session, test_mode=True))
    assert run_webhook_cli(["webhook", "deliver"]) == 0
    assert "1 delivery attempt(s) made." in capsys.readouterr().out
    [request] = receiver.requests
    assert Webhook(secret).verify(request["body"], request["headers"])["id"] == event_id

    assert run_webhook_cli(["webhook", "remove", endpoint_id]) == 0
    assert run_webhook_cli(["webhook", "remove", endpoint_id]) == 1
    assert "no webhook endpoint with id" in capsys.readouterr().err


def sign_in(client):
    CoachStore(client.app.state.store.engine).add("coach@example.com", hash_password(PASSWORD))
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": "coach@example.com",
                                                 "password": PASSWORD})


def test_deliveries_page_shows_status_answer_and_attempts_and_resends(hooks_client, api_key, receivers):
    assert hooks_client.get("/dashboard/deliveries").headers["location"] == "/dashboard/login"
    receiver = receivers(status=500)
    auth = {"Authorization": f"Bearer {api_key}"}
    hook = hooks_client.post("/api/hooks", headers=auth, json={"target_url": receiver.url, "event": "session.canceled"}).json()
    event_id = emit_for(hooks_client, "session.canceled")
    deliver(hooks_client)
    assert sign_in(hooks_client).status_code == 303
    page = hooks_client.get("/dashboard/deliveries")
    assert page.status_code == 200
    row = re.search(r'<tr data-delivery="(\d+)">(.*?)</tr>', page.text, re.S)
    delivery_id, cells = row.group(1), re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(2)))
    assert "session.canceled" in cells and event_id in cells and "Waiting to retry" in cells
    assert " 500 " in cells and "HTTP 500: ok" in cells and cells.strip().endswith("1 Resend")
    assert hook["id"] in page.text and "Failing since" in page.text

    assert hooks_client.post(f"/dashboard/deliveries/{delivery_id}/resend", data={}).status_code == 400
    receiver.status = 200
    resent = hooks_client.post(f"/dashboard/deliveries/{delivery_id}/resend", data={"csrf_token": csrf_of(page.text)})
    assert resent.status_code == 303
    deliver(hooks_client)
    assert receiver.ids()[-1] == event_id  # the same message, so the receiver can tell it is a repeat
    Webhook(hook["secret"]).verify(receiver.requests[-1]["body"], receiver.requests[-1]["headers"])
    page = hooks_client.get("/dashboard/deliveries")
    assert "Delivered" in page.text and "Working" in page.text
    missing = hooks_client.post("/dashboard/deliveries/999999/resend", data={"csrf_token": csrf_of(page.text)})
    assert missing.status_code == 400
    # ids no column holds, and page markers that are not plain ASCII numbers, are a clear 400, never a 500/503
    for huge in ("9223372036854775808", "99999999999999999999999", "2147483648"):
        answer = hooks_client.post(f"/dashboard/deliveries/{huge}/resend", data={"csrf_token": csrf_of(page.text)})
        assert answer.status_code == 400 and "be sent again" in answer.text
    for before in ("\u00b2", "\u0661\u0662", "99999999999999999", "-1", "0", ""):
        answer = hooks_client.get("/dashboard/deliveries", params={"before": before})
        assert answer.status_code == 400 and "The page must be a number." in answer.text, before
    assert hooks_client.get("/dashboard/deliveries", params={"before": delivery_id}).status_code == 200


def test_an_address_refused_as_private_fails_at_once_and_the_deliveries_page_says_why(make_client, receivers, store):
    client = make_client()  # private addresses not allowed
    receiver = receivers()
    # added while private addresses were allowed (or a name that now resolves to one)
    add_endpoint(store.engine, receiver.url, [], source="cli", allow_private=True)
    emit_for(client, "session.canceled")
    assert deliver(client) == 1
    assert deliver(client) == 0  # nothing left to retry
    assert receiver.requests == []
    assert sign_in(client).status_code == 303
    row = re.search(r'<tr data-delivery="(\d+)">(.*?)</tr>', client.get("/dashboard/deliveries").text, re.S)
    cells = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", row.group(2)))
    assert "Failed" in cells and "Refused: 127.0.0.1 is a private, loopback or link-local address" in cells
    assert cells.strip().endswith("1 Resend")


def test_alerts_section_is_checked_field_by_field():
    alerts = validate_alerts({"slack_webhook_url": "https://hooks.slack.com/services/T/B/X", "email": "coach@example.com"})
    assert alerts.events == ("session.canceled", "contact.requested", "payment.failed")
    assert alerts.wants("session.canceled") and not alerts.wants("session.saved")
    assert not validate_alerts(None).wants("session.canceled")
    for raw, message, field in (({"slak": "x"}, "unknown field 'slak'", "alerts.slak"),
                                ({"email": "not-an-address"}, "field 'email' must be an email address", "alerts.email"),
                                ({"events": ["session.cancelled"]}, "field 'events' must list events from", "alerts.events"),
                                ({"events": "session.canceled"}, "field 'events' must list events from", "alerts.events"),
                                ({"slack_webhook_url": "hooks.slack.com/x"}, "field 'slack_webhook_url'",
                                 "alerts.slack_webhook_url"),
                                ("nope", "must be a table", "alerts")):
        with pytest.raises(InvalidConfig) as refused:
            validate_alerts(raw)
        assert refused.value.message.startswith("[alerts]: ") and message in refused.value.message
        assert refused.value.field == field


def test_the_served_app_delivers_an_event_within_seconds_and_lists_it(settings, receivers, store, api_key):
    from dataclasses import replace

    import httpx

    from cancel_flow.web.app import create_app
    from tests.conftest import LiveServer

    receiver = receivers()
    server = LiveServer(lambda url: create_app(replace(settings, base_url=url, allow_private_urls=True), sweep_every=600))
    try:
        auth = {"Authorization": f"Bearer {api_key}"}
        hook = httpx.post(f"{server.url}/api/hooks", headers=auth,
                          json={"target_url": receiver.url, "event": "contact.requested"}).json()
        session = a_session(store.engine)
        with store.engine.begin() as connection:
            event_id = emit(connection, "contact.requested", session_data(session, test_mode=True))
        assert receiver.arrived.wait(5)
        assert receiver.ids() == [event_id]
        Webhook(hook["secret"]).verify(receiver.requests[0]["body"], receiver.requests[0]["headers"])
        document = httpx.get(f"{server.url}/api/openapi.json", headers=auth).json()
        assert {"/api/hooks", "/api/hooks/{hook_id}", "/api/hooks/sample"} <= set(document["paths"])
    finally:
        server.stop()


def test_each_decision_in_the_flow_is_one_event_written_with_it(make_client, catalogue, signer, store, settings):
    """A save, a contact request and a cancellation each leave their event in the outbox, once."""
    import sqlalchemy as sa

    from cancel_flow.models import OutboxEvent

    client = make_client()
    def decide(reason, offer, email):
        sub = catalogue.subscription(catalogue.customer(email=email))
        token, _ = signer.cancel_token(sub.customer, sub.id)
        url = f"/cancel/{token}"
        page = client.get(url)
        client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
        page = client.get(url)
        return client.post(f"{url}/accept", data={"csrf_token": csrf_of(page.text), "offer": offer})

    assert decide("too_expensive", "half-off-3-payments", "a@example.com").status_code == 303
    talk = decide("too_complex", "talk", "b@example.com")
    assert talk.status_code == 303 and talk.headers["location"].endswith("/done")
    decide("too_complex", "talk", "b@example.com")  # the same decision again on a new link: a new session
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(OutboxEvent.__table__.c.type, OutboxEvent.__table__.c.body)).all()
    types = sorted(row.type for row in rows)
    assert types == ["contact.requested", "contact.requested", "session.saved"]
    saved = json.loads(next(row.body for row in rows if row.type == "session.saved"))
    assert saved["data"]["offer"]["id"] == "half-off-3-payments" and "50% off your next 3 payments" in saved["data"]["offer"]["terms"]
    assert saved["data"]["customer"]["email"] == "a@example.com" and saved["data"]["customer"]["name"] == "Casey Client"


def test_a_failed_renewal_and_its_recovery_are_payment_events(make_client, catalogue, stripe_client, store):
    """invoice.payment_failed then invoice.paid (from the emulator's own billing) emit payment.failed and
    payment.recovered once each, even when Stripe delivers the events twice."""
    import sqlalchemy as sa
    import stripe as stripe_sdk

    from cancel_flow.models import OutboxEvent

    secret = "whsec_payments_" + "d" * 24
    client = make_client(stripe_webhook_secret=secret)
    clock = catalogue.test_clock(1798000000)
    customer = catalogue.customer(email="late@example.com", test_clock=clock.id)
    sub = catalogue.subscription(customer)
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    catalogue.advance(clock.id, sub["items"].data[0].current_period_end + 2 * 3600)
    failed = stripe_client.v1.invoices.list(params={"subscription": sub.id, "status": "open"}).data[0]
    catalogue.set_default_card(customer, "pm_card_visa")
    stripe_client.v1.invoices.pay(failed.id)

    def deliver(event_type):
        event = next(e for e in stripe_client.v1.events.list(params={"type": event_type, "limit": 100}).data
                     if e.data.object.id == failed.id)
        payload = json.dumps(event.to_dict(), default=str)
        header = stripe_sdk.WebhookSignature.generate_signature_header(payload, secret)
        for _ in range(2):
            assert client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header}).status_code == 200

    deliver("invoice.payment_failed")
    deliver("invoice.paid")
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(OutboxEvent.__table__.c.type, OutboxEvent.__table__.c.body)).all()
    assert sorted(row.type for row in rows) == ["payment.failed", "payment.recovered"]
    body = json.loads(next(row.body for row in rows if row.type == "payment.failed"))
    assert body["data"]["customer"]["email"] == "late@example.com" and body["data"]["invoice"]["amount"] == 4900
