"""Charges, refunds, customers' tax ids and the account itself, as Stripe answers them.

- A successful invoice payment makes a Charge (the PaymentIntent's `latest_charge`,
  https://docs.stripe.com/api/payment_intents/object#payment_intent_object-latest_charge).
- `POST /v1/refunds` with a `charge` or a `payment_intent` refunds all that is left of the charge, or `amount`
  of it; an already refunded charge, or more than is left, is refused
  (https://docs.stripe.com/api/refunds/create). Card refunds succeed at once in test mode
  (https://docs.stripe.com/testing#refunds). Each refund sends `refund.created` (for every refund since
  2024-10-28.acacia, https://docs.stripe.com/changelog/acacia/2024-10-28/refund-webhook-update) and then
  `charge.refunded` with the charge (https://docs.stripe.com/api/events/types#event_types-charge.refunded).
- A customer's tax ids (`tax_id_data` at creation, `/v1/customers/{id}/tax_ids`) are included in the customer
  only when asked for with `expand[]=tax_ids` (https://docs.stripe.com/api/customers/object#customer_object-tax_ids).
- `GET /v1/account` is the account itself, with its `country` (https://docs.stripe.com/api/accounts/retrieve).
"""

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.errors import StripeError, missing

DEFAULT_COUNTRY = "US"


def charge(now: int, intent: dict, payment_method: dict | None, invoice_id: str | None) -> dict:
    """A succeeded card charge (https://docs.stripe.com/api/charges/object)."""
    card = (payment_method or {}).get("card") or {}
    return {
        "id": build.new_id("ch"), "object": "charge", "amount": intent["amount"], "amount_captured": intent["amount"],
        "amount_refunded": 0, "application": None, "application_fee": None, "application_fee_amount": None,
        "balance_transaction": build.new_id("txn"),
        "billing_details": {"address": {"city": None, "country": None, "line1": None, "line2": None,
                                        "postal_code": None, "state": None},
                            "email": None, "name": None, "phone": None, "tax_id": None},
        "calculated_statement_descriptor": "CANCEL-FLOW EMULATOR", "captured": True, "created": now,
        "currency": intent["currency"], "customer": intent["customer"], "description": intent["description"],
        "disputed": False, "failure_balance_transaction": None, "failure_code": None, "failure_message": None,
        "fraud_details": {}, "livemode": False, "metadata": {}, "on_behalf_of": None,
        "outcome": {"advice_code": None, "network_advice_code": None, "network_decline_code": None,
                    "network_status": "approved_by_network", "reason": None, "risk_level": "normal", "risk_score": 32,
                    "seller_message": "Payment complete.", "type": "authorized"},
        "paid": True, "payment_intent": intent["id"], "payment_method": (payment_method or {}).get("id"),
        "payment_method_details": {"card": {"brand": card.get("brand"), "country": card.get("country"),
                                            "exp_month": card.get("exp_month"), "exp_year": card.get("exp_year"),
                                            "funding": card.get("funding"), "last4": card.get("last4"),
                                            "network": card.get("brand")},
                                   "type": "card"},
        "receipt_email": None, "receipt_number": None, "receipt_url": None, "refunded": False, "review": None,
        "shipping": None, "source_transfer": None, "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": "succeeded", "transfer_data": None, "transfer_group": None,
        "_invoice": invoice_id,
    }


def refund(now: int, charge_obj: dict, amount: int, params: dict) -> dict:
    """https://docs.stripe.com/api/refunds/object"""
    return {
        "id": build.new_id("re"), "object": "refund", "amount": amount, "balance_transaction": build.new_id("txn"),
        "charge": charge_obj["id"], "created": now, "currency": charge_obj["currency"],
        "destination_details": {"card": {"reference": None, "reference_status": "pending",
                                         "reference_type": "acquirer_reference_number", "type": "refund"},
                                "type": "card"},
        "metadata": dict(params.get("metadata") or {}), "payment_intent": charge_obj["payment_intent"],
        "reason": params.get("reason"), "receipt_number": None, "source_transfer_reversal": None,
        "status": "succeeded", "transfer_reversal": None,
    }


def tax_id(now: int, customer_id: str, params: dict) -> dict:
    """https://docs.stripe.com/api/tax_ids/object (the value's format is not checked here)."""
    value = str(params.get("value") or "")
    return {
        "id": build.new_id("txi"), "object": "tax_id", "country": value[:2].upper() if value[:2].isalpha() else None,
        "created": now, "customer": customer_id, "livemode": False,
        "owner": {"account": None, "application": None, "customer": customer_id, "type": "customer"},
        "type": params.get("type"), "value": value,
        "verification": {"status": "pending", "verified_address": None, "verified_name": None},
    }


