"""Contract tests: what the emulator bills, through the real stripe SDK, with Stripe's own test clocks."""

from datetime import datetime, timezone

import httpx
import pytest
import stripe

from tests.conftest import portal_configuration
from tests.test_emulator import Receiver

HOUR, DAY = 3600, 86400


def at(year: int, month: int, day: int, hour: int = 12) -> int:
    return int(datetime(year, month, day, hour, tzinfo=timezone.utc).timestamp())


def on_clock(catalogue, start: int, card: str = "pm_card_visa", **extra):
    clock = catalogue.test_clock(start)
    return clock, catalogue.customer(card=card, test_clock=clock.id, **extra)


def price(stripe_client, amount: int, interval: str = "month", count: int = 1, name: str = "Coaching Plan"):
    product = stripe_client.v1.products.create(params={"name": name})
    return stripe_client.v1.prices.create(params={"product": product.id, "unit_amount": amount, "currency": "usd",
                                                  "recurring": {"interval": interval, "interval_count": count}})


def subscribe(stripe_client, customer, *prices, **extra):
    items = [{"price": p.id} if not isinstance(p, tuple) else {"price": p[0].id, "quantity": p[1]} for p in prices]
    return stripe_client.v1.subscriptions.create(params={"customer": customer.id, "items": items, **extra})


def invoices(stripe_client, sub) -> list:
    """The subscription's invoices, oldest first."""
    return list(reversed(stripe_client.v1.invoices.list(params={"subscription": sub.id, "limit": 100}).data))


def walk(catalogue, clock, *moments):
    """Advance the clock through `moments`, each a renewal: stop an hour and a minute after it, when
    Stripe has finalized and charged the renewal's invoice."""
    for moment in moments:
        catalogue.advance(clock.id, moment + HOUR + 60)


def test_creation_and_each_renewal_make_a_paid_invoice_on_month_end_dates(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 31))
    plan = price(stripe_client, 4900)
    sub = subscribe(stripe_client, customer, plan)
    first = stripe_client.v1.invoices.retrieve(sub.latest_invoice)
    assert first.id.startswith("in_") and first.object == "invoice" and first.status == "paid"
    assert first.billing_reason == "subscription_create" and first.customer == customer.id
    assert first.parent.subscription_details.subscription == sub.id
    assert first.period_start == first.period_end == first.created == at(2027, 1, 31)
    assert (first.subtotal, first.total, first.amount_due, first.amount_paid, first.amount_remaining) == (4900, 4900, 4900, 4900, 0)
    assert first.attempted is True and first.attempt_count == 1 and first.currency == "usd"
    assert first.number and first.status_transitions.paid_at == at(2027, 1, 31)
    line = first.lines.data[0]
    assert first.lines.object == "list" and len(first.lines.data) == 1
    assert line.amount == 4900 and line.quantity == 1 and line.pricing.price_details.price == plan.id
    assert line.parent.subscription_item_details.subscription_item == sub["items"].data[0].id
    assert (line.period.start, line.period.end) == (at(2027, 1, 31), at(2027, 2, 28))

    catalogue.advance(clock.id, at(2027, 2, 28))
    renewal = invoices(stripe_client, sub)[-1]
    assert renewal.status == "draft" and renewal.billing_reason == "subscription_cycle"
    assert renewal.automatically_finalizes_at == at(2027, 2, 28) + HOUR  # Stripe charges about an hour later
    walk(catalogue, clock, at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31))
    billed = invoices(stripe_client, sub)
    assert [i.created for i in billed] == [at(2027, 1, 31), at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31)]
    assert [i.status for i in billed] == ["paid"] * 5 and [i.amount_paid for i in billed] == [4900] * 5
    # A renewal invoice's period looks back on the period that ended; its line covers the new one.
    assert (billed[2].period_start, billed[2].period_end) == (at(2027, 2, 28), at(2027, 3, 31))
    assert (billed[2].lines.data[0].period.start, billed[2].lines.data[0].period.end) == (at(2027, 3, 31), at(2027, 4, 30))
    assert stripe_client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end == at(2027, 6, 30)


