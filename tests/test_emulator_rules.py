"""Stripe's server-side rules in the emulator, driven through the real SDK (one test or more per rule)."""

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import stripe

from tests.conftest import TEST_KEY, free_port
from tests.helpers import stopped_afterwards

DAY = 86400
SDK_VERSION = stripe.api_version
LOCK_MESSAGE = ("This object cannot be accessed right now because another API request or Stripe process is "
                "currently accessing it.")


def sdk(emulator_url: str, key: str = TEST_KEY, retries: int = 0) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": emulator_url}, max_network_retries=retries,
                               http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=10))


class Hook:
    """A plain-http loopback receiver: what the emulator posts, decoded."""

    def __init__(self):
        self.events: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                hook.events.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def wait_for(self, count: int, timeout: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(self.events) < count:
            assert time.monotonic() < deadline, f"got {len(self.events)} events, wanted {count}"
            time.sleep(0.05)
        return self.events


@pytest.fixture
def hooks():
    with stopped_afterwards(Hook, stop=lambda hook: hook.server.shutdown()) as make:
        yield make


@pytest.fixture
def limits(emulator):
    yield emulator
    emulator.post("/_emulator/limits", json={"requests_per_second": None}).raise_for_status()


@pytest.fixture
def restricted(emulator):
    yield emulator
    emulator.delete("/_emulator/keys").raise_for_status()


# 1. Expand depth ---------------------------------------------------------------------------------

def test_list_expand_of_five_levels_is_refused_and_four_are_served(stripe_client, catalogue):
    sub = catalogue.subscription()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        stripe_client.v1.subscriptions.list(params={"expand": ["data.items.data.price.product"]})
    assert refused.value.http_status == 400
    assert refused.value.user_message == "You cannot expand more than 4 levels of a property."
    assert refused.value.param == "expand"
    listed = stripe_client.v1.subscriptions.list(params={"expand": ["data.customer", "data.items.data.price"]})
    assert listed.data[0].customer.id == sub.customer
    retrieved = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["items.data.price.product"]})
    assert retrieved["items"].data[0].price.product.object == "product"


# 2. Idempotency ----------------------------------------------------------------------------------

def test_an_error_raised_while_executing_is_replayed_even_after_the_cause_is_fixed(stripe_client, catalogue):
    sub = catalogue.subscription()
    params = {"discounts": [{"coupon": "late-coupon"}]}
    with pytest.raises(stripe.InvalidRequestError) as first:
        stripe_client.v1.subscriptions.update(sub.id, params=params, options={"idempotency_key": "k-missing"})
    assert first.value.code == "resource_missing"
    stripe_client.v1.coupons.create(params={"id": "late-coupon", "percent_off": 10, "duration": "once"})
    with pytest.raises(stripe.InvalidRequestError) as replayed:
        stripe_client.v1.subscriptions.update(sub.id, params=params, options={"idempotency_key": "k-missing"})
    assert replayed.value.code == "resource_missing"
    assert replayed.value.headers.get("Idempotent-Replayed") == "true"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).discounts == []
    fresh = stripe_client.v1.subscriptions.update(sub.id, params=params, options={"idempotency_key": "k-new"})
    assert len(fresh.discounts) == 1


def test_a_parameter_error_stores_nothing_so_the_key_can_be_used_again(stripe_client, catalogue):
    sub = catalogue.subscription()
    with pytest.raises(stripe.InvalidRequestError) as invalid:
        stripe_client.v1.subscriptions.update(sub.id, params={"metadata": {"a": "1"}, "colour": "red"},
                                              options={"idempotency_key": "k-valid-later"})
    assert invalid.value.code == "parameter_unknown"
    updated = stripe_client.v1.subscriptions.update(sub.id, params={"metadata": {"a": "1"}},
                                                    options={"idempotency_key": "k-valid-later"})
    assert updated.metadata["a"] == "1"
    assert updated.last_response.headers.get("Idempotent-Replayed") is None


def test_an_injected_fault_stores_nothing(stripe_client, catalogue, emulator):
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/customers", "status": 500})
    with pytest.raises(stripe.APIError):
        stripe_client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k-fault"})
    created = stripe_client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "k-fault"})
    assert created.last_response.headers.get("Idempotent-Replayed") is None
    assert [c.id for c in stripe_client.v1.customers.list().data] == [created.id]


def test_keys_are_kept_24_hours_of_the_emulators_clock(stripe_client, emulator):
    first = stripe_client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "k-day"})
    emulator.post("/_emulator/clock/advance", json={"seconds": DAY - 60}).raise_for_status()
    same = stripe_client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "k-day"})
    assert same.id == first.id and same.last_response.headers.get("Idempotent-Replayed") == "true"
    emulator.post("/_emulator/clock/advance", json={"seconds": 120}).raise_for_status()
    later = stripe_client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": "k-day"})
    assert later.id != first.id
    assert len(stripe_client.v1.customers.list().data) == 2


