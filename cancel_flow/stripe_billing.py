"""Stripe calls for billing emails: an invoice and why its payment failed, paying an open invoice after a
card update, and the subscriptions that renewal and discount reminders look at. Every call goes through
StripeGateway's `_raw`/`_call` (same timeouts, retries, metrics and error type)."""

from dataclasses import dataclass
from urllib.parse import quote

import stripe

from cancel_flow.errors import StripeUnavailable
from cancel_flow.i18n import DEFAULT, N_, gettext
from cancel_flow.stripe_gateway import StripeGateway, idempotency_key

# The failed payment sits on the invoice's payment's PaymentIntent
# (https://docs.stripe.com/api/invoices/object#invoice_object-payments, expanded only when asked).
INVOICE_EXPAND = ["payments.data.payment.payment_intent"]
# A discount's coupon sits under `source` since 2025-09-30.clover
# (https://docs.stripe.com/api/discounts/object#discount_object-source); four levels at most.
REMINDER_EXPAND = ["data.customer", "data.discounts.source.coupon"]

# Decline codes in plain words (https://docs.stripe.com/declines/codes).
DECLINE_WORDS = {
    "insufficient_funds": N_("your bank says there isn't enough money available on the card"),
    "expired_card": N_("the card has expired"),
    "incorrect_cvc": N_("the card's security code didn't match"),
    "incorrect_number": N_("the card number is not right"),
    "incorrect_zip": N_("the postal code didn't match the card"),
    "card_velocity_exceeded": N_("the card reached its spending limit"),
    "withdrawal_count_limit_exceeded": N_("the card reached its spending limit"),
    "lost_card": N_("your bank declined the card"),
    "stolen_card": N_("your bank declined the card"),
    "do_not_honor": N_("your bank declined the payment without giving a reason"),
    "generic_decline": N_("your bank declined the payment without giving a reason"),
    "processing_error": N_("the bank had a problem processing it; trying again usually works"),
    "authentication_required": N_("your bank wants you to confirm the payment"),
    "card_not_supported": N_("the card doesn't support this kind of payment"),
    "currency_not_supported": N_("the card can't pay in this currency"),
}


@dataclass(frozen=True)
class Failure:
    """Why an invoice's last payment failed, as Stripe tells it (any part may be unknown)."""

    code: str | None = None
    decline_code: str | None = None
    message: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None

    @property
    def card(self) -> str | None:
        return self.card_in(DEFAULT)

    def card_in(self, language: str) -> str | None:
        """"Visa ending in 4242"."""
        if not self.card_last4:
            return None
        brand = {"amex": "American Express", "mastercard": "Mastercard", "visa": "Visa", "discover": "Discover",
                 "diners": "Diners Club", "jcb": "JCB", "unionpay": "UnionPay"}.get(self.card_brand or "")
        if brand is None:
            brand = self.card_brand.title() if self.card_brand else gettext(language, "Card")
        return gettext(language, "%(brand)s ending in %(last4)s", brand=brand, last4=self.card_last4)

    @property
    def needs_authentication(self) -> bool:
        """The bank wants the customer to confirm the payment (3D Secure): paid on Stripe's hosted invoice page."""
        return "authentication_required" in (self.code, self.decline_code)

    @property
    def in_words(self) -> str:
        return self.words_in(DEFAULT)

    def words_in(self, language: str) -> str:
        """Why the payment failed, in plain words in `language`."""
        return gettext(language, self._words())

    def _words(self) -> str:
        if self.code == "resource_missing" or (self.code and "payment_method" in self.code and not self.decline_code):
            return N_("there is no card on file")
        if self.decline_code in DECLINE_WORDS:
            return DECLINE_WORDS[self.decline_code]
        if self.code in DECLINE_WORDS:
            return DECLINE_WORDS[self.code]
        if self.code == "card_declined":
            return N_("your bank declined the payment without giving a reason")
        return N_("the payment was declined")


def failure_of(invoice: dict) -> Failure:
    """The last payment error of an invoice retrieved with INVOICE_EXPAND."""
    for payment in reversed(((invoice.get("payments") or {}).get("data")) or []):
        intent = (payment.get("payment") or {}).get("payment_intent")
        if not isinstance(intent, dict) or not intent.get("last_payment_error"):
            continue
        error = intent["last_payment_error"]
        card = ((error.get("payment_method") or {}).get("card")) or {}
        return Failure(error.get("code"), error.get("decline_code"), error.get("message"), card.get("brand"),
                       card.get("last4"))
    return Failure()


@dataclass(frozen=True)
class Payment:
    """How paying an open invoice went."""

    paid: bool
    amount: int
    currency: str
    failure: Failure | None = None
    confirm_url: str | None = None  # the bank asks the customer to confirm: Stripe's hosted invoice page

    @property
    def needs_confirmation(self) -> bool:
        return self.confirm_url is not None


