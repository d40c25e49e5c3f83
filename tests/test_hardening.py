"""Faults and hostile input change nothing they should not."""

import asyncio
import json
import logging
import socket
import threading
import time
from dataclasses import replace
from urllib.parse import quote

import httpx
import pytest
import sqlalchemy as sa
import stripe
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from cancel_flow.errors import StripeUnavailable
from cancel_flow.logs import JsonLineFormatter
from cancel_flow.stripe_gateway import StripeGateway
from tests.conftest import TEST_KEY
from tests.helpers import csrf_of

COUPON = "cancel-flow_half-off-3-payments_50pct_3m"
FAULTS = [pytest.param({"status": 500}, id="500"), pytest.param({"status": 429}, id="429"),
          pytest.param({"hang_seconds": 2}, id="hang")]
HYPOTHESIS = hypothesis_settings(max_examples=60, deadline=None, database=None,
                                 suppress_health_check=list(HealthCheck))


@pytest.fixture
def impatient(make_client):
    """The app with a 1-second Stripe timeout, one retry and a 2.5-second deadline, as the fault tests need."""
    return make_client(stripe_timeout=1, stripe_max_network_retries=1, stripe_deadline=2.5)


def opened(client, catalogue, signer, reason: str | None = "too_expensive"):
    sub = catalogue.settled_subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"/cancel/{token}"
    page = client.get(url)
    if reason:
        client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
    return sub, url, csrf_of(page.text), signer.read_cancel(token).nonce


def inject(emulator, method: str, path: str, fault: dict) -> None:
    """Failures for every attempt the app makes: the one retry of a 5xx or a hang, and a 429 (retried until the
    deadline) until the test clears the faults."""
    count = 100 if fault.get("status") == 429 else 2
    emulator.post("/_emulator/faults", json={"method": method, "path": path, "count": count, **fault}).raise_for_status()


def wait_quiet(emulator, fault: dict) -> None:
    """After a hang, let the hung requests finish at the emulator before going on."""
    if "hang_seconds" in fault:
        time.sleep(fault["hang_seconds"] + 0.5)
    emulator.delete("/_emulator/faults")


def assert_failed_politely(response) -> None:
    assert response.status_code == 503
    assert "Nothing was changed" in response.text and "Continue to cancel" in response.text
    assert "Traceback" not in response.text


@pytest.mark.parametrize("fault", FAULTS)
def test_stripe_read_failure_on_first_view(impatient, catalogue, signer, emulator, fault, store):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    inject(emulator, "GET", "/v1/subscriptions/*", fault)
    assert_failed_politely(impatient.get(f"/cancel/{token}"))
    assert store.find_session(signer.read_cancel(token).nonce) is None
    wait_quiet(emulator, fault)
    assert impatient.get(f"/cancel/{token}").status_code == 200


