"""The subscriber's flow over HTTP: the real app, the real SDK, the Stripe emulator."""

import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from freezegun import freeze_time

from cancel_flow.logs import JsonLineFormatter
from tests.helpers import csrf_of, visible_text

COUPON = "cancel-flow_half-off-3-payments_50pct_3m"
DAY = 86400


@pytest.fixture
def link(signer):
    def mint(subscription) -> str:
        token, _ = signer.cancel_token(subscription.customer, subscription.id)
        return f"/cancel/{token}"
    return mint


def give_reason(client, url: str, reason: str, comment: str = ""):
    page = client.get(url)
    assert page.status_code == 200, page.text
    response = client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason, "comment": comment})
    assert response.status_code == 303, response.text
    return client.get(url)


def accept(client, url: str, offer: str, **fields):
    page = client.get(url)
    return client.post(f"{url}/accept", data={"csrf_token": csrf_of(page.text), "offer": offer, **fields})


def subscription_posts(emulator, sub_id: str) -> int:
    return sum(1 for r in emulator.get("/_emulator/requests").json() if r["method"] == "POST" and r["path"].endswith(sub_id))


def test_retention_page_names_plan_price_reasons_and_offers_cancel(client, catalogue, link):
    page = client.get(link(catalogue.subscription()))
    assert page.status_code == 200
    assert "Coaching Plan" in page.text and "$49.00 per month" in page.text
    for reason in ("too_expensive", "missing_features", "switched_service", "unused", "customer_service",
                   "too_complex", "low_quality", "other"):
        assert f'value="{reason}"' in page.text
    assert 'name="comment"' in page.text and "Continue to cancel" in page.text
    assert "Peak Performance Coaching" in page.text  # brand from offers.toml


@pytest.mark.parametrize("reason, shown", [
    ("too_expensive", ["Stay for half price"]),
    ("unused", ["Stay for half price", "Take a break instead"]),
    ("other", ["Take a break instead"]),
])
def test_offers_match_the_reason(client, catalogue, link, reason, shown):
    page = give_reason(client, link(catalogue.subscription()), reason)
    for title in ("Stay for half price", "Take a break instead"):
        assert (title in page.text) == (title in shown)
    assert "Continue to cancel" in page.text


def test_reason_without_offers_still_offers_cancel(client, catalogue, link):
    page = give_reason(client, link(catalogue.subscription()), "switched_service")
    assert "sorry to see you go" in page.text and "Continue to cancel" in page.text and "Accept" not in page.text


def test_accept_discount_attaches_coupon_and_done_page_states_the_new_price(client, catalogue, link, stripe_client, store):
    sub = catalogue.settled_subscription()
    url = link(sub)
    give_reason(client, url, "too_expensive", "money is tight")
    response = accept(client, url, "half-off-3-payments")
    assert response.status_code == 303 and response.headers["location"] == f"{url}/done"
    done = client.get(f"{url}/done")
    assert "50% off your next 3 payments (" in done.text and "$24.50/month, then $49.00/month from" in done.text
    assert "Continue to cancel" in done.text
    after = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts.source.coupon"]})
    coupon = after.discounts[0].source.coupon
    assert coupon.id == COUPON and coupon.percent_off == 50 and coupon.duration_in_months == 3
    session = store.find_session(url.rsplit(".", 1)[0] and _nonce(url))
    assert session.outcome == "saved_discount" and session.chosen_offer == "half-off-3-payments"
    assert session.reason == "too_expensive" and session.comment == "money is tight"
    assert session.monthly_amount == 4900 and session.customer_email == "client@example.com"


def _nonce(url: str) -> str:
    import base64

    payload = url.split("/cancel/")[1].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["n"]


