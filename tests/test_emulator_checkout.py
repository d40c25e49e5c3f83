"""The emulator's Checkout Sessions in subscription mode, through the real SDK: create, retrieve, expire, the hosted
page that pays with a test card and creates the subscription with the discount, and the events Stripe sends."""

import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe

from tests.conftest import TEST_KEY

SUCCESS = "https://coach.example/comeback/welcome?session_id={CHECKOUT_SESSION_ID}"
CANCEL = "https://coach.example/comeback"


def events(stripe_client, *types) -> list:
    listed = stripe_client.v1.events.list(params={"limit": 100}).data
    return [event for event in reversed(listed) if not types or event.type in types]


def open_session(stripe_client, customer, price, **extra):
    return stripe_client.v1.checkout.sessions.create(params={
        "mode": "subscription", "customer": customer.id, "line_items": [{"price": price.id, "quantity": 1}],
        "success_url": SUCCESS, "cancel_url": CANCEL, **extra})


def pay(url: str, card: str = "pm_card_visa") -> httpx.Response:
    with httpx.Client(timeout=10) as browser:
        page = browser.get(url)
        assert page.status_code == 200 and "Subscribe" in page.text
        return browser.post(url, data={"payment_method": card})


def test_a_session_with_a_coupon_pays_and_creates_the_subscription_with_the_discount(stripe_client, catalogue):
    customer = catalogue.customer(card="pm_card_mastercard")
    price = catalogue.price(amount=4900)
    coupon = stripe_client.v1.coupons.create(params={"percent_off": 50, "duration": "repeating", "duration_in_months": 3,
                                                     "name": "Come back for half"})
    session = open_session(stripe_client, customer, price, discounts=[{"coupon": coupon.id}], locale="pt-BR",
                           metadata={"cancel_flow_winback": "sub_old"},
                           subscription_data={"metadata": {"cancel_flow_winback": "sub_old"}})
    assert session.id.startswith("cs_test_") and session.object == "checkout.session"
    assert (session.status, session.payment_status, session.mode) == ("open", "unpaid", "subscription")
    assert (session.amount_subtotal, session.amount_total, session.total_details.amount_discount) == (4900, 2450, 2450)
    assert session.expires_at - session.created == 24 * 3600 and session.locale == "pt-BR"
    assert session.subscription is None and session.url.endswith(f"/c/pay/{session.id}")
    assert session.discounts[0].coupon == coupon.id

    page = httpx.get(session.url)
    assert 'lang="pt"' in page.text and "Come back for half" in page.text and "24.50 USD" in page.text

    paid = pay(session.url)
    assert paid.status_code == 303
    assert paid.headers["location"] == SUCCESS.replace("{CHECKOUT_SESSION_ID}", session.id)

    done = stripe_client.v1.checkout.sessions.retrieve(session.id, params={"expand": ["subscription", "line_items"]})
    assert (done.status, done.payment_status, done.url) == ("complete", "paid", None)
    assert done.line_items.data[0].price.id == price.id and done.line_items.data[0].quantity == 1
    sub = done.subscription
    assert sub.status == "active" and sub.customer == customer.id and sub.metadata["cancel_flow_winback"] == "sub_old"
    assert sub["items"].data[0].price.id == price.id
    [discount] = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]}).discounts
    assert discount.source.coupon == coupon.id
    card = stripe_client.v1.payment_methods.retrieve(sub.default_payment_method)
    assert card.customer == customer.id and card.card.last4 == "4242"
    invoice = stripe_client.v1.invoices.retrieve(done.invoice)
    assert (invoice.status, invoice.amount_paid, invoice.billing_reason) == ("paid", 2450, "subscription_create")

    kinds = [event.type for event in events(stripe_client) if event.type.startswith(("checkout.", "customer.subscription.",
                                                                                     "invoice.paid"))]
    assert kinds[0] == "customer.subscription.created" and kinds[-1] == "checkout.session.completed"
    assert "invoice.paid" in kinds
    [completed] = events(stripe_client, "checkout.session.completed")
    assert completed.data.object.subscription == sub.id and completed.data.object.metadata["cancel_flow_winback"] == "sub_old"
    # The page of a completed session goes on to the success URL; paying again changes nothing.
    assert httpx.get(session.url).status_code == 303
    assert httpx.post(session.url, data={"payment_method": "pm_card_visa"}).status_code == 410
    assert len(stripe_client.v1.subscriptions.list(params={"customer": customer.id}).data) == 1


def test_a_declined_card_keeps_the_session_open_and_another_card_pays(stripe_client, catalogue):
    customer = catalogue.customer()
    session = open_session(stripe_client, customer, catalogue.price())
    declined = pay(session.url, "pm_card_chargeCustomerFail")
    assert declined.status_code == 402 and "Your card was declined." in declined.text
    refused = pay(session.url, "pm_card_chargeDeclined")
    assert refused.status_code == 402
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    assert stripe_client.v1.subscriptions.list(params={"customer": customer.id}).data == []
    assert pay(session.url, "pm_card_visa").status_code == 303
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "complete"


