"""Every call to Stripe: typed, with explicit timeouts, retries and idempotency keys; one error type out."""

import hashlib
import json
import urllib.request
from datetime import datetime
from urllib.parse import quote, urlsplit

import aiohttp
import stripe

from cancel_flow.clock import from_unix
from cancel_flow.errors import NotFound, StripeUnavailable
from cancel_flow.flow import ACTIVE, ENDED, SCHEDULED, PriceLine, StripeState, SubscriptionFacts
from cancel_flow.logs import log_event
from cancel_flow.metrics import STRIPE_CALLS
from cancel_flow.offers import Offer
from cancel_flow.settings import Settings

SUBSCRIPTION_EXPAND = ["items.data.price.product", "customer"]
HANDLED_EVENTS = ("customer.subscription.updated", "customer.subscription.deleted")


class WebhookRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def verify_webhook(payload: bytes, signature: str | None, secret: str | None) -> dict:
    """Check `Stripe-Signature` over the raw body; the event as a plain dict."""
    if not secret:
        # An empty secret verifies against an empty key, which anyone can forge.
        raise WebhookRefused(401, "Webhooks are refused until STRIPE_WEBHOOK_SECRET is set.")
    if not signature:
        raise WebhookRefused(400, "Missing Stripe-Signature header.")
    try:
        text = payload.decode("utf-8")
        stripe.WebhookSignature.verify_header(text, signature, secret, stripe.Webhook.DEFAULT_TOLERANCE)
    except stripe.SignatureVerificationError:
        raise WebhookRefused(401, "The signature does not verify.") from None
    except UnicodeDecodeError:
        raise WebhookRefused(400, "The body is not a Stripe event.") from None
    try:
        # the SDK's own check above; the event is then read as plain JSON (no StripeObjects to build)
        data = json.loads(text)
    except ValueError:
        raise WebhookRefused(400, "The body is not a Stripe event.") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str):
        raise WebhookRefused(400, "The body is not a Stripe event.")
    return data


def state_from_event(event: dict) -> StripeState | None:
    """The cancellation state a subscription event carries, or None for events we do not handle."""
    if event["type"] not in HANDLED_EVENTS:
        return None
    sub = (event.get("data") or {}).get("object") or {}
    if sub.get("object") != "subscription" or not isinstance(sub.get("id"), str):
        return None
    details = sub.get("cancellation_details") or {}
    if event["type"] == "customer.subscription.deleted" or sub.get("status") in ("canceled", "incomplete_expired"):
        stage = ENDED
    elif sub.get("cancel_at_period_end") or sub.get("cancel_at"):
        stage = SCHEDULED
    else:
        stage = ACTIVE
    requested = sub.get("canceled_at") or (event.get("created") if stage != ACTIVE else None)
    return StripeState(
        subscription_id=sub["id"], event_created=int(event.get("created") or 0), stage=stage,
        cancel_requested_at=from_unix(requested) if requested else None,
        feedback=details.get("feedback"), comment=details.get("comment"), reason=details.get("reason"),
        discounted=bool(sub.get("discounts")), paused=bool(sub.get("pause_collection")),
    )


def idempotency_key(*parts: str) -> str:
    """The same decision always yields the same key, so a retried write applies once."""
    return "cancel-flow-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def _is_missing(error: stripe.StripeError, param_prefix: str = "") -> bool:
    return isinstance(error, stripe.InvalidRequestError) and error.code == "resource_missing" \
        and (error.param or "").startswith(param_prefix)


def facts_from(subscription) -> SubscriptionFacts:
    data = subscription.to_dict() if hasattr(subscription, "to_dict") else subscription
    items = data["items"]["data"]
    lines, names = [], []
    for item in items:
        price = item["price"]
        recurring = price.get("recurring") or {"interval": "month", "interval_count": 1}
        lines.append(PriceLine(price.get("unit_amount") or 0, item.get("quantity") or 1,
                               recurring["interval"], recurring.get("interval_count") or 1))
        product = price.get("product")
        name = product.get("name") if isinstance(product, dict) else None
        names.append(name or price.get("nickname") or "Subscription")
    customer = data["customer"]
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    return SubscriptionFacts(
        subscription_id=data["id"],
        customer_id=customer["id"] if isinstance(customer, dict) else customer,
        customer_email=customer.get("email") if isinstance(customer, dict) else None,
        status=data["status"],
        plan_name=" + ".join(dict.fromkeys(names)) or "Subscription",
        currency=data.get("currency") or items[0]["price"]["currency"],
        lines=tuple(lines),
        has_discount=bool(data.get("discounts")),
        paused=bool(data.get("pause_collection")),
        cancel_at_period_end=bool(data.get("cancel_at_period_end") or data.get("cancel_at")),
        period_end=from_unix(data["cancel_at"]) if data.get("cancel_at") else (from_unix(min(period_ends)) if period_ends else None),
    )


def proxy_for(url: str) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for this address; aiohttp does not
    read them by itself, so they are handed to the SDK's client."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