def test_accept_pause_sets_pause_collection_and_states_the_resume_date(client, catalogue, link, stripe_client, signer):
    sub = catalogue.subscription()
    renews = datetime.fromtimestamp(sub["items"].data[0].current_period_end, timezone.utc)
    url = link(sub)
    give_reason(client, url, "unused")
    page = client.get(url)
    assert "Skip your payment of" in page.text and "Skip your payments of" in page.text
    # the shortest pause is preselected, the longest is a choice the subscriber makes
    assert re.findall(r'name="payments" value="(\d)" ?(checked)?>', page.text) == [("1", "checked"), ("2", ""), ("3", "")]
    response = accept(client, url, "pause", payments="2")
    assert response.status_code == 303
    done = client.get(f"{url}/done")
    assert "Your break has started" in done.text and "Skip your payments of" in done.text
    pause = stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection
    assert pause.behavior == "void"
    # resumes after the second skipped renewal's invoice is final at the latest (72 hours when Stripe's
    # invoice.created webhook goes unanswered), long before the next renewal
    second = renews.replace(month=renews.month % 12 + 1, year=renews.year + (renews.month == 12))
    assert datetime.fromtimestamp(pause.resumes_at, timezone.utc) == second + timedelta(hours=73)


def test_pause_length_is_bounded_by_the_offer(client, catalogue, link, stripe_client):
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "unused")
    response = accept(client, url, "pause", payments="7")
    assert response.status_code == 400 and "from 1 to 3 payments" in response.text
    assert accept(client, url, "pause", payments="\u0662").status_code == 400  # ARABIC-INDIC DIGIT TWO
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None


def test_continue_to_cancel_goes_to_the_portal_and_comes_back_to_done(client, catalogue, link, stripe_client, store):
    sub = catalogue.subscription()
    url = link(sub)
    page = client.get(url)
    response = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text), "reason": "switched_service",
                                                 "comment": "found another coach"})
    assert response.status_code == 303
    portal_url = response.headers["location"]
    assert "/p/session/" in portal_url
    session = store.find_session(_nonce(url))
    assert session.outcome == "sent_to_portal" and session.reason == "switched_service"
    portal = httpx.get(portal_url)
    assert "Cancel your subscription" in portal.text
    confirmed = httpx.post(portal_url + "/cancel", data={"reason": "switched_service"})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == f"http://testserver{url}/done"
    done = client.get(f"{url}/done")
    assert "Your subscription is canceled" in done.text and "You keep access until" in done.text
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True


def test_backing_out_of_the_portal_leaves_the_subscription_and_cancel_one_click_away(client, catalogue, link):
    url = link(catalogue.subscription())
    page = client.get(url)
    client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text)})
    done = client.get(f"{url}/done")
    assert "still active" in done.text and "Continue to cancel" in done.text


def test_reopening_a_decided_link_shows_the_decision_and_applies_nothing_twice(client, catalogue, link, emulator, stripe_client):
    sub = catalogue.settled_subscription()
    url = link(sub)
    give_reason(client, url, "too_expensive")
    accept(client, url, "half-off-3-payments")
    writes = subscription_posts(emulator, sub.id)
    again = client.get(url)
    assert "50% off your next 3 payments" in again.text
    repeat = client.post(f"{url}/accept", data={"csrf_token": csrf_of(again.text), "offer": "half-off-3-payments"})
    assert repeat.status_code == 303
    assert subscription_posts(emulator, sub.id) == writes
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1


def test_concurrent_accepts_on_one_link_apply_once(live_server, catalogue, link, stripe_client, store):
    server = live_server()
    sub = catalogue.settled_subscription()
    url = server.url + link(sub)
    with httpx.Client() as http:
        page = http.get(url)
        http.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
        csrf = csrf_of(http.get(url).text)

    def post(_):
        with httpx.Client(timeout=30) as http:
            return http.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"}).status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(post, range(10)))
    assert statuses == [303] * 10
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1
    assert stripe_client.v1.coupons.retrieve(COUPON).times_redeemed == 1
    assert store.find_session(_nonce(url)).outcome == "saved_discount"