@pytest.mark.emulator_only("has webhooks delivered to a loopback receiver, which Stripe can't reach")
def test_invoice_events_are_emitted_in_order_and_delivered_signed(stripe_client, catalogue):
    hook = Receiver()
    try:
        endpoint = stripe_client.v1.webhook_endpoints.create(params={"url": hook.url, "api_version": stripe.api_version,
                                                                     "enabled_events": ["invoice.created", "invoice.finalized", "invoice.paid"]})
        clock, customer = on_clock(catalogue, at(2027, 3, 10))
        sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
        walk(catalogue, clock, at(2027, 4, 10))
        events = [stripe.Webhook.construct_event(body, signature, endpoint.secret) for body, signature in hook.wait_for(6)]
    finally:
        hook.close()
    assert [e.type for e in events] == ["invoice.created", "invoice.finalized", "invoice.paid"] * 2
    assert {e.data.object.parent.subscription_details.subscription for e in events} == {sub.id}
    assert events[3].created == at(2027, 4, 10) and events[5].created == at(2027, 4, 10) + HOUR  # the clock's time


@pytest.mark.parametrize("interval, count, steps", [
    ("year", 1, [at(2028, 1, 31), at(2029, 1, 31)]),
    ("week", 1, [at(2027, 2, 7), at(2027, 2, 14), at(2027, 2, 21)]),
    ("month", 3, [at(2027, 4, 30), at(2027, 7, 31), at(2027, 10, 31)]),
])
def test_yearly_weekly_and_quarterly_plans_renew_on_their_interval(stripe_client, catalogue, interval, count, steps):
    clock, customer = on_clock(catalogue, at(2027, 1, 31))
    sub = subscribe(stripe_client, customer, price(stripe_client, 12000, interval, count))
    walk(catalogue, clock, *steps)
    billed = invoices(stripe_client, sub)
    assert [i.created for i in billed] == [at(2027, 1, 31), *steps]
    assert [i.amount_due for i in billed] == [12000] * len(billed) and {i.status for i in billed} == {"paid"}


def test_a_test_clock_advances_at_most_two_intervals_of_its_shortest_subscription(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 2, 1))
    with pytest.raises(stripe.InvalidRequestError) as too_far:
        stripe_client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": at(2029, 2, 2)})
    assert too_far.value.param == "frozen_time"  # no subscription: two years
    subscribe(stripe_client, customer, price(stripe_client, 900, "week"))
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": at(2027, 2, 15, 13)})
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": at(2027, 1, 1)})
    assert catalogue.advance(clock.id, at(2027, 2, 15)).frozen_time == at(2027, 2, 15)


@pytest.mark.emulator_only("lists every test clock and test clock event of the account")
def test_test_clock_create_retrieve_list_events_limits_and_delete(stripe_client, catalogue):
    clock = catalogue.test_clock(at(2027, 6, 1), name="renewals")
    assert clock.object == "test_helpers.test_clock" and clock.status == "ready" and clock.name == "renewals"
    assert clock.frozen_time == at(2027, 6, 1) and clock.deletes_after > clock.created
    assert [c.id for c in stripe_client.v1.test_helpers.test_clocks.list().data] == [clock.id]
    customers = [catalogue.customer(email=f"c{i}@example.com", test_clock=clock.id) for i in range(3)]
    assert customers[0].test_clock == clock.id and customers[0].created == at(2027, 6, 1)
    with pytest.raises(stripe.InvalidRequestError):  # three customers per clock
        catalogue.customer(email="fourth@example.com", test_clock=clock.id)
    sub = subscribe(stripe_client, customers[0], price(stripe_client, 4900))
    assert sub.test_clock == clock.id and sub.start_date == at(2027, 6, 1)
    advancing = stripe_client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": at(2027, 6, 2)})
    assert advancing.status == "advancing"  # as at Stripe: wait for `ready`
    assert stripe_client.v1.test_helpers.test_clocks.retrieve(clock.id).status == "ready"
    kinds = [e.type for e in stripe_client.v1.events.list(params={"type": "test_helpers.test_clock.*"}).data]
    assert kinds == ["test_helpers.test_clock.ready", "test_helpers.test_clock.advancing", "test_helpers.test_clock.created"]
    assert stripe_client.v1.test_helpers.test_clocks.delete(clock.id).deleted is True
    for gone in (lambda: stripe_client.v1.customers.retrieve(customers[0].id),
                 lambda: stripe_client.v1.subscriptions.retrieve(sub.id),
                 lambda: stripe_client.v1.test_helpers.test_clocks.retrieve(clock.id)):
        with pytest.raises(stripe.InvalidRequestError) as error:
            gone()
        assert error.value.http_status == 404


