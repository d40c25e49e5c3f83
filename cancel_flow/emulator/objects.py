"""Object shapes as Stripe's API returns them (fields per Stripe's example objects)."""

import secrets
import string
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal

from cancel_flow.clock import add_months

API_VERSION = "2026-10-28.endive"
_ALPHABET = string.ascii_letters + string.digits
# Stripe's test cards (https://docs.stripe.com/testing#declined-payments): 4000000000000002
# declines every charge and is refused when attached to a customer; 4000000000000341
# ("decline after attaching") attaches fine and declines every charge.
DECLINING_PAYMENT_METHODS = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined", "pm_card_chargeCustomerFail"}
REFUSED_AT_ATTACH = {"pm_card_chargeDeclined", "pm_card_visa_chargeDeclined"}
# 4000002760003184: "This card requires authentication on all transactions, regardless of how the card is set up"
# (https://docs.stripe.com/testing#authentication-and-setup)
AUTHENTICATION_REQUIRED = {"pm_card_authenticationRequired"}
TEST_PAYMENT_METHODS = {
    "pm_card_visa": ("visa", "4242"),
    "pm_card_mastercard": ("mastercard", "4444"),
    "pm_card_amex": ("amex", "8431"),
    "pm_card_chargeDeclined": ("visa", "0002"),
    "pm_card_visa_chargeDeclined": ("visa", "0002"),
    "pm_card_chargeCustomerFail": ("visa", "0341"),
    "pm_card_authenticationRequired": ("visa", "3184"),
}
FEEDBACK_VALUES = [
    "too_expensive", "missing_features", "switched_service", "unused",
    "customer_service", "too_complex", "low_quality", "other",
]


def new_id(prefix: str, length: int = 24) -> str:
    return f"{prefix}_{''.join(secrets.choice(_ALPHABET) for _ in range(length))}"


def add_interval(ts: int, interval: str, count: int) -> int:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    if interval == "day":
        return ts + 86400 * count
    if interval == "week":
        return ts + 7 * 86400 * count
    months = count * (12 if interval == "year" else 1)
    return int(add_months(moment, months).timestamp())


def list_object(data: list, url: str, has_more: bool = False) -> dict:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def address(value) -> dict | None:
    if not value:
        return None
    return {field: value.get(field) or None for field in ADDRESS_FIELDS}


def customer(now: int, params: dict) -> dict:
    settings = params.get("invoice_settings") or {}
    return {
        "id": new_id("cus", 14), "object": "customer",
        "address": address(params.get("address")), "balance": 0, "created": now, "currency": None,
        "default_source": None, "delinquent": False, "description": params.get("description"),
        "discount": None, "email": params.get("email"), "invoice_prefix": new_id("X", 6)[2:].upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": settings.get("default_payment_method"),
            "footer": None, "rendering_options": None,
        },
        "livemode": False, "metadata": dict(params.get("metadata") or {}), "name": params.get("name"),
        "next_invoice_sequence": 1, "phone": params.get("phone"),
        "preferred_locales": list(params.get("preferred_locales") or []),
        "shipping": None, "tax_exempt": "none", "test_clock": params.get("test_clock"), "customer_account": None,
    }


def payment_method(now: int, test_name: str, customer_id: str | None) -> dict:
    brand, last4 = TEST_PAYMENT_METHODS[test_name]
    return {
        "id": new_id("pm"), "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": {"address": None, "email": None, "name": None, "phone": None, "tax_id": None},
        "card": {
            "brand": brand, "checks": None, "country": "US", "display_brand": brand,
            "exp_month": 12, "exp_year": datetime.now(timezone.utc).year + 3,
            "fingerprint": new_id("fp", 14)[3:], "funding": "credit", "generated_from": None,
            "last4": last4, "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated", "three_d_secure_usage": {"supported": True}, "wallet": None,
        },
        "created": now, "customer": customer_id, "customer_account": None, "livemode": False,
        "metadata": {}, "type": "card",
        "_declines": test_name in DECLINING_PAYMENT_METHODS,
        "_requires_authentication": test_name in AUTHENTICATION_REQUIRED,
    }


def product(now: int, params: dict) -> dict:
    return {
        "id": params.get("id") or new_id("prod", 14), "object": "product", "active": params.get("active", True),
        "created": now, "default_price": None, "description": params.get("description"), "images": [],
        "livemode": False, "marketing_features": [], "metadata": dict(params.get("metadata") or {}),
        "name": params["name"], "package_dimensions": None, "shippable": None,
        "statement_descriptor": None, "tax_code": None, "type": "service", "unit_label": None,
        "updated": now, "url": None,
    }


