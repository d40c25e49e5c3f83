"""Every promise is what Stripe bills: each offer kind × billing period × moment of acceptance × item count,
accepted over HTTP, then the emulator's test clock moved until the promise has played out and one payment
beyond, and every invoice compared with the promise, payment by payment."""

import html
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from cancel_flow.clock import add_months
from cancel_flow.money import format_day, format_money
from cancel_flow.store.stats import DateRange, StatsQueries
from tests.helpers import HALF_PRICE_OFFER, PAUSE_OFFER, csrf_of

UTC = timezone.utc
PERIODS = {"month": ("month", 1), "quarter": ("month", 3), "year": ("year", 1), "week": ("week", 1)}
# Which offers an honest promise allows, per billing period (coupons last whole months; yearly plans aren't paused).
OFFERED = {
    "discount": {"month", "quarter", "year"},
    "pause": {"month", "quarter", "week"},
    "free_period": {"month", "quarter", "year"},
    "switch": {"month", "quarter", "year", "week"},
}


def step(moment: datetime, period: str, count: int = 1) -> datetime:
    interval, every = PERIODS[period]
    if interval == "week":
        return moment + timedelta(weeks=count * every)
    return add_months(moment, count * every * (12 if interval == "year" else 1))


OFFERS = """
[brand]
name = "Peak Performance Coaching"
[rules]
max_offers = 4
""" + HALF_PRICE_OFFER + PAUSE_OFFER + """[[offer]]
id = "free"
kind = "free_period"
months = 2
title = "Two months on us"
[[offer]]
id = "lite"
kind = "switch"
price = "{price}"
title = "Switch to Lite"
"""


@dataclass
class Case:
    kind: str
    period: str
    when: str  # "after" (the day after a renewal) or "before" (the day before one)
    items: int
    anchor: datetime = datetime(2027, 1, 31, 10, tzinfo=UTC)
    accepted: datetime | None = None
    existing: str | None = None  # a discount the subscription (or customer) has before the offer: see EXISTING
    mode: str = "flexible"  # the subscription's billing_mode (flexible: the API's default since 2025-09-30.clover)
    lag: timedelta = timedelta(0)  # Stripe's clock this much behind ours when the offer is accepted
    language: str = "en"  # the customer's preferred_locales: the pages and the promise in that language
    clock_id: str | None = None
    subscription_id: str | None = None
    reached: datetime | None = None

    def accept_at(self) -> datetime:
        if self.accepted:
            return self.accepted
        if self.when == "after":
            return self.anchor + timedelta(days=1)
        return step(self.anchor, self.period) - timedelta(days=1)


def price(stripe_client, period: str, amount: int, name: str):
    interval, count = PERIODS[period]
    product = stripe_client.v1.products.create(params={"name": name})
    return stripe_client.v1.prices.create(params={"product": product.id, "unit_amount": amount, "currency": "usd",
                                                  "recurring": {"interval": interval, "interval_count": count}})


# Discounts in place before the offer: (coupon parameters, on the customer rather than the subscription).
EXISTING = {
    "forever-10pct": ({"percent_off": 10, "duration": "forever"}, False),
    "repeating-5usd-4m": ({"amount_off": 500, "currency": "usd", "duration": "repeating", "duration_in_months": 4}, False),
    "once-20pct": ({"percent_off": 20, "duration": "once"}, False),
    "customer-10pct": ({"percent_off": 10, "duration": "forever"}, True),
}


def give_existing_discount(case: Case, stripe_client, emulator, customer, sub) -> None:
    params, on_customer = EXISTING[case.existing]
    coupon = stripe_client.v1.coupons.create(params=params)
    if on_customer:
        emulator.post(f"/_emulator/customers/{customer.id}/discount", json={"coupon": coupon.id}).raise_for_status()
    else:
        stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": coupon.id}]})