def test_coupon_is_created_once_with_a_stable_id_and_reused(client, catalogue, link, stripe_client, emulator):
    start = datetime(2027, 3, 10, 9, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    subs = [catalogue.subscription(catalogue.customer(email=email, test_clock=clock.id))
            for email in ("a@example.com", "b@example.com")]
    catalogue.advance(clock.id, int((start + timedelta(days=1)).timestamp()))
    with freeze_time(start + timedelta(days=1), real_asyncio=True):
        for sub in subs:
            url = link(sub)
            give_reason(client, url, "too_expensive")
            assert accept(client, url, "half-off-3-payments").status_code == 303
    coupons = stripe_client.v1.coupons.list().data
    assert [c.id for c in coupons] == [COUPON] and coupons[0].times_redeemed == 2


def test_a_discount_accepted_in_the_second_the_subscription_began_still_covers_three_payments(
        client, catalogue, link, stripe_client):
    """Stripe's timestamps are whole seconds: a coupon attached in the second of the renewal (here, of the creation)
    would end on the third renewal itself; the coupon chosen covers all three."""
    start = datetime(2027, 3, 10, 9, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    sub = catalogue.subscription(catalogue.customer(test_clock=clock.id))
    with freeze_time(start + timedelta(microseconds=700_000), real_asyncio=True):
        url = link(sub)
        give_reason(client, url, "too_expensive")
        assert accept(client, url, "half-off-3-payments").status_code == 303
    after = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]})
    assert after.discounts[0].end == int(datetime(2027, 7, 10, 9, tzinfo=timezone.utc).timestamp())  # after 10 June


def test_once_coupons_exist_accepting_a_discount_costs_two_stripe_calls(client, catalogue, link, emulator, stripe_client):
    stripe_client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    url = link(catalogue.settled_subscription())
    emulator.delete("/_emulator/faults")
    before = len(emulator.get("/_emulator/requests").json())
    give_reason(client, url, "too_expensive")
    accept(client, url, "half-off-3-payments")
    client.get(f"{url}/done")
    calls = emulator.get("/_emulator/requests").json()[before:]
    assert [(c["method"], c["path"].split("/")[2]) for c in calls] == [("GET", "subscriptions"), ("POST", "subscriptions")]


def test_yearly_plan_gets_no_pause(client, catalogue, link):
    page = give_reason(client, link(catalogue.subscription(interval="year", amount=49000)), "unused")
    assert "Take a break instead" not in page.text and "25% off your next year" in page.text
    assert "$367.50" in page.text and "Stay for half price" not in page.text  # not three years at half price


def test_existing_discount_means_no_second_discount(client, catalogue, link, stripe_client):
    stripe_client.v1.coupons.create(params={"id": "welcome", "percent_off": 10, "duration": "forever"})
    page = give_reason(client, link(catalogue.subscription(discounts=[{"coupon": "welcome"}])), "unused")
    assert "Stay for half price" not in page.text and "Take a break instead" in page.text


def test_already_paused_gets_no_pause(client, catalogue, link, stripe_client):
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    page = give_reason(client, link(sub), "other")
    assert "Take a break instead" not in page.text and "sorry to see you go" in page.text


def test_no_offer_inside_the_cooldown_after_an_accepted_offer(client, catalogue, link):
    customer = catalogue.customer()
    first = link(catalogue.subscription(customer))
    give_reason(client, first, "too_expensive")
    accept(client, first, "half-off-3-payments")
    second = link(catalogue.subscription(customer))
    page = give_reason(client, second, "unused")
    assert "Take a break instead" not in page.text and "Stay for half price" not in page.text


def test_cooldown_ends_after_its_days(client, catalogue, link):
    customer = catalogue.customer()
    with freeze_time("2025-01-10 10:00:00", real_asyncio=True):
        first = link(catalogue.subscription(customer))
        give_reason(client, first, "unused")
        accept(client, first, "pause", payments="1")
    with freeze_time("2026-01-15 10:00:00", real_asyncio=True):
        page = give_reason(client, link(catalogue.subscription(customer)), "unused")
    assert "Take a break instead" in page.text


def test_already_canceled_subscription_has_its_own_page(client, catalogue, link, stripe_client):
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(sub.id)
    page = client.get(link(sub))
    assert page.status_code == 200 and "already canceled" in page.text


