"""Stripe calls for win-back: a subscription with its discounts (what "keep my plan" continues), the customer's
live subscriptions, a price and its product's default price (an archived price's stand-in), and Checkout
Sessions made per click. Every call goes through StripeGateway's `_raw` (same deadline, retries, budget,
metrics and error type) as the billing emails' calls do (stripe_billing.py)."""

import uuid
from urllib.parse import quote

import stripe

from cancel_flow.errors import StripeUnavailable
from cancel_flow.stripe_gateway import StripeGateway

# The discounts' coupons sit under `source` (https://docs.stripe.com/api/discounts/object#discount_object-source);
# four levels at most (https://docs.stripe.com/api/expanding_objects).
KEEP_EXPAND = ["customer", "items.data.price.product", "discounts.source.coupon"]


def _missing(error: stripe.StripeError) -> bool:
    return isinstance(error, stripe.InvalidRequestError) and error.code == "resource_missing"


class WinbackStripe:
    def __init__(self, gateway: StripeGateway):
        self.gateway = gateway

    async def subscription(self, subscription_id: str) -> dict | None:
        """The subscription with its customer, products and discounts' coupons; None when Stripe has none."""
        try:
            return await self.gateway._raw("subscription.retrieve", "get",
                                           f"/v1/subscriptions/{quote(subscription_id, safe='')}", expand=KEEP_EXPAND)
        except stripe.InvalidRequestError as error:
            if _missing(error):
                return None
            raise StripeUnavailable("The payment system refused to show this subscription.") from None

    async def customer(self, customer_id: str) -> dict | None:
        try:
            customer = await self.gateway._raw("customer.retrieve", "get", f"/v1/customers/{quote(customer_id, safe='')}")
        except stripe.InvalidRequestError as error:
            if _missing(error):
                return None
            raise StripeUnavailable("The payment system refused to show this customer.") from None
        return None if customer.get("deleted") else customer

    async def live_subscription(self, customer_id: str) -> str | None:
        """One of the customer's active, trialing or past-due subscriptions (they are subscribed), or None."""
        live = await self.gateway.list_live_subscriptions(customer_id)
        return live[0].subscription_id if live else None

    async def price(self, price_id: str) -> dict | None:
        try:
            return await self.gateway._raw("price.retrieve", "get", f"/v1/prices/{quote(price_id, safe='')}",
                                           expand=["product"])
        except stripe.InvalidRequestError as error:
            if _missing(error):
                return None
            raise StripeUnavailable("The payment system refused to show this price.") from None

    async def default_price(self, product_id: str) -> dict | None:
        """The product's current default price (https://docs.stripe.com/api/products/object#product_object-default_price)."""
        try:
            product = await self.gateway._raw("product.retrieve", "get", f"/v1/products/{quote(product_id, safe='')}",
                                              expand=["default_price"])
        except stripe.InvalidRequestError as error:
            if _missing(error):
                return None
            raise StripeUnavailable("The payment system refused to show this product.") from None
        price = product.get("default_price")
        return price if isinstance(price, dict) else None

    async def checkout_url(self, params: dict) -> str:
        """A new Checkout Session (https://docs.stripe.com/api/checkout/sessions/create) and its URL. One per click:
        a session's URL expires (24 hours) and is never stored; the key is the same for each retry of this click."""
        try:
            session = await self.gateway._raw("checkout.session.create", "post", "/v1/checkout/sessions",
                                              idempotency_key=f"cancel-flow-{uuid.uuid4().hex}", **params)
        except stripe.InvalidRequestError as error:
            raise StripeUnavailable("The payment system could not open the payment page. Nothing was charged.") from error
        return session["url"]

    async def checkout_session(self, session_id: str) -> dict | None:
        try:
            return await self.gateway._raw("checkout.session.retrieve", "get",
                                           f"/v1/checkout/sessions/{quote(session_id, safe='')}")
        except stripe.InvalidRequestError as error:
            if _missing(error):
                return None
            raise StripeUnavailable("The payment system refused to show this payment.") from None
