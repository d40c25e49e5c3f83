"""Stripe is spent carefully: one deadline for all the attempts of a request, 429s retried after a back-off,
a request budget shared by the workers, and a 503 page that offers to try again and to continue to cancel."""

import asyncio
import html
import logging
import re
import time

import httpx
import pytest

from cancel_flow.stripe_budget import StripeBudget
from tests.helpers import csrf_of

TRY_AGAIN_FORM = re.compile(r'<form method="post" action="([^"]+)">((?:(?!</form>).)*?)Try again</button>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def try_again_form(page: str) -> tuple[str, dict]:
    """Where the page's "Try again" button posts, and the fields it sends."""
    match = TRY_AGAIN_FORM.search(page)
    assert match, "the page has no Try again form"
    return html.unescape(match.group(1)), {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(match.group(2))}


def opened(client, catalogue, signer, reason: str | None = "unused"):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"/cancel/{token}"
    page = client.get(url)
    assert page.status_code == 200
    if reason:
        client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
    return sub, url, csrf_of(page.text), signer.read_cancel(token).nonce


def requests_to(emulator, method: str, path: str, since: float) -> list[float]:
    return [r["at"] for r in emulator.get("/_emulator/requests").json()
            if r["method"] == method and r["path"] == path and r["at"] >= since]


def events(caplog, name: str) -> list[dict]:
    return [record.fields for record in caplog.records if record.getMessage() == name]


def test_a_hanging_stripe_gets_the_503_page_at_the_deadline_not_after_every_retry(make_client, catalogue, signer,
                                                                                   emulator, caplog):
    client = make_client(stripe_deadline=1.5, stripe_timeout=10, stripe_max_network_retries=2)
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "hang_seconds": 3,
                                             "count": 3}).raise_for_status()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        page = client.get(f"/cancel/{token}")
    took = time.monotonic() - started
    assert page.status_code == 503 and 1.3 < took < 2.5, took
    assert "Nothing was changed" in page.text and "Continue to cancel" in page.text
    assert f'<a class="button primary" href="/cancel/{token}">Try again</a>' in page.text
    failed = events(caplog, "stripe.call_failed")
    assert [(f["operation"], f["reason"], f["attempts"]) for f in failed] == [("subscription.retrieve", "deadline", 1)]
    emulator.delete("/_emulator/faults")
    assert client.get(f"/cancel/{token}").status_code == 200  # what "Try again" does


def test_a_write_that_hangs_past_the_deadline_is_applied_once_when_tried_again(make_client, catalogue, signer, emulator,
                                                                               stripe_client, store):
    client = make_client(stripe_deadline=1.5, stripe_timeout=10)
    sub, url, csrf, nonce = opened(client, catalogue, signer)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "hang_seconds": 2,
                                             "count": 1}).raise_for_status()
    started = time.monotonic()
    page = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause", "payments": "2"})
    assert page.status_code == 503 and time.monotonic() - started < 2.5
    action, fields = try_again_form(page.text)
    assert action == f"{url}/accept" and fields == {"csrf_token": csrf, "offer": "pause", "payments": "2"}
    assert "Continue to cancel" in page.text
    again = client.post(action, data=fields)  # asks Stripe first (the write may have been applied), then applies
    assert again.status_code == 303 and again.headers["location"].endswith("/done")
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is not None
    assert store.find_session(nonce).outcome == "saved_pause"


@pytest.mark.parametrize("code", ["rate_limit", "lock_timeout"])
def test_a_single_429_is_retried_after_a_short_back_off(client, catalogue, signer, emulator, stripe_client, store, code):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "status": 429, "code": code,
                                             "count": 1}).raise_for_status()
    since = time.time()
    page = client.get(f"/cancel/{token}")
    assert page.status_code == 200
    reads = requests_to(emulator, "GET", f"/v1/subscriptions/{sub.id}", since)
    assert len(reads) == 2 and 0.12 <= reads[1] - reads[0] < 1.0

    client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 429, "code": code,
                                             "count": 1}).raise_for_status()
    accepted = client.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(page.text), "offer": "pause", "payments": "2"})
    assert accepted.status_code == 303 and accepted.headers["location"].endswith("/done")
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is not None
    assert store.find_session(signer.read_cancel(token).nonce).outcome == "saved_pause"


def test_several_429s_are_retried_while_the_deadline_allows_whatever_the_network_retries(client, catalogue, signer,
                                                                                       emulator):
    """The client allows one network retry (STRIPE_MAX_NETWORK_RETRIES=1); four 429s in a row are still
    waited out with a growing back-off, within the 8-second deadline, and the page opens."""
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    emulator.post("/_emulator/faults", json={"method": "GET", "path": "/v1/subscriptions/*", "status": 429,
                                             "code": "rate_limit", "count": 4}).raise_for_status()
    since = time.time()
    page = client.get(f"/cancel/{token}")
    assert page.status_code == 200
    reads = requests_to(emulator, "GET", f"/v1/subscriptions/{sub.id}", since)
    assert len(reads) == 5
    gaps = [later - earlier for earlier, later in zip(reads, reads[1:])]
    assert gaps[-1] > gaps[0] and reads[-1] - reads[0] < 8