def account(account_id: str, country: str, now: int) -> dict:
    """https://docs.stripe.com/api/accounts/object (the fields a standard account shows itself)."""
    return {
        "id": account_id, "object": "account",
        "business_profile": {"mcc": None, "name": None, "support_email": None, "support_phone": None,
                             "support_url": None, "url": None},
        "business_type": None, "capabilities": {"card_payments": "active", "transfers": "active"},
        "charges_enabled": True, "country": country, "created": now,
        "default_currency": {"DE": "eur", "FR": "eur", "GB": "gbp", "US": "usd"}.get(country, "usd"),
        "details_submitted": True, "email": None, "metadata": {}, "payouts_enabled": True, "settings": None,
        "type": "standard",
    }


class Refunds:
    """The part of the Account (state.py) that holds charges, refunds and tax ids."""

    country = DEFAULT_COUNTRY

    def _charge_for(self, intent: dict, payment_method: dict | None, invoice_id: str | None, at: int) -> None:
        """A succeeded payment's charge, as its PaymentIntent's `latest_charge`."""
        made = self._stamp("charges", charge(at, intent, payment_method, invoice_id))
        intent["latest_charge"] = made["id"]

    def create_refund(self, params: dict, idempotency_key: str | None) -> dict:
        charge_id, intent_id = params.get("charge"), params.get("payment_intent")
        if not charge_id and not intent_id:
            raise StripeError(400, "One of the following params should be provided for this request: payment_intent "
                                   "or charge.", code="parameter_missing", param="charge")
        if charge_id and intent_id:
            raise StripeError(400, "You cannot specify both charge and payment_intent.", param="payment_intent")
        if intent_id:
            intent = self.get("payment_intents", intent_id, "payment_intent", "payment_intent")
            charge_id = intent.get("latest_charge")
            if not charge_id or intent["status"] != "succeeded":
                raise StripeError(400, f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                                  code="charge_not_refundable", param="payment_intent")
        charge_obj = self.get("charges", charge_id, "charge", "charge")
        left = charge_obj["amount"] - charge_obj["amount_refunded"]
        if left <= 0:
            raise StripeError(400, f"Charge {charge_obj['id']} has already been refunded.",
                              code="charge_already_refunded", param="charge")
        amount = params.get("amount", left)
        if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1:
            raise StripeError(400, "Invalid positive integer", code="parameter_invalid_integer", param="amount")
        if amount > left:
            raise StripeError(400, f"Refund amount ({build.money(amount, charge_obj['currency'])}) is greater than "
                                   f"unrefunded amount on charge ({build.money(left, charge_obj['currency'])})",
                              param="amount")
        at = self.time_for(self._clock_of_customer(charge_obj["customer"]))
        made = self._stamp("refunds", refund(at, charge_obj, amount, params))
        before = {"amount_refunded": charge_obj["amount_refunded"], "refunded": charge_obj["refunded"]}
        charge_obj["amount_refunded"] += amount
        charge_obj["refunded"] = charge_obj["amount_refunded"] >= charge_obj["amount"]
        self.emit("refund.created", self.render("refunds", made), None, idempotency_key, at=at)
        self.emit("charge.refunded", self.render("charges", charge_obj), before, idempotency_key, at=at)
        return made

    def list_refunds(self, params: dict) -> list[dict]:
        found = list(self.refunds.values())
        for field in ("charge", "payment_intent"):
            if params.get(field):
                found = [r for r in found if r[field] == params[field]]
        return found

    def list_charges(self, params: dict) -> list[dict]:
        found = list(self.charges.values())
        for field in ("customer", "payment_intent"):
            if params.get(field):
                found = [c for c in found if c[field] == params[field]]
        return found

    def _clock_of_customer(self, customer_id: str | None) -> str | None:
        return (self.customers.get(customer_id) or {}).get("test_clock") if customer_id else None

    # tax ids ------------------------------------------------------------------------------------------
    def add_tax_id(self, customer_id: str, params: dict) -> dict:
        self.get("customers", customer_id, "customer")
        for name in ("type", "value"):
            if not params.get(name):
                raise StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)
        return self._stamp("tax_ids", tax_id(self.time_for(self._clock_of_customer(customer_id)), customer_id, params))

    def tax_ids_of(self, customer_id: str) -> list[dict]:
        self.get("customers", customer_id, "customer")
        return [t for t in self.tax_ids.values() if t["customer"] == customer_id]

    def delete_tax_id(self, customer_id: str, tax_id_id: str) -> dict:
        found = self.tax_ids.get(tax_id_id)
        if found is None or found["customer"] != customer_id:
            raise missing("tax_id", tax_id_id, "id")
        del self.tax_ids[tax_id_id]
        return {"id": tax_id_id, "object": "tax_id", "deleted": True}

    def tax_id_list(self, customer_id: str) -> dict:
        """The customer's `tax_ids` as an expanded customer carries them."""
        found = sorted(self.tax_ids_of(customer_id), key=lambda t: t.get("_seq", 0), reverse=True)
        return build.list_object([build.public(t) for t in found[:10]], f"/v1/customers/{customer_id}/tax_ids",
                                 has_more=len(found) > 10)

    # the account ----------------------------------------------------------------------------------------
    def account_object(self, account_id: str) -> dict:
        return account(account_id, self.country, self.now())