def test_the_emulators_own_clock_bills_objects_on_no_test_clock_only(stripe_client, catalogue, emulator):
    clock, clocked = on_clock(catalogue, at(2027, 1, 15))
    on_clock_sub = subscribe(stripe_client, clocked, price(stripe_client, 4900))
    plain = catalogue.subscription()
    emulator.post("/_emulator/clock/advance", json={"seconds": 32 * DAY}).raise_for_status()
    assert [i.billing_reason for i in invoices(stripe_client, plain)] == ["subscription_create", "subscription_cycle"]
    assert invoices(stripe_client, plain)[-1].status == "paid"
    assert len(invoices(stripe_client, on_clock_sub)) == 1


def _coupon(stripe_client, coupon_id: str, percent, duration: str, months: int | None = None):
    params = {"id": coupon_id, "percent_off": percent, "duration": duration}
    if months:
        params["duration_in_months"] = months
    return stripe_client.v1.coupons.create(params=params)


def test_repeating_discount_from_31_january_bills_three_months_then_ends_with_an_update(stripe_client, catalogue):
    _coupon(stripe_client, "q25", 25, "repeating", 3)
    clock, customer = on_clock(catalogue, at(2027, 1, 31))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4999), discounts=[{"coupon": "q25"}])
    discount = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]}).discounts[0]
    assert discount.start == at(2027, 1, 31) and discount.end == at(2027, 4, 30)  # 3 calendar months, day clamped
    walk(catalogue, clock, at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30), at(2027, 5, 31))
    billed = invoices(stripe_client, sub)
    # 25% of 49.99 is 12.4975: rounded half up to 12.50 on the line.
    assert [i.amount_due for i in billed] == [3749, 3749, 3749, 4999, 4999]
    assert billed[0].total_discount_amounts[0].amount == 1250 and billed[0].total_discount_amounts[0].discount == discount.id
    assert billed[0].lines.data[0].discount_amounts[0].amount == 1250 and billed[0].discounts == [discount.id]
    assert billed[3].total_discount_amounts == [] and billed[3].discounts == []
    assert stripe_client.v1.subscriptions.retrieve(sub.id).discounts == []
    ended = stripe_client.v1.events.list(params={"type": "customer.subscription.updated"}).data
    assert any(e.created == at(2027, 4, 30) and e.data.previous_attributes.to_dict().get("discounts") == [discount.id] for e in ended)


def test_repeating_discount_started_on_28_february_counts_from_its_start(stripe_client, catalogue):
    _coupon(stripe_client, "two-months", 50, "repeating", 2)
    clock, customer = on_clock(catalogue, at(2027, 1, 31))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    walk(catalogue, clock, at(2027, 2, 28))
    stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "two-months"}]})
    walk(catalogue, clock, at(2027, 3, 31), at(2027, 4, 30))
    # Started 28 Feb 13:01, it ends 28 April 13:01: the 31 March renewal is discounted, 30 April's is not.
    assert [i.amount_due for i in invoices(stripe_client, sub)] == [4900, 4900, 2450, 4900]


def test_once_discount_bills_the_next_invoice_only_and_forever_every_invoice(stripe_client, catalogue):
    _coupon(stripe_client, "once-half", 50, "once")
    _coupon(stripe_client, "always-33", 33, "forever")
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    once = subscribe(stripe_client, customer, price(stripe_client, 4900))
    forever = subscribe(stripe_client, customer, price(stripe_client, 4900, name="Other"), discounts=[{"coupon": "always-33"}])
    stripe_client.v1.subscriptions.update(once.id, params={"discounts": [{"coupon": "once-half"}]})
    assert stripe_client.v1.subscriptions.retrieve(once.id, params={"expand": ["discounts"]}).discounts[0].end is None
    walk(catalogue, clock, at(2027, 2, 10), at(2027, 3, 10), at(2027, 4, 10))
    assert [i.amount_due for i in invoices(stripe_client, once)] == [4900, 2450, 4900, 4900]
    assert stripe_client.v1.subscriptions.retrieve(once.id).discounts == []
    assert [i.amount_due for i in invoices(stripe_client, forever)] == [3283] * 4  # 49.00 − 16.17


