"""Contract tests: the emulator, driven only through the real stripe SDK (and its documented controls)."""

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe

from tests.conftest import TEST_KEY, free_port, portal_configuration
from tests.helpers import stopped_afterwards

DAY = 86400


class Receiver:
    """A webhook receiver on loopback that records what it gets; it can fail the first N deliveries."""

    def __init__(self, fail_first: int = 0):
        self.received: list[tuple[bytes, str]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append((body, self.headers.get("Stripe-Signature")))
                status = 500 if len(receiver.received) <= receiver.fail_first else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout: float = 15) -> list:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"got {len(self.received)} deliveries, wanted {count}"
            time.sleep(0.05)
        return self.received

    def close(self):
        self.server.shutdown()


@pytest.fixture
def receiver():
    with stopped_afterwards(Receiver, stop=Receiver.close) as make:
        yield make


@pytest.mark.emulator_only("lists and searches by an email other runs use too, and Stripe's search lags writes "
                           "(https://docs.stripe.com/search#data-freshness)")
def test_customer_create_retrieve_update_list_and_search(stripe_client):
    created = stripe_client.v1.customers.create(params={"email": "ann@example.com", "name": "Ann",
                                                        "payment_method": "pm_card_visa",
                                                        "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    assert created.id.startswith("cus_") and created.object == "customer" and created.livemode is False
    assert created.invoice_settings.default_payment_method.startswith("pm_")
    stripe_client.v1.customers.create(params={"email": "other@example.com"})
    assert stripe_client.v1.customers.retrieve(created.id).name == "Ann"
    updated = stripe_client.v1.customers.update(created.id, params={"name": "Ann B", "metadata": {"tier": "gold"}})
    assert updated.name == "Ann B" and updated.metadata["tier"] == "gold"
    listed = stripe_client.v1.customers.list(params={"email": "ann@example.com"})
    assert [c.id for c in listed.data] == [created.id] and listed.has_more is False
    found = stripe_client.v1.customers.search(params={"query": "email:'ann@example.com'"})
    assert found.object == "search_result" and [c.id for c in found.data] == [created.id]


@pytest.mark.emulator_only("pages through all of the account's products")
def test_lists_are_newest_first_and_page(stripe_client):
    ids = [stripe_client.v1.products.create(params={"name": f"P{i}"}).id for i in range(3)]
    first = stripe_client.v1.products.list(params={"limit": 2})
    assert [p.id for p in first.data] == ids[::-1][:2] and first.has_more is True
    rest = stripe_client.v1.products.list(params={"limit": 2, "starting_after": first.data[-1].id})
    assert [p.id for p in rest.data] == [ids[0]] and rest.has_more is False


def test_prices_are_recurring_and_listable(stripe_client, catalogue):
    price = catalogue.price("year", 49000)
    fetched = stripe_client.v1.prices.retrieve(price.id)
    assert fetched.recurring.interval == "year" and fetched.unit_amount == 49000 and fetched.currency == "usd"
    assert price.id in [p.id for p in stripe_client.v1.prices.list(params={"product": price.product}).data]


def test_subscription_carries_items_periods_and_expands_product_and_customer(stripe_client, catalogue):
    sub = catalogue.subscription()
    assert sub.status == "active" and sub.cancel_at_period_end is False and sub.discounts == []
    item = sub["items"].data[0]
    assert item.current_period_end > item.current_period_start
    full = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["items.data.price.product", "customer"]})
    assert full["items"].data[0].price.product.name == "Coaching Plan"
    assert full.customer.email == "client@example.com"


def test_declining_card_makes_an_incomplete_subscription_or_a_card_error(stripe_client, catalogue):
    # Stripe declines 4000000000000002 (pm_card_visa_chargeDeclined) already when it is attached to a
    # customer; 4000000000000341 (pm_card_chargeCustomerFail) attaches and declines every charge.
    with pytest.raises(stripe.CardError) as refused:
        catalogue.customer(card="pm_card_visa_chargeDeclined")
    assert refused.value.code == "card_declined" and refused.value.http_status == 402
    customer = catalogue.customer(card="pm_card_chargeCustomerFail")
    assert catalogue.subscription(customer).status == "incomplete"
    with pytest.raises(stripe.CardError) as error:
        catalogue.subscription(customer, payment_behavior="error_if_incomplete")
    assert error.value.code == "card_declined" and error.value.http_status == 402