class StripeBilling:
    def __init__(self, gateway: StripeGateway):
        self.gateway = gateway

    async def invoice(self, invoice_id: str) -> dict:
        return await self.gateway._raw("invoice.retrieve", "get", f"/v1/invoices/{quote(invoice_id, safe='')}",
                                       expand=INVOICE_EXPAND)

    async def customer(self, customer_id: str) -> dict:
        return await self.gateway._raw("customer.retrieve", "get", f"/v1/customers/{quote(customer_id, safe='')}")

    async def subscription(self, subscription_id: str) -> dict:
        return await self.gateway._raw("subscription.retrieve", "get",
                                       f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                                       expand=["customer", "items.data.price.product"])

    async def open_invoices(self, customer_id: str) -> list[dict]:
        page = await self.gateway._raw("invoice.list", "get", "/v1/invoices", customer=customer_id, status="open",
                                       limit=20)
        return [invoice for invoice in page["data"] if invoice.get("amount_remaining", invoice.get("amount_due", 0)) > 0]

    async def pay(self, invoice: dict, payment_method: str | None) -> Payment:
        """Pay an open invoice now with `payment_method` (https://docs.stripe.com/api/invoices/pay: "A PaymentMethod
        to be charged"); without it Stripe charges the subscription's own default first, which may be the very card
        that failed. The key names the invoice and the card: reloading the page replays the answer instead of
        charging again, a new card tries anew."""
        key = idempotency_key("invoice-pay", invoice["id"], payment_method or "default")
        amount, currency = invoice.get("amount_remaining", invoice["amount_due"]), invoice["currency"]
        client = self.gateway.client
        params = {"payment_method": payment_method} if payment_method else {}

        async def attempt():
            try:
                return await client.raw_request_async("post", f"/v1/invoices/{quote(invoice['id'], safe='')}/pay",
                                                      idempotency_key=key, **params)
            except stripe.CardError as declined:  # an answer, not an outage: the card was declined
                return declined
            except stripe.InvalidRequestError as refused:
                if refused.code == "invoice_already_paid":  # Smart Retries or another tab got there first
                    return None
                raise

        answer = await self.gateway._call("invoice.pay", attempt())
        if isinstance(answer, stripe.CardError):
            declined = Failure(answer.code, getattr(answer.error, "decline_code", None) if answer.error else None,
                               answer.user_message)
            hosted = invoice.get("hosted_invoice_url")
            try:  # the card's brand and last four are on the invoice's payment
                current = await self.invoice(invoice["id"])
                recorded, hosted = failure_of(current), current.get("hosted_invoice_url") or hosted
            except (StripeUnavailable, stripe.StripeError):
                recorded = Failure()
            failure = Failure(declined.code or recorded.code, declined.decline_code or recorded.decline_code,
                              declined.message or recorded.message, recorded.card_brand, recorded.card_last4)
            return Payment(False, amount, currency, failure,
                           confirm_url=hosted if failure.needs_authentication and hosted else None)
        return Payment(True, amount, currency)

    async def subscriptions_with_own_card(self, customer_id: str) -> list[dict]:
        """The customer's live subscriptions that have a default payment method of their own (Checkout and
        Payment Links set one): Stripe charges and retries that one before the customer's."""
        page = await self.gateway._raw("subscription.list", "get", "/v1/subscriptions", customer=customer_id,
                                       status="all", limit=100)
        return [sub for sub in page["data"] if sub.get("status") in ("active", "trialing", "past_due", "unpaid")
                and sub.get("default_payment_method")]

    async def use_card_for_subscription(self, subscription_id: str, payment_method: str) -> None:
        """Make the new card the subscription's default too: the portal's card update changes only the customer's
        (https://docs.stripe.com/billing/revenue-recovery/smart-retries: "if a subscription has a
        default_payment_method, but you only update customer.invoice_settings.default_payment_method, Stripe
        continues to retry on the subscription's default_payment_method")."""
        await self.gateway._raw("subscription.update_payment_method", "post",
                                f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                                default_payment_method=payment_method,
                                idempotency_key=idempotency_key("subscription-card", subscription_id, payment_method))

    async def preview_amount(self, subscription_id: str) -> int | None:
        """What the next renewal will charge, discounts included; None when Stripe has no upcoming invoice."""
        try:
            preview = await self.gateway._raw("invoice.create_preview", "post", "/v1/invoices/create_preview",
                                              subscription=subscription_id)
        except stripe.InvalidRequestError:
            return None
        return preview.get("amount_due")

    async def product_names(self, product_ids: list[str]) -> dict[str, str]:
        names = {}
        for first in range(0, len(product_ids), 100):
            page = await self.gateway._raw("product.list", "get", "/v1/products", ids=product_ids[first:first + 100],
                                           limit=100)
            names.update({product["id"]: product.get("name") for product in page["data"]})
        return names

    async def active_subscriptions(self):
        """Every active subscription with its customer and discounts (their coupons), page by page, with the
        names of their products as `_product_names`."""
        params = {"status": "active", "limit": 100, "expand": REMINDER_EXPAND}
        while True:
            page = await self.gateway._raw("subscription.list", "get", "/v1/subscriptions", **params)
            ids = sorted({item["price"]["product"] for sub in page["data"] for item in sub["items"]["data"]
                          if isinstance(item["price"].get("product"), str)})
            names = await self.product_names(ids) if ids else {}
            for sub in page["data"]:
                yield {**sub, "_product_names": names}
            if not page.get("has_more") or not page["data"]:
                break
            params = {**params, "starting_after": page["data"][-1]["id"]}
