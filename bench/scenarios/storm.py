"""7: a cancel storm against Stripe's test-mode rate limit. 1,000 subscribers arrive over 3 minutes,
with a 20-second burst at three times the average rate (quick: 100 over 20 s, a 5-second burst); the
emulator answers 429 above 25 requests/s, as Stripe's test mode does; the service runs `serve --workers 2`
at its default budget (STRIPE_RATE_LIMIT, 20/s). A subscriber shown the "busy, try again" page waits a few
seconds and presses "Try again", up to three times, then gives up.

Reported: 5xx other than the busy page (goal 0), how many subscribers saw the busy page and how many gave
up, every decision in Stripe exactly once and recorded (and nothing changed for those who gave up), the
Stripe requests in the busiest second (from the emulator's log; goal <= 25), the emulator's 429s, and
/healthz latency during the storm."""

import asyncio
import html
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx

from bench.harness import (COUPON_IDS, Bench, Process, app_env, drop_database, ensure_coupon, figure, free_port,
                           migrated_database, sdk, seed_subscriptions, signer)
from bench.load import ACTIONS, EXPECTED, corrections, recorded_outcomes, redemptions, stripe_disagrees
from cancel_flow.settings import Settings

STRIPE_TEST_LIMIT = 25  # requests/s (https://docs.stripe.com/rate-limits)
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BUSY_TITLE = "<h1>We&#39;re busy right now</h1>"
TRY_LINK = re.compile(r'<a class="button primary" href="([^"]+)">Try again</a>')
TRY_FORM = re.compile(r'<form method="post" action="([^"]+)">((?:(?!</form>).)*?)Try again</button>', re.S)
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')
TRIES = 3  # busy pages a subscriber sits through before giving up


@dataclass
class Storm:
    statuses: Counter = field(default_factory=Counter)
    server_errors: list = field(default_factory=list)  # (status, path) of 5xx other than the busy page
    busy_pages: int = 0
    saw_busy: set = field(default_factory=set)
    gave_up: set = field(default_factory=set)
    decided: set = field(default_factory=set)  # subscriptions whose decision was answered (not 5xx)
    actions: dict = field(default_factory=dict)  # subscription id -> action
    problems: list = field(default_factory=list)
    healthz_ms: list = field(default_factory=list)


def arrival_times(count: int, seconds: float, burst: float, chance: random.Random) -> list[float]:
    """`count` arrivals over `seconds`; for `burst` seconds (starting a third of the way in) three times the
    average rate, the rest evenly at random."""
    average = count / seconds
    in_burst = round(3 * average * burst)
    start = seconds / 3
    times = [start + chance.uniform(0, burst) for _ in range(in_burst)]
    for _ in range(count - in_burst):
        moment = chance.uniform(0, seconds - burst)
        times.append(moment if moment < start else moment + burst)
    return sorted(times)


async def _subscriber(http: httpx.AsyncClient, path: str, subscription: str, action: str, delay: float,
                      chance: random.Random, storm: Storm) -> None:
    await asyncio.sleep(delay)

    async def call(method: str, target: str, **kw) -> httpx.Response | None:
        """One page, with "Try again" pressed after a busy page; None when the subscriber gave up."""
        for _ in range(TRIES + 1):
            response = await http.request(method, target, **kw)
            storm.statuses[response.status_code] += 1
            if response.status_code < 500:
                return response
            if response.status_code != 503 or BUSY_TITLE not in response.text:
                storm.server_errors.append((response.status_code, method, target.split("/")[-1][:12]))
                return None
            storm.busy_pages += 1
            storm.saw_busy.add(subscription)
            await asyncio.sleep(chance.uniform(2, 6))  # reads the page, then presses "Try again"
            if method == "GET":
                target = html.unescape(TRY_LINK.search(response.text).group(1))
            else:
                action_match = TRY_FORM.search(response.text)
                target = html.unescape(action_match.group(1))
                kw = {"data": {html.unescape(k): html.unescape(v) for k, v in HIDDEN.findall(action_match.group(2))}}
        storm.gave_up.add(subscription)
        return None

    async def think():
        await asyncio.sleep(chance.uniform(0.5, 3))

    page = await call("GET", path)
    if page is None or page.status_code != 200:
        if page is not None:
            storm.problems.append(f"{subscription}: first view {page.status_code}")
        return
    csrf = CSRF.search(page.text).group(1)
    if chance.random() < 0.3:
        await think()
        if await call("GET", path) is None:  # a reload
            return
    await think()
    if action == "cancel":
        if await call("POST", f"{path}/cancel", data={"csrf_token": csrf, "reason": "switched_service"}) is not None:
            storm.decided.add(subscription)
        return
    if await call("POST", f"{path}/reason", data={"csrf_token": csrf, "reason": "unused"}) is None:
        return
    await think()
    data = {"csrf_token": csrf, "offer": "half-off-3-payments" if action == "discount" else "pause", "payments": "2"}
    submits = 2 if chance.random() < 0.2 else 1  # a double submit
    answers = await asyncio.gather(*[call("POST", f"{path}/accept", data=data) for _ in range(submits)])
    if all(answer is None for answer in answers):
        return
    storm.decided.add(subscription)
    await call("GET", f"{path}/done")