def test_scheduled_cancellation_offers_keep_my_subscription(client, catalogue, link, stripe_client):
    sub = catalogue.subscription(cancel_at_period_end=True)
    url = link(sub)
    page = client.get(url)
    assert "set to end" in page.text and "Keep my subscription" in page.text
    response = client.post(f"{url}/keep", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False
    assert "Your subscription continues" in client.get(f"{url}/done").text


def test_tampered_link_is_a_400_page(client, catalogue, link):
    url = link(catalogue.subscription())
    page = client.get(url[:-3] + ("aaa" if not url.endswith("aaa") else "bbb"))
    assert page.status_code == 400 and "This link is not valid" in page.text and "Traceback" not in page.text


def test_link_for_someone_elses_subscription_is_refused(client, catalogue, signer):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token("cus_someoneelse", sub.id)
    assert client.get(f"/cancel/{token}").status_code == 400


def test_expired_link_shows_410_and_applies_nothing(client, catalogue, signer, emulator, settings):
    sub = catalogue.subscription()
    with freeze_time("2026-11-01 09:00:00", real_asyncio=True) as frozen:
        token, _ = signer.cancel_token(sub.customer, sub.id)
        frozen.tick(settings.link_max_age + 1)
        before = len(emulator.get("/_emulator/requests").json())
        page = client.get(f"/cancel/{token}")
        posted = client.post(f"/cancel/{token}/accept", data={"offer": "half-off-3-payments"})
    assert page.status_code == 410 and "expired" in page.text and "fresh link" in page.text
    assert posted.status_code == 410
    assert len(emulator.get("/_emulator/requests").json()) == before


def test_unknown_offer_and_offer_not_shown_are_400(client, catalogue, link, stripe_client):
    sub = catalogue.subscription()
    url = link(sub)
    page = give_reason(client, url, "too_expensive")
    csrf = csrf_of(page.text)
    assert client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "free-forever"}).status_code == 400
    not_shown = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause"})
    assert not_shown.status_code == 400 and "available for this subscription" in not_shown.text
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None


def test_missing_or_wrong_csrf_token_is_400_and_changes_nothing(client, catalogue, link, stripe_client, store):
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "too_expensive")
    assert client.post(f"{url}/accept", data={"offer": "half-off-3-payments"}).status_code == 400
    assert client.post(f"{url}/cancel", data={"csrf_token": "0" * 40}).status_code == 400
    assert stripe_client.v1.subscriptions.retrieve(sub.id).discounts == []
    assert store.find_session(_nonce(url)).outcome == "open"


def test_a_reason_outside_the_list_is_refused_with_an_announced_message(client, catalogue, link):
    url = link(catalogue.subscription())
    page = client.get(url)
    response = client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "bored"})
    assert response.status_code == 400 and 'role="alert"' in response.text and 'aria-describedby="form-error"' in response.text


def test_long_comment_is_refused_not_truncated(client, catalogue, link, store):
    url = link(catalogue.subscription())
    page = client.get(url)
    response = client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "other",
                                                 "comment": "x" * 2001})
    assert response.status_code == 400 and "under 2,000" in response.text
    session = store.find_session(_nonce(url))
    assert session.reason is None and session.comment is None


def test_comment_is_escaped_on_the_page(client, catalogue, link):
    url = link(catalogue.subscription())
    page = client.get(url)
    response = client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "bored",
                                                 "comment": "<script>alert(1)</script>"})
    assert "<script>alert(1)</script>" not in response.text and "&lt;script&gt;" in response.text


def test_money_is_formatted_per_currency(client, catalogue, link):
    assert "¥5,000 per month" in client.get(link(catalogue.subscription(amount=5000, currency="jpy"))).text
    assert "€19.90 per month" in client.get(link(catalogue.subscription(amount=1990, currency="eur"))).text


def test_stripe_outage_shows_503_keeps_cancel_and_a_retry_applies_once(client, catalogue, link, emulator, stripe_client, store):
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "too_expensive")
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500, "count": 5})
    failed = accept(client, url, "half-off-3-payments")
    assert failed.status_code == 503 and "Nothing was changed" in failed.text and "Continue to cancel" in failed.text
    assert store.find_session(_nonce(url)).outcome == "open"
    emulator.delete("/_emulator/faults")
    assert accept(client, url, "half-off-3-payments").status_code == 303
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_each_decision_is_one_json_log_line_without_the_token(client, catalogue, link, caplog):
    url = link(catalogue.subscription())
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        give_reason(client, url, "too_expensive")
        accept(client, url, "half-off-3-payments")
    lines = [JsonLineFormatter().format(r) for r in caplog.records if r.getMessage() == "cancel_session.decided"]
    assert len(lines) == 1
    decided = json.loads(lines[0])
    assert decided["outcome"] == "saved_discount" and decided["offer"] == "half-off-3-payments" and decided["session"]
    token = url.split("/cancel/")[1]
    assert all(token not in JsonLineFormatter().format(r) for r in caplog.records)


