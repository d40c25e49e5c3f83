"""The words of every promise, as a subscriber reads them on the pages (the one wording function, billing.py),
through HTTP against the emulator on a Stripe test clock."""

import html
import re
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time

from tests.helpers import csrf_of

UTC = timezone.utc
START = datetime(2026, 12, 7, 10, tzinfo=UTC)

OFFERS = """
[brand]
name = "Peak Performance Coaching"
[rules]
max_offers = 4
{offers}
"""


def offer(kind: str, **fields) -> str:
    lines = [f'[[offer]]\nid = "{kind}"\nkind = "{kind}"\ntitle = "The {kind} offer"']
    lines += [f"{key} = {value!r}".replace("'", '"') for key, value in fields.items()]
    return "\n".join(lines) + "\n"


def text_of(page) -> str:
    """The page's visible words, as a subscriber reads them (tags removed, entities decoded, spaces joined)."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.text)).split())


class Flow:
    """One subscriber on a test clock: their subscription, the offers page and the done page."""

    def __init__(self, stripe_client, catalogue, make_client, signer, tmp_path, offers_toml: str, *,
                 interval="month", amount=4900, product="Coaching", customer_extra=None, sub_extra=None,
                 start=START):
        self.sdk, self.catalogue, self.start = stripe_client, catalogue, start
        main = stripe_client.v1.prices.create(params={
            "product_data": {"name": product}, "unit_amount": amount, "currency": "usd",
            "recurring": {"interval": interval}})
        self.price = main
        path = tmp_path / "offers.toml"
        path.write_text(OFFERS.format(offers=offers_toml(main) if callable(offers_toml) else offers_toml))
        self.path = path
        self.client = make_client(offers_path=path)
        self.clock = catalogue.test_clock(int(start.timestamp()))
        self.customer = catalogue.customer(test_clock=self.clock.id, **(customer_extra or {}))
        self.sub = stripe_client.v1.subscriptions.create(params={
            "customer": self.customer.id, "items": [{"price": main.id}], **(sub_extra or {})})
        self.signer, self.url, self.now = signer, None, start

    def move_to(self, moment: datetime):
        while self.now < moment:
            self.now = min(moment, self.now + timedelta(days=27))
            self.catalogue.advance(self.clock.id, int(self.now.timestamp()))

    def offers_page(self, reason="other"):
        with freeze_time(self.now, real_asyncio=True):
            token, _ = self.signer.cancel_token(self.customer.id, self.sub.id)  # a link minted today
            self.url = f"/cancel/{token}"
            page = self.client.get(self.url)
            self.client.post(f"{self.url}/reason", data={"csrf_token": csrf_of(page.text), "reason": reason})
            return self.client.get(self.url)

    def accept(self, offer_id: str, **fields):
        with freeze_time(self.now, real_asyncio=True):
            page = self.client.get(self.url)
            response = self.client.post(f"{self.url}/accept",
                                        data={"csrf_token": csrf_of(page.text), "offer": offer_id, **fields})
            assert response.status_code == 303, response.text
            return self.client.get(f"{self.url}/done")


@pytest.fixture
def flow(stripe_client, catalogue, make_client, signer, tmp_path):
    def start(offers_toml: str, **kw) -> Flow:
        return Flow(stripe_client, catalogue, make_client, signer, tmp_path, offers_toml, **kw)
    return start


def test_a_switch_to_another_plan_names_the_new_plan_and_price(flow, stripe_client):
    lite = stripe_client.v1.prices.create(params={"product_data": {"name": "Lite"}, "unit_amount": 2900,
                                                  "currency": "usd", "recurring": {"interval": "month"}})
    run = flow(offer("switch", price=lite.id))
    run.offers_page()
    done = text_of(run.accept("switch"))
    assert "Your plan changes to Lite at $29.00/month instead of $49.00, from your next payment on 7 January 2027" in done
    assert "same plan" not in done and "changes to Coaching" not in done


def test_a_switch_to_a_cheaper_price_of_the_same_plan_says_the_price_changes(flow, stripe_client, store):
    def cheaper_price_of_the_same_plan(main):
        cheaper = stripe_client.v1.prices.create(params={"product": main.product, "unit_amount": 2900,
                                                         "currency": "usd", "recurring": {"interval": "month"}})
        return offer("switch", price=cheaper.id)

    run = flow(cheaper_price_of_the_same_plan)
    run.offers_page()
    done = text_of(run.accept("switch"))
    assert "Your price changes to $29.00/month instead of $49.00, from your next payment on 7 January 2027" in done
    assert "same plan" not in done and "Your plan changes to Coaching" not in done
    assert "Nothing else changes: you keep your access" in done


def test_a_free_month_on_a_yearly_plan_moves_the_renewal_by_a_month(flow):
    run = flow(offer("free_period", months=1), interval="year", amount=49000)
    run.move_to(START + timedelta(days=300))
    run.offers_page()
    done = text_of(run.accept("free_period"))
    assert "Your next payment of $490.00 moves from 7 December 2027 to 7 January 2028" in done
    assert "nothing (instead of $490.00)" not in done
    assert "7 January 2028 $490.00 (moved from 7 December 2027)" in done


def test_a_discount_already_in_place_is_in_the_plan_line_every_promise_and_the_cost(flow, stripe_client, store):
    """The demo's Dana: a 10 % coupon forever. The page shows what she pays, the pause promises what Stripe bills,
    and the dashboard counts what the skipped payments would have been."""
    from cancel_flow.store.stats import DateRange, StatsQueries

    stripe_client.v1.coupons.create(params={"id": "welcome-10", "percent_off": 10, "duration": "forever"})
    run = flow(offer("pause", max_payments=2), sub_extra={"discounts": [{"coupon": "welcome-10"}]})
    run.move_to(START + timedelta(days=3))
    page = text_of(run.offers_page())
    assert "$44.10 per month (10 % off)" in page and "$49.00" not in page
    done = text_of(run.accept("pause", payments="2"))
    assert "Skip your payments of 7 January and 7 February 2027; your next payment is $44.10 on 7 March 2027" in done
    session = store.find_session(store_nonce(run.url))
    assert session.offer_cost == 8820 and session.monthly_amount == 4410 and session.price_amount == 4410
    with freeze_time(run.now):
        stats = StatsQueries(store.engine).stats(DateRange(run.now - timedelta(days=1), run.now + timedelta(days=1)))
    assert stats.offer_cost == [("usd", 8820)] and stats.mrr_saved == [("usd", 4410)]
    run.move_to(datetime(2027, 3, 7, 12, tzinfo=UTC))
    invoices = stripe_client.v1.invoices.list(params={"subscription": run.sub.id}).data
    billed = {datetime.fromtimestamp(i.created, UTC).date().isoformat(): (i.status, i.amount_due) for i in invoices}
    assert billed["2027-01-07"][0] == "void" and billed["2027-02-07"][0] == "void"
    assert billed["2027-03-07"] == ("paid", 4410)


def test_a_customers_own_discount_is_counted_when_the_subscription_has_none(flow, stripe_client, emulator):
    stripe_client.v1.coupons.create(params={"id": "loyal-20", "percent_off": 20, "duration": "forever"})
    run = flow(offer("pause", max_payments=1))
    emulator.post(f"/_emulator/customers/{run.customer.id}/discount", json={"coupon": "loyal-20"}).raise_for_status()
    page = text_of(run.offers_page())
    assert "$39.20 per month (20 % off)" in page
    assert "your next payment is $39.20 on 7 February 2027" in text_of(run.accept("pause", payments="1"))


@pytest.mark.parametrize("price_params", [
    {"unit_amount_decimal": "4900.5"},
    {"billing_scheme": "tiered", "tiers_mode": "volume",
     "tiers": [{"up_to": 5, "unit_amount": 4900}, {"up_to": "inf", "unit_amount": 3900}]},
], ids=["decimal", "tiered"])
def test_a_price_without_a_unit_amount_gets_no_offer_whose_promise_is_money(flow, stripe_client, signer, price_params):
    stripe_client.v1.coupons.create(params={"id": "half", "percent_off": 50, "duration": "repeating",
                                            "duration_in_months": 3})
    talk = '[[offer]]\nid = "talk"\nkind = "contact"\nurl = "https://example.com/book"\ntitle = "Talk to your coach"\n'
    run = flow(offer("pause", max_payments=2) + offer("free_period", months=1) + talk)
    odd = stripe_client.v1.prices.create(params={"product_data": {"name": "Coaching by usage"}, "currency": "usd",
                                                 "recurring": {"interval": "month"}, **price_params})
    assert odd.unit_amount is None
    sub = stripe_client.v1.subscriptions.create(params={"customer": run.customer.id, "items": [{"price": odd.id}]})
    run.sub = sub
    page = text_of(run.offers_page())
    assert "Talk to your coach" in page and "The pause offer" not in page and "The free_period offer" not in page
    assert "$0.00" not in page and "Billed by usage or by tiers" in page


def store_nonce(url: str) -> str:
    import base64
    import json

    payload = url.split("/cancel/")[1].split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["n"]