async def _healthz(http: httpx.AsyncClient, storm: Storm, stop: asyncio.Event) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        response = await http.get("/healthz")
        storm.healthz_ms.append((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            storm.server_errors.append((response.status_code, "GET", "healthz"))
        await asyncio.sleep(0.2)


async def run_storm(base_url: str, links: list[tuple[str, str]], seconds: float, burst: float, seed: int = 7) -> Storm:
    chance = random.Random(seed)
    storm = Storm()
    moments = arrival_times(len(links), seconds, burst, chance)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=httpx.Limits(max_connections=1000)) as http, \
            httpx.AsyncClient(base_url=base_url, timeout=30) as probe:
        stop = asyncio.Event()
        poller = asyncio.create_task(_healthz(probe, storm, stop))
        tasks = []
        for (subscription, path), moment in zip(links, moments):
            action = chance.choice(ACTIONS)
            storm.actions[subscription] = action
            tasks.append(_subscriber(http, path, subscription, action, moment, random.Random(chance.random()), storm))
        await asyncio.gather(*tasks)
        stop.set()
        await poller
    return storm


def verify(storm: Storm, stripe_client, database_url: str, redeemed_before: int, corrected: int = 0) -> list[str]:
    """Every decision made is in Stripe and in the database exactly once; those who gave up changed nothing."""
    problems = list(storm.problems)
    outcomes = recorded_outcomes(database_url)
    discounts = 0
    for subscription, action in storm.actions.items():
        decided = subscription in storm.decided
        recorded = outcomes.get(subscription)
        if decided and recorded != [EXPECTED[action]]:
            problems.append(f"{subscription}: database has {recorded}, wanted {EXPECTED[action]}")
        if not decided and recorded not in (None, ["open"]):
            problems.append(f"{subscription}: gave up, yet the database has {recorded}")
        sub = stripe_client.v1.subscriptions.retrieve(subscription)
        wanted = action if decided else "cancel"  # "cancel" only opens the portal: Stripe's subscription unchanged
        if wanted == "discount":
            discounts += 1
        if problem := stripe_disagrees(subscription, wanted, sub, "without a decision"):
            problems.append(problem)
    redeemed = redemptions(stripe_client, COUPON_IDS) - redeemed_before
    if redeemed != discounts + corrected:
        problems.append(f"coupon redeemed {redeemed} times for {discounts} discounts ({corrected} replaced)")
    return problems


def busiest_second(moments: list[float]) -> int:
    moments = sorted(moments)
    best, first = 0, 0
    for last, moment in enumerate(moments):
        while moment - moments[first] >= 1.0:
            first += 1
        best = max(best, last - first + 1)
    return best


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] if ordered else 0.0


def storm_scenario(kind: str, bench: Bench, subscribers: int, seconds: float, burst: float) -> None:
    emulator = httpx.Client(base_url=bench.emulator_url, timeout=60)
    database = migrated_database(kind, bench.workdir)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    budget = Settings().stripe_rate_limit  # the service's default budget
    client = sdk(bench.emulator_url)
    ensure_coupon(client)  # first: the app is told the portal configuration it saves
    app = Process([sys.executable, "-m", "cancel_flow", "serve", "--port", str(port), "--workers", "2"],
                  env={**app_env(database, bench.emulator_url, url), "STRIPE_RATE_LIMIT": f"{budget:g}"},
                  ready=f"{url}/healthz")
    try:
        subs = seed_subscriptions(client, subscribers)
        links = signer()
        paths = [(sub.id, f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}") for sub in subs]
        redeemed_before = redemptions(client, COUPON_IDS)
        emulator.post("/_emulator/limits", json={"requests_per_second": STRIPE_TEST_LIMIT}).raise_for_status()
        started = time.time()
        try:
            storm = asyncio.run(run_storm(url, paths, seconds, burst))
        finally:
            ended = time.time()
            refused = emulator.get("/_emulator/limits").json().get("refused", 0)
            emulator.post("/_emulator/limits", json={"requests_per_second": None}).raise_for_status()
        sent = [r["at"] for r in emulator.get("/_emulator/requests").json() if started <= r["at"] <= ended]
        problems = verify(storm, client, database, redeemed_before, corrections(app.printed()))
    finally:
        app.stop()
        drop_database(database)
        emulator.close()
    label = f"7. storm, {kind}"
    requests = sum(storm.statuses.values())
    figure(f"{label}: 5xx besides 'busy' ({requests} requests)", len(storm.server_errors), "0",
           not storm.server_errors)
    for error in storm.server_errors[:5]:
        print(f"     {error}")
    figure(f"{label}: subscribers shown 'busy' (of {subscribers})", len(storm.saw_busy), "info", True)
    figure(f"{label}: 'busy' pages shown", storm.busy_pages, "info", True)
    figure(f"{label}: gave up after {TRIES} busy pages", len(storm.gave_up), "info", True)
    figure(f"{label}: decisions missing or doubled", len(problems), "0", not problems)
    for problem in problems[:10]:
        print(f"     {problem}")
    peak = busiest_second(sent)
    figure(f"{label}: Stripe requests, busiest second", peak, f"<= {STRIPE_TEST_LIMIT}", peak <= STRIPE_TEST_LIMIT,
           "req")
    figure(f"{label}: Stripe requests, mean per second", len(sent) / max(ended - started, 1e-9), f"budget {budget:g}",
           True, "req/s")
    figure(f"{label}: 429s from Stripe (emulator)", refused, "info", True)
    health = storm.healthz_ms
    figure(f"{label}: /healthz p50", statistics.median(health) if health else 0, "info", True, "ms")
    p99 = percentile(health, 0.99)
    figure(f"{label}: /healthz p99", p99, "< 1000 ms", p99 < 1000, "ms")
    figure(f"{label}: /healthz max", max(health, default=0), "info", True, "ms")


def run(bench: Bench) -> None:
    subscribers, seconds, burst = (100, 20, 5) if bench.quick else (1000, 180, 20)
    for kind in bench.databases:
        storm_scenario(kind, bench, subscribers, seconds, burst)
