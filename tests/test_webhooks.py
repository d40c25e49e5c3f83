"""Stripe webhooks close the loop: verified, stored once, applied in order; and the 24-hour sweep."""

import json
import secrets
import time
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import stripe
from freezegun import freeze_time

from cancel_flow.cli import main
from tests.helpers import csrf_of

WHSEC = "whsec_test_" + "a" * 32


def event(event_type: str, sub_id: str, created: int, *, status: str = "active", cancel_at_period_end: bool = False,
          canceled_at: int | None = None, feedback: str | None = None, reason: str | None = None) -> dict:
    return {
        "id": "evt_" + secrets.token_hex(8), "object": "event", "type": event_type, "created": created,
        "api_version": "2026-10-28.endive", "livemode": False,
        "data": {"object": {
            "id": sub_id, "object": "subscription", "status": status, "cancel_at_period_end": cancel_at_period_end,
            "cancel_at": None, "canceled_at": canceled_at,
            "cancellation_details": {"feedback": feedback, "comment": None, "reason": reason},
        }},
    }


def post_event(client, body: dict | str, secret: str = WHSEC, signature: str | None = None):
    payload = body if isinstance(body, str) else json.dumps(body)
    header = signature or stripe.WebhookSignature.generate_signature_header(payload, secret)
    return client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header,
                                                                      "Content-Type": "application/json"})


@pytest.fixture
def hooked(make_client):
    return make_client(stripe_webhook_secret=WHSEC)


@pytest.fixture
def sent_to_portal(hooked, catalogue, signer, store):
    """A subscription whose subscriber chose "Continue to cancel"; returns (subscription, session id)."""
    def make(reason: str = "too_expensive"):
        sub = catalogue.subscription()
        token, _ = signer.cancel_token(sub.customer, sub.id)
        page = hooked.get(f"/cancel/{token}")
        assert hooked.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf_of(page.text), "reason": reason}).status_code == 303
        nonce = signer.read_cancel(token).nonce
        return sub, nonce
    return make


def test_webhooks_are_refused_while_the_secret_is_unset(client):
    response = post_event(client, event("customer.subscription.updated", "sub_x", int(time.time())))
    assert response.status_code == 401


def test_missing_signature_is_400_and_bad_signature_is_401(hooked):
    body = json.dumps(event("customer.subscription.updated", "sub_x", int(time.time())))
    assert hooked.post("/webhooks/stripe", content=body).status_code == 400
    assert post_event(hooked, body, secret="whsec_other").status_code == 401
    assert post_event(hooked, body, signature="t=1,v1=deadbeef").status_code == 401
    assert post_event(hooked, "not json at all").status_code == 400


def test_a_signed_body_nested_10000_deep_is_a_400_naming_the_problem_and_stores_nothing(hooked):
    deep = "[" * 10_000 + "]" * 10_000
    body = ('{"id": "evt_deep", "object": "event", "type": "customer.subscription.updated", "created": %d, '
            '"data": {"object": %s}}' % (int(time.time()), deep))
    response = post_event(hooked, body)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The body is not a Stripe event: it is nested too deeply."
    assert post_event(hooked, "{" * 10_000).status_code == 400
    good = event("customer.subscription.updated", "sub_x", int(time.time()))
    good["id"] = "evt_deep"  # nothing was stored under its id
    assert post_event(hooked, good).json() == {"received": True, "handled": True, "duplicate": False}


def test_unhandled_event_types_are_acknowledged_and_ignored(hooked):
    response = post_event(hooked, event("invoice.paid", "sub_x", int(time.time())))
    assert response.status_code == 200 and response.json()["handled"] is False


def invoice_event(at: int, **fields) -> dict:
    created = at
    invoice = {"id": "in_" + secrets.token_hex(8), "object": "invoice", "customer": "cus_x", "status": "paid",
               "billing_reason": "subscription_cycle", "currency": "usd", "subtotal": 2900, "amount_due": 2900,
               "amount_paid": 2900, "created": created, "attempt_count": 1,
               "parent": {"type": "subscription_details", "subscription_details": {"subscription": "sub_x"}},
               "total_discount_amounts": [], "status_transitions": {"paid_at": created}}
    invoice.update(fields)
    return {"id": "evt_" + secrets.token_hex(8), "object": "event", "type": "invoice.paid", "created": created,
            "data": {"object": invoice}}