@pytest.mark.emulator_only("lists every canceled subscription of the account")
def test_subscription_list_filters_by_customer_and_status(stripe_client, catalogue):
    customer = catalogue.customer()
    live = catalogue.subscription(customer)
    ended = catalogue.subscription(customer)
    stripe_client.v1.subscriptions.cancel(ended.id)
    catalogue.subscription()  # someone else's
    default = stripe_client.v1.subscriptions.list(params={"customer": customer.id})
    assert [s.id for s in default.data] == [live.id]
    every = stripe_client.v1.subscriptions.list(params={"customer": customer.id, "status": "all"})
    assert {s.id for s in every.data} == {live.id, ended.id}
    canceled = stripe_client.v1.subscriptions.list(params={"status": "canceled"})
    assert [s.id for s in canceled.data] == [ended.id]


def test_discount_attaches_expands_and_stops_after_its_months(stripe_client, catalogue, emulator):
    stripe_client.v1.coupons.create(params={"id": "half-3", "percent_off": 50, "duration": "repeating",
                                            "duration_in_months": 3})
    sub = catalogue.subscription()
    updated = stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "half-3"}],
                                                                     "expand": ["discounts.source.coupon"]})
    assert updated.discounts[0].source.coupon.percent_off == 50
    assert stripe_client.v1.coupons.retrieve("half-3").times_redeemed == 1
    emulator.post("/_emulator/clock/advance", json={"seconds": 80 * DAY}).raise_for_status()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).discounts != []
    emulator.post("/_emulator/clock/advance", json={"seconds": 15 * DAY}).raise_for_status()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).discounts == []


def test_retired_singular_coupon_parameter_is_refused_like_stripe(stripe_client, catalogue):
    sub = catalogue.subscription()
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.update(sub.id, params={"coupon": "anything"})
    assert error.value.code == "parameter_unknown" and error.value.param == "coupon"
    assert "unknown parameter" in error.value.user_message
    assert error.value.http_status == 400


def test_missing_objects_are_404_resource_missing(stripe_client, catalogue):
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.retrieve("sub_nope")
    assert error.value.http_status == 404 and error.value.code == "resource_missing"
    sub = catalogue.subscription()
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "ghost"}]})
    assert error.value.param == "discounts[0][coupon]"


def test_pause_collection_sets_clears_and_resumes_with_the_clock(stripe_client, catalogue, emulator):
    sub = catalogue.subscription()
    now = emulator.get("/_emulator/clock").json()["now"]
    paused = stripe_client.v1.subscriptions.update(sub.id, params={
        "pause_collection": {"behavior": "void", "resumes_at": now + 10 * DAY}})
    assert paused.pause_collection.behavior == "void" and paused.status == "active"
    cleared = stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": ""})
    assert cleared.pause_collection is None
    stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void", "resumes_at": now + 10 * DAY}})
    emulator.post("/_emulator/clock/advance", json={"seconds": 11 * DAY})
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None


def test_cancel_at_period_end_then_clock_ends_it(stripe_client, catalogue, emulator):
    sub = catalogue.subscription()
    scheduled = stripe_client.v1.subscriptions.update(sub.id, params={
        "cancel_at_period_end": True, "cancellation_details": {"feedback": "too_expensive", "comment": "pricey"},
        "metadata": {"source": "test"}})
    assert scheduled.cancel_at_period_end is True
    assert scheduled.cancel_at == scheduled["items"].data[0].current_period_end
    assert scheduled.cancellation_details.feedback == "too_expensive"
    assert scheduled.cancellation_details.reason == "cancellation_requested"
    assert scheduled.metadata["source"] == "test"
    emulator.post("/_emulator/clock/advance", json={"seconds": 32 * DAY})
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.ended_at == scheduled.cancel_at


def test_cancel_at_and_clearing_it(stripe_client, catalogue, emulator):
    sub = catalogue.subscription()
    now = emulator.get("/_emulator/clock").json()["now"]
    set_at = stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": now + 5 * DAY})
    assert set_at.cancel_at == now + 5 * DAY and set_at.cancel_at_period_end is False
    cleared = stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": ""})
    assert cleared.cancel_at is None and cleared.canceled_at is None


