"""One link holder reloading a page can't spend the deployment's Stripe budget: reloads within seconds
reuse the answer just got, and the pages still tell the truth when Stripe changes."""

import asyncio
import time
from datetime import datetime, timedelta, timezone

import httpx
from freezegun import freeze_time

from tests.helpers import csrf_of
from tests.test_webhooks import WHSEC, event, post_event


def stripe_requests(emulator, method: str, path: str, since: float) -> int:
    return sum(1 for r in emulator.get("/_emulator/requests").json()
               if r["method"] == method and r["path"] == path and r["at"] >= since)


def test_reloads_of_a_done_page_reuse_stripes_answer_and_a_webhook_drops_it_at_once(make_client, catalogue, signer,
                                                                                     emulator, stripe_client):
    client = make_client(stripe_webhook_secret=WHSEC)
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"/cancel/{token}"
    page = client.get(url)
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
    assert client.post(f"{url}/accept", data={"csrf_token": csrf_of(page.text), "offer": "pause",
                                              "payments": "1"}).status_code == 303
    since = time.time()
    for _ in range(20):
        assert "Your break has started" in client.get(f"{url}/done").text
    reads = f"/v1/subscriptions/{sub.id}"
    assert stripe_requests(emulator, "GET", reads, since) == 0  # the pause's own answer is reused
    # The subscriber cancels in the portal; Stripe's webhook reaches us: the next reload tells it at once.
    stripe_client.v1.subscriptions.cancel(sub.id)
    assert post_event(client, event("customer.subscription.deleted", sub.id, int(time.time()),
                                    status="canceled", canceled_at=int(time.time()))).status_code == 200
    done = client.get(f"{url}/done")
    assert "Your subscription is canceled" in done.text and "Your break has started" not in done.text
    assert stripe_requests(emulator, "GET", reads, since) == 1


def test_reloads_of_a_billing_link_within_seconds_get_one_portal_session(client, catalogue, signer, emulator):
    sub = catalogue.subscription()
    token, _ = signer.billing_token(sub.customer)
    since = time.time()
    places = {client.get(f"/billing/{token}").headers["location"] for _ in range(30)}
    assert len(places) == 1
    assert stripe_requests(emulator, "POST", "/v1/billing_portal/sessions", since) == 1
    # a few seconds later the portal URL may be near its end: a new session
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=6), real_asyncio=True):
        later = client.get(f"/billing/{token}").headers["location"]
    assert later not in places
    assert stripe_requests(emulator, "POST", "/v1/billing_portal/sessions", since) == 2
    # the card-update page is another answer, not the same one
    assert client.get(f"/billing/{token}?flow=payment_method_update").headers["location"] not in places | {later}


def test_simultaneous_reloads_of_a_billing_link_share_one_portal_session(serve, catalogue, signer, emulator):
    served = serve()
    sub = catalogue.subscription()
    token, _ = signer.billing_token(sub.customer)
    since = time.time()

    async def reload_all():
        async with httpx.AsyncClient(base_url=served.url, timeout=30, limits=httpx.Limits(max_connections=40)) as http:
            return await asyncio.gather(*(http.get(f"/billing/{token}") for _ in range(40)))

    pages = asyncio.run(reload_all())
    assert {page.status_code for page in pages} == {303}
    assert len({page.headers["location"] for page in pages}) == 1
    assert stripe_requests(emulator, "POST", "/v1/billing_portal/sessions", since) == 1


def test_reloads_of_a_canceled_subscriptions_link_read_stripe_once(client, catalogue, signer, emulator, stripe_client):
    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(sub.id)
    token, _ = signer.cancel_token(sub.customer, sub.id)
    since = time.time()
    for _ in range(20):
        assert "already canceled" in client.get(f"/cancel/{token}").text
    for _ in range(10):
        assert "already canceled" in client.get(f"/cancel/{token}/done").text
    assert stripe_requests(emulator, "GET", f"/v1/subscriptions/{sub.id}", since) == 1


def test_a_failure_is_never_kept_and_waiters_share_the_one_answer():
    from cancel_flow.recent_answers import RecentAnswers

    recent, calls = RecentAnswers(seconds=5), []

    async def failing():
        calls.append("fail")
        raise RuntimeError("Stripe is down")

    async def slow():
        calls.append("slow")
        await asyncio.sleep(0.05)
        return "https://portal/1"

    async def scenario():
        for _ in range(2):
            try:
                await recent.get("k", failing)
            except RuntimeError:
                pass
        answers = await asyncio.gather(*(recent.get("k", slow) for _ in range(5)))
        return answers, await recent.get("k", slow)

    answers, again = asyncio.run(scenario())
    assert calls == ["fail", "fail", "slow"]
    assert answers == ["https://portal/1"] * 5 and again == "https://portal/1"


def test_when_the_request_fetching_is_cancelled_one_waiter_fetches_for_the_rest():
    from cancel_flow.recent_answers import RecentAnswers

    recent, calls = RecentAnswers(seconds=5), []

    async def slow():
        calls.append("fetch")
        await asyncio.sleep(0.05)
        return "https://portal/2"

    async def scenario():
        first = asyncio.create_task(recent.get("k", slow))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(recent.get("k", slow)) for _ in range(5)]
        await asyncio.sleep(0.01)
        first.cancel()  # its client left
        return await asyncio.gather(*waiters)

    assert asyncio.run(scenario()) == ["https://portal/2"] * 5
    assert calls == ["fetch", "fetch"]