def test_pages_carry_security_headers(client, catalogue, link):
    page = client.get(link(catalogue.subscription()))
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-content-type-options"] == "nosniff"


def test_billing_link_redirects_to_a_fresh_portal_session(client, catalogue, signer):
    sub = catalogue.subscription()
    token, _ = signer.billing_token(sub.customer)
    first = client.get(f"/billing/{token}")
    second = client.get(f"/billing/{token}?flow=payment_method_update")
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] != second.headers["location"]
    assert "Update payment method" in httpx.get(second.headers["location"]).text


def test_two_links_for_one_subscription_get_one_offer_and_the_second_sees_the_first(client, catalogue, link, stripe_client, store):
    sub = catalogue.subscription()
    first, second = link(sub), link(sub)
    give_reason(client, first, "unused")
    give_reason(client, second, "unused")
    assert accept(client, first, "pause", payments="1").status_code == 303
    refused = accept(client, second, "half-off-3-payments")
    assert refused.status_code == 409 and "Continue to cancel" in refused.text
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert after.pause_collection is not None and not after.discounts
    # the same offer again on the second link neither restarts nor replaces it
    again = accept(client, second, "pause", payments="2")
    assert again.status_code == 409
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection.resumes_at == after.pause_collection.resumes_at
    outcomes = sorted(store.find_session(_nonce(url)).outcome for url in (first, second))
    assert outcomes == ["open", "saved_pause"]


def test_concurrent_accepts_of_different_offers_on_two_links_apply_exactly_one(live_server, catalogue, link, stripe_client, store):
    server = live_server()
    sub = catalogue.subscription()
    urls = [server.url + link(sub) for _ in range(6)]
    forms = []
    with httpx.Client() as http:
        for url in urls:
            page = http.get(url)
            http.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
            forms.append((url, csrf_of(http.get(url).text)))

    def post(index):
        url, csrf = forms[index]
        data = {"csrf_token": csrf, "offer": "pause", "payments": str(1 + index % 2)} if index % 3 else \
            {"csrf_token": csrf, "offer": "half-off-3-payments"}
        with httpx.Client(timeout=30) as http:
            return http.post(f"{url}/accept", data=data).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(post, range(6)))
    assert statuses.count(303) >= 1 and set(statuses) <= {303, 409}
    decided = [s for s in (store.find_session(_nonce(u)) for u in urls) if s.outcome != "open"]
    assert len(decided) == 1
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    if decided[0].outcome == "saved_discount":
        assert len(after.discounts) == 1 and after.pause_collection is None
    else:
        assert not after.discounts and after.pause_collection.resumes_at == int(decided[0].pause_resumes_at.replace(tzinfo=timezone.utc).timestamp())


def test_save_then_cancel_in_the_portal_the_done_page_says_canceled(client, catalogue, link, stripe_client):
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "unused")
    accept(client, url, "pause", payments="1")
    done = client.get(f"{url}/done")
    assert "Your break has started" in done.text
    csrf = csrf_of(done.text)
    to_portal = client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert to_portal.status_code == 303
    assert httpx.post(to_portal.headers["location"] + "/cancel").status_code == 303
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=30), real_asyncio=True):
        done = client.get(f"{url}/done")
    assert "Your subscription is canceled" in done.text and "Your break has started" not in done.text
    # and "Continue to cancel" again (the browser's back button) ends on that page, not an error
    again = client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert again.status_code == 303 and again.headers["location"].endswith(f"{url}/done")


def test_keep_my_subscription_is_a_save_and_undoes_a_cancel_at_too(client, catalogue, link, stripe_client, store):
    sub = catalogue.subscription()
    at = sub["items"].data[0].current_period_end
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": at})
    url = link(sub)
    page = client.get(url)
    assert "Keep my subscription" in page.text
    client.post(f"{url}/keep", data={"csrf_token": csrf_of(page.text)})
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert after.cancel_at is None and after.cancel_at_period_end is False
    session = store.find_session(_nonce(url))
    assert session.outcome == "saved_keep"
    assert "Your subscription continues" in client.get(f"{url}/done").text