def test_two_item_subscription_bills_one_line_per_item_and_discounts_each(stripe_client, catalogue):
    _coupon(stripe_client, "half", 50, "forever")
    clock, customer = on_clock(catalogue, at(2027, 5, 5))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900), (price(stripe_client, 1999, name="Add-on"), 2),
                    discounts=[{"coupon": "half"}])
    walk(catalogue, clock, at(2027, 6, 5))
    for inv in invoices(stripe_client, sub):
        assert [line.amount for line in inv.lines.data] == [4900, 3998]
        assert [line.discount_amounts[0].amount for line in inv.lines.data] == [2450, 1999]
        assert (inv.subtotal, inv.total_discount_amounts[0].amount, inv.amount_due) == (8898, 4449, 4449)


def test_void_pause_skips_exactly_the_renewals_before_resumes_at(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void", "resumes_at": at(2027, 3, 10)}})
    walk(catalogue, clock, at(2027, 2, 10), at(2027, 3, 10), at(2027, 4, 10))
    billed = invoices(stripe_client, sub)
    assert [(i.created, i.status) for i in billed] == [
        (at(2027, 1, 10), "paid"), (at(2027, 2, 10), "void"), (at(2027, 3, 10), "paid"), (at(2027, 4, 10), "paid")]
    # voided when Stripe finalizes it, an hour after it was made, collection still paused then
    assert billed[1].amount_paid == 0 and billed[1].status_transitions.voided_at == at(2027, 2, 10) + HOUR
    after = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert after.pause_collection is None and after.status == "active"
    voided = [e for e in stripe_client.v1.events.list(params={"type": "invoice.voided"}).data
              if e.data.object.customer == customer.id]
    assert [e.data.object.id for e in voided] == [billed[1].id]


@pytest.mark.parametrize("behavior, status", [("keep_as_draft", "draft"), ("mark_uncollectible", "uncollectible")])
def test_other_pause_behaviors_leave_the_renewal_draft_or_uncollectible(stripe_client, catalogue, behavior, status):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": behavior}})
    walk(catalogue, clock, at(2027, 2, 10))
    renewal = invoices(stripe_client, sub)[-1]
    assert renewal.status == status and renewal.amount_paid == 0 and renewal.attempted is False


def test_decline_at_renewal_leaves_the_invoice_open_and_the_subscription_past_due_until_paid(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 20))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    walk(catalogue, clock, at(2027, 2, 20))
    failed = invoices(stripe_client, sub)[-1]
    assert failed.status == "open" and failed.attempted is True and failed.attempt_count == 1
    assert failed.amount_due == 4900 and failed.amount_remaining == 4900 and failed.amount_paid == 0
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    event = stripe_client.v1.events.list(params={"type": "invoice.payment_failed"}).data[0]
    assert event.data.object.id == failed.id
    detail = stripe_client.v1.invoices.retrieve(failed.id, params={"expand": ["payments.data.payment.payment_intent"]})
    error = detail.payments.data[0].payment.payment_intent.last_payment_error
    assert error.code == "card_declined" and error.decline_code == "generic_decline"
    assert (error.payment_method.card.brand, error.payment_method.card.last4) == ("visa", "0341")
    with pytest.raises(stripe.CardError) as declined:
        stripe_client.v1.invoices.pay(failed.id)
    assert declined.value.http_status == 402 and declined.value.code == "card_declined"
    assert stripe_client.v1.invoices.retrieve(failed.id).attempt_count == 2
    catalogue.set_default_card(customer, "pm_card_visa")
    paid = stripe_client.v1.invoices.pay(failed.id)
    assert paid.status == "paid" and paid.amount_paid == 4900 and paid.amount_remaining == 0
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.invoices.pay(failed.id)


def test_decline_at_creation_is_incomplete_with_an_open_invoice(stripe_client, catalogue):
    _, customer = on_clock(catalogue, at(2027, 1, 20), card="pm_card_chargeCustomerFail")
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    assert sub.status == "incomplete"
    first = stripe_client.v1.invoices.retrieve(sub.latest_invoice)
    assert first.status == "open" and first.attempted is True and first.billing_reason == "subscription_create"