def price(now: int, params: dict, product_id: str) -> dict:
    """A price per unit (`unit_amount`, or `unit_amount_decimal`: `unit_amount` is null when the decimal is not
    whole) or by tiers (`unit_amount` null): https://docs.stripe.com/api/prices/object#price_object-unit_amount."""
    recurring = params.get("recurring")
    tiered = params.get("billing_scheme") == "tiered"
    decimal = None if tiered else str(params["unit_amount"]) if params.get("unit_amount") is not None \
        else str(params.get("unit_amount_decimal"))
    whole = decimal is not None and Decimal(decimal) == Decimal(decimal).to_integral_value()
    return {
        "id": new_id("price"), "object": "price", "active": params.get("active", True),
        "billing_scheme": "tiered" if tiered else "per_unit", "created": now, "currency": params["currency"].lower(),
        "custom_unit_amount": None, "livemode": False, "lookup_key": params.get("lookup_key"),
        "metadata": dict(params.get("metadata") or {}), "nickname": params.get("nickname"),
        "product": product_id,
        "recurring": None if not recurring else {
            "interval": recurring["interval"], "interval_count": recurring.get("interval_count", 1),
            "meter": None, "trial_period_days": None, "usage_type": "licensed",
        },
        "tax_behavior": "unspecified", "tiers_mode": params.get("tiers_mode") if tiered else None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": int(Decimal(decimal)) if whole else None,
        "unit_amount_decimal": decimal,
        "_tiers": [dict(tier) for tier in params.get("tiers") or []] if tiered else None,
    }