def test_a_reason_given_on_the_cancel_form_is_kept_when_the_portal_fails(client, catalogue, link, emulator, store):
    url = link(catalogue.subscription())
    page = client.get(url)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/billing_portal/sessions", "status": 500, "count": 5})
    failed = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text), "reason": "too_complex", "comment": "too many apps"})
    assert failed.status_code == 503 and "Continue to cancel" in failed.text
    session = store.find_session(_nonce(url))
    assert session.reason == "too_complex" and session.comment == "too many apps" and session.outcome == "open"
    emulator.delete("/_emulator/faults")
    retried = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert retried.status_code == 303
    assert store.find_session(_nonce(url)).reason == "too_complex"



def test_a_lost_answer_then_another_offer_asks_stripe_first(client, catalogue, link, emulator, stripe_client, store):
    """Stripe applied the discount but its answer never came back (the request outlived our timeout);
    choosing the pause next must find the discount in Stripe, not add a pause on top of it."""
    stripe_client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    sub = catalogue.settled_subscription()
    url = link(sub)
    give_reason(client, url, "unused")
    emulator.post("/_emulator/faults", json={"method": "POST", "path": f"/v1/subscriptions/{sub.id}",
                                             "slow_seconds": 4, "count": 1})
    lost = accept(client, url, "half-off-3-payments")
    assert lost.status_code == 503 and "Continue to cancel" in lost.text
    time.sleep(4.5)  # the slow request has now been applied by Stripe
    second = accept(client, url, "pause", payments="1")
    assert second.status_code == 303 and second.headers["location"].endswith("/done")
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert len(after.discounts) == 1 and after.pause_collection is None
    assert store.find_session(_nonce(url)).outcome == "saved_discount"


def test_another_offer_while_the_first_may_still_run_at_stripe_is_refused_and_says_so(client, catalogue, link, emulator,
                                                                                        stripe_client, store):
    """The discount's request outlives our wait and is still running at Stripe. Choosing the pause on the
    same page is refused with a page naming the discount (never a pause on top of it); once Stripe has
    applied the discount, choosing the pause says the discount was already accepted."""
    stripe_client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    sub = catalogue.settled_subscription()
    url = link(sub)
    page = give_reason(client, url, "unused")
    csrf = csrf_of(page.text)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": f"/v1/subscriptions/{sub.id}",
                                             "slow_seconds": 5, "count": 1})
    started = time.monotonic()
    lost = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
    assert lost.status_code == 503 and "Continue to cancel" in lost.text
    assert time.monotonic() - started < 4.5  # the discount is still being applied at Stripe
    held = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause", "payments": "1"})
    assert held.status_code == 409, held.text
    assert "Stay for half price" in held.text and "still being applied" in held.text
    time.sleep(max(0.0, 5.5 - (time.monotonic() - started)))  # the slow request has now been applied by Stripe
    told = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause", "payments": "1"})
    assert told.status_code == 409 and "already accepted" in told.text and "Stay for half price" in told.text
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert len(after.discounts) == 1 and after.pause_collection is None
    assert store.find_session(_nonce(url)).outcome == "saved_discount"
    assert "50% off" in client.get(f"{url}/done").text


def _sessions_of(store, subscription_id: str) -> list:
    import sqlalchemy as sa

    from cancel_flow.models import CancelSession
    table = CancelSession.__table__
    with store.engine.connect() as connection:
        return connection.execute(sa.select(table).where(table.c.subscription_id == subscription_id)).all()