BIG = 10**20
AFTER_9999 = 253402300800  # the first second no Python date holds


@pytest.mark.parametrize("change, field", [
    (lambda e: e.update(data=[1, 2]), "data.object"),
    (lambda e: e.update(created="yesterday"), "created"),
    (lambda e: e.update(created=BIG), "created"),
    (lambda e: e["data"]["object"].update(canceled_at=BIG), "canceled_at"),
    (lambda e: e["data"]["object"].update(canceled_at=AFTER_9999), "canceled_at"),
    (lambda e: e.update(created=AFTER_9999), "created"),
    (lambda e: e["data"]["object"].update(cancel_at="soon"), "cancel_at"),
    (lambda e: e["data"]["object"].update(status=["active"]), "status"),
    (lambda e: e["data"]["object"].update(cancellation_details={"feedback": {"a": 1}}), "feedback"),
    (lambda e: e["data"]["object"].update(cancellation_details={"comment": "x" * 5001}), "comment"),
    (lambda e: e["data"]["object"].update(id="sub_" + "x" * 300), "id"),
])
def test_a_signed_subscription_event_with_a_field_out_of_shape_is_a_400_and_stores_nothing(hooked, change, field):
    body = event("customer.subscription.updated", "sub_x", int(time.time()))
    good = json.loads(json.dumps(body))
    change(body)
    response = post_event(hooked, body)
    assert response.status_code == 400, response.text
    assert field in response.json()["error"]["message"]
    # nothing was stored: the well-formed event with the same id is new, not a duplicate
    assert post_event(hooked, good).json() == {"received": True, "handled": True, "duplicate": False}


@pytest.mark.parametrize("fields, field", [
    ({"created": BIG}, "created"),
    ({"amount_due": 10**30}, "amount_due"),
    ({"subtotal": "2900"}, "subtotal"),
    ({"attempt_count": -1}, "attempt_count"),
    ({"billing_reason": {"why": "x"}}, "billing_reason"),
    ({"currency": "usdollars"}, "currency"),
    ({"status_transitions": {"paid_at": BIG}}, "paid_at"),
    ({"status_transitions": {"voided_at": AFTER_9999}}, "voided_at"),
    ({"parent": {"subscription_details": "sub_x"}}, "subscription_details"),
    ({"parent": {"subscription_details": {"subscription": 7}}}, "subscription"),
    ({"total_discount_amounts": [{"amount": "abc"}]}, "amount"),
    ({"total_discount_amounts": ["abc"]}, "total_discount_amounts"),
    ({"customer_email": 5}, "customer_email"),
])
def test_a_signed_invoice_event_with_a_field_out_of_shape_is_a_400_and_stores_nothing(hooked, fields, field):
    created = int(time.time())
    body = invoice_event(created, **fields)  # fields may replace the invoice's own `created`
    good = json.loads(json.dumps(body))
    good["data"]["object"] = invoice_event(created)["data"]["object"] | {"id": body["data"]["object"]["id"]}
    response = post_event(hooked, body)
    assert response.status_code == 400, response.text
    assert f"'{field}'" in response.json()["error"]["message"]
    assert post_event(hooked, good).json() == {"received": True, "handled": True, "duplicate": False}