def run(case: Case, stripe_client, catalogue, make_client, signer, store, tmp_path, emulator=None):
    main = price(stripe_client, case.period, 4900, "Coaching")
    extra = price(stripe_client, case.period, 1000, "Nutrition add-on")
    lite = price(stripe_client, case.period, 2900, "Lite")
    offers = tmp_path / "offers.toml"
    offers.write_text(OFFERS.replace("{price}", lite.id))
    client = make_client(offers_path=offers)

    clock = catalogue.test_clock(int(case.anchor.timestamp()))
    customer = catalogue.customer(test_clock=clock.id, preferred_locales=[case.language])
    items = [{"price": main.id}] + ([{"price": extra.id}] if case.items == 2 else [])
    sub = stripe_client.v1.subscriptions.create(params={"customer": customer.id, "items": items,
                                                        "billing_mode": {"type": case.mode}})
    assert sub.billing_mode.type == case.mode
    if case.existing:
        give_existing_discount(case, stripe_client, emulator, customer, sub)
    now = case.accept_at()
    advance(catalogue, clock.id, case.anchor, now - case.lag, case.period)

    with freeze_time(now, real_asyncio=True):
        token, _ = signer.cancel_token(customer.id, sub.id)
        url = f"/cancel/{token}"
        page = client.get(url)
        client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "other"})
        offers_page = client.get(url)
        card = {"discount": "Stay for half price", "pause": "Take a break", "free_period": "Two months on us",
                "switch": "Switch to Lite"}[case.kind]
        offered = case.period in OFFERED[case.kind] and not (case.kind == "switch" and case.items == 2) \
            and not (case.kind == "discount" and case.existing)  # one discount at a time
        if case.kind == "free_period":  # Stripe takes a trial_end at most two years from the billing cycle anchor
            following = next(step(case.anchor, case.period, k) for k in range(1, 400) if step(case.anchor, case.period, k) > now)
            offered = offered and add_months(following, 2) <= add_months(case.anchor, 24)
        assert (card in offers_page.text) == offered, offers_page.text
        if not offered:
            return None
        fields = {"payments": "2"} if case.kind == "pause" else {}
        ids = {"discount": "half", "pause": "pause", "free_period": "free", "switch": "lite"}
        accepted = client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers_page.text), "offer": ids[case.kind], **fields})
        assert accepted.status_code == 303, accepted.text
        done = html.unescape(client.get(f"{url}/done").text)
    session = store.find_session(_nonce(token))
    assert session.outcome == f"saved_{case.kind}" and session.promise in done if case.language == "en" else \
        session.promise_texts[case.language] in done and f'<html lang="{case.language}">' in done
    schedule = [(datetime.fromisoformat(at), amount, regular) for at, amount, regular, *_moved in session.schedule]
    for at, amount, _regular in schedule:
        assert at.strftime("%-d %B %Y") in done if case.language == "en" else format_day(at, case.language) in done
        if case.language != "en" and amount:  # the page's amounts, the language's way, are the invoices' below
            assert format_money(amount, "usd", case.language) in done, (format_money(amount, "usd", case.language), done)

    check_against_create_preview(stripe_client, sub.id, case.kind, schedule)
    last = schedule[-1][0]
    advance(catalogue, clock.id, now - case.lag, last + timedelta(hours=2), case.period)
    invoices = stripe_client.v1.invoices.list(params={"subscription": sub.id, "limit": 100}).data
    cycle = {inv.created: inv for inv in invoices if inv.billing_reason == "subscription_cycle"}
    moments = {int(at.timestamp()) for at, _a, _r in schedule}
    # no payment the promise doesn't name between the acceptance and its last payment
    assert {t for t in cycle if int(now.timestamp()) < t <= int(last.timestamp())} <= moments
    discount_total = 0
    for at, amount, regular in schedule:
        invoice = cycle.get(int(at.timestamp()))
        if amount == 0 and case.kind == "free_period":
            assert invoice is None, f"{at}: charged {invoice.amount_due} during the free months"
            continue
        assert invoice is not None, f"no invoice on {at} ({sorted(cycle)})"
        if amount == 0:
            assert invoice.status == "void", f"{at}: {invoice.status} {invoice.amount_due}"
        else:
            assert invoice.status == "paid" and invoice.amount_paid == amount, (at, invoice.status, invoice.amount_paid, amount)
        discount_total += sum(d.amount for d in invoice.total_discount_amounts or [])
    if case.kind == "pause":
        # what the pause costs is the payments skipped, as Stripe would have billed them (discounts included)
        assert session.offer_cost == sum(regular for _at, amount, regular in schedule if amount == 0)
    if case.kind == "discount":
        assert discount_total == session.offer_cost
        # the dashboard's discount cost is those invoices' discount amounts
        period = DateRange(now - timedelta(days=1), now + timedelta(days=1))
        with freeze_time(now):
            assert StatsQueries(store.engine).stats(period).discount_cost == [("usd", discount_total)]
    case.clock_id, case.subscription_id, case.reached = clock.id, sub.id, last + timedelta(hours=2)
    return session