@pytest.mark.parametrize("fault", FAULTS)
def test_stripe_update_failure_then_retry_applies_exactly_once(impatient, catalogue, signer, emulator, fault,
                                                               stripe_client, store):
    stripe_client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    sub, url, csrf, nonce = opened(impatient, catalogue, signer)
    inject(emulator, "POST", "/v1/subscriptions/*", fault)
    assert_failed_politely(impatient.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"}))
    assert store.find_session(nonce).outcome == "open"
    wait_quiet(emulator, fault)
    retry = impatient.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
    assert retry.status_code == 303
    assert "50% off" in impatient.get(f"{url}/done").text
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1
    assert store.find_session(nonce).outcome == "saved_discount"


@pytest.mark.parametrize("fault", FAULTS)
def test_coupon_create_failure_then_retry_applies_exactly_once(impatient, catalogue, signer, emulator, fault,
                                                               stripe_client, store):
    sub, url, csrf, nonce = opened(impatient, catalogue, signer)
    inject(emulator, "POST", "/v1/coupons", fault)
    assert_failed_politely(impatient.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"}))
    assert store.find_session(nonce).outcome == "open"
    wait_quiet(emulator, fault)
    assert impatient.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"}).status_code == 303
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1


@pytest.mark.parametrize("fault", FAULTS)
def test_portal_session_failure_keeps_the_session_undecided(impatient, catalogue, signer, emulator, fault, store):
    sub, url, csrf, nonce = opened(impatient, catalogue, signer, reason=None)
    inject(emulator, "POST", "/v1/billing_portal/sessions", fault)
    failed = impatient.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert failed.status_code == 503 and "Continue to cancel" in failed.text
    assert store.find_session(nonce).outcome == "open"
    wait_quiet(emulator, fault)
    again = impatient.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 303 and "/p/session/" in again.headers["location"]
    assert store.find_session(nonce).outcome == "sent_to_portal"


class FailingRecord:
    """The database fails the next write of a decision (after Stripe applied it)."""

    def __init__(self, app):
        self.armed = True
        for store in (app.state.store, app.state.quick_store):  # the loop's quick connections and the pool's
            sa.event.listen(store.engine, "before_cursor_execute", self.check)

    def check(self, conn, cursor, statement, parameters, context, executemany):
        if self.armed and statement.lstrip().upper().startswith("UPDATE CANCEL_SESSION") and "saved_" in str(parameters):
            self.armed = False
            raise sa.exc.OperationalError(statement, parameters, Exception("the database went away"))


def test_database_failure_after_stripe_is_reconciled_on_the_next_visit(client, catalogue, signer, stripe_client, store):
    sub, url, csrf, nonce = opened(client, catalogue, signer)
    FailingRecord(client.app)
    response = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
    assert response.status_code == 503 and "Reload this page" in response.text
    assert store.find_session(nonce).outcome == "open"
    assert "50% off your next 3 payments" in client.get(url).text
    assert store.find_session(nonce).outcome == "saved_discount"
    assert client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"}).status_code == 303
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_database_failure_after_stripe_is_reconciled_by_the_webhook(make_client, catalogue, signer, stripe_client, store):
    secret = "whsec_hardening_" + "c" * 24
    client = make_client(stripe_webhook_secret=secret)
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason="unused")
    FailingRecord(client.app)
    assert client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause", "payments": "2"}).status_code == 503
    state = stripe_client.v1.subscriptions.retrieve(sub.id).to_dict()
    payload = json.dumps({"id": "evt_reconcile", "object": "event", "type": "customer.subscription.updated",
                          "created": int(time.time()), "data": {"object": state}}, default=float)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret)
    assert client.post("/webhooks/stripe", content=payload, headers={"Stripe-Signature": header}).status_code == 200
    session = store.find_session(nonce)
    assert session.outcome == "saved_pause" and session.chosen_offer == "pause"


def test_tokens_never_cause_a_500(client):
    @given(token=st.text(max_size=3000))
    @HYPOTHESIS
    def check(token):
        for path in (f"/cancel/{quote(token, safe='')}", f"/cancel/{quote(token, safe='')}/done",
                     f"/billing/{quote(token, safe='')}"):
            response = client.get(path)
            # an empty token is "/cancel/", which redirects to "/cancel" (and then 404)
            assert response.status_code in (307, 400, 404, 405, 410), (path, response.status_code)
            assert "Traceback" not in response.text
    check()


def test_form_fields_never_cause_a_500_nor_a_wrong_change(client, catalogue, signer, stripe_client, store):
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason=None)
    text = st.one_of(st.text(max_size=3000), st.sampled_from(["too_expensive", "pause", "half-off-3-payments", "", "3"]))

    @given(reason=text, comment=text, offer=text, payments=text, target=st.sampled_from(["reason", "accept"]))
    @HYPOTHESIS
    def check(reason, comment, offer, payments, target):
        data = {"csrf_token": csrf, "reason": reason, "comment": comment, "offer": offer, "payments": payments}
        response = client.post(f"{url}/{target}", data=data)
        assert response.status_code in (303, 400, 409), response.status_code
        assert "Traceback" not in response.text

    check()
    session = store.find_session(nonce)
    assert session.reason in (None, "too_expensive")
    assert session.comment is None or len(session.comment) <= 2000