class StripeGateway:
    def __init__(self, settings: Settings):
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self.settings = settings
        # The SDK's aiohttp client: measured at a fifth of the CPU per call of its httpx client
        # (BENCHMARKS.md), and the Stripe read is most of a subscriber's first view.
        self.http_client = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=settings.stripe_timeout),
                                                proxy=proxy_for(settings.stripe_api_base or stripe.api_base))
        self.client = stripe.StripeClient(
            settings.require_stripe(),
            base_addresses=base,
            max_network_retries=settings.stripe_max_network_retries,
            http_client=self.http_client,
        )

    async def _call(self, operation: str, coroutine):
        try:
            result = await coroutine
        except stripe.InvalidRequestError as error:
            STRIPE_CALLS.labels(operation, type(error).__name__).inc()
            raise
        except stripe.StripeError as error:
            STRIPE_CALLS.labels(operation, type(error).__name__).inc()
            log_event("stripe.call_failed", operation=operation, error=type(error).__name__,
                      status=getattr(error, "http_status", None), request_id=getattr(error, "request_id", None))
            unavailable = StripeUnavailable("We couldn't reach the payment system. Nothing was changed. Please try again in a moment.")
            # A timeout or a server error may still have been applied; a refusal (429, 4xx) was not.
            unavailable.maybe_applied = not isinstance(error, (stripe.RateLimitError, stripe.AuthenticationError,
                                                                stripe.PermissionError, stripe.CardError))
            raise unavailable from None
        STRIPE_CALLS.labels(operation, "none").inc()
        return result

    async def _raw(self, operation: str, method: str, path: str, **params) -> dict:
        """The SDK's raw request (same retries, idempotency and errors) read as the JSON the SDK already
        parsed: on the subscriber's hot path this skips building StripeObjects, which costs more than the call."""
        response = await self._call(operation, self.client.raw_request_async(method, path, **params))
        return response.data

    async def read_subscription(self, subscription_id: str) -> SubscriptionFacts:
        try:
            sub = await self._raw("subscription.retrieve", "get", f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                                  expand=SUBSCRIPTION_EXPAND)
        except stripe.InvalidRequestError as error:
            if _is_missing(error):
                raise NotFound("This subscription no longer exists.") from None
            raise StripeUnavailable("The payment system refused to show this subscription.") from None
        return facts_from(sub)

    async def list_live_subscriptions(self, customer_id: str) -> list[SubscriptionFacts]:
        try:
            page = await self._call("subscription.list", self.client.v1.subscriptions.list_async(
                params={"customer": customer_id, "status": "all", "limit": 100,
                        "expand": [f"data.{path}" for path in SUBSCRIPTION_EXPAND]}))
        except stripe.InvalidRequestError:
            raise NotFound(f"No customer {customer_id} in Stripe.") from None
        return [facts_from(sub) for sub in page.data if sub.status in ("active", "trialing", "past_due")]

    async def customers_with_live_subscriptions(self):
        """(customer as a dict, facts of their newest live subscription), once per customer."""
        seen = set()
        for status in ("active", "trialing", "past_due"):
            params = {"status": status, "limit": 100, "expand": [f"data.{path}" for path in SUBSCRIPTION_EXPAND]}
            while True:
                page = await self._call("subscription.list", self.client.v1.subscriptions.list_async(params=params))
                for sub in page.data:
                    customer = sub.customer.to_dict()
                    if customer["id"] not in seen:
                        seen.add(customer["id"])
                        yield customer, facts_from(sub)
                if not page.has_more:
                    break
                params = {**params, "starting_after": page.data[-1].id}

    async def find_customer_by_email(self, email: str) -> str | None:
        """Stripe's portal rule: of the customers with exactly this email, the most recently created
        one with an active, trialing or past-due subscription."""
        try:
            customers = await self._call("customer.list", self.client.v1.customers.list_async(
                params={"email": email, "limit": 100}))
        except stripe.InvalidRequestError:
            return None
        for customer in sorted(customers.data, key=lambda c: c.created, reverse=True):
            if await self.list_live_subscriptions(customer.id):
                return customer.id
        return None

    async def _update(self, operation: str, subscription_id: str, params: dict, key: str) -> dict:
        return await self._raw(operation, "post", f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                               idempotency_key=key, **params)

    async def ensure_coupon(self, offer: Offer) -> None:
        """Create the offer's coupon if Stripe does not have it (safe to repeat)."""
        try:
            await self._call("coupon.retrieve", self.client.v1.coupons.retrieve_async(offer.coupon_id))
            return
        except stripe.InvalidRequestError as error:
            if not _is_missing(error):
                raise StripeUnavailable("The payment system refused the coupon.") from None
        try:
            await self._call("coupon.create", self.client.v1.coupons.create_async(
                params={"id": offer.coupon_id, "percent_off": offer.percent_off, "duration": "repeating",
                        "duration_in_months": offer.months, "name": offer.title[:40],
                        "metadata": {"cancel_flow_offer": offer.id}},
                options={"idempotency_key": idempotency_key("coupon", offer.coupon_id)}))
        except stripe.InvalidRequestError as error:
            if error.code != "resource_already_exists":
                raise StripeUnavailable("The payment system refused to create the coupon.") from None

    async def apply_discount(self, subscription_id: str, offer: Offer, key: str) -> None:
        params = {"discounts": [{"coupon": offer.coupon_id}]}
        try:
            await self._update("subscription.update_discount", subscription_id, params, key)
        except stripe.InvalidRequestError as error:
            if not _is_missing(error, "discounts"):
                raise StripeUnavailable("The payment system refused the discount. Nothing was changed.") from None
            # Stripe keeps no idempotent result for a request that failed validation, so the
            # same key is reused: concurrent first uses then still apply the discount once.
            await self.ensure_coupon(offer)
            try:
                await self._update("subscription.update_discount", subscription_id, params, key)
            except stripe.InvalidRequestError:
                raise StripeUnavailable("The payment system refused the discount. Nothing was changed.") from None

    async def apply_pause(self, subscription_id: str, resumes_at: datetime, key: str) -> None:
        params = {"pause_collection": {"behavior": "void", "resumes_at": int(resumes_at.timestamp())}}
        try:
            await self._update("subscription.update_pause", subscription_id, params, key)
        except stripe.InvalidRequestError:
            raise StripeUnavailable("The payment system refused the pause. Nothing was changed.") from None

    async def keep_subscription(self, subscription_id: str, key: str) -> None:
        try:
            await self._update("subscription.update_keep", subscription_id, {"cancel_at_period_end": False}, key)
        except stripe.InvalidRequestError:
            raise StripeUnavailable("The payment system refused the change. Nothing was changed.") from None

    async def portal_url(self, customer_id: str, *, return_url: str, flow_data: dict | None = None) -> str:
        params = {"customer": customer_id, "return_url": return_url}
        if self.settings.stripe_portal_configuration:
            params["configuration"] = self.settings.stripe_portal_configuration
        if flow_data:
            params["flow_data"] = flow_data
        try:
            session = await self._call("billing_portal.session.create",
                                       self.client.v1.billing_portal.sessions.create_async(params=params))
        except stripe.InvalidRequestError as error:
            log_event("stripe.portal_refused", code=error.code, param=error.param)
            raise StripeUnavailable("The payment system could not open your billing page.") from None
        return session.url

    async def cancel_portal_url(self, customer_id: str, subscription_id: str, *, return_url: str, done_url: str) -> str:
        return await self.portal_url(customer_id, return_url=return_url, flow_data={
            "type": "subscription_cancel",
            "subscription_cancel": {"subscription": subscription_id},
            "after_completion": {"type": "redirect", "redirect": {"return_url": done_url}},
        })

    async def close(self) -> None:
        await self.http_client.close_async()