def test_keys_of_different_api_keys_are_separate(emulator, emulator_url):
    one, two = sdk(emulator_url, "sk_test_first"), sdk(emulator_url, "sk_test_second")
    a = one.v1.customers.create(params={"email": "c@example.com"}, options={"idempotency_key": "k-shared"})
    b = two.v1.customers.create(params={"email": "c@example.com"}, options={"idempotency_key": "k-shared"})
    assert a.id != b.id


def test_the_same_key_while_the_first_request_executes_is_409(emulator, emulator_url, stripe_client):
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/customers", "slow_seconds": 2})
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(stripe_client.v1.customers.create, params={"email": "d@example.com"},
                            options={"idempotency_key": "k-busy"})
        deadline = time.monotonic() + 5
        while not any(r["method"] == "POST" for r in emulator.get("/_emulator/requests").json()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # logged on arrival; give it the moment it takes to claim its key
        with pytest.raises(stripe.APIError) as busy:
            stripe_client.v1.customers.create(params={"email": "d@example.com"}, options={"idempotency_key": "k-busy"})
        created = first.result(timeout=10)
    assert busy.value.http_status == 409
    assert busy.value.error.code == "idempotency_key_in_use"
    assert busy.value.error.type == "idempotency_error"
    assert "another in-progress request using this Idempotent Key" in busy.value.user_message
    again = stripe_client.v1.customers.create(params={"email": "d@example.com"}, options={"idempotency_key": "k-busy"})
    assert again.id == created.id
    assert [c.id for c in stripe_client.v1.customers.list().data] == [created.id]


def test_idempotency_keys_on_delete_have_no_effect(stripe_client, catalogue):
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(sub.id, options={"idempotency_key": "k-delete"})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.subscriptions.cancel(sub.id, options={"idempotency_key": "k-delete"})


# 3. Rate limits ----------------------------------------------------------------------------------

def test_rate_limit_is_off_by_default_and_refuses_above_the_set_rate(limits, emulator_url, stripe_client):
    assert limits.get("/_emulator/limits").json()["requests_per_second"] is None
    assert limits.post("/_emulator/limits", json={"requests_per_second": 1}).json()["requests_per_second"] == 1
    limits.delete("/_emulator/data")  # limits are configuration: forgetting data keeps them
    stripe_client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as refused:
        stripe_client.v1.customers.create(params={"email": "e@example.com"})
    assert refused.value.http_status == 429 and refused.value.error.code == "rate_limit"
    assert refused.value.error.type == "invalid_request_error"
    assert refused.value.user_message == ("Request rate limit exceeded. You can learn more about rate limits here "
                                          "https://stripe.com/docs/rate-limits.")
    assert refused.value.headers.get("Stripe-Should-Retry") != "true"
    report = limits.get("/_emulator/limits").json()
    assert report["requests_per_second"] == 1 and report["refused"] == 1
    limits.post("/_emulator/limits", json={"requests_per_second": None})
    assert stripe_client.v1.customers.list().data == []  # the refused create applied nothing


def test_search_has_its_own_lower_limit(limits, emulator_url):
    limits.post("/_emulator/limits", json={"requests_per_second": 1000})
    with httpx.Client(base_url=emulator_url, headers={"Authorization": f"Bearer {TEST_KEY}"}) as raw:
        statuses = [raw.get("/v1/customers/search", params={"query": "email:'x@example.com'"}).status_code
                    for _ in range(40)]
        assert raw.get("/v1/customers").status_code == 200  # the account's limit is far away
    assert 429 in statuses and statuses.index(429) >= 20


def test_limits_control_refuses_nonsense(limits):
    assert limits.post("/_emulator/limits", json={"requests_per_second": 0}).status_code == 400
    assert limits.post("/_emulator/limits", json={"rps": 5}).status_code == 400


# 4. Lock timeouts --------------------------------------------------------------------------------

def test_injected_lock_timeout_has_stripes_body_and_the_sdk_retries_it(emulator, emulator_url, stripe_client, catalogue):
    sub = catalogue.subscription()
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 429,
                                             "code": "lock_timeout"})
    with pytest.raises(stripe.RateLimitError) as locked:
        stripe_client.v1.subscriptions.update(sub.id, params={"metadata": {"k": "v"}})
    assert locked.value.http_status == 429 and locked.value.error.code == "lock_timeout"
    assert locked.value.user_message.startswith(LOCK_MESSAGE)
    assert locked.value.headers.get("Stripe-Should-Retry") == "true"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).metadata.to_dict() == {}
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 429,
                                             "code": "lock_timeout"})
    assert sdk(emulator_url, retries=1).v1.subscriptions.update(sub.id, params={"metadata": {"k": "v"}}).metadata["k"] == "v"