def test_cancellation_event_marks_sent_to_portal_canceled_with_stripe_feedback(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    now = int(time.time())
    response = post_event(hooked, event("customer.subscription.updated", sub.id, now, cancel_at_period_end=True,
                                        canceled_at=now, feedback="too_expensive", reason="cancellation_requested"))
    assert response.status_code == 200 and response.json()["duplicate"] is False
    session = store.find_session(nonce)
    assert session.outcome == "canceled" and session.stripe_feedback == "too_expensive"
    assert session.reason == "too_expensive" and session.canceled_at is not None


def test_a_duplicate_event_is_acknowledged_and_changes_nothing(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    now = int(time.time())
    scheduled = event("customer.subscription.updated", sub.id, now, cancel_at_period_end=True, canceled_at=now)
    post_event(hooked, scheduled)
    taken_back = event("customer.subscription.updated", sub.id, now + 60)
    post_event(hooked, taken_back)
    assert store.find_session(nonce).outcome == "sent_to_portal"
    repeat = post_event(hooked, scheduled)
    assert repeat.status_code == 200 and repeat.json()["duplicate"] is True
    assert store.find_session(nonce).outcome == "sent_to_portal"


def test_an_older_event_never_undoes_a_newer_one(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    now = int(time.time())
    post_event(hooked, event("customer.subscription.deleted", sub.id, now + 30, status="canceled", canceled_at=now))
    post_event(hooked, event("customer.subscription.updated", sub.id, now))  # older, still active
    session = store.find_session(nonce)
    assert session.outcome == "canceled" and session.canceled_at is not None


def test_at_the_same_second_the_further_cancellation_wins(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    now = int(time.time())
    post_event(hooked, event("customer.subscription.deleted", sub.id, now, status="canceled", canceled_at=now))
    post_event(hooked, event("customer.subscription.updated", sub.id, now, cancel_at_period_end=True, canceled_at=now))
    post_event(hooked, event("customer.subscription.updated", sub.id, now))
    assert store.find_session(nonce).outcome == "canceled"


def test_deflected_after_24_hours_still_active(hooked, catalogue, signer, store):
    with freeze_time("2026-11-24 10:00:00", real_asyncio=True) as frozen:
        sub = catalogue.subscription()
        portal_token, _ = signer.cancel_token(sub.customer, sub.id)
        page = hooked.get(f"/cancel/{portal_token}")
        hooked.post(f"/cancel/{portal_token}/cancel", data={"csrf_token": csrf_of(page.text)})
        idle_token, _ = signer.cancel_token(sub.customer, sub.id)
        hooked.get(f"/cancel/{idle_token}")
        frozen.tick(timedelta(hours=23))
        assert store.sweep_deflected() == 0
        frozen.tick(timedelta(hours=2))
        assert store.sweep_deflected() == 2
        assert store.sweep_deflected() == 0
    assert store.find_session(_nonce(signer, portal_token)).outcome == "deflected"
    assert store.find_session(_nonce(signer, idle_token)).outcome == "deflected"


def _nonce(signer, token: str) -> str:
    from itsdangerous import URLSafeTimedSerializer

    return URLSafeTimedSerializer("unused").load_payload(token.split(".")[0].encode())["n"]


def test_a_late_delivered_cancellation_turns_deflected_into_canceled(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    requested = int(time.time()) + 3600
    with freeze_time(datetime.now(timezone.utc) + timedelta(hours=25), real_asyncio=True):
        assert store.sweep_deflected() == 1
    post_event(hooked, event("customer.subscription.updated", sub.id, requested, cancel_at_period_end=True,
                             canceled_at=requested))
    assert store.find_session(nonce).outcome == "canceled"


def test_a_save_canceled_later_keeps_its_outcome_and_records_when(hooked, catalogue, signer, store):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = hooked.get(f"/cancel/{token}")
    hooked.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    hooked.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(page.text), "offer": "half-off-3-payments"})
    later = int(time.time()) + 40 * 86400
    post_event(hooked, event("customer.subscription.deleted", sub.id, later, status="canceled", canceled_at=later))
    session = store.find_session(_nonce(signer, token))
    assert session.outcome == "saved_discount" and session.canceled_at is not None
    assert session.canceled_outside_flow is False


def test_cancellation_outside_the_flow_is_recorded_and_is_not_a_failed_save(hooked, catalogue, signer, store):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    hooked.get(f"/cancel/{token}")
    now = int(time.time())
    post_event(hooked, event("customer.subscription.deleted", sub.id, now, status="canceled", canceled_at=now,
                             reason="cancellation_requested"))
    session = store.find_session(_nonce(signer, token))
    assert session.outcome == "open" and session.canceled_outside_flow is True and session.canceled_at is not None
    with freeze_time(datetime.now(timezone.utc) + timedelta(days=2), real_asyncio=True):
        assert store.sweep_deflected() == 0


def test_stripe_retention_policy_cleanup_is_not_churn(hooked, sent_to_portal, store):
    sub, nonce = sent_to_portal()
    now = int(time.time())
    post_event(hooked, event("customer.subscription.deleted", sub.id, now, status="canceled", canceled_at=now,
                             reason="canceled_by_retention_policy"))
    session = store.find_session(nonce)
    assert session.outcome == "sent_to_portal" and session.canceled_outside_flow is True


def test_sweep_command(monkeypatch, database_url, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    with pytest.raises(SystemExit) as done:
        main(["sweep"])
    assert done.value.code == 0 and "0 session(s) marked deflected" in capsys.readouterr().out


def wait_until(check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_full_loop_link_portal_webhook_canceled_then_clock_ends_it(live_server, catalogue, signer, store, stripe_client, emulator):
    endpoint = stripe_client.v1.webhook_endpoints.create(params={
        "url": "http://127.0.0.1:9/not-yet",
        "enabled_events": ["customer.subscription.updated", "customer.subscription.deleted"]})
    server = live_server(stripe_webhook_secret=endpoint.secret)
    stripe_client.v1.webhook_endpoints.update(endpoint.id, params={"url": f"{server.url}/webhooks/stripe"})

    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"{server.url}/cancel/{token}"
    with httpx.Client() as browser:
        page = browser.get(url)
        portal = browser.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
        confirmed = browser.post(portal.headers["location"] + "/cancel", data={"reason": "unused"})
        assert confirmed.headers["location"] == f"{url}/done"
    nonce = _nonce(signer, token)
    wait_until(lambda: store.find_session(nonce).outcome == "canceled")
    assert store.find_session(nonce).stripe_feedback == "unused"
    emulator.post("/_emulator/clock/advance", json={"seconds": 32 * 86400})
    wait_until(lambda: len([a for a in emulator.get("/_emulator/deliveries").json() if a["status"] == 200]) >= 2)
    session = store.find_session(nonce)
    assert session.outcome == "canceled" and session.canceled_at is not None


def test_cancellations_outside_the_flow_are_counted_with_stripes_cancellation_details(hooked, sent_to_portal, store,
                                                                                        stripe_client, catalogue):
    """A cancellation in a portal opened from somewhere else, by the coach in Stripe, or by Stripe after failed
    payments reaches the dashboard with Stripe's reason; one made through the flow is not counted there; one taken
    back leaves it."""
    from cancel_flow.store.stats import DateRange, outside_cancellations

    now = int(time.time())
    through_flow, _ = sent_to_portal("too_expensive")
    assert post_event(hooked, event("customer.subscription.updated", through_flow.id, now, cancel_at_period_end=True,
                                    feedback="too_expensive", reason="cancellation_requested")).status_code == 200
    portal = catalogue.subscription()  # canceled in a portal opened from a billing link: no session of ours
    body = event("customer.subscription.updated", portal.id, now, cancel_at_period_end=True, canceled_at=now,
                 feedback="unused", reason="cancellation_requested")
    body["data"]["object"].update(customer=portal.customer, currency="usd", items={"object": "list", "data": [
        {"quantity": 1, "price": {"unit_amount": 4900, "recurring": {"interval": "month", "interval_count": 1}}}]})
    assert post_event(hooked, body).status_code == 200
    failed = catalogue.subscription(catalogue.customer(email="b@example.com"))
    ended = event("customer.subscription.deleted", failed.id, now, status="canceled", canceled_at=now, reason="payment_failed")
    assert post_event(hooked, ended).status_code == 200
    taken_back = catalogue.subscription(catalogue.customer(email="c@example.com"))
    assert post_event(hooked, event("customer.subscription.updated", taken_back.id, now, cancel_at_period_end=True,
                                    reason="cancellation_requested")).status_code == 200
    assert post_event(hooked, event("customer.subscription.updated", taken_back.id, now + 5)).status_code == 200

    today = datetime.now(timezone.utc)
    figures = outside_cancellations(store.engine, DateRange(today - timedelta(days=1), today + timedelta(days=1)))
    assert figures["count"] == 2 and figures["monthly_amount"] == {"usd": 4900}
    assert [(g["reason"], g["feedback"], g["count"]) for g in figures["by_reason"]] == [
        ("cancellation_requested", "unused", 1), ("payment_failed", None, 1)]