@pytest.mark.parametrize("body", [b"\xff\xfe\x00reason=\xc3(", b"reason=%ff%fe&comment=%00%01", b"=" * 5000, b"&&&==&"])
def test_undecodable_bodies_are_a_400(client, catalogue, signer, body):
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason=None)
    response = client.post(f"{url}/reason", content=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and "Traceback" not in response.text


def test_bodies_over_the_limit_are_413(client, catalogue, signer, store):
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason=None)
    response = client.post(f"{url}/reason", data={"csrf_token": csrf, "reason": "other", "comment": "x" * 70_000})
    assert response.status_code == 413
    assert store.find_session(nonce).reason is None


def _chunks(size: int, piece: int = 4096):
    """A body sent in chunks, with no Content-Length (Transfer-Encoding: chunked)."""
    for start in range(0, size, piece):
        yield b"x" * min(piece, size - start)


def test_chunked_bodies_over_the_limit_are_413_like_sized_ones(live_server, catalogue, signer, store):
    server = live_server(stripe_webhook_secret="whsec_hardening_" + "c" * 24)
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        sub = catalogue.subscription()
        token, _ = signer.cancel_token(sub.customer, sub.id)
        csrf = csrf_of(browser.get(f"/cancel/{token}").text)
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for path, headers in ((f"/cancel/{token}/reason", form), ("/dashboard/login", form), ("/", form),
                              ("/webhooks/stripe", {"Stripe-Signature": "t=1,v1=00"}),
                              ("/api/links", {"Content-Type": "application/json"})):
            chunked = browser.post(path, content=_chunks(70_000), headers=headers)
            assert "content-length" not in chunked.request.headers and \
                chunked.request.headers["transfer-encoding"] == "chunked"
            assert chunked.status_code == 413, (path, chunked.status_code)
            sized = browser.post(path, content=b"x" * 70_000, headers=headers)
            assert sized.status_code == 413, (path, sized.status_code)
        # under the limit, a chunked form is read as any other
        body = f"csrf_token={csrf}&reason=other&comment=" + "y" * 1000
        answer = browser.post(f"/cancel/{token}/reason", content=(part.encode() for part in (body[:500], body[500:])),
                              headers=form)
        assert answer.status_code == 303
    session = store.find_session(signer.read_cancel(token).nonce)
    assert (session.reason, session.comment) == ("other", "y" * 1000)


def test_no_secret_reaches_the_logs(make_client, catalogue, signer, store, caplog, emulator_url):
    from cancel_flow.passwords import hash_password
    from cancel_flow.store.api_keys import ApiKeyStore
    from cancel_flow.store.coaches import CoachStore

    client = make_client()
    password, api_key = "a very secret password", "cfk_" + "s" * 40
    CoachStore(store.engine).add("coach@example.com", hash_password(password))
    ApiKeyStore(store.engine).add("app", api_key)
    # What the service writes: its own JSON lines, and other libraries' warnings and errors.
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        sub, url, csrf, nonce = opened(client, catalogue, signer)
        client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
        client.get(f"{url}/done")
        minted = client.post("/api/links", json={"customer": sub.customer}, headers={"Authorization": f"Bearer {api_key}"}).json()
        client.get(minted["billing_url"].removeprefix("http://testserver"))
        login = client.get("/dashboard/login")
        client.post("/dashboard/login", data={"csrf_token": csrf_of(login.text), "email": "coach@example.com", "password": password})
        client.get("/dashboard")
    cookie = client.cookies.get("cf_coach")
    logged = "\n".join(JsonLineFormatter().format(record) for record in caplog.records
                        if record.name.startswith("cancel_flow") or record.levelno >= logging.WARNING)
    assert "http.request" in logged and cookie
    for secret in (url.split("/cancel/")[1], minted["cancel_url"].split("/cancel/")[1],
                   minted["billing_url"].split("/billing/")[1], api_key, password, cookie, TEST_KEY, csrf):
        assert secret not in logged