def test_a_second_link_opened_after_a_save_shows_that_decision_and_counts_no_new_session(client, catalogue, link, store):
    from cancel_flow.store.stats import DateRange, StatsQueries

    sub = catalogue.subscription()
    first = link(sub)
    give_reason(client, first, "unused")
    assert accept(client, first, "pause", payments="1").status_code == 303
    second = link(sub)
    for _ in range(2):
        page = client.get(second)
        assert page.status_code == 200
        words = visible_text(page.text)
        assert words.startswith("Already decided You accepted “Take a break instead” on ") and "with another link" in words
        assert "Your break has started Skip your payment of" in words and "Continue to cancel" in words
    assert len(_sessions_of(store, sub.id)) == 1  # the second link opened no session
    now = datetime.now(timezone.utc)
    assert StatsQueries(store.engine).stats(DateRange(now - timedelta(days=1), now + timedelta(days=1))).sessions == 1
    # cancel stays one click away: the second link's session starts when the subscriber acts
    leave = client.post(f"{second}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert leave.status_code == 303 and "/cancel/" not in leave.headers["location"]
    assert sorted(row.outcome for row in _sessions_of(store, sub.id)) == ["saved_pause", "sent_to_portal"]


def test_a_link_reopened_after_the_pause_ran_its_course_says_the_break_ended(client, catalogue, signer, stripe_client):
    start = datetime.now(timezone.utc).replace(microsecond=0)
    clock = catalogue.test_clock(int(start.timestamp()))
    sub = catalogue.subscription(catalogue.customer(test_clock=clock.id))

    def link(subscription):  # links from a renewal reminder: valid for months
        return f"/cancel/{signer.cancel_token(subscription.customer, subscription.id, max_age=120 * 86400)[0]}"
    url = link(sub)
    give_reason(client, url, "unused")
    assert accept(client, url, "pause", payments="1").status_code == 303
    resumes = datetime.fromtimestamp(stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection.resumes_at, timezone.utc)
    later = resumes + timedelta(days=3)
    catalogue.advance(clock.id, int(later.timestamp()))
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None
    with freeze_time(later, real_asyncio=True):
        done = visible_text(client.get(f"{url}/done").text)
        fresh = client.get(link(sub))  # the break is over: a new link asks why again
    assert done.startswith(f"Your break is over Your break ended on {resumes.day} {resumes:%B %Y}, and your plan is "
                           "active again. Your next payment is $49.00 on ")
    assert "no longer applies" not in done
    assert fresh.status_code == 200 and "Why are you leaving?" in fresh.text and "Already decided" not in fresh.text


def test_talk_to_your_coach_says_the_coach_was_told_and_mails_them_by_default(client, catalogue, link, store):
    import sqlalchemy as sa
    from urllib.parse import parse_qs, unquote, urlsplit

    from cancel_flow.models import OutboxDelivery

    sub = catalogue.subscription(catalogue.customer(email="maya@example.com", name="Maya Lopez"))
    url = link(sub)
    give_reason(client, url, "missing_features", "I need a meal plan for vegetarians")
    chosen = accept(client, url, "talk")
    assert chosen.status_code == 303 and chosen.headers["location"] == f"{url}/done"
    page = client.get(chosen.headers["location"])
    words = visible_text(page.text)
    assert words.startswith("Your coach has been told We've let Peak Performance Coaching know that you'd like to talk "
                            "before deciding, and why. They'll reach out to you by email at maya@example.com. Your "
                            "subscription stays as it is meanwhile")
    assert "Write to your coach now" in words and "Continue to cancel" in words
    mail = re.search(r'href="(mailto:[^"]+)"[^>]*>Write to your coach now<', page.text).group(1)
    parts = urlsplit(mail.replace("&amp;", "&"))
    fields = {name: values[0] for name, values in parse_qs(parts.query).items()}
    assert unquote(parts.path) == "coach@example.com"
    assert fields["subject"] == "Before I cancel my Coaching Plan subscription"
    assert "Why I'm thinking of leaving: Some features are missing\r\nWhat I'd add: I need a meal plan for vegetarians" \
        in fields["body"]
    # offers.toml has no [alerts]: the coach still gets an email, at the brand's support address, through the outbox
    with store.engine.connect() as connection:
        [alert] = connection.execute(sa.select(OutboxDelivery.__table__)).all()
    assert (alert.kind, alert.target, alert.event_type) == ("email", "coach@example.com", "contact.requested")
    text = json.loads(alert.payload)["text"]
    assert text.startswith("Maya Lopez (maya@example.com) wants to talk before canceling Coaching Plan\n\n")
    assert "Reason: Some features are missing\nComment: “I need a meal plan for vegetarians”" in text
def portal_posts(emulator) -> int:
    return sum(1 for r in emulator.get("/_emulator/requests").json()
               if r["method"] == "POST" and r["path"] == "/v1/billing_portal/sessions")


def test_the_return_from_the_portal_reads_stripe_afresh(client, catalogue, link, stripe_client):
    """Reason → Continue to cancel → back → reopen → Continue to cancel → confirm within seconds: the done page
    says what Stripe has now, not what it said when the link was reopened."""
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "unused")
    csrf = csrf_of(client.get(url).text)
    client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert "still active" in client.get(url).text  # back and reopen: Stripe read, nothing confirmed yet
    again = client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert httpx.post(again.headers["location"] + "/cancel").status_code == 303
    done = client.get(f"{url}/done")
    assert "Your subscription is canceled" in done.text and "wasn't confirmed" not in done.text


