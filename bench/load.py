"""Simulated subscribers against a running cancel-flow: a mix of accept-discount, accept-pause,
continue-to-cancel, reloads and double submits. Used by `make bench` and, shorter, by the tests."""

import asyncio
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import stripe
import sqlalchemy as sa

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ACTIONS = ("discount", "pause", "cancel")
EXPECTED = {"discount": "saved_discount", "pause": "saved_pause", "cancel": "sent_to_portal"}  # the outcome each records


@dataclass
class LoadResult:
    subscribers: int
    seconds: float
    statuses: Counter = field(default_factory=Counter)
    actions: dict = field(default_factory=dict)  # subscription id -> action
    problems: list = field(default_factory=list)

    @property
    def server_errors(self) -> int:
        return sum(count for status, count in self.statuses.items() if status >= 500)


async def _subscriber(http: httpx.AsyncClient, url: str, action: str, delay: float, chance: random.Random,
                      result: LoadResult) -> None:
    await asyncio.sleep(delay)

    async def call(method: str, target: str, **kw) -> httpx.Response:
        response = await http.request(method, target, **kw)
        result.statuses[response.status_code] += 1
        return response

    page = await call("GET", url)
    if page.status_code != 200:
        result.problems.append(f"first view {page.status_code}")
        return
    if chance.random() < 0.5:
        await call("GET", url)  # a reload
    csrf = CSRF.search(page.text).group(1)
    if action == "cancel":
        await call("POST", f"{url}/cancel", data={"csrf_token": csrf, "reason": "switched_service"})
        return
    await call("POST", f"{url}/reason", data={"csrf_token": csrf, "reason": "unused"})
    data = {"csrf_token": csrf, "offer": "half-off-3-payments" if action == "discount" else "pause", "payments": "2"}
    submits = 2 if chance.random() < 0.3 else 1  # a double submit
    await asyncio.gather(*[call("POST", f"{url}/accept", data=data) for _ in range(submits)])
    await call("GET", f"{url}/done")


async def run_load(base_url: str, links: list[tuple[str, str]], seconds: float, seed: int = 1) -> LoadResult:
    """`links` are (subscription id, cancel link path); each subscriber starts at a random moment."""
    chance = random.Random(seed)
    result = LoadResult(len(links), seconds)
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=200)) as http:
        tasks = []
        for subscription, path in links:
            action = chance.choice(ACTIONS)
            result.actions[subscription] = action
            tasks.append(_subscriber(http, path, action, chance.uniform(0, seconds), random.Random(chance.random()), result))
        await asyncio.gather(*tasks)
    result.seconds = time.monotonic() - started
    return result


def recorded_outcomes(database_url: str) -> dict[str, list[str]]:
    """Each subscription's session outcomes, as the database has them."""
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT subscription_id, outcome FROM cancel_session")).all()
    engine.dispose()
    outcomes: dict[str, list[str]] = {}
    for subscription, outcome in rows:
        outcomes.setdefault(subscription, []).append(outcome)
    return outcomes


def stripe_disagrees(subscription: str, action: str, sub, untouched_because: str) -> str | None:
    """What is wrong with Stripe's subscription after `action` ("cancel": left unchanged), or None."""
    if action == "discount" and len(sub.discounts) != 1:
        return f"{subscription}: {len(sub.discounts)} discounts in Stripe"
    if action == "pause" and not sub.pause_collection:
        return f"{subscription}: not paused in Stripe"
    if action == "cancel" and (sub.discounts or sub.pause_collection):
        return f"{subscription}: changed in Stripe {untouched_because}"
    return None


def redemptions(stripe_client, coupon_ids: tuple[str, ...]) -> int:
    """How often the offer's coupons (one per length: an accept in the middle of a period makes and uses the longer
    one) have been redeemed, together; a length not made yet counts 0."""
    total = 0
    for coupon_id in coupon_ids:
        try:
            total += stripe_client.v1.coupons.retrieve(coupon_id).times_redeemed
        except stripe.InvalidRequestError:
            pass
    return total


def corrections(printed: str) -> int:
    """How many discounts the app replaced by the coupon length that covers the promise from Stripe's own start (an
    accept in the second a period renews): each is a second redemption in Stripe, as Stripe counts one per attach."""
    return printed.count("cancel_session.discount_corrected")


def verify(result: LoadResult, stripe_client, database_url: str, coupon_ids: str | tuple[str, ...],
           redeemed_before: int = 0, corrected: int = 0) -> list[str]:
    """Every decision is in Stripe and in the database, exactly once (`corrected`: discounts replaced once)."""
    coupon_ids = (coupon_ids,) if isinstance(coupon_ids, str) else coupon_ids
    problems = list(result.problems)
    outcomes = recorded_outcomes(database_url)
    discounts = 0
    for subscription, action in result.actions.items():
        if outcomes.get(subscription) != [EXPECTED[action]]:
            problems.append(f"{subscription}: database has {outcomes.get(subscription)}, wanted {EXPECTED[action]}")
        sub = stripe_client.v1.subscriptions.retrieve(subscription)
        if action == "discount":
            discounts += 1
        if problem := stripe_disagrees(subscription, action, sub, "although sent to the portal"):
            problems.append(problem)
    if discounts:
        redeemed = redemptions(stripe_client, coupon_ids) - redeemed_before
        if redeemed != discounts + corrected:
            problems.append(f"coupon redeemed {redeemed} times for {discounts} discounts ({corrected} replaced)")
    return problems