def test_renewal_moves_the_period(stripe_client, catalogue, emulator):
    sub = catalogue.subscription()
    first_end = sub["items"].data[0].current_period_end
    emulator.post("/_emulator/clock/advance", json={"seconds": 32 * DAY})
    item = stripe_client.v1.subscriptions.retrieve(sub.id)["items"].data[0]
    assert item.current_period_start == first_end and item.current_period_end > first_end


def test_cancel_now_records_details_and_refuses_twice(stripe_client, catalogue):
    sub = catalogue.subscription()
    canceled = stripe_client.v1.subscriptions.cancel(sub.id, params={"cancellation_details": {"feedback": "unused"}})
    assert canceled.status == "canceled" and canceled.canceled_at and canceled.cancellation_details.feedback == "unused"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.cancel(sub.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})


def test_coupon_create_retrieve_delete(stripe_client):
    generated = stripe_client.v1.coupons.create(params={"percent_off": 20, "duration": "once"})
    assert generated.id and generated.valid is True
    own = stripe_client.v1.coupons.create(params={"id": "own-id", "amount_off": 500, "currency": "usd", "duration": "forever"})
    assert own.id == "own-id"
    with pytest.raises(stripe.InvalidRequestError) as error:
        stripe_client.v1.coupons.create(params={"id": "own-id", "percent_off": 5})
    assert error.value.code == "resource_already_exists"
    assert stripe_client.v1.coupons.delete("own-id").deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.coupons.retrieve("own-id")


def test_same_idempotency_key_replays_and_other_parameters_are_refused(stripe_client, catalogue, emulator):
    sub = catalogue.subscription()
    stripe_client.v1.coupons.create(params={"id": "c1", "percent_off": 10, "duration": "forever"})
    first = stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "c1"}]},
                                                  options={"idempotency_key": "decision-1"})
    again = stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "c1"}]},
                                                  options={"idempotency_key": "decision-1"})
    assert again.discounts == first.discounts
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert stripe_client.v1.coupons.retrieve("c1").times_redeemed == 1
    with pytest.raises(stripe.IdempotencyError):
        stripe_client.v1.subscriptions.update(sub.id, params={"metadata": {"x": "y"}},
                                              options={"idempotency_key": "decision-1"})


def test_portal_configuration_create_list_update(stripe_client):
    config = stripe_client.v1.billing_portal.configurations.create(params={
        "features": {"subscription_cancel": {"enabled": True, "mode": "immediately"}}, "metadata": {"k": "v"}})
    assert config.features.subscription_cancel.mode == "immediately"
    assert config.id in [c.id for c in stripe_client.v1.billing_portal.configurations.list().data]
    updated = stripe_client.v1.billing_portal.configurations.update(config.id, params={
        "features": {"subscription_cancel": {"mode": "at_period_end"}}})
    assert updated.features.subscription_cancel.mode == "at_period_end"
    assert updated.features.subscription_cancel.enabled is True


def test_webhook_endpoint_secret_only_on_create(stripe_client, receiver):
    endpoint = stripe_client.v1.webhook_endpoints.create(params={
        "url": receiver().url, "enabled_events": ["customer.subscription.updated"]})
    assert endpoint.secret.startswith("whsec_")
    listed = stripe_client.v1.webhook_endpoints.list()
    assert [e.id for e in listed.data] == [endpoint.id] and "secret" not in listed.data[0]
    assert stripe_client.v1.webhook_endpoints.delete(endpoint.id).deleted is True
    assert stripe_client.v1.webhook_endpoints.list().data == []


def _hook(stripe_client, receiver_obj, events=("customer.subscription.created", "customer.subscription.updated",
                                               "customer.subscription.deleted")):
    return stripe_client.v1.webhook_endpoints.create(params={"url": receiver_obj.url, "enabled_events": list(events)})


def test_signed_webhooks_verify_with_construct_event_and_carry_previous_attributes(stripe_client, catalogue, receiver):
    hook = receiver()
    endpoint = _hook(stripe_client, hook)
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    stripe_client.v1.subscriptions.cancel(sub.id)
    deliveries = hook.wait_for(3)
    events = [stripe.Webhook.construct_event(body, signature, endpoint.secret) for body, signature in deliveries]
    assert [e.type for e in events] == ["customer.subscription.created", "customer.subscription.updated",
                                        "customer.subscription.deleted"]
    assert events[1].data.previous_attributes["cancel_at_period_end"] is False
    assert events[1].data.object.cancel_at_period_end is True
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(deliveries[0][0], deliveries[0][1], "whsec_wrong")
    listed = stripe_client.v1.events.list(params={"type": "customer.subscription.updated"})
    assert [e.id for e in listed.data] == [events[1].id]
    assert stripe_client.v1.events.retrieve(events[2].id).type == "customer.subscription.deleted"


