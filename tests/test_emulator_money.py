"""Contract tests: how Stripe takes the money, through the real SDK on Stripe's test clocks: which card pays,
cards that need the customer's bank, automatic retries and their end, billing modes, the finalization of a renewal
whose webhook goes unanswered, and the limits of trial_end."""

import time

import httpx
import pytest
import stripe

from tests.test_emulator import Receiver
from tests.test_emulator_billing import DAY, HOUR, at, invoices, on_clock, price, subscribe, walk


def events_of(stripe_client, kind: str, invoice_id: str) -> list:
    return [e for e in stripe_client.v1.events.list(params={"type": kind, "limit": 100}).data
            if e.data.object.id == invoice_id]


# --- payment methods ---------------------------------------------------------------------------------

def test_a_card_is_attached_then_made_the_default_and_an_unattached_one_is_refused(stripe_client, catalogue):
    customer = stripe_client.v1.customers.create(params={"email": "new@example.com"})
    attached = stripe_client.v1.payment_methods.attach("pm_card_mastercard", params={"customer": customer.id})
    assert attached.id.startswith("pm_") and attached.customer == customer.id and attached.card.last4 == "4444"
    updated = stripe_client.v1.customers.update(customer.id, params={
        "invoice_settings": {"default_payment_method": attached.id}})
    assert updated.invoice_settings.default_payment_method == attached.id
    with pytest.raises(stripe.InvalidRequestError) as refused:  # a test token is a new, unattached card
        stripe_client.v1.customers.update(customer.id, params={
            "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    assert refused.value.param == "invoice_settings[default_payment_method]"
    assert "must be attached to the customer" in refused.value.user_message
    other = stripe_client.v1.customers.create(params={"email": "other@example.com"})
    with pytest.raises(stripe.InvalidRequestError):  # someone else's card
        stripe_client.v1.customers.update(other.id, params={"invoice_settings": {"default_payment_method": attached.id}})
    with pytest.raises(stripe.CardError):  # 4000000000000002 is declined when attached
        stripe_client.v1.payment_methods.attach("pm_card_visa_chargeDeclined", params={"customer": customer.id})


def test_a_test_token_given_as_payment_method_and_default_in_one_create_is_accepted(stripe_client):
    customer = stripe_client.v1.customers.create(params={
        "email": "guide@example.com", "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    method = stripe_client.v1.payment_methods.retrieve(customer.invoice_settings.default_payment_method)
    assert method.customer == customer.id and method.card.last4 == "4242"


def test_a_subscription_default_must_be_the_customers_card(stripe_client, catalogue):
    customer = catalogue.customer()
    with pytest.raises(stripe.InvalidRequestError) as refused:
        catalogue.subscription(customer, default_payment_method="pm_card_mastercard")
    assert refused.value.param == "default_payment_method"
    card = catalogue.attach(customer, "pm_card_mastercard")
    assert catalogue.subscription(customer, default_payment_method=card.id).default_payment_method == card.id


def test_the_subscriptions_own_card_is_charged_before_the_customers(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    failing = catalogue.attach(customer, "pm_card_chargeCustomerFail")
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))  # paid with the customer's Visa
    stripe_client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    walk(catalogue, clock, at(2027, 2, 10))
    renewal = invoices(stripe_client, sub)[-1]
    assert renewal.status == "open"  # the subscription's card was tried, not the customer's Visa
    detail = stripe_client.v1.invoices.retrieve(renewal.id, params={"expand": ["payments.data.payment.payment_intent"]})
    assert detail.payments.data[-1].payment.payment_intent.last_payment_error.payment_method.card.last4 == "0341"


def test_pay_charges_the_payment_method_it_is_given(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    failing = catalogue.attach(customer, "pm_card_chargeCustomerFail")
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    stripe_client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    walk(catalogue, clock, at(2027, 2, 10))
    renewal = invoices(stripe_client, sub)[-1]
    with pytest.raises(stripe.CardError):  # without a payment method: the subscription's own, the failing one
        stripe_client.v1.invoices.pay(renewal.id)
    new = catalogue.set_default_card(customer, "pm_card_mastercard")
    with pytest.raises(stripe.CardError):  # the customer's new default doesn't come before the subscription's card
        stripe_client.v1.invoices.pay(renewal.id)
    with pytest.raises(stripe.InvalidRequestError):  # only a card of the invoice's customer
        stripe_client.v1.invoices.pay(renewal.id, params={"payment_method": "pm_card_visa"})
    paid = stripe_client.v1.invoices.pay(renewal.id, params={"payment_method": new.id})
    assert paid.status == "paid" and paid.amount_paid == 4900
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"


# --- a card that needs the customer's bank ---------------------------------------------------------------

def needs_authentication(stripe_client, catalogue):
    """A renewal paid with the card that always asks the bank: (subscription, its open renewal)."""
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.set_default_card(customer, "pm_card_authenticationRequired")
    walk(catalogue, clock, at(2027, 2, 10))
    return sub, invoices(stripe_client, sub)[-1]


def test_a_card_that_needs_authentication_fails_off_session_waiting_for_the_customer(stripe_client, catalogue):
    sub, renewal = needs_authentication(stripe_client, catalogue)
    assert renewal.status == "open" and renewal.hosted_invoice_url
    detail = stripe_client.v1.invoices.retrieve(renewal.id, params={"expand": ["payments.data.payment.payment_intent"]})
    intent = detail.payments.data[-1].payment.payment_intent
    assert intent.status == "requires_action" and intent.last_payment_error.code == "authentication_required"
    assert events_of(stripe_client, "invoice.payment_action_required", renewal.id)
    assert events_of(stripe_client, "invoice.payment_failed", renewal.id)
    with pytest.raises(stripe.CardError) as declined:  # off session, nobody can confirm
        stripe_client.v1.invoices.pay(renewal.id)
    assert declined.value.code == "authentication_required"


@pytest.mark.emulator_only("drives the emulator's hosted invoice page")
def test_the_hosted_invoice_page_confirms_with_the_bank_and_pays(stripe_client, catalogue):
    sub, renewal = needs_authentication(stripe_client, catalogue)
    page = httpx.get(renewal.hosted_invoice_url)
    assert page.status_code == 200 and "Your bank asks you to confirm this payment" in page.text
    confirmed = httpx.post(renewal.hosted_invoice_url + "/pay", data={"confirm": "1"})
    assert confirmed.status_code == 303
    assert stripe_client.v1.invoices.retrieve(renewal.id).status == "paid"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    assert "This invoice is paid" in httpx.get(renewal.hosted_invoice_url).text


# --- automatic retries ------------------------------------------------------------------------------------

def test_failed_renewals_are_retried_on_the_schedule_then_the_subscription_is_canceled(stripe_client, catalogue, emulator):
    assert emulator.get("/_emulator/retries").json()["days"]  # on by default
    emulator.post("/_emulator/retries", json={"days": [3, 5, 7], "then": "cancel"}).raise_for_status()
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    walk(catalogue, clock, at(2027, 2, 10))
    renewal = invoices(stripe_client, sub)[-1]
    first = at(2027, 2, 10) + HOUR
    assert renewal.attempt_count == 1 and renewal.next_payment_attempt == first + 3 * DAY
    catalogue.advance(clock.id, first + 3 * DAY + 60)
    again = stripe_client.v1.invoices.retrieve(renewal.id)
    assert again.attempt_count == 2 and again.next_payment_attempt == first + 8 * DAY and again.status == "open"
    catalogue.advance(clock.id, first + 15 * DAY + 60)
    final = stripe_client.v1.invoices.retrieve(renewal.id)
    assert final.attempt_count == 4 and final.next_payment_attempt is None and final.status == "uncollectible"
    assert len(events_of(stripe_client, "invoice.payment_failed", renewal.id)) == 4
    assert events_of(stripe_client, "invoice.marked_uncollectible", renewal.id)
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.cancellation_details.reason == "payment_failed"


@pytest.mark.parametrize("then, status", [("unpaid", "unpaid"), ("past_due", "past_due")])
def test_when_retries_run_out_the_subscription_is_left_as_the_account_says(stripe_client, catalogue, emulator, then, status):
    emulator.post("/_emulator/retries", json={"days": [1], "then": then}).raise_for_status()
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    walk(catalogue, clock, at(2027, 2, 10))
    catalogue.advance(clock.id, at(2027, 2, 10) + HOUR + DAY + 60)
    assert invoices(stripe_client, sub)[-1].status == "uncollectible"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == status


def test_a_retry_with_a_working_card_pays_and_no_retries_when_turned_off(stripe_client, catalogue, emulator):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    walk(catalogue, clock, at(2027, 2, 10))
    renewal = invoices(stripe_client, sub)[-1]
    catalogue.set_default_card(customer, "pm_card_visa")
    catalogue.advance(clock.id, renewal.next_payment_attempt + 60)
    paid = stripe_client.v1.invoices.retrieve(renewal.id)
    assert paid.status == "paid" and paid.attempt_count == 2 and paid.next_payment_attempt is None
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"

    emulator.post("/_emulator/retries", json={"days": []}).raise_for_status()
    catalogue.set_default_card(customer, "pm_card_chargeCustomerFail")
    walk(catalogue, clock, at(2027, 3, 10))
    assert invoices(stripe_client, sub)[-1].next_payment_attempt is None


def test_the_retries_control_refuses_nonsense(emulator):
    for body in ({"days": "3"}, {"days": [0]}, {"days": [3], "then": "delete"}, {"days": [1] * 9}):
        assert emulator.post("/_emulator/retries", json=body).status_code == 400


# --- finalization, pauses, trials, billing modes --------------------------------------------------------------

@pytest.mark.emulator_only("has webhooks delivered to a loopback receiver, which Stripe can't reach")
def test_a_renewal_whose_created_webhook_fails_is_finalized_72_hours_later(stripe_client, catalogue, emulator):
    hook = Receiver(fail_first=10_000)
    try:
        stripe_client.v1.webhook_endpoints.create(params={"url": hook.url, "enabled_events": ["invoice.created"],
                                                          "api_version": stripe.api_version})
        clock, customer = on_clock(catalogue, at(2027, 1, 10))
        sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
        catalogue.advance(clock.id, at(2027, 2, 10) + 60)
        renewal = invoices(stripe_client, sub)[-1]
        hook.wait_for(2)  # the creation's and the renewal's invoice.created, both refused
        wait_for_failed_delivery(emulator, renewal.id, stripe_client)
        catalogue.advance(clock.id, at(2027, 2, 10) + 2 * HOUR)
        waiting = stripe_client.v1.invoices.retrieve(renewal.id)
        assert waiting.status == "draft" and waiting.automatically_finalizes_at == at(2027, 2, 10) + 72 * HOUR
        catalogue.advance(clock.id, at(2027, 2, 13) + HOUR)
        assert stripe_client.v1.invoices.retrieve(renewal.id).status == "paid"
    finally:
        hook.close()


def wait_for_failed_delivery(emulator, invoice_id: str, stripe_client, timeout: float = 10) -> None:
    created = events_of(stripe_client, "invoice.created", invoice_id)[0]
    deadline = time.monotonic() + timeout
    while not any(a["event"] == created.id and a["status"] != 200 for a in emulator.get("/_emulator/deliveries").json()):
        assert time.monotonic() < deadline, "the delivery was never tried"
        time.sleep(0.05)


@pytest.mark.emulator_only("has webhooks delivered to a loopback receiver, which Stripe can't reach")
def test_a_pause_that_ends_before_a_delayed_finalization_charges_the_renewal(stripe_client, catalogue, emulator):
    hook = Receiver(fail_first=10_000)
    try:
        stripe_client.v1.webhook_endpoints.create(params={"url": hook.url, "enabled_events": ["invoice.created"],
                                                          "api_version": stripe.api_version})
        clock, customer = on_clock(catalogue, at(2027, 1, 10))
        sub = subscribe(stripe_client, customer, price(stripe_client, 4900))
        stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {
            "behavior": "void", "resumes_at": at(2027, 2, 11)}})  # a day after the renewal: too early
        catalogue.advance(clock.id, at(2027, 2, 10) + 60)
        renewal = invoices(stripe_client, sub)[-1]
        wait_for_failed_delivery(emulator, renewal.id, stripe_client)
        catalogue.advance(clock.id, at(2027, 2, 13) + HOUR)
        assert stripe_client.v1.invoices.retrieve(renewal.id).status == "paid"  # collection had resumed

        second = subscribe(stripe_client, customer, price(stripe_client, 4900))
        renews = second["items"].data[0].current_period_end
        stripe_client.v1.subscriptions.update(second.id, params={"pause_collection": {
            "behavior": "void", "resumes_at": renews + 73 * HOUR}})  # after the latest finalization
        catalogue.advance(clock.id, renews + 60)
        skipped = invoices(stripe_client, second)[-1]
        wait_for_failed_delivery(emulator, skipped.id, stripe_client)
        catalogue.advance(clock.id, renews + 72 * HOUR + 60)
        assert stripe_client.v1.invoices.retrieve(skipped.id).status == "void"
    finally:
        hook.close()


def test_trial_end_is_at_most_two_years_from_the_billing_cycle_anchor(stripe_client, catalogue):
    clock, customer = on_clock(catalogue, at(2027, 1, 10))
    sub = subscribe(stripe_client, customer, price(stripe_client, 4900, "year"))
    walk(catalogue, clock, at(2028, 1, 10))
    with pytest.raises(stripe.InvalidRequestError) as refused:  # within 730 days of now, not of the anchor
        stripe_client.v1.subscriptions.update(sub.id, params={"trial_end": at(2029, 2, 10), "proration_behavior": "none"})
    assert refused.value.param == "trial_end"
    moved = stripe_client.v1.subscriptions.update(sub.id, params={"trial_end": at(2029, 1, 9), "proration_behavior": "none"})
    assert moved.status == "trialing" and moved.trial_end == at(2029, 1, 9)


@pytest.mark.parametrize("mode", ["classic", "flexible"])
def test_billing_mode_is_set_on_create_and_flexible_by_default(stripe_client, catalogue, mode):
    customer = catalogue.customer()
    assert catalogue.subscription(customer).billing_mode.type == "flexible"
    chosen = catalogue.subscription(customer, billing_mode={"type": mode})
    assert stripe_client.v1.subscriptions.retrieve(chosen.id).billing_mode.type == mode