def line_amount(price_obj: dict, quantity: int) -> int:
    """What one item bills per period: unit amount × quantity; a decimal unit amount rounded half up to the minor
    unit (not documented by Stripe; chosen as the rounding of its percent-off discounts); tiers as `tiers_mode`
    says (https://docs.stripe.com/products-prices/pricing-models#tiered-pricing): `volume` prices every unit at
    the tier the quantity reaches, `graduated` each unit at the tier it falls in, each tier's flat amount added."""
    if price_obj["billing_scheme"] != "tiered":
        exact = Decimal(price_obj["unit_amount_decimal"]) * quantity
        return int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    tiers, total, below = price_obj.get("_tiers") or [], Decimal(0), 0
    for tier in tiers:
        up_to = None if tier.get("up_to") in (None, "inf") else int(tier["up_to"])
        unit = Decimal(str(tier.get("unit_amount_decimal") or tier.get("unit_amount") or 0))
        flat = Decimal(str(tier.get("flat_amount_decimal") or tier.get("flat_amount") or 0))
        if price_obj["tiers_mode"] == "volume":
            if up_to is None or quantity <= up_to:
                total = unit * quantity + flat
                break
            continue
        units = max(0, min(quantity, up_to if up_to is not None else quantity) - below)
        if units:
            total += unit * units + flat
        if up_to is None or quantity <= up_to:
            break
        below = up_to
    return int(total.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def plan_from_price(price_obj: dict) -> dict:
    recurring = price_obj["recurring"] or {}
    return {
        "id": price_obj["id"], "object": "plan", "active": price_obj["active"],
        "amount": price_obj["unit_amount"], "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": price_obj["billing_scheme"], "created": price_obj["created"], "currency": price_obj["currency"],
        "interval": recurring.get("interval"), "interval_count": recurring.get("interval_count"),
        "livemode": False, "metadata": price_obj["metadata"], "meter": None,
        "nickname": price_obj["nickname"], "product": price_obj["product"], "tiers_mode": price_obj["tiers_mode"],
        "transform_usage": None, "trial_period_days": None, "usage_type": "licensed",
    }


def subscription_item(now: int, subscription_id: str, price_obj: dict, quantity: int, period: tuple[int, int]) -> dict:
    return {
        "id": new_id("si", 14), "object": "subscription_item", "billing_thresholds": None,
        "created": now, "current_period_start": period[0], "current_period_end": period[1],
        "discounts": [], "metadata": {}, "plan": plan_from_price(price_obj), "price": price_obj["id"],
        "quantity": quantity, "subscription": subscription_id, "tax_rates": [],
    }


def subscription(now: int, customer_id: str, currency: str, params: dict, test_clock: str | None = None) -> dict:
    return {
        "id": new_id("sub"), "object": "subscription", "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": now, "billing_cycle_anchor_config": None,
        "billing_mode": billing_mode(now, params.get("billing_mode")), "billing_thresholds": None,
        "cancel_at": None, "cancel_at_period_end": False, "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": params.get("collection_method", "charge_automatically"),
        "created": now, "currency": currency, "customer": customer_id, "customer_account": None,
        "days_until_due": None, "default_payment_method": params.get("default_payment_method"),
        "default_source": None, "default_tax_rates": [], "description": params.get("description"),
        "discounts": [], "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": list_object([], "/v1/subscription_items"),
        "latest_invoice": None, "livemode": False, "metadata": dict(params.get("metadata") or {}),
        "next_pending_invoice_item_invoice": None, "on_behalf_of": None, "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None, "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
        "schedule": None, "start_date": now, "status": "active", "test_clock": test_clock,
        "transfer_data": None, "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}}, "trial_start": None,
    }


def billing_mode(now: int, param: dict | None) -> dict:
    """Subscriptions created through the API are `flexible` unless `billing_mode[type]=classic` is passed, since
    2025-09-30.clover (https://docs.stripe.com/changelog/clover/2025-09-30/billing-mode-default-flexible)."""
    param = param or {}
    kind = param.get("type") or "flexible"
    flexible = {"proration_discounts": (param.get("flexible") or {}).get("proration_discounts") or "included"}
    return {"flexible": flexible if kind == "flexible" else None, "type": kind, "updated_at": now}


def coupon(now: int, params: dict) -> dict:
    return {
        "id": params.get("id") or new_id("", 8)[1:], "object": "coupon",
        "amount_off": params.get("amount_off"),
        "created": now, "currency": (params.get("currency") or "").lower() or None,
        "duration": params.get("duration", "once"),
        "duration_in_months": params.get("duration_in_months"),
        "livemode": False, "max_redemptions": params.get("max_redemptions"),
        "metadata": dict(params.get("metadata") or {}), "name": params.get("name"),
        "percent_off": params.get("percent_off"), "redeem_by": params.get("redeem_by"),
        "times_redeemed": 0, "valid": True,
    }


def discount(now: int, coupon_obj: dict, subscription_obj: dict, end: int | None) -> dict:
    return {
        "id": new_id("di"), "object": "discount", "checkout_session": None,
        "customer": subscription_obj["customer"], "customer_account": None, "end": end,
        "invoice": None, "invoice_item": None, "promotion_code": None,
        "source": {"coupon": coupon_obj["id"], "type": "coupon"},
        "start": now, "subscription": subscription_obj["id"], "subscription_item": None,
    }


def portal_configuration(now: int, params: dict, is_default: bool) -> dict:
    features = params.get("features") or {}
    cancel = features.get("subscription_cancel") or {}
    reason = cancel.get("cancellation_reason") or {}
    pm_update = features.get("payment_method_update") or {}
    return {
        "id": new_id("bpc"), "object": "billing_portal.configuration", "active": True,
        "application": None,
        "business_profile": {"headline": (params.get("business_profile") or {}).get("headline"),
                             "privacy_policy_url": None, "terms_of_service_url": None},
        "created": now, "default_return_url": params.get("default_return_url"),
        "features": {
            "customer_update": {"allowed_updates": [], "enabled": False},
            "invoice_history": {"enabled": bool((features.get("invoice_history") or {}).get("enabled", True))},
            "payment_method_update": {"enabled": bool(pm_update.get("enabled", True)), "payment_method_configuration": None},
            "subscription_cancel": {
                "cancellation_reason": {"enabled": bool(reason.get("enabled", True)), "options": list(reason.get("options") or FEEDBACK_VALUES)},
                "enabled": bool(cancel.get("enabled", True)),
                "mode": cancel.get("mode", "at_period_end"),
                "proration_behavior": cancel.get("proration_behavior", "none"),
            },
            "subscription_update": {"billing_cycle_anchor": None, "default_allowed_updates": [], "enabled": False,
                                    "proration_behavior": "none", "schedule_at_period_end": None,
                                    "trial_update_behavior": "end_trial"},
        },
        "is_default": is_default, "livemode": False, "login_page": {"enabled": False, "url": None},
        "metadata": dict(params.get("metadata") or {}), "name": params.get("name"), "updated": now,
    }


def portal_session(now: int, params: dict, configuration_id: str, url: str) -> dict:
    flow_data = params.get("flow_data")
    flow = None
    if flow_data:
        after = flow_data.get("after_completion") or {"type": "portal_homepage"}
        cancel = flow_data.get("subscription_cancel")
        flow = {
            "after_completion": {
                "hosted_confirmation": {"custom_message": (after.get("hosted_confirmation") or {}).get("custom_message")}
                if after["type"] == "hosted_confirmation" else None,
                "redirect": {"return_url": after["redirect"]["return_url"]} if after["type"] == "redirect" else None,
                "type": after["type"],
            },
            "subscription_cancel": None if not cancel else {
                "retention": cancel.get("retention"), "subscription": cancel["subscription"],
            },
            "subscription_update": None, "subscription_update_confirm": None,
            "type": flow_data["type"],
        }
    return {
        "id": new_id("bps"), "object": "billing_portal.session", "configuration": configuration_id,
        "created": now, "customer": params["customer"], "customer_account": None, "flow": flow,
        "livemode": False, "locale": params.get("locale"), "on_behalf_of": None,
        "return_url": params.get("return_url"), "url": url,
    }


def webhook_endpoint(now: int, params: dict) -> dict:
    return {
        "id": new_id("we"), "object": "webhook_endpoint", "api_version": params.get("api_version"),
        "application": None, "created": now, "description": params.get("description"),
        "enabled_events": list(params["enabled_events"]), "livemode": False,
        "metadata": dict(params.get("metadata") or {}), "status": "enabled", "url": params["url"],
        "secret": "whsec_" + secrets.token_hex(24),
    }


def event(now: int, event_type: str, data_object: dict, previous: dict | None, idempotency_key: str | None) -> dict:
    # https://docs.stripe.com/api/events/object
    data = {"object": data_object}
    if previous is not None:
        data["previous_attributes"] = previous
    return {
        "id": new_id("evt"), "object": "event", "api_version": API_VERSION, "context": None,
        "created": now, "data": data, "livemode": False, "pending_webhooks": 0,
        "request": {"id": new_id("req", 14) if idempotency_key is not None else None, "idempotency_key": idempotency_key},
        "type": event_type,
    }


def public(obj: dict) -> dict:
    """Drop the emulator's private bookkeeping (keys starting with `_`)."""
    return {key: value for key, value in obj.items() if not key.startswith("_")}


def test_clock(now: int, params: dict) -> dict:
    # https://docs.stripe.com/api/test_clocks/object (a clock deletes itself 30 days after creation)
    return {
        "id": new_id("clock"), "object": "test_helpers.test_clock", "created": now,
        "deletes_after": now + 30 * 86400, "frozen_time": params["frozen_time"], "livemode": False,
        "name": params.get("name"), "status": "ready", "status_details": {},
    }


def money(amount: int, currency: str) -> str:
    return f"{amount / 100:,.2f} {currency.upper()}" if currency not in ZERO_DECIMAL else f"{amount:,} {currency.upper()}"


ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}