def test_continue_to_cancel_on_a_subscription_already_set_to_cancel_never_asks_for_a_cancel_flow(
        client, catalogue, link, stripe_client, emulator):
    sub = catalogue.subscription()
    url = link(sub)
    give_reason(client, url, "other")
    csrf = csrf_of(client.get(url).text)
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})  # in another tab
    before = portal_posts(emulator)
    response = client.post(f"{url}/cancel", data={"csrf_token": csrf})
    assert response.status_code == 303 and response.headers["location"] == url
    assert portal_posts(emulator) == before
    page = client.get(url)
    assert "Your subscription is set to end" in page.text and "Keep my subscription" in page.text


def test_an_end_date_the_coach_fixed_is_kept_shown_and_the_client_may_end_earlier(
        client, catalogue, link, stripe_client, emulator):
    sub = catalogue.subscription()
    period_end = sub["items"].data[0].current_period_end
    program_end = period_end + 60 * DAY  # a 12-week program
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": program_end})
    url = link(sub)
    page = client.get(url)
    ends = datetime.fromtimestamp(program_end, timezone.utc)
    assert "Your plan has an end date" in page.text and f"{ends.day} {ends:%B %Y}" in page.text
    assert "Keep my subscription" not in page.text
    client.post(f"{url}/keep", data={"csrf_token": csrf_of(page.text)})  # not offered, and it changes nothing
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at == program_end
    before = portal_posts(emulator)
    early = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text), "end_early": "1"})
    assert early.status_code == 303 and early.headers["location"].endswith(f"{url}/done")
    assert portal_posts(emulator) == before  # Stripe's portal refuses a cancel flow once cancel_at is set
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.cancel_at == period_end
    done = client.get(f"{url}/done")
    assert "Your subscription is canceled" in done.text and "You keep access until" in done.text


def test_keeping_after_ending_a_fixed_plan_early_puts_the_coachs_end_date_back(client, catalogue, link, stripe_client,
                                                                                signer):
    sub = catalogue.subscription()
    period_end = sub["items"].data[0].current_period_end
    program_end = period_end + 60 * DAY
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": program_end})
    url = link(sub)
    page = client.get(url)
    client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text), "end_early": "1"})
    token, _ = signer.cancel_token(sub.customer, sub.id)  # a new link: "Keep my subscription" is offered
    other = f"/cancel/{token}"
    kept_page = client.get(other)
    assert "Keep my subscription" in kept_page.text
    client.post(f"{other}/keep", data={"csrf_token": csrf_of(kept_page.text)})
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at == program_end


def test_billing_links_open_a_portal_that_cannot_cancel(client, catalogue, signer, emulator):
    sub = catalogue.subscription()
    token, _ = signer.billing_token(sub.customer)
    portal = client.get(f"/billing/{token}")
    assert portal.status_code == 303
    page = httpx.get(portal.headers["location"])
    assert page.status_code == 200 and "Cancel subscription" not in page.text and "Update card" in page.text


@pytest.mark.no_portal_configuration
def test_without_portal_configurations_the_page_says_which_setting_to_add(client, catalogue, link, signer):
    sub = catalogue.subscription()
    url = link(sub)
    page = client.get(url)
    response = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 503 and "STRIPE_PORTAL_CONFIGURATION" in response.text
    assert "cancel-flow stripe setup" in response.text and "Continue to cancel" in response.text
    token, _ = signer.billing_token(sub.customer)
    billing = client.get(f"/billing/{token}")
    assert billing.status_code == 503 and "STRIPE_BILLING_PORTAL_CONFIGURATION" in billing.text
