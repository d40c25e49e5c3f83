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