def invoice_line(invoice_id: str, sub: dict, item: dict, price_obj: dict, product_name: str, amount: int,
                 period: tuple[int, int], trial: bool) -> dict:
    """One line per subscription item (https://docs.stripe.com/api/invoice-line-item/object)."""
    recurring = price_obj["recurring"]
    every = recurring["interval"] if recurring["interval_count"] == 1 else f"{recurring['interval_count']} {recurring['interval']}s"
    unit = money(price_obj["unit_amount"], price_obj["currency"]) if price_obj["unit_amount"] is not None else "tiered"
    description = f"Trial period for {product_name}" if trial else \
        f"{item['quantity']} × {product_name} (at {unit} / {every})"
    return {
        "id": new_id("il"), "object": "line_item", "amount": amount, "currency": price_obj["currency"],
        "description": description, "discount_amounts": [], "discountable": True, "discounts": [],
        "invoice": invoice_id, "livemode": False, "metadata": dict(item["metadata"]),
        "parent": {
            "invoice_item_details": None, "type": "subscription_item_details",
            "subscription_item_details": {"invoice_item": None, "proration": False, "proration_details": {"credited_items": None},
                                          "subscription": sub["id"], "subscription_item": item["id"]},
        },
        "period": {"end": period[1], "start": period[0]}, "pretax_credit_amounts": [],
        "pricing": {"price_details": {"price": price_obj["id"], "product": price_obj["product"]},
                    "type": "price_details", "unit_amount_decimal": price_obj["unit_amount_decimal"]},
        "quantity": item["quantity"], "subscription": sub["id"], "subtotal": amount, "taxes": [],
    }