def test_invoice_list_filters_and_pages(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 5))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    other = catalogue.subscription(catalogue.customer(email="other@example.com"))
    walk(catalogue, clock, at(2027, 2, 5), at(2027, 3, 5))
    mine = stripe_client.v1.invoices.list(params={"customer": customer.id})
    assert len(mine.data) == 3 and {i.customer for i in mine.data} == {customer.id}
    assert [i.id for i in stripe_client.v1.invoices.list(params={"subscription": other.id}).data] == [other.latest_invoice]
    first_page = stripe_client.v1.invoices.list(params={"customer": customer.id, "limit": 2})
    rest = stripe_client.v1.invoices.list(params={"customer": customer.id, "limit": 2, "starting_after": first_page.data[-1].id})
    assert first_page.has_more is True and len(rest.data) == 1 and rest.has_more is False
    assert stripe_client.v1.invoices.list(params={"status": "open", "customer": customer.id}).data == []
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.v1.invoices.list(params={"subscriptions": sub.id})
    assert unknown.value.code == "parameter_unknown"


def test_create_preview_is_the_invoice_later_billed(stripe_client, catalogue):
    _coupon(stripe_client, "q20", 20, "repeating", 2)
    clock, customer = on_clock(catalogue, at(2027, 1, 31))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900), (price(stripe_client, 1250, name="Extra"), 3))
    stripe_client.v1.subscriptions.update(sub.id, params={"discounts": [{"coupon": "q20"}]})
    for renewal in (at(2027, 2, 28), at(2027, 3, 31), at(2027, 4, 30)):
        preview = stripe_client.v1.invoices.create_preview(params={"subscription": sub.id})
        walk(catalogue, clock, renewal)
        billed = invoices(stripe_client, sub)[-1]
        assert preview.created == billed.created == renewal
        for field in ("amount_due", "subtotal", "total", "period_start", "period_end", "billing_reason"):
            assert preview[field] == billed[field], field
        assert [d.amount for d in preview.total_discount_amounts] == [d.amount for d in billed.total_discount_amounts]
        assert [(line.amount, line.period.start, line.period.end) for line in preview.lines.data] == \
            [(line.amount, line.period.start, line.period.end) for line in billed.lines.data]
    # Added right after the first invoice, the 2-month discount ends on 31 March at the renewal's moment:
    # one renewal discounted.
    assert [i.amount_due for i in invoices(stripe_client, sub)] == [8650, 6920, 8650, 8650]
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    with pytest.raises(stripe.InvalidRequestError) as none_left:
        stripe_client.v1.invoices.create_preview(params={"subscription": sub.id})
    assert none_left.value.code == "invoice_upcoming_none"


def test_trial_end_on_an_active_subscription_moves_the_next_payment(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 25))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    with pytest.raises(stripe.InvalidRequestError) as prorating:
        stripe_client.v1.subscriptions.update(sub.id, params={"trial_end": at(2027, 3, 25)})
    assert prorating.value.param == "proration_behavior"
    with pytest.raises(stripe.InvalidRequestError) as too_long:
        stripe_client.v1.subscriptions.update(sub.id, params={"trial_end": at(2029, 2, 1), "proration_behavior": "none"})
    assert too_long.value.param == "trial_end"
    moved = stripe_client.v1.subscriptions.update(sub.id, params={"trial_end": at(2027, 3, 25), "proration_behavior": "none"})
    assert moved.status == "trialing" and moved.trial_end == at(2027, 3, 25) and moved.start_date == at(2027, 1, 25)
    assert moved["items"].data[0].current_period_end == at(2027, 3, 25)
    walk(catalogue, clock, at(2027, 2, 25))
    assert len(invoices(stripe_client, sub)) == 1  # nothing billed on 25 February
    walk(catalogue, clock, at(2027, 3, 25), at(2027, 4, 25))
    billed = invoices(stripe_client, sub)
    assert [(i.created, i.amount_paid) for i in billed] == [(at(2027, 1, 25), 4900), (at(2027, 3, 25), 4900), (at(2027, 4, 25), 4900)]
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_trial_at_creation_bills_zero_then_the_price_at_its_end(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 1))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900), trial_period_days=14)
    assert sub.status == "trialing" and sub.billing_cycle_anchor == at(2027, 1, 15)
    walk(catalogue, clock, at(2027, 1, 15), at(2027, 2, 15))
    assert [(i.billing_reason, i.amount_due, i.status) for i in invoices(stripe_client, sub)] == [
        ("subscription_create", 0, "paid"), ("subscription_cycle", 4900, "paid"), ("subscription_cycle", 4900, "paid")]