def test_failed_delivery_is_retried_with_backoff(stripe_client, catalogue, receiver, emulator):
    hook = receiver(fail_first=2)
    _hook(stripe_client, hook, ["customer.subscription.created"])
    catalogue.subscription()
    deliveries = hook.wait_for(3)
    assert len({body for body, _ in deliveries}) == 1
    attempts = emulator.get("/_emulator/deliveries").json()
    assert [a["attempt"] for a in attempts] == [1, 2, 3] and [a["status"] for a in attempts] == [500, 500, 200]
    assert attempts[2]["at"] - attempts[0]["at"] >= 2.5  # waited 1 s, then 2 s


def test_portal_cancel_flow_page_cancels_at_period_end_fires_webhook_and_redirects(stripe_client, catalogue, receiver):
    hook = receiver()
    endpoint = _hook(stripe_client, hook, ["customer.subscription.updated"])
    sub = catalogue.subscription()
    session = stripe_client.v1.billing_portal.sessions.create(params={
        "customer": sub.customer, "return_url": "http://shop.example/account", "configuration": portal_configuration(stripe_client),
        "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id},
                      "after_completion": {"type": "redirect", "redirect": {"return_url": "http://shop.example/done"}}}})
    assert session.object == "billing_portal.session" and session.flow.type == "subscription_cancel"
    page = httpx.get(session.url)
    assert page.status_code == 200 and "Cancel subscription" in page.text and "Coaching Plan" in page.text
    confirm = httpx.post(session.url + "/cancel", data={"reason": "too_expensive"})
    assert confirm.status_code == 303 and confirm.headers["location"] == "http://shop.example/done"
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert after.cancel_at_period_end is True and after.status == "active"
    assert after.cancellation_details.feedback == "too_expensive"
    event = stripe.Webhook.construct_event(*hook.wait_for(1)[0], endpoint.secret)
    assert event.type == "customer.subscription.updated" and event.data.object.id == sub.id


def test_portal_refuses_to_cancel_a_canceled_subscription(stripe_client, catalogue):
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(sub.id)
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.billing_portal.sessions.create(params={
            "customer": sub.customer, "configuration": portal_configuration(stripe_client),
            "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}}})


@pytest.mark.emulator_only("drives the emulator's hosted portal page")
def test_portal_payment_method_update_flow_changes_the_default_card(stripe_client, catalogue):
    customer = catalogue.customer(card="pm_card_chargeCustomerFail")
    session = stripe_client.v1.billing_portal.sessions.create(params={
        "customer": customer.id, "return_url": "http://shop.example/account", "configuration": portal_configuration(stripe_client),
        "flow_data": {"type": "payment_method_update"}})
    assert "Update payment method" in httpx.get(session.url).text
    done = httpx.post(session.url + "/payment_method", data={"payment_method": "pm_card_visa"})
    assert done.status_code == 303
    card = stripe_client.v1.customers.retrieve(customer.id, params={"expand": ["invoice_settings.default_payment_method"]})
    assert card.invoice_settings.default_payment_method.card.last4 == "4242"


@pytest.mark.parametrize("status, error_type", [(500, stripe.APIError), (429, stripe.RateLimitError)])
def test_injected_faults_fail_the_next_matching_requests(stripe_client, catalogue, emulator, status, error_type):
    sub = catalogue.subscription()
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "status": status, "count": 1})
    with pytest.raises(error_type):
        stripe_client.v1.subscriptions.retrieve(sub.id)
    assert stripe_client.v1.subscriptions.retrieve(sub.id).id == sub.id


def test_hang_fault_outlasts_the_client_timeout(emulator, emulator_url, catalogue):
    sub = catalogue.subscription()
    impatient = stripe.StripeClient(TEST_KEY, base_addresses={"api": emulator_url}, max_network_retries=0,
                                    http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=0.5))
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "hang_seconds": 3})
    with pytest.raises(stripe.APIConnectionError):
        impatient.v1.subscriptions.retrieve(sub.id)


