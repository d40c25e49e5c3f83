"""Contract tests: charges and refunds with their events, customers' tax ids and the account, driven through
the real stripe SDK (what a withdrawal needs; `make test-stripe` runs them against Stripe test mode too)."""

import pytest
import stripe


def paid_charge(stripe_client, catalogue, **customer):
    """A new subscription's first payment: (subscription, its PaymentIntent id, the charge)."""
    sub = catalogue.subscription(catalogue.customer(**customer))
    [invoice] = stripe_client.v1.invoices.list(params={"subscription": sub.id, "expand": ["data.payments"]}).data
    assert invoice.status == "paid" and invoice.amount_paid == 4900
    intent_id = invoice.payments.data[0].payment.payment_intent
    intent = stripe_client.v1.payment_intents.retrieve(intent_id)
    charge = stripe_client.v1.charges.retrieve(intent.latest_charge)
    return sub, intent_id, charge


def test_a_paid_invoice_has_a_charge_that_a_refund_returns_in_full_once(stripe_client, catalogue):
    sub, intent_id, charge = paid_charge(stripe_client, catalogue)
    assert (charge.amount, charge.amount_refunded, charge.refunded, charge.paid) == (4900, 0, False, True)
    assert charge.payment_intent == intent_id and charge.status == "succeeded"
    refund = stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "reason": "requested_by_customer",
                                                      "metadata": {"declaration": "7"}})
    assert (refund.amount, refund.status, refund.charge, refund.payment_intent) == (4900, "succeeded", charge.id, intent_id)
    assert refund.reason == "requested_by_customer" and refund.metadata["declaration"] == "7"
    charge = stripe_client.v1.charges.retrieve(charge.id)
    assert (charge.amount_refunded, charge.refunded) == (4900, True)
    with pytest.raises(stripe.InvalidRequestError) as again:
        stripe_client.v1.refunds.create(params={"charge": charge.id})
    assert again.value.code == "charge_already_refunded"
    assert stripe_client.v1.refunds.retrieve(refund.id).amount == 4900
    assert [r.id for r in stripe_client.v1.refunds.list(params={"payment_intent": intent_id}).data] == [refund.id]


def test_part_of_a_charge_is_refunded_and_never_more_than_is_left(stripe_client, catalogue):
    _, intent_id, charge = paid_charge(stripe_client, catalogue)
    part = stripe_client.v1.refunds.create(params={"charge": charge.id, "amount": 1000})
    assert part.amount == 1000 and stripe_client.v1.charges.retrieve(charge.id).refunded is False
    with pytest.raises(stripe.InvalidRequestError) as too_much:
        stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 4000})
    assert too_much.value.param == "amount" and "greater than unrefunded amount" in str(too_much.value)
    rest = stripe_client.v1.refunds.create(params={"payment_intent": intent_id})
    assert rest.amount == 3900
    charge = stripe_client.v1.charges.retrieve(charge.id)
    assert (charge.amount_refunded, charge.refunded) == (4900, True)


def test_a_refund_needs_a_charge_or_a_payment_intent(stripe_client, catalogue):
    with pytest.raises(stripe.InvalidRequestError):
        stripe_client.v1.refunds.create(params={"amount": 100})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        stripe_client.v1.refunds.create(params={"payment_intent": "pi_doesnotexist"})
    assert unknown.value.code == "resource_missing"


def test_a_refund_sends_refund_created_and_charge_refunded(stripe_client, catalogue):
    _, intent_id, charge = paid_charge(stripe_client, catalogue)
    refund = stripe_client.v1.refunds.create(params={"payment_intent": intent_id, "amount": 2000})
    created = [e for e in stripe_client.v1.events.list(params={"type": "refund.created", "limit": 20}).data
               if e.data.object["id"] == refund.id]
    refunded = [e for e in stripe_client.v1.events.list(params={"type": "charge.refunded", "limit": 20}).data
                if e.data.object["id"] == charge.id]
    assert len(created) == 1 and created[0].data.object["amount"] == 2000
    assert len(refunded) == 1
    assert refunded[0].data.object["object"] == "charge" and refunded[0].data.object["amount_refunded"] == 2000
    assert refunded[0].data.previous_attributes["amount_refunded"] == 0


def test_a_customers_tax_ids_are_included_only_when_asked_for(stripe_client, catalogue):
    business = catalogue.customer(email="firm@example.com", tax_id_data=[{"type": "eu_vat", "value": "DE123456789"}])
    assert "tax_ids" not in stripe_client.v1.customers.retrieve(business.id).to_dict()
    expanded = stripe_client.v1.customers.retrieve(business.id, params={"expand": ["tax_ids"]})
    [tax_id] = expanded.tax_ids.data
    assert (tax_id.type, tax_id.value, tax_id.customer) == ("eu_vat", "DE123456789", business.id)
    sub = catalogue.subscription(business)
    read = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["customer", "customer.tax_ids"]})
    assert len(read.customer.tax_ids.data) == 1
    consumer = catalogue.customer(email="person@example.com")
    other = stripe_client.v1.customers.tax_ids.create(consumer.id, params={"type": "eu_vat", "value": "FRAB123456789"})
    assert [t.id for t in stripe_client.v1.customers.tax_ids.list(consumer.id).data] == [other.id]
    stripe_client.v1.customers.tax_ids.delete(consumer.id, other.id)
    assert stripe_client.v1.customers.retrieve(consumer.id, params={"expand": ["tax_ids"]}).tax_ids.data == []


def test_the_account_says_its_country(stripe_client, emulator):
    assert stripe_client.v1.accounts.retrieve_current().country == "US"
    assert emulator.post("/_emulator/account", json={"country": "DE"}).json()["country"] == "DE"
    assert stripe_client.v1.accounts.retrieve_current().country == "DE"
    assert emulator.post("/_emulator/account", json={"country": "Germany"}).status_code == 400
    emulator.delete("/_emulator/data")
    assert stripe_client.v1.accounts.retrieve_current().country == "US"