def test_price_switch_without_proration_bills_the_new_price_from_the_next_renewal(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 25))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    cheaper = price(stripe_client, 2900, name="Lite")
    item = sub["items"].data[0].id
    switched = stripe_client.v1.subscriptions.update(sub.id, params={"items": [{"id": item, "price": cheaper.id}],
                                                                     "proration_behavior": "none"})
    assert switched["items"].data[0].price.id == cheaper.id and switched["items"].data[0].id == item
    assert switched["items"].data[0].current_period_end == at(2027, 2, 25) and len(invoices(stripe_client, sub)) == 1
    walk(catalogue, clock, at(2027, 2, 25))
    assert [i.amount_due for i in invoices(stripe_client, sub)] == [4900, 2900]


def test_switch_to_another_interval_resets_the_billing_cycle_and_invoices_now(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 25))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.advance(clock.id, at(2027, 2, 3))
    yearly = price(stripe_client, 49000, "year", name="Yearly")
    switched = stripe_client.v1.subscriptions.update(sub.id, params={
        "items": [{"id": sub["items"].data[0].id, "price": yearly.id}], "proration_behavior": "none"})
    assert switched.billing_cycle_anchor == at(2027, 2, 3)
    assert switched["items"].data[0].current_period_end == at(2028, 2, 3)
    latest = stripe_client.v1.invoices.retrieve(switched.latest_invoice)
    assert latest.billing_reason == "subscription_update" and latest.amount_paid == 49000 and latest.created == at(2027, 2, 3)


def test_customer_address_metadata_and_subscription_metadata(stripe_client, catalogue):
    customer = catalogue.customer(address={"country": "DE", "city": "Berlin"}, metadata={"tier": "gold"})
    assert customer.address.country == "DE" and customer.address.line1 is None and customer.metadata["tier"] == "gold"
    updated = stripe_client.v1.customers.update(customer.id, params={"address": {"country": "FR"}, "metadata": {"tier": "silver"}})
    assert updated.address.country == "FR" and updated.address.city == "Berlin" and updated.metadata["tier"] == "silver"
    sub = catalogue.subscription(customer, metadata={"coach": "ann"})
    assert sub.metadata["coach"] == "ann" and sub.start_date == sub.created
    assert stripe_client.v1.invoices.retrieve(sub.latest_invoice).parent.subscription_details.metadata["coach"] == "ann"


def _cancel_session(stripe_client, sub, configuration: str | None = None):
    return stripe_client.v1.billing_portal.sessions.create(params={
        "customer": sub.customer, **({"configuration": configuration} if configuration else {}),
        "flow_data": {"type": "subscription_cancel", "subscription_cancel": {"subscription": sub.id}}})


@pytest.mark.parametrize("schedule", [{"cancel_at_period_end": True}, {"cancel_at": "max_period_end"}])
def test_portal_refuses_a_cancel_flow_for_a_subscription_already_set_to_cancel(stripe_client, catalogue, schedule):
    sub = catalogue.subscription()
    configuration = portal_configuration(stripe_client)
    stripe_client.v1.subscriptions.update(sub.id, params=schedule)
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _cancel_session(stripe_client, sub, configuration)
    assert refused.value.http_status == 400
    assert f"The subscription {sub.id} is already set to be canceled at period end." in refused.value.user_message
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert _cancel_session(stripe_client, sub, configuration).flow.type == "subscription_cancel"


@pytest.mark.no_portal_configuration
def test_the_default_portal_configuration_is_the_dashboards_not_the_first_made_through_the_api(stripe_client, catalogue,
                                                                                                emulator):
    sub = catalogue.subscription()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _cancel_session(stripe_client, sub)
    assert "until you save your customer portal settings" in refused.value.user_message
    first = stripe_client.v1.billing_portal.configurations.create(params={
        "features": {"subscription_cancel": {"enabled": True, "mode": "immediately"}}})
    assert first.is_default is False  # made through the API: used only when named
    with pytest.raises(stripe.InvalidRequestError):
        _cancel_session(stripe_client, sub)
    assert _cancel_session(stripe_client, sub, first.id).configuration == first.id
    saved = emulator.post("/_emulator/portal_settings", json={"features": {
        "subscription_cancel": {"enabled": True, "mode": "immediately"}}}).raise_for_status().json()
    assert saved["is_default"] is True
    assert [c.id for c in stripe_client.v1.billing_portal.configurations.list(params={"is_default": True}).data] == [saved["id"]]
    session = _cancel_session(stripe_client, sub)
    assert session.configuration == saved["id"]
    confirm = httpx.post(session.url + "/cancel", data={"reason": "unused"})
    assert confirm.status_code in (200, 303)
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.cancellation_details.feedback == "unused"