def check_against_create_preview(stripe_client, subscription_id: str, kind: str, schedule: list) -> None:
    """Stripe's own computation of the next invoice (POST /v1/invoices/create_preview) agrees with the promise's first
    payment: its date, and what it bills (for a pause: the amount the voided invoice would have charged)."""
    preview = stripe_client.v1.invoices.create_preview(params={"subscription": subscription_id})
    if kind == "pause":
        at, amount = schedule[0][0], schedule[0][2]
    else:
        at, amount = next((row[0], row[1]) for row in schedule if row[1] > 0)
    starts = {line.period.start for line in preview.lines.data}
    assert starts == {int(at.timestamp())}, (starts, at)
    assert preview.amount_due == amount, (preview.amount_due, amount)


def advance(catalogue, clock_id: str, start: datetime, end: datetime, period: str) -> None:
    """Move the test clock to `end` in steps of at most one billing interval (Stripe allows two)."""
    span = {"month": timedelta(days=28), "quarter": timedelta(days=89), "year": timedelta(days=365),
            "week": timedelta(days=7)}[period]
    moment = start
    while moment < end:
        moment = min(end, moment + span)
        catalogue.advance(clock_id, int(moment.timestamp()))


def _nonce(token: str) -> str:
    import base64
    import json

    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["n"]


MATRIX = [Case(kind, period, when, items, mode=mode) for kind in OFFERED for period in PERIODS
          for when in ("after", "before") for items in (1, 2) for mode in ("flexible", "classic")]


@pytest.mark.parametrize("case", MATRIX, ids=lambda c: f"{c.kind}-{c.period}-{c.when}-{c.items}item-{c.mode}")
def test_every_promise_is_what_stripe_bills(case, stripe_client, catalogue, make_client, signer, store, tmp_path):
    run(case, stripe_client, catalogue, make_client, signer, store, tmp_path)


IN_SPANISH = [Case(kind, period, "after", 1, language="es") for kind in OFFERED for period in PERIODS]


@pytest.mark.parametrize("case", IN_SPANISH, ids=lambda c: f"{c.kind}-{c.period}-{c.language}")
def test_every_promise_in_spanish_is_what_stripe_bills(case, stripe_client, catalogue, make_client, signer, store,
                                                       tmp_path):
    """A client who prefers Spanish reads the promise in Spanish ("24,50 US$", "7 de febrero de 2027"): its dates
    and amounts are the invoices' too."""
    run(case, stripe_client, catalogue, make_client, signer, store, tmp_path)


WITH_DISCOUNT = [Case(kind, period, "after", items, existing=existing, mode=mode)
                 for kind in OFFERED for period in ("month", "year") for items in (1, 2) for existing in EXISTING
                 for mode in ("flexible", "classic") if not (items == 2 and existing != "repeating-5usd-4m")]


@pytest.mark.parametrize("case", WITH_DISCOUNT,
                         ids=lambda c: f"{c.kind}-{c.period}-{c.items}item-{c.existing}-{c.mode}")
def test_promises_count_the_discount_already_in_place(case, stripe_client, catalogue, make_client, signer, store,
                                                       tmp_path, emulator):
    """A subscription (or its customer) with a discount: every promise is what Stripe bills, that discount
    included for as long as it lasts; no second discount is offered."""
    run(case, stripe_client, catalogue, make_client, signer, store, tmp_path, emulator)


@pytest.mark.parametrize("kind", ["discount", "pause", "free_period"])
@pytest.mark.parametrize("anchor, accepted", [
    (datetime(2026, 12, 31, 10, tzinfo=UTC), datetime(2027, 1, 31, 15, tzinfo=UTC)),  # accepted on 31 January
    (datetime(2027, 1, 31, 10, tzinfo=UTC), datetime(2027, 2, 28, 15, tzinfo=UTC)),  # accepted on 28 February
])
def test_month_end_promises_are_what_stripe_bills(kind, anchor, accepted, stripe_client, catalogue, make_client, signer,
                                                  store, tmp_path):
    session = run(Case(kind, "month", "after", 1, anchor=anchor, accepted=accepted), stripe_client, catalogue,
                  make_client, signer, store, tmp_path)
    if kind == "discount":
        # three payments discounted, whatever the month lengths: the coupon's months were chosen for that
        assert [row[1] for row in session.schedule] == [2450, 2450, 2450, 4900]