def invoice(invoice_id: str, now: int, cust: dict, sub: dict, billing_reason: str, period: tuple[int, int]) -> dict:
    """An invoice as the current API version shapes it (https://docs.stripe.com/api/invoices/object):
    since 2025-03-31.basil the subscription is at `parent.subscription_details.subscription`."""
    return {
        "id": invoice_id, "object": "invoice", "account_country": "US", "account_name": None,
        "account_tax_ids": None, "amount_due": 0, "amount_overpaid": 0, "amount_paid": 0,
        "amount_paid_off_stripe": None,
        "amount_remaining": 0, "amount_shipping": 0, "application": None, "attempt_count": 0, "attempted": False,
        "auto_advance": True,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None, "status": None},
        "automatically_finalizes_at": None, "billing_reason": billing_reason,
        "collection_method": sub["collection_method"], "confirmation_secret": None, "created": now,
        "currency": sub["currency"], "custom_fields": None, "customer": cust["id"], "customer_account": None,
        "customer_address": copy_address(cust.get("address")), "customer_email": cust.get("email"),
        "customer_name": cust.get("name"), "customer_phone": cust.get("phone"), "customer_shipping": None,
        "customer_tax_exempt": "none", "customer_tax_ids": [], "default_payment_method": None,
        "default_source": None, "default_tax_rates": [], "description": None, "discounts": [],
        "due_date": None, "effective_at": None, "ending_balance": None, "footer": None, "from_invoice": None,
        "hosted_invoice_url": None, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "latest_revision": None,
        "lines": list_object([], f"/v1/invoices/{invoice_id}/lines"), "livemode": False, "metadata": {},
        "next_payment_attempt": None, "number": None, "on_behalf_of": None,
        "parent": {
            "quote_details": None, "type": "subscription_details",
            "subscription_details": {"metadata": dict(sub["metadata"]), "subscription": sub["id"],
                                     "subscription_proration_date": None},
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": period[1], "period_start": period[0],
        "post_payment_credit_notes_amount": 0, "pre_payment_credit_notes_amount": 0, "receipt_number": None,
        "rendering": None, "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
        "statement_descriptor": None, "status": "draft", "status_details": None,
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None, "voided_at": None},
        "subtotal": 0, "subtotal_excluding_tax": 0, "test_clock": sub["test_clock"], "threshold_reason": None,
        "total": 0, "total_discount_amounts": [], "total_excluding_tax": 0, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": now,
    }


def copy_address(value) -> dict | None:
    return dict(value) if value else None


def payment_intent(now: int, inv: dict, pm: dict | None, error: dict | None) -> dict:
    """The PaymentIntent an invoice's payment runs through (https://docs.stripe.com/api/payment_intents/object);
    a decline leaves `last_payment_error` with the card that failed."""
    return {
        "id": new_id("pi"), "object": "payment_intent", "allowed_payment_method_types": None,
        "amount": inv["amount_due"], "amount_capturable": 0, "amount_details": None,
        "amount_received": 0 if error else inv["amount_due"], "application": None, "application_fee_amount": None,
        "automatic_payment_methods": None, "canceled_at": None, "cancellation_reason": None,
        "capture_method": "automatic", "client_secret": None, "confirmation_method": "automatic", "created": now,
        "currency": inv["currency"], "customer": inv["customer"], "customer_account": None,
        "description": "Subscription creation" if inv["billing_reason"] == "subscription_create" else "Subscription update",
        "excluded_payment_method_types": None, "last_payment_error": error, "latest_charge": None,
        "livemode": False, "metadata": {}, "next_action": None, "on_behalf_of": None, "payment_details": None,
        "payment_method": None if error or pm is None else pm["id"], "payment_method_configuration_details": None,
        "payment_method_options": None, "payment_method_types": ["card"], "processing": None,
        "receipt_email": None, "review": None, "setup_future_usage": None, "shipping": None, "source": None,
        "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": "requires_payment_method" if error else "succeeded", "transfer_data": None, "transfer_group": None,
    }


def invoice_payment(now: int, inv: dict, intent: dict) -> dict:
    # https://docs.stripe.com/api/invoice-payment/object
    paid = intent["status"] == "succeeded"
    return {
        "id": new_id("inpay"), "object": "invoice_payment", "amount_paid": intent["amount"] if paid else None,
        "amount_requested": intent["amount"], "created": now, "currency": inv["currency"], "invoice": inv["id"],
        "is_default": True, "livemode": False,
        "payment": {"charge": None, "payment_intent": intent["id"], "payment_record": None, "type": "payment_intent"},
        "status": "paid" if paid else "open",
        "status_transitions": {"canceled_at": None, "paid_at": now if paid else None},
    }