class StripeSetup:
    """What `cancel-flow stripe setup` and the demo do once per Stripe account; every step safe to repeat."""

    WEBHOOK_EVENTS = ["customer.subscription.updated", "customer.subscription.deleted"]

    def __init__(self, gateway: StripeGateway):
        self.gateway, self.client = gateway, gateway.client

    async def portal_configuration(self, return_url: str) -> str:
        configs = await self.client.v1.billing_portal.configurations.list_async(params={"limit": 100})
        for config in configs.data:
            if (config.to_dict().get("metadata") or {}).get("cancel_flow") == "1" and config.active:
                return config.id
        config = await self.client.v1.billing_portal.configurations.create_async(params={
            "business_profile": {"headline": "Manage your subscription"},
            "default_return_url": return_url,
            "features": {
                "invoice_history": {"enabled": True},
                "payment_method_update": {"enabled": True},
                "subscription_cancel": {
                    "enabled": True, "mode": "at_period_end", "proration_behavior": "none",
                    "cancellation_reason": {"enabled": True, "options": [
                        "too_expensive", "missing_features", "switched_service", "unused",
                        "customer_service", "too_complex", "low_quality", "other"]},
                },
            },
            "metadata": {"cancel_flow": "1"},
        })
        return config.id

    async def webhook_endpoint(self, url: str) -> tuple[str, str | None]:
        """The endpoint's id, and its signing secret when it was created now (Stripe shows it only once)."""
        endpoints = await self.client.v1.webhook_endpoints.list_async(params={"limit": 100})
        for endpoint in endpoints.data:
            if endpoint.url == url:
                if set(self.WEBHOOK_EVENTS) - set(endpoint.enabled_events) and "*" not in endpoint.enabled_events:
                    await self.client.v1.webhook_endpoints.update_async(endpoint.id, params={
                        "enabled_events": sorted(set(endpoint.enabled_events) | set(self.WEBHOOK_EVENTS))})
                return endpoint.id, None
        endpoint = await self.client.v1.webhook_endpoints.create_async(params={
            "url": url, "enabled_events": self.WEBHOOK_EVENTS, "description": "cancel-flow"})
        return endpoint.id, endpoint.secret