def test_stripe_calls_go_through_the_proxy_the_environment_names(settings, catalogue, monkeypatch):
    sub = catalogue.subscription()
    proxy = socket.socket()
    proxy.bind(("127.0.0.1", 0))
    proxy.listen()
    request_lines = []

    def answer_as_a_failing_proxy():
        connection, _ = proxy.accept()
        with connection:
            request_lines.append(connection.recv(65536).split(b"\r\n", 1)[0].decode())
            connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    threading.Thread(target=answer_as_a_failing_proxy, daemon=True).start()
    for name in ("NO_PROXY", "no_proxy", "http_proxy", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.getsockname()[1]}")

    async def read():
        gateway = StripeGateway(replace(settings, stripe_max_network_retries=0))
        try:
            return await gateway.read_subscription(sub.id)
        finally:
            await gateway.close()

    with pytest.raises(StripeUnavailable):
        asyncio.run(read())
    proxy.close()
    assert request_lines == [f"GET {settings.stripe_api_base}/v1/subscriptions/{sub.id}"
                             "?expand%5B0%5D=items.data.price.product&expand%5B1%5D=customer"
                             "&expand%5B2%5D=discounts.source.coupon&expand%5B3%5D=customer.discount.source.coupon"
                             "&expand%5B4%5D=customer.tax_ids HTTP/1.1"]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert asyncio.run(read()).subscription_id == sub.id


def test_a_get_is_sent_as_the_sdk_sends_it_with_the_same_answers_and_errors(settings, catalogue, monkeypatch):
    """The gateway's GETs (their headers and query strings made once, sent on a kept connection) send what the
    SDK's own request would."""
    from cancel_flow import stripe_gateway
    from cancel_flow.stripe_reads import KeptConnectionGets

    sub = catalogue.subscription()

    async def sent_both_ways(path, **params):
        gateway = StripeGateway(settings)
        client = gateway._once._requestor._get_http_client()
        real, seen, answers = client.request_stream_with_retries_async, [], []
        real_kept = KeptConnectionGets.get

        async def spy(method, url, headers, post_data=None, max_network_retries=None, *, _usage=None):
            seen.append((method, url, dict(headers), post_data, _usage))
            return await real(method, url, headers, post_data, max_network_retries=max_network_retries, _usage=_usage)

        async def spy_kept(kept, target, headers, usage):
            seen.append(("get", kept.base + target, dict(headers), None, usage))
            return await real_kept(kept, target, headers, usage)

        monkeypatch.setattr(client, "request_stream_with_retries_async", spy)
        monkeypatch.setattr(KeptConnectionGets, "get", spy_kept)
        try:
            for sdk_logs in (False, False, True):  # made, kept, and the SDK's own request (its log lines wanted)
                monkeypatch.setattr(stripe_gateway, "_sdk_logs", lambda: sdk_logs)
                try:
                    answers.append(await gateway._raw("test", "get", path, **params))
                except stripe.StripeError as error:
                    answers.append((type(error), error.http_status, error.code))
        finally:
            await gateway.close()
        return seen, answers

    for path, params in ((f"/v1/subscriptions/{sub.id}", {"expand": ["customer", "items.data.price.product"]}),
                         ("/v1/products", {"ids": [sub.id], "limit": 100}), ("/v1/subscriptions/sub_missing", {})):
        seen, answers = asyncio.run(sent_both_ways(path, **params))
        assert len(seen) == 3 and seen[0] == seen[1] == seen[2]
        assert answers[0] == answers[1] == answers[2]
        assert "Authorization" in seen[0][2] and "Idempotency-Key" not in seen[0][2]
    assert answers[0][0] is stripe.InvalidRequestError and answers[0][1] == 404