def test_a_write_to_an_object_held_by_a_write_in_progress_times_out(emulator, stripe_client, catalogue):
    sub = catalogue.subscription()
    emulator.post("/_emulator/faults", json={"method": "POST", "path": f"/v1/subscriptions/{sub.id}", "slow_seconds": 2})
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(stripe_client.v1.subscriptions.update, sub.id, params={"metadata": {"first": "1"}})
        deadline = time.monotonic() + 5
        while not any(r["method"] == "POST" and sub.id in r["path"] for r in emulator.get("/_emulator/requests").json()):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)  # logged on arrival; give it the moment it takes to hold the subscription
        with pytest.raises(stripe.RateLimitError) as locked:
            stripe_client.v1.subscriptions.update(sub.id, params={"metadata": {"second": "2"}})
        assert stripe_client.v1.customers.retrieve(sub.customer).id == sub.customer  # other objects are free
        slow.result(timeout=10)
    assert locked.value.error.code == "lock_timeout"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).metadata.to_dict() == {"first": "1"}


# 5. Restricted keys ------------------------------------------------------------------------------

def test_a_restricted_key_without_a_permission_is_refused_with_403(restricted, emulator_url, catalogue):
    key = "rk_test_" + "r" * 20 + "9876"
    answer = restricted.post("/_emulator/keys", json={"key": key, "deny": [
        "POST /v1/billing_portal/sessions", "POST /v1/customers", "GET /v1/invoices"]})
    assert answer.status_code == 200 and len(answer.json()["keys"][key]) == 3
    limited = sdk(emulator_url, key)
    customer = catalogue.customer()
    with pytest.raises(stripe.PermissionError) as refused:
        limited.v1.billing_portal.sessions.create(params={"customer": customer.id, "return_url": "http://x.test/"})
    error = refused.value
    assert error.http_status == 403 and error.error.type == "invalid_request_error"
    assert error.user_message.startswith("The provided key 'rk_test_****")
    assert "9876' does not have the required permissions for this endpoint on account 'acct_" in error.user_message
    assert key not in error.user_message
    with pytest.raises(stripe.PermissionError):
        limited.v1.customers.update(customer.id, params={"name": "Changed"})  # the path below is covered too
    assert limited.v1.customers.retrieve(customer.id).name == customer.name  # reads stay allowed
    assert catalogue.sdk.v1.customers.update(customer.id, params={"name": "Other"}).name == "Other"  # other keys too


def test_keys_control_refuses_a_malformed_rule(restricted):
    assert restricted.post("/_emulator/keys", json={"key": "rk_test_x", "deny": ["FETCH /v1/x"]}).status_code == 400
    assert restricted.post("/_emulator/keys", json={"key": "pk_test_x", "deny": []}).status_code == 400


# 6. Webhook events in the endpoint's API version ------------------------------------------------

def test_events_reach_an_endpoint_without_api_version_in_the_accounts_older_default(stripe_client, catalogue, hooks, emulator):
    assert emulator.get("/_emulator/account").json()["default_api_version"] == "2024-06-20"
    old, new = hooks(), hooks()
    stripe_client.v1.webhook_endpoints.create(params={"url": old.url, "enabled_events": ["customer.subscription.updated"]})
    stripe_client.v1.webhook_endpoints.create(params={"url": new.url, "enabled_events": ["customer.subscription.updated"],
                                                      "api_version": SDK_VERSION})
    sub = catalogue.subscription()
    stripe_client.v1.coupons.create(params={"id": "ten", "percent_off": 10, "duration": "forever"})
    stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "ten"}]})
    (old_event,), (new_event,) = old.wait_for(1), new.wait_for(1)
    assert old_event["id"] == new_event["id"]
    assert old_event["api_version"] == "2024-06-20" and new_event["api_version"] == SDK_VERSION
    before, after = old_event["data"]["object"], new_event["data"]["object"]
    item = after["items"]["data"][0]
    assert (before["current_period_start"], before["current_period_end"]) == \
        (item["current_period_start"], item["current_period_end"])
    assert before["discount"]["coupon"]["id"] == "ten" and before["discount"]["id"] == after["discounts"][0]
    assert old_event["data"]["previous_attributes"]["discount"] is None
    assert "current_period_end" not in after and "discount" not in after
    assert "discount" not in new_event["data"]["previous_attributes"]