def test_a_429_storm_fails_fast_with_the_busy_page(make_client, catalogue, signer, emulator, stripe_client, store, caplog):
    client = make_client(stripe_deadline=1.5, stripe_max_network_retries=10)
    sub, url, csrf, nonce = opened(client, catalogue, signer)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 429,
                                             "count": 100}).raise_for_status()
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        page = client.post(f"{url}/accept", data={"csrf_token": csrf, "offer": "pause", "payments": "2"})
    assert page.status_code == 503 and time.monotonic() - started < 1.5
    assert "busy" in page.text and "Nothing was changed" in page.text and "Continue to cancel" in page.text
    action, fields = try_again_form(page.text)
    assert action == f"{url}/accept" and fields == {"csrf_token": csrf, "offer": "pause", "payments": "2"}
    busy = events(caplog, "stripe.busy")
    assert len(busy) == 1 and busy[0]["reason"] == "rate_limited" and busy[0]["attempts"] >= 2
    assert store.find_session(nonce).outcome == "open"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is None

    emulator.delete("/_emulator/faults")
    assert client.post(action, data=fields).status_code == 303
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection is not None
    assert store.find_session(nonce).outcome == "saved_pause"


def test_continue_to_cancel_from_the_reason_form_tried_again_keeps_the_reason(make_client, catalogue, signer, emulator,
                                                                              store):
    client = make_client(stripe_deadline=1.5)
    sub, url, csrf, nonce = opened(client, catalogue, signer, reason=None)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/billing_portal/sessions", "status": 429,
                                             "count": 100}).raise_for_status()
    page = client.post(f"{url}/cancel", data={"csrf_token": csrf, "reason": "too_expensive", "comment": "a <b>lot</b>"})
    assert page.status_code == 503
    action, fields = try_again_form(page.text)
    assert action == f"{url}/cancel"
    assert fields == {"csrf_token": csrf, "reason": "too_expensive", "comment": "a <b>lot</b>"}
    assert "<b>lot" not in page.text  # the comment is sent again, escaped
    emulator.delete("/_emulator/faults")
    again = client.post(action, data=fields)
    assert again.status_code == 303 and "/p/session/" in again.headers["location"]
    session = store.find_session(nonce)
    assert session.outcome == "sent_to_portal" and session.reason == "too_expensive"


def test_the_budget_refuses_at_once_what_it_cannot_send_before_the_deadline(make_client, catalogue, signer, emulator,
                                                                            caplog):
    client = make_client(stripe_rate_limit=0.5, stripe_deadline=1.5)  # one request every 2 seconds
    first, second = catalogue.subscription(), catalogue.subscription()
    links = [f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}" for sub in (first, second)]
    assert client.get(links[0]).status_code == 200
    started = time.monotonic()
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        page = client.get(links[1])
    assert page.status_code == 503 and time.monotonic() - started < 0.5
    assert "busy" in page.text and "Continue to cancel" in page.text
    assert f'href="{links[1]}">Try again</a>' in page.text
    assert [(f["reason"], f["attempts"]) for f in events(caplog, "stripe.busy")] == [("budget", 0)]
    assert requests_to(emulator, "GET", f"/v1/subscriptions/{second.id}", 0) == []


def test_the_budget_lets_a_small_burst_through_then_spaces_the_rest(tmp_path):
    budget = StripeBudget(20, tmp_path / "budget")  # 20/s: bursts of 2, each a tenth of a second after the last
    assert all(budget.reserve(1.0) == 0 for _ in range(2))
    waits = [budget.reserve(2.0) for _ in range(18)]
    assert all(0.08 < wait <= 0.1 for wait in waits[:2]) and all(0.88 < wait <= 0.9 for wait in waits[16:])
    assert budget.reserve(0.9) is None  # the next place is a second away: refused without taking it
    other = StripeBudget(20, tmp_path / "budget")  # another worker of the deployment sees the same log
    assert 0.98 < other.reserve(2.0) <= 1.0
    budget.close()
    other.close()


def test_two_workers_share_one_budget(serve, catalogue, signer, emulator):
    """`serve --workers 2` at the default 20 requests/s: 60 first views at once reach Stripe over 3 seconds,
    never more than Stripe's 25 in any one second (each worker alone would allow 20)."""
    served = serve(workers=2)
    links = [f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}"
             for sub in (catalogue.subscription() for _ in range(60))]
    since = time.time()

    async def open_all():
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=httpx.Limits(max_connections=60)) as http:
            return await asyncio.gather(*(http.get(link) for link in links))

    pages = asyncio.run(open_all())
    assert [page.status_code for page in pages] == [200] * 60
    arrivals = sorted(r["at"] for r in emulator.get("/_emulator/requests").json() if r["at"] >= since)
    assert len(arrivals) >= 60
    busiest = max(sum(1 for other in arrivals[i:] if other - at < 1.0) for i, at in enumerate(arrivals))
    assert busiest <= 25, busiest  # Stripe's test-mode limit; the budget sends 20 a second, arrivals jitter a little
    assert arrivals[-1] - arrivals[0] >= 2.5  # 60 at 20/s; each worker alone would have sent its 30 in 1.5 s