def test_a_yearly_discount_is_on_the_next_renewal_not_on_months_that_bill_nothing(stripe_client, catalogue, make_client,
                                                                                   signer, store, tmp_path):
    session = run(Case("discount", "year", "after", 1), stripe_client, catalogue, make_client, signer, store, tmp_path)
    assert session.discount_months == 36 and [row[1] for row in session.schedule] == [2450, 2450, 2450, 4900]


@pytest.mark.parametrize("kind", ["discount", "pause", "free_period", "switch"])
@pytest.mark.parametrize("period", ["month", "quarter", "year", "week"])
def test_two_years_after_an_offer_every_invoice_is_as_promised_then_regular(kind, period, stripe_client, catalogue,
                                                                            make_client, signer, store, tmp_path):
    """After the promise has played out, the subscription bills its regular price (the new one after a
    switch) on its billing dates, for two years."""
    from cancel_flow.billing import Line, Plan

    case = Case(kind, period, "after", 1)
    if period not in OFFERED[kind]:
        assert run(case, stripe_client, catalogue, make_client, signer, store, tmp_path) is None  # not offered
        return
    session = run(case, stripe_client, catalogue, make_client, signer, store, tmp_path)
    horizon = case.accept_at() + timedelta(days=2 * 366)
    advance(catalogue, case.clock_id, case.reached, horizon, period)
    last_at, last_amount = session.schedule[-1][:2]
    last_at = datetime.fromisoformat(last_at)
    anchor = last_at if kind == "free_period" else case.anchor
    interval, count = PERIODS[period]
    plan = Plan("usd", (Line(last_amount, 1),), interval, count, anchor, last_at)
    expected = {int(at.timestamp()): last_amount for at in plan.payments(120) if at <= horizon}
    expected.update({int(datetime.fromisoformat(at).timestamp()): amount for at, amount, *_ in session.schedule})
    invoices = list(stripe_client.v1.invoices.list(params={"subscription": case.subscription_id, "limit": 100})
                    .auto_paging_iter())
    billed = {inv.created: (inv.amount_due if inv.status != "void" else 0) for inv in invoices
              if inv.billing_reason == "subscription_cycle" and inv.created > int(case.accept_at().timestamp())}
    wanted = {at: amount for at, amount in expected.items() if at in billed or amount}
    assert billed == wanted


AT_RENEWAL = [Case(kind, period, moment, 1, accepted=step(Case.anchor, period) + offset)
              for kind in OFFERED for period in ("month", "year", "week")
              for moment, offset in (("instant", timedelta(0)), ("draft-hour", timedelta(minutes=30)))]


@pytest.mark.parametrize("case", AT_RENEWAL, ids=lambda c: f"{c.kind}-{c.period}-{c.when}")
def test_an_offer_accepted_at_a_renewal_or_while_its_invoice_is_a_draft_bills_what_the_page_says(
        case, stripe_client, catalogue, make_client, signer, store, tmp_path):
    """The test clock stands at the very second of a renewal, or in the hour its invoice is still a draft: the
    renewal under way is not the promise's to change, and every payment the promise names is billed as it says."""
    session = run(case, stripe_client, catalogue, make_client, signer, store, tmp_path)
    if session is not None:
        renewal = step(Case.anchor, case.period)
        assert datetime.fromisoformat(session.schedule[0][0]) > renewal


@pytest.mark.parametrize("period", ["month", "year"])
def test_a_discount_stripe_starts_a_minute_before_our_clock_still_covers_the_promised_payments(
        period, stripe_client, catalogue, make_client, signer, store, tmp_path):
    """Stripe's clock at the renewal's second, ours a minute later: the coupon Stripe starts then would end on the
    third promised renewal; the discount is checked against the promise and replaced by one that covers it."""
    case = Case("discount", period, "instant", 1, accepted=step(Case.anchor, period) + timedelta(minutes=1),
                lag=timedelta(minutes=1))
    session = run(case, stripe_client, catalogue, make_client, signer, store, tmp_path)
    assert session.discount_months == (4 if period == "month" else 37)
    assert [row[1] for row in session.schedule] == [2450, 2450, 2450, 4900]