def test_invoice_events_before_basil_name_their_subscription_at_the_top(stripe_client, catalogue, hooks):
    old, new = hooks(), hooks()
    stripe_client.v1.webhook_endpoints.create(params={"url": old.url, "enabled_events": ["invoice.paid"]})
    stripe_client.v1.webhook_endpoints.create(params={"url": new.url, "enabled_events": ["invoice.paid"],
                                                      "api_version": SDK_VERSION})
    sub = catalogue.subscription()
    (old_event,), (new_event,) = old.wait_for(1), new.wait_for(1)
    before, after = old_event["data"]["object"], new_event["data"]["object"]
    assert before["subscription"] == sub.id and "parent" not in before
    assert after["parent"]["subscription_details"]["subscription"] == sub.id and "subscription" not in after


def test_the_accounts_default_version_can_be_set(stripe_client, catalogue, hooks, emulator):
    try:
        assert emulator.post("/_emulator/account", json={"default_api_version": "1999-01-01"}).status_code == 400
        emulator.post("/_emulator/account", json={"default_api_version": SDK_VERSION}).raise_for_status()
        hook = hooks()
        stripe_client.v1.webhook_endpoints.create(params={"url": hook.url, "enabled_events": ["customer.subscription.created"]})
        catalogue.subscription()
        (event,) = hook.wait_for(1)
        assert event["api_version"] == SDK_VERSION and "current_period_end" not in event["data"]["object"]
    finally:
        emulator.post("/_emulator/account", json={"default_api_version": "2024-06-20"}).raise_for_status()


# 7. Required parameters --------------------------------------------------------------------------

@pytest.mark.parametrize("call, param", [
    (lambda c, cus, price, sub: c.v1.subscriptions.create(params={"items": [{"price": price}]}), "customer"),
    (lambda c, cus, price, sub: c.v1.subscriptions.create(params={"customer": cus}), "items"),
    (lambda c, cus, price, sub: c.v1.billing_portal.sessions.create(params={"return_url": "http://x.test/"}), "customer"),
    (lambda c, cus, price, sub: c.v1.billing_portal.sessions.create(params={
        "customer": cus, "flow_data": {"type": "subscription_cancel"}}), "flow_data[subscription_cancel]"),
    (lambda c, cus, price, sub: c.v1.billing_portal.sessions.create(params={
        "customer": cus, "flow_data": {"subscription_cancel": {"subscription": sub}}}), "flow_data[type]"),
    (lambda c, cus, price, sub: c.v1.subscriptions.update(sub, params={"pause_collection": {"resumes_at": 1}}),
     "pause_collection[behavior]"),
    (lambda c, cus, price, sub: c.v1.webhook_endpoints.create(params={"enabled_events": ["*"]}), "url"),
])
def test_required_parameters_are_required(stripe_client, catalogue, call, param):
    sub = catalogue.subscription()
    endpoints = [e.id for e in stripe_client.v1.webhook_endpoints.list(params={"limit": 100}).data]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        call(stripe_client, sub.customer, sub["items"].data[0].price.id, sub.id)
    assert missing.value.http_status == 400 and missing.value.code == "parameter_missing"
    assert missing.value.param == param and missing.value.user_message == f"Missing required param: {param}."
    assert [s.id for s in stripe_client.v1.subscriptions.list(params={"customer": sub.customer}).data] == [sub.id]
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None
    assert [e.id for e in stripe_client.v1.webhook_endpoints.list(params={"limit": 100}).data] == endpoints


# 8. Local webhook URLs ---------------------------------------------------------------------------

@pytest.mark.emulator_only("Stripe refuses loopback and plain-http webhook URLs; the emulator, being local, accepts them")
def test_loopback_and_plain_http_webhook_urls_are_accepted(stripe_client):
    for url in ("http://127.0.0.1:9/hook", "http://localhost:8000/webhooks/stripe"):
        assert stripe_client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": ["*"]}).url == url


def test_an_events_pending_webhooks_counts_down_as_deliveries_succeed(stripe_client, emulator, catalogue):
    """event.pending_webhooks: the deliveries not yet successful
    (https://docs.stripe.com/api/events/object#event_object-pending_webhooks)."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        stripe_client.v1.webhook_endpoints.create(params={"url": f"http://127.0.0.1:{server.server_port}/hook",
                                                         "enabled_events": ["customer.subscription.created"]})
        catalogue.subscription()
        deadline = time.monotonic() + 10
        while True:
            event = stripe_client.v1.events.list(params={"type": "customer.subscription.created"}).data[0]
            if event.pending_webhooks == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert event.pending_webhooks == 0
    finally:
        server.shutdown()