def test_sdk_retries_a_500_with_the_same_idempotency_key_and_applies_once(emulator, emulator_url, catalogue):
    retrying = stripe.StripeClient(TEST_KEY, base_addresses={"api": emulator_url}, max_network_retries=2,
                                   http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=5))
    sub = catalogue.subscription()
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500})
    updated = retrying.v1.subscriptions.update(sub.id, params={"metadata": {"a": "1"}})
    assert updated.metadata["a"] == "1"
    posts = [r for r in emulator.get("/_emulator/requests").json() if r["method"] == "POST" and sub.id in r["path"]]
    assert len(posts) == 2


def test_request_log_and_reset(stripe_client, emulator):
    stripe_client.v1.customers.create(params={"email": "x@example.com"})
    log = emulator.get("/_emulator/requests").json()
    assert log[-1]["method"] == "POST" and log[-1]["path"] == "/v1/customers" and "at" in log[-1]
    emulator.delete("/_emulator/data")
    assert stripe_client.v1.customers.list().data == []


def test_requests_without_a_test_key_are_refused(emulator_url):
    response = httpx.get(f"{emulator_url}/v1/customers", headers={"Authorization": "Bearer sk_live_real"})
    assert response.status_code == 401 and response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{emulator_url}/v1/customers").status_code == 401
    for header in ("Basic not-base64!", "Basic " + base64.b64encode(b":").decode(), "Token sk_test_x", "Bearer"):
        refused = httpx.get(f"{emulator_url}/v1/customers", headers={"Authorization": header})
        assert refused.status_code == 401 and "did not provide an API key" in refused.json()["error"]["message"]


def test_the_key_as_basic_auth_user_name_works_as_stripes_curl_examples_send_it(emulator_url, emulator):
    """`curl https://api.stripe.com/v1/customers -u sk_test_…:` (https://docs.stripe.com/api/authentication)."""
    made = httpx.post(f"{emulator_url}/v1/customers", data={"email": "curl@example.com"}, auth=(TEST_KEY, ""))
    assert made.status_code == 200, made.text
    listed = httpx.get(f"{emulator_url}/v1/customers", params={"email": "curl@example.com"}, auth=(TEST_KEY, ""))
    assert [customer["id"] for customer in listed.json()["data"]] == [made.json()["id"]]
    live = httpx.get(f"{emulator_url}/v1/customers", auth=("sk_live_real", ""))
    assert live.status_code == 401 and "test keys" in live.json()["error"]["message"]


def test_errors_are_shaped_like_stripe(emulator_url):
    response = httpx.post(f"{emulator_url}/v1/coupons", data={"percent_off": "abc"},
                          headers={"Authorization": f"Bearer {TEST_KEY}"})
    body = response.json()
    assert response.status_code == 400
    assert set(body["error"]) >= {"type", "message", "param"} and body["error"]["param"] == "percent_off"


def test_clock_advance_answers_now(emulator):
    before = emulator.get("/_emulator/clock").json()["now"]
    after = emulator.post("/_emulator/clock/advance", json={"seconds": 3600}).json()["now"]
    assert after - before >= 3600
    assert emulator.post("/_emulator/clock/advance", json={"seconds": "soon"}).status_code == 400


def test_a_customer_keeps_its_preferred_locales_and_a_portal_session_the_locale_it_was_given(stripe_client, catalogue):
    customer = catalogue.customer(preferred_locales=["es-419", "en"])
    assert list(customer.preferred_locales) == ["es-419", "en"]
    updated = stripe_client.v1.customers.update(customer.id, params={"preferred_locales": ["pt-BR"]})
    assert list(updated.preferred_locales) == ["pt-BR"]
    configuration = portal_configuration(stripe_client)
    session = stripe_client.v1.billing_portal.sessions.create(params={
        "customer": customer.id, "return_url": "http://shop.example/account", "configuration": configuration,
        "locale": "pt-BR"})
    assert session.locale == "pt-BR"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.billing_portal.sessions.create(params={
            "customer": customer.id, "return_url": "http://shop.example/account", "configuration": configuration,
            "locale": "pt_BR"})
    assert refused.value.param == "locale"