def test_expire_closes_an_open_session_once(stripe_client, catalogue):
    session = open_session(stripe_client, catalogue.customer(), catalogue.price())
    expired = stripe_client.v1.checkout.sessions.expire(session.id)
    assert (expired.status, expired.url) == ("expired", None)
    [event] = events(stripe_client, "checkout.session.expired")
    assert event.data.object.id == session.id
    with pytest.raises(stripe.InvalidRequestError, match='status of "expired"'):
        stripe_client.v1.checkout.sessions.expire(session.id)
    assert httpx.get(session.url).status_code == 410


def test_a_session_expires_24_hours_after_it_was_made_on_the_customers_test_clock(stripe_client, catalogue):
    clock = catalogue.test_clock(1_800_000_000)
    customer = catalogue.customer(test_clock=clock.id)
    session = open_session(stripe_client, customer, catalogue.price())
    assert session.created == 1_800_000_000
    catalogue.advance(clock.id, 1_800_000_000 + 23 * 3600)
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "open"
    catalogue.advance(clock.id, 1_800_000_000 + 25 * 3600)
    assert stripe_client.v1.checkout.sessions.retrieve(session.id).status == "expired"
    assert [e.created for e in events(stripe_client, "checkout.session.expired")] == [session.expires_at]


def test_a_subscription_made_by_checkout_on_a_test_clock_starts_at_the_clocks_time(stripe_client, catalogue):
    clock = catalogue.test_clock(1_800_000_000)
    customer = catalogue.customer(test_clock=clock.id)
    session = open_session(stripe_client, customer, catalogue.price())
    pay(session.url)
    sub = stripe_client.v1.subscriptions.retrieve(stripe_client.v1.checkout.sessions.retrieve(session.id).subscription)
    assert sub.start_date == 1_800_000_000 and sub.test_clock == clock.id


@pytest.mark.parametrize("change, words", [
    ({"mode": "payment"}, "subscription mode only"),
    ({"line_items": []}, "Missing required param: line_items."),
    ({"success_url": ""}, "Missing required param: success_url."),
    ({"allow_promotion_codes": True, "discounts": [{"coupon": "c"}]}, "allow_promotion_codes, discounts"),
    ({"customer_email": "a@example.com"}, "customer, customer_email"),
    ({"expires_at": 1}, "between 30 minutes and 24 hours"),
    ({"locale": "tlh"}, "locale"),
    ({"line_items": [{"price": "price_missing"}]}, "No such price: 'price_missing'"),
])
def test_sessions_are_refused_as_stripe_refuses_them(stripe_client, catalogue, change, words):
    customer, price = catalogue.customer(), catalogue.price()
    params = {"mode": "subscription", "customer": customer.id, "line_items": [{"price": price.id}],
              "success_url": SUCCESS, **change}
    with pytest.raises(stripe.InvalidRequestError, match=re.escape(words)):
        stripe_client.v1.checkout.sessions.create(params=params)


def test_an_archived_price_cant_be_bought_and_the_products_default_price_can_change(stripe_client, catalogue):
    old = catalogue.price(amount=4900)
    product = stripe_client.v1.products.retrieve(old.product)
    assert product.default_price == old.id
    newer = stripe_client.v1.prices.create(params={"product": product.id, "unit_amount": 5900, "currency": "usd",
                                                   "recurring": {"interval": "month"}})
    assert stripe_client.v1.products.update(product.id, params={"default_price": newer.id}).default_price == newer.id
    assert stripe_client.v1.prices.update(old.id, params={"active": False}).active is False
    with pytest.raises(stripe.InvalidRequestError, match="The price specified is inactive"):
        open_session(stripe_client, catalogue.customer(), old)
    assert open_session(stripe_client, catalogue.customer(email="b@example.com"), newer).amount_total == 5900


def test_sessions_are_listed_by_customer(stripe_client, catalogue, emulator):
    customer = catalogue.customer()
    first = open_session(stripe_client, customer, catalogue.price())
    open_session(stripe_client, catalogue.customer(email="other@example.com"), catalogue.price())
    listed = stripe_client.v1.checkout.sessions.list(params={"customer": customer.id})
    assert [s.id for s in listed.data] == [first.id]
    raw = emulator.get(f"/v1/checkout/sessions/{first.id}", headers={"Authorization": f"Bearer {TEST_KEY}"}).json()
    assert "line_items" not in raw and raw["object"] == "checkout.session"
    assert parse_qs(urlsplit(SUCCESS).query)["session_id"] == ["{CHECKOUT_SESSION_ID}"]
