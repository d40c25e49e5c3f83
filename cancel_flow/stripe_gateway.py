"""Every call to Stripe: typed, with explicit timeouts, retries and idempotency keys; one error type out."""

import asyncio
import hashlib
import json
import logging
import random
import time
import urllib.request
import uuid
from datetime import datetime
from typing import Mapping, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
import stripe
from stripe._encode import _api_encode
from stripe._request_options import extract_options_from_dict as _extract_options
from stripe._request_options import merge_options
from stripe._util import _console_log_level, logger as _sdk_logger, validate_path

from cancel_flow.clock import from_unix
from cancel_flow.compliance import Payment
from cancel_flow.errors import NotFound, PortalNotConfigured, PortalRefused, StripeUnavailable
from cancel_flow.flow import (ACTIVE, ENDED, FIXED_END_KEY, SCHEDULED, PriceLine, StripeState, SubscriptionFacts,
                              TargetPrice, facts_of)
from cancel_flow.i18n import DEFAULT, N_, STRIPE_LOCALES
from cancel_flow.logs import log_event
from cancel_flow.metrics import STRIPE_CALLS
from cancel_flow.config.schema import Offer
from cancel_flow.settings import Settings
from cancel_flow.stripe_budget import StripeBudget, StripeBusy
from cancel_flow.stripe_reads import KeptConnectionGets

# Stripe expands at most four levels, `data.` of a list included
# (https://docs.stripe.com/api/expanding_objects): a retrieve reaches the product, a list only the price.
# The discounts' coupons too (the subscription's, and its customer's, which it inherits when it has none of its own):
# every promise counts what Stripe will really bill.
# The customer's tax ids are included only when asked for (https://docs.stripe.com/api/customers/object#customer_object-tax_ids):
# a customer without one is a consumer for the EU withdrawal function (cancel_flow/compliance.py).
SUBSCRIPTION_EXPAND = ["items.data.price.product", "customer", "discounts.source.coupon", "customer.discount.source.coupon",
                       "customer.tax_ids"]
LIST_EXPAND = ["data.items.data.price", "data.customer"]
HANDLED_EVENTS = ("customer.subscription.updated", "customer.subscription.deleted")
INVOICE_EVENTS = ("invoice.created", "invoice.finalized", "invoice.paid", "invoice.payment_succeeded",
                  "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible")


_PLAIN = (str, int)


def _sdk_logs() -> bool:
    """Whether the SDK's request and response log lines would be written anywhere (STRIPE_LOG or `stripe.log`
    printing them, or a handler taking the `stripe` logger's info lines)."""
    return _console_log_level() is not None or _sdk_logger.isEnabledFor(logging.INFO)


class WebhookRefused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def verify_webhook(payload: bytes, signature: str | None, secret: str | tuple[str, ...] | None) -> dict:
    """Check `Stripe-Signature` over the raw body against the secret (or any of the secrets, while a rolled
    secret is still accepted); the event as a plain dict."""
    secrets_in_use = tuple(s for s in ((secret,) if isinstance(secret, str) else (secret or ())) if s)
    if not secrets_in_use:
        # An empty secret verifies against an empty key, which anyone can forge.
        raise WebhookRefused(401, "Webhooks are refused until the signing secret is set (Set up Stripe on "
                                  "/dashboard/stripe, or STRIPE_WEBHOOK_SECRET).")
    if not signature:
        raise WebhookRefused(400, "Missing Stripe-Signature header.")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise WebhookRefused(400, "The body is not a Stripe event.") from None
    for each in secrets_in_use:
        try:
            stripe.WebhookSignature.verify_header(text, signature, each, stripe.Webhook.DEFAULT_TOLERANCE)
            break
        except stripe.SignatureVerificationError:
            continue
    else:
        raise WebhookRefused(401, "The signature does not verify.")
    try:
        # the SDK's own check above; the event is then read as plain JSON (no StripeObjects to build)
        data = json.loads(text)
    except ValueError:
        raise WebhookRefused(400, "The body is not a Stripe event.") from None
    except RecursionError:  # arrays or objects nested thousands deep: no Stripe event is
        raise WebhookRefused(400, "The body is not a Stripe event: it is nested too deeply.") from None
    if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not isinstance(data.get("type"), str) \
            or not 0 < len(data["id"]) <= 255 or len(data["type"]) > 128:
        raise WebhookRefused(400, "The body is not a Stripe event.")
    created, body = data.get("created", 0), data.get("data")
    if isinstance(created, bool) or not isinstance(created, int) or not TIMESTAMP.low <= created < TIMESTAMP.high:
        raise WebhookRefused(400, "The event's 'created' must be a Unix timestamp.")
    if not isinstance(body, dict) or not isinstance(body.get("object", {}), dict):
        raise WebhookRefused(400, "The event's 'data.object' must be an object.")
    return data


# What each field of an event may hold before it reaches our records: its JSON type and, for numbers and
# text, the range our columns (and Stripe's own limits) allow. Anything else is refused with a 400, which
# Stripe shows in the endpoint's log, instead of failing the request on a value no column can take.
class Whole(NamedTuple):
    """A whole number from `low` up to (not including) `high`."""
    low: int
    high: int


TIMESTAMP = Whole(0, 253402300800)  # Unix seconds up to the end of 9999, the last year Python's dates hold
AMOUNT = Whole(-(2**53), 2**53)      # minor units; far above any amount Stripe allows
COUNT = Whole(0, 2**31)


def _typed(obj: dict, field: str, kind, limit: int | None = None):
    """The field's value if it is None or of `kind` (a type, or TIMESTAMP/AMOUNT/COUNT) within its range,
    and, for text, at most `limit` characters; else a 400 naming the field."""
    value = obj.get(field)
    if value is None:
        return None
    if isinstance(kind, Whole):
        low, high = kind
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value < high:
            raise WebhookRefused(400, f"The event's field '{field}' must be a whole number from {low} to {high - 1}.")
        return value
    if not isinstance(value, kind):
        raise WebhookRefused(400, f"The event's field '{field}' has the wrong type.")
    if limit is not None and len(value) > limit:
        raise WebhookRefused(400, f"The event's field '{field}' is longer than {limit} characters.")
    return value


def state_from_event(event: dict) -> StripeState | None:
    """The cancellation state a subscription event carries, or None for events we do not handle."""
    if event["type"] not in HANDLED_EVENTS:
        return None
    sub = (event.get("data") or {}).get("object") or {}
    if sub.get("object") != "subscription" or not isinstance(sub.get("id"), str):
        return None
    _typed(sub, "id", str, 255)
    for field, kind, limit in (("status", str, 32), ("canceled_at", TIMESTAMP, None), ("cancel_at", TIMESTAMP, None),
                               ("cancellation_details", dict, None), ("pause_collection", dict, None),
                               ("discounts", list, None)):
        _typed(sub, field, kind, limit)
    details = sub.get("cancellation_details") or {}
    # Stripe's feedback and reason are short enumerations; the comment is at most 5,000 characters
    # (https://docs.stripe.com/api/subscriptions/cancel#cancel_subscription-cancellation_details-comment)
    for field, limit in (("feedback", 32), ("reason", 64), ("comment", 5000)):
        _typed(details, field, str, limit)
    if event["type"] == "customer.subscription.deleted" or sub.get("status") in ("canceled", "incomplete_expired"):
        stage = ENDED
    elif sub.get("cancel_at_period_end") or sub.get("cancel_at"):
        stage = SCHEDULED
    else:
        stage = ACTIVE
    requested = sub.get("canceled_at") or (event.get("created") if stage != ACTIVE else None)
    customer = sub.get("customer")
    customer = customer.get("id") if isinstance(customer, dict) else customer
    return StripeState(
        subscription_id=sub["id"], event_created=int(event.get("created") or 0), stage=stage,
        cancel_requested_at=from_unix(requested) if requested else None,
        feedback=details.get("feedback"), comment=details.get("comment"), reason=details.get("reason"),
        discounted=bool(sub.get("discounts")), paused=bool(sub.get("pause_collection")),
        customer_id=customer if isinstance(customer, str) else None, monthly_amount=_event_monthly_amount(sub),
        currency=(sub.get("currency") if isinstance(sub.get("currency"), str) else "usd")[:3],
    )


def _event_monthly_amount(sub: dict) -> int:
    """The monthly amount of an event's subscription, from its items' prices (0 when they don't say)."""
    from cancel_flow.flow import monthly_amount

    lines = []
    items = (sub.get("items") or {}).get("data") if isinstance(sub.get("items"), dict) else None
    for item in items if isinstance(items, list) else []:
        price = item.get("price") if isinstance(item, dict) else None
        recurring = (price or {}).get("recurring") if isinstance(price, dict) else None
        amount, quantity = (price or {}).get("unit_amount"), item.get("quantity") or 1
        if not isinstance(recurring, dict) or recurring.get("interval") not in ("day", "week", "month", "year") \
                or not isinstance(amount, int) or not isinstance(quantity, int) or not 0 <= amount < AMOUNT.high \
                or not 0 < quantity < COUNT.high:
            continue
        lines.append(PriceLine(amount, quantity, recurring["interval"], int(recurring.get("interval_count") or 1)))
    return min(monthly_amount(lines), AMOUNT.high - 1) if lines else 0


def invoice_from_event(event: dict) -> dict | None:
    """The invoice an `invoice.*` event carries, as the columns of our record; None for other events.
    Both shapes are read: `parent.subscription_details` (since 2025-03-31.basil) and the older
    top-level `subscription` (https://docs.stripe.com/changelog/basil/2025-03-31/adds-new-parent-field-to-invoicing-objects)."""
    if event["type"] not in INVOICE_EVENTS:
        return None
    invoice = (event.get("data") or {}).get("object") or {}
    if invoice.get("object") != "invoice" or not isinstance(invoice.get("id"), str):
        return None
    _typed(invoice, "id", str, 255)
    for field, kind, limit in (("customer", str, 255), ("status", str, 20), ("billing_reason", str, 40),
                               ("currency", str, 3), ("subtotal", AMOUNT, None), ("amount_due", AMOUNT, None),
                               ("amount_paid", AMOUNT, None), ("created", TIMESTAMP, None), ("attempt_count", COUNT, None),
                               ("parent", dict, None), ("subscription", (str, dict), None),
                               ("total_discount_amounts", list, None), ("status_transitions", dict, None),
                               ("customer_email", str, 512), ("customer_name", str, 512)):
        _typed(invoice, field, kind, limit)
    details = _typed(invoice.get("parent") or {}, "subscription_details", dict) or {}
    subscription = _typed(details, "subscription", (str, dict)) or invoice.get("subscription")
    if isinstance(subscription, dict):
        subscription = _typed(subscription, "id", str, 255)
    elif subscription is not None and len(subscription) > 255:
        raise WebhookRefused(400, "The event's field 'subscription' is longer than 255 characters.")
    amounts = invoice.get("total_discount_amounts") or []
    if len(amounts) > 100 or not all(isinstance(d, dict) for d in amounts):
        raise WebhookRefused(400, "The event's field 'total_discount_amounts' must be a list of discount amounts.")
    discount = sum(_typed(d, "amount", AMOUNT) or 0 for d in amounts)
    transitions = invoice.get("status_transitions") or {}
    for field in ("paid_at", "voided_at"):
        _typed(transitions, field, TIMESTAMP)
    created = int(event.get("created") or 0)
    return {
        "id": invoice["id"], "customer_id": invoice.get("customer") or "", "subscription_id": subscription,
        "status": invoice.get("status") or "draft", "billing_reason": invoice.get("billing_reason"),
        "currency": (invoice.get("currency") or "usd")[:3], "subtotal": int(invoice.get("subtotal") or 0),
        "total_discount": discount, "amount_due": int(invoice.get("amount_due") or 0),
        "amount_paid": int(invoice.get("amount_paid") or 0), "attempt_count": int(invoice.get("attempt_count") or 0),
        "created": from_unix(int(invoice.get("created") or created)),
        "first_failed_at": from_unix(created) if event["type"] == "invoice.payment_failed" else None,
        "paid_at": from_unix(transitions["paid_at"]) if transitions.get("paid_at") is not None else None,
        "voided_at": from_unix(transitions["voided_at"]) if transitions.get("voided_at") is not None else None,
        "event_created": created,
        # for the payment.failed / payment.recovered events, not stored
        "_customer_email": invoice.get("customer_email"),
        "_customer_name": invoice.get("customer_name"),
    }


def _still_running(error: stripe.StripeError, before: bool) -> bool:
    """Whether an earlier attempt of this request may still be running at Stripe after this answer. No answer
    at all (a lost connection), Stripe's 409 idempotency_key_in_use ("another in-progress request using this
    Idempotent Key", https://docs.stripe.com/api/idempotent_requests) or a gateway's 502/503/504 without
    Stripe's error body say it may; a 429 says nothing of earlier attempts; Stripe's own answer under the
    key (a 5xx or 4xx with its error body) says the request is over."""
    if isinstance(error, stripe.APIConnectionError) or _error_code(error) == "idempotency_key_in_use":
        return True
    if isinstance(error, stripe.RateLimitError):
        return before
    if (error.http_status or 0) in (502, 503, 504) and not isinstance(getattr(error, "json_body", None), dict):
        return True
    return False


def _error_code(error: stripe.StripeError | None) -> str | None:
    """The `code` of Stripe's error body (the SDK keeps it only for some classes: a 409 is a bare APIError)."""
    body = getattr(error, "json_body", None)
    detail = body.get("error") if isinstance(body, dict) else None
    return detail.get("code") if isinstance(detail, dict) else None


def idempotency_key(*parts: str) -> str:
    """The same decision always yields the same key, so a retried write applies once."""
    return "cancel-flow-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def _is_missing(error: stripe.StripeError, param_prefix: str = "") -> bool:
    return isinstance(error, stripe.InvalidRequestError) and error.code == "resource_missing" \
        and (error.param or "").startswith(param_prefix)


def _discounts_billed(subscription: dict, customer: dict | None) -> tuple[tuple, ...]:
    """The discounts Stripe bills on this subscription's invoices: its own, else its customer's
    (https://docs.stripe.com/api/subscriptions/create#create_subscription-discounts), as (percent_off,
    amount_off, end, once, start). A discount whose coupon wasn't expanded is counted as a discount of unknown size."""
    own = [d for d in subscription.get("discounts") or [] if d]
    found = own or ([customer["discount"]] if customer and customer.get("discount") else [])
    discounts = []
    for discount in found:
        coupon = (discount.get("source") or {}).get("coupon") if isinstance(discount, dict) else None
        coupon = coupon or (discount.get("coupon") if isinstance(discount, dict) else None)
        if not isinstance(coupon, dict):
            discounts.append((None, None, None, False, None))
            continue
        amount_off = coupon.get("amount_off") if (coupon.get("currency") or "") in ("", subscription.get("currency")) else 0
        discounts.append((coupon.get("percent_off"), amount_off, discount.get("end"), coupon.get("duration") == "once",
                          discount.get("start")))
    return tuple(discounts)


def facts_from(subscription, product_names: dict[str, str] | None = None) -> SubscriptionFacts:
    data = subscription.to_dict() if hasattr(subscription, "to_dict") else subscription
    items = data["items"]["data"]
    lines, names, price_ids, product_ids = [], [], [], []
    for item in items:
        price = item["price"]
        recurring = price.get("recurring") or {"interval": "month", "interval_count": 1}
        # a price billed by tiers, by usage or with a decimal amount has no unit_amount: nothing to promise
        unit_amount = price.get("unit_amount") if price.get("billing_scheme", "per_unit") == "per_unit" \
            and recurring.get("usage_type", "licensed") == "licensed" else None
        lines.append(PriceLine(unit_amount, item.get("quantity") or 1,
                               recurring["interval"], recurring.get("interval_count") or 1))
        product = price.get("product")
        product_id = product.get("id") if isinstance(product, dict) else product
        name = product.get("name") if isinstance(product, dict) else (product_names or {}).get(product_id)
        names.append(name or price.get("nickname") or "Subscription")
        price_ids.append(price.get("id"))
        product_ids.append(product_id)
    customer = data["customer"]
    expanded = isinstance(customer, dict)
    period_ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    next_payment = from_unix(min(period_ends)) if period_ends else None
    cancel_at = from_unix(data["cancel_at"]) if data.get("cancel_at") else None
    metadata = {**((customer.get("metadata") if expanded else None) or {}), **(data.get("metadata") or {})}
    tax = data.get("automatic_tax") or {}
    pause = data.get("pause_collection") or {}
    discounts = _discounts_billed(data, customer if expanded else None)
    period_starts = [item["current_period_start"] for item in items if item.get("current_period_start")]
    return facts_of({
        "subscription_id": data["id"],
        "customer_id": customer["id"] if expanded else customer,
        "customer_email": customer.get("email") if expanded else None,
        "status": data["status"],
        "plan_name": " + ".join(dict.fromkeys(names)) or "Subscription",
        "currency": data.get("currency") or items[0]["price"]["currency"],
        "lines": tuple(lines),
        "has_discount": bool(data.get("discounts")) or bool(discounts),
        "paused": bool(pause),
        "cancel_at_period_end": bool(data.get("cancel_at_period_end") or cancel_at),
        "period_end": cancel_at or next_payment,
        "anchor": from_unix(data["billing_cycle_anchor"]) if data.get("billing_cycle_anchor") else None,
        "next_payment": next_payment,
        "price_ids": tuple(price_ids), "product_ids": tuple(p for p in product_ids if p), "item_ids": tuple(i["id"] for i in items),
        "started_at": from_unix(data["start_date"]) if data.get("start_date") else None,
        "country": ((customer.get("address") if expanded else None) or {}).get("country"),
        "metadata": tuple(sorted((str(k), str(v)) for k, v in metadata.items())) if metadata else (),
        "on_schedule": bool(data.get("schedule")), "taxed": bool(tax.get("enabled") or data.get("default_tax_rates")),
        "customer_name": customer.get("name") if expanded else None,
        "pause_resumes_at": from_unix(pause["resumes_at"]) if pause.get("resumes_at") else None,
        "cancel_at": cancel_at,
        "cancel_at_period_end_flag": bool(data.get("cancel_at_period_end")),
        "discount_coupons": (),
        "discounts": discounts,
        "billing_mode": ((data.get("billing_mode") or {}).get("type")) or "classic",
        "current_period_start": from_unix(max(period_starts)) if period_starts else None,
        "customer_tax_ids": _tax_id_count(customer) if expanded else None,
        "preferred_locales": tuple(str(tag) for tag in (customer.get("preferred_locales") or ())[:10]) if expanded else (),
    })


def _tax_id_count(customer: dict) -> int | None:
    """How many tax ids an expanded customer has; None when they weren't included in the answer."""
    tax_ids = customer.get("tax_ids")
    if not isinstance(tax_ids, dict):
        return None
    return len(tax_ids.get("data") or [])


def proxy_for(url: str) -> str | None:
    """The proxy that HTTPS_PROXY / HTTP_PROXY / NO_PROXY name for this address; aiohttp does not
    read them by itself, so they are handed to the SDK's client."""
    parts = urlsplit(url)
    if urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return urllib.request.getproxies().get(parts.scheme)


# Retries within the deadline: back-off before the first retry, doubling up to the most, each drawn between
# half and all of it (jitter spreads the retries of a burst); an attempt needs at least MIN_ATTEMPT seconds.
RETRY_FIRST, RETRY_MAX, MIN_ATTEMPT = 0.25, 2.0, 0.2
ACCOUNT_KEEP, ACCOUNT_RETRY = 3600.0, 300.0  # seconds the account's country is kept, or a failed read remembered
LATE = 0.05  # seconds after its place in the budget a request may still go
UNREACHABLE = N_("We couldn't reach the payment system. Nothing was changed. Please try again in a moment.")
BUSY = N_("A lot of people are doing this at the same moment. Nothing was changed. Please try again in a few seconds.")
# Refusals Stripe made before doing anything; any other failure of a write may have been applied.
REFUSALS = (stripe.RateLimitError, stripe.AuthenticationError, stripe.PermissionError, stripe.CardError)


async def _streamed(response) -> tuple[bytes, int, Mapping[str, str]]:
    """The body, status and headers of the SDK's streamed response (a 2xx: the SDK raised any other)."""
    stream = response.stream()
    body = await stream.read() if hasattr(stream, "read") else b"".join([chunk async for chunk in stream])
    return body, response.code, response.headers


def _retryable(error: stripe.StripeError) -> bool:
    """What Stripe's SDKs retry (a lost connection, 409, 5xx, or Stripe-Should-Retry: true), and 429: a lock
    timeout or the rate limit (https://docs.stripe.com/rate-limits#handling-limiting-gracefully)."""
    if isinstance(error, stripe.RateLimitError):
        return True
    if isinstance(error, stripe.APIConnectionError):
        return bool(getattr(error, "should_retry", True))
    should = (error.headers or {}).get("stripe-should-retry") if hasattr(error, "headers") else None
    if should in ("true", "false"):
        return should == "true"
    return (error.http_status or 0) == 409 or (error.http_status or 0) >= 500


class StripeGateway:
    def __init__(self, settings: Settings, connection=None):
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        self.settings = settings
        # The served app's LiveConnection (cancel_flow/stripe_connection.py): the portal configurations in use,
        # the environment's or the stored ones; without one, the environment's.
        self.connection = connection
        # The SDK's aiohttp client: measured at a fifth of the CPU per call of its httpx client
        # (BENCHMARKS.md), and the Stripe read is most of a subscriber's first view.
        self.http_client = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=settings.stripe_timeout),
                                                proxy=proxy_for(settings.stripe_api_base or stripe.api_base))
        # With the SDK's own retries, for the one-off commands (stripe setup, stripe check, demo).
        self.client = stripe.StripeClient(
            settings.require_stripe(),
            base_addresses=base,
            max_network_retries=settings.stripe_max_network_retries,
            http_client=self.http_client,
        )
        # One attempt per call: `_call` retries, so that every attempt fits one deadline and takes its place
        # in the request budget.
        self._once = stripe.StripeClient(settings.require_stripe(), base_addresses=base, max_network_retries=0,
                                         http_client=self.http_client)
        self.budget = StripeBudget.for_deployment(settings.stripe_rate_limit, settings.database_url,
                                                  settings.stripe_api_key)
        self._account: tuple[float, str | None] | None = None  # (read at, the account's country)
        # A GET's address, headers and retries per base address, and its query strings (see `_get`).
        self._gets: dict[str, tuple] = {}
        self._queries: dict[tuple, str] = {}

    async def _call(self, operation: str, request):
        """One request to Stripe, with one deadline (STRIPE_DEADLINE) for all its attempts, each sent when the
        request budget (STRIPE_RATE_LIMIT) has room. `request` is a function making one attempt (retried here
        after a 429, a lost connection, 409 or 5xx, with back-off and jitter, up to STRIPE_MAX_NETWORK_RETRIES
        times while the deadline allows) or a coroutine (one attempt, within the deadline)."""
        settings, clock = self.settings, time.monotonic
        started = clock()
        deadline = started + settings.stripe_deadline
        attempts, maybe_applied, failure, in_flight = 0, False, None, False
        while True:
            wait = self.budget.reserve(deadline - clock() - MIN_ATTEMPT)
            if wait is None:
                if not callable(request):
                    request.close()
                raise self._failed(operation, "rate_limited" if isinstance(failure, stripe.RateLimitError) else "budget",
                                   failure, started, attempts, maybe_applied, in_flight)
            while wait > 0:
                due = clock() + wait
                await asyncio.sleep(wait)
                # Woken late (a busy event loop): the place has passed, and going now would send this request
                # together with the next places' ones; it takes a new place instead.
                wait = self.budget.reserve(deadline - clock() - MIN_ATTEMPT) if clock() - due > LATE else 0
                if wait is None:
                    raise self._failed(operation, "budget", failure, started, attempts, maybe_applied, in_flight)
            if callable(request):
                attempt, limit = request(), min(settings.stripe_timeout, deadline - clock())
            else:
                attempt, limit = request, deadline - clock()
            attempts += 1
            try:
                async with asyncio.timeout(limit):
                    result = await attempt
            except stripe.InvalidRequestError as error:
                STRIPE_CALLS.labels(operation, type(error).__name__).inc()
                raise
            except stripe.StripeError as error:
                failure, retry = error, _retryable(error)
                maybe_applied = maybe_applied or not isinstance(error, REFUSALS)
                in_flight = _still_running(error, in_flight)
            except TimeoutError:
                failure, retry, maybe_applied, in_flight = "timeout", True, True, True
            else:
                STRIPE_CALLS.labels(operation, "none").inc()
                return result
            pause = min(RETRY_MAX, RETRY_FIRST * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)
            # A 429 (Stripe's rate limit, or a lock on the object) asks to try again later: it is retried
            # while the deadline allows, whatever STRIPE_MAX_NETWORK_RETRIES says of lost connections and 5xx
            # (https://docs.stripe.com/rate-limits#handling-limiting-gracefully).
            budgeted = isinstance(failure, stripe.RateLimitError) or attempts <= settings.stripe_max_network_retries
            if not (retry and callable(request) and budgeted and clock() + pause + MIN_ATTEMPT < deadline):
                reason = "rate_limited" if isinstance(failure, stripe.RateLimitError) else \
                    "deadline" if clock() + MIN_ATTEMPT >= deadline else "failed"
                raise self._failed(operation, reason, failure, started, attempts, maybe_applied, in_flight)
            await asyncio.sleep(pause)

    @staticmethod
    def _failed(operation: str, reason: str, failure, started: float, attempts: int,
                maybe_applied: bool, in_flight: bool = False) -> StripeUnavailable:
        """The error a failed call ends in, logged as one line: busy (our budget, or Stripe's 429, had no room
        in time) or unavailable; `maybe_applied` when an attempt may have reached Stripe and been applied."""
        error = failure if isinstance(failure, stripe.StripeError) else None
        kind = "StripeBusy" if reason in ("budget", "rate_limited") else type(error).__name__ if error else "Timeout"
        STRIPE_CALLS.labels(operation, kind).inc()
        log_event("stripe.busy" if kind == "StripeBusy" else "stripe.call_failed", level=30, operation=operation,
                  reason=reason, error=type(error).__name__ if error else failure, attempts=attempts,
                  seconds=round(time.monotonic() - started, 3), status=getattr(error, "http_status", None),
                  code=getattr(error, "code", None) or _error_code(error), request_id=getattr(error, "request_id", None))
        unavailable = StripeBusy(BUSY) if kind == "StripeBusy" else StripeUnavailable(UNREACHABLE)
        # A timeout or a server error may still have been applied; a refusal (429, 4xx) was not.
        unavailable.maybe_applied = maybe_applied
        unavailable.in_flight = maybe_applied and in_flight
        return unavailable

    async def _raw(self, operation: str, method: str, path: str, **params) -> dict:
        """The SDK's raw request (its headers, errors and idempotency, our retries) with its answer read once as
        plain JSON: on the subscriber's hot path this skips building StripeObjects, which costs more than the call.
        A POST without a key gets one of its own, the same for every attempt."""
        if method == "post" and not params.get("idempotency_key"):
            params["idempotency_key"] = f"cancel-flow-{uuid.uuid4().hex}"
        return await self._call(operation, lambda: self._read_json(method, path, params))

    async def _read_json(self, method: str, path: str, params: dict) -> dict:
        """One attempt of `raw_request_async`, taking the answer as the SDK's streamed response (the way it reads a
        PDF): the same request, and the same errors for an answer that isn't a 2xx (the SDK reads and parses those
        itself), but the body of a success is parsed once, into plain dicts, and not also formatted into a debug
        log line (the SDK's `raw_request_async` parses it into OrderedDicts and quotes all of it for its logger,
        which together cost more than the rest of the call)."""
        options, params = _extract_options(params)
        requestor, base = self._once._requestor, params.pop("base", "api")
        if method == "get" and not options and "?" not in path and not _sdk_logs():
            body, code, headers = await self._get(requestor, path, params, base)
        else:
            body, code, headers = await _streamed(await requestor.request_stream_async(
                method, path, params, options, base_address=base, usage=["raw_request"]))
        try:
            return orjson.loads(body)  # plain dicts and lists, as json.loads makes them, in a third of its time
        except ValueError:  # as the SDK words it (orjson's JSONDecodeError is json's, a ValueError)
            raise stripe.APIError("Invalid response body from API: %s (HTTP response code was %d)"
                                  % (body.decode("utf-8", "replace"), code), body, code, headers) from None

    async def _get(self, requestor, path: str, params: dict, base: str) -> tuple[bytes, int, Mapping[str, str]]:
        """`request_stream_async` of a GET, with what the SDK builds the same for every GET of this client made
        once: its headers (the API key, the version, the client's user agent; a GET has no idempotency key) and
        each query string (the same parameters encoded the same way). Sent on a kept connection
        (`KeptConnectionGets`: the SDK's headers and telemetry; a failed connection raised as the SDK raises it,
        and retried by `_call`), or by the SDK's HTTP client where a proxy is set. An answer that isn't a 2xx is
        read and raised by the SDK (`_interpret_response`) as for any call. Taken only when the SDK's request and
        response log lines go nowhere (`_sdk_logs`): it skips formatting them."""
        validate_path(path)
        sent = self._gets.get(base)
        if sent is None:
            request_options = merge_options(requestor._options, None)
            if request_options.get("api_key") is None:  # the SDK's own AuthenticationError
                return await _streamed(await requestor.request_stream_async("get", path, params, None, base_address=base,
                                                                            usage=["raw_request"]))
            headers = requestor.request_headers("get", "V1", request_options)
            headers.update(request_options.get("headers") or {})
            address = requestor._options.base_addresses.get(base)
            kept = KeptConnectionGets(address, self.http_client) if proxy_for(address) is None else None
            sent = self._gets[base] = (address, headers, request_options.get("max_network_retries"), kept)
        address, headers, retries, kept = sent
        # kept when every value is text, an integer or a list of text (whose repr says exactly how it is encoded)
        query_key = repr(params) if all(type(value) in _PLAIN or type(value) is list and all(type(each) is str for each in value)
                                        for value in params.values()) else None
        query = self._queries.get(query_key) if query_key is not None else None
        if query is None:
            query = urlencode(list(_api_encode(params))).replace("%5B", "[").replace("%5D", "]")
            if query_key is not None and len(self._queries) < 256:
                self._queries[query_key] = query
        target = f"{path}?{query}" if query else path
        if kept is not None:
            body, code, answer_headers = await kept.get(target, headers, ["raw_request", "async"])
        else:
            stream, code, answer_headers = await requestor._get_http_client().request_stream_with_retries_async(
                "get", f"{address}{target}", dict(headers), None, max_network_retries=retries,
                _usage=["raw_request", "async"])
            body = await stream.read()
        if not 200 <= code < 300:
            requestor._interpret_response(body, code, answer_headers, "V1")  # raises the SDK's error
        return body, code, answer_headers

    async def read_subscription(self, subscription_id: str) -> SubscriptionFacts:
        try:
            sub = await self._raw("subscription.retrieve", "get", f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                                  expand=SUBSCRIPTION_EXPAND)
        except stripe.InvalidRequestError as error:
            if _is_missing(error):
                raise NotFound(N_("This subscription no longer exists.")) from None
            raise StripeUnavailable(N_("The payment system refused to show this subscription.")) from None
        return facts_from(sub)

    async def _product_names(self, subscriptions) -> dict[str, str]:
        """Names of the products of listed subscriptions, in one call (a list can't expand that deep)."""
        ids = sorted({item["price"]["product"] for sub in subscriptions for item in sub["items"]["data"]
                      if isinstance(item["price"].get("product"), str)})
        names = {}
        for first in range(0, len(ids), 100):
            page = await self._raw("product.list", "get", "/v1/products", ids=ids[first:first + 100], limit=100)
            names.update({product["id"]: product.get("name") for product in page["data"]})
        return names

    async def list_live_subscriptions(self, customer_id: str) -> list[SubscriptionFacts]:
        try:
            page = await self._raw("subscription.list", "get", "/v1/subscriptions", customer=customer_id,
                                   status="all", limit=100, expand=LIST_EXPAND)
        except stripe.InvalidRequestError:
            raise NotFound(f"No customer {customer_id} in Stripe.") from None
        live = [sub for sub in page["data"] if sub["status"] in ("active", "trialing", "past_due")]
        names = await self._product_names(live) if live else {}
        return [facts_from(sub, names) for sub in live]

    async def customers_with_live_subscriptions(self):
        """(customer as a dict, facts of their newest live subscription), once per customer."""
        seen = set()
        for status in ("active", "trialing", "past_due"):
            params = {"status": status, "limit": 100, "expand": LIST_EXPAND}
            while True:
                page = await self._raw("subscription.list", "get", "/v1/subscriptions", **params)
                names = await self._product_names(page["data"]) if page["data"] else {}
                for sub in page["data"]:
                    customer = sub["customer"]
                    if customer["id"] not in seen:
                        seen.add(customer["id"])
                        yield customer, facts_from(sub, names)
                if not page["has_more"]:
                    break
                params = {**params, "starting_after": page["data"][-1]["id"]}

    async def find_customer_by_email(self, email: str) -> str | None:
        """Stripe's portal rule: of the customers with this email, the most recently created one with an
        active, trialing or past-due subscription. Stripe's `email` filter is case-sensitive
        (https://docs.stripe.com/api/customers/list#list_customers-email), so the address is asked as
        typed and in lower case, then through Search, which ignores case but can lag writes
        (https://docs.stripe.com/search#data-freshness)."""
        found: dict[str, dict] = {}
        try:
            for variant in dict.fromkeys([email, email.lower()]):
                page = await self._raw("customer.list", "get", "/v1/customers", email=variant, limit=100)
                found.update({c["id"]: c for c in page["data"]})
            if not found:
                query = "email:'" + email.replace("\\", "").replace("'", "\\'") + "'"
                page = await self._raw("customer.search", "get", "/v1/customers/search", query=query, limit=100)
                found.update({c["id"]: c for c in page["data"] if (c.get("email") or "").lower() == email.lower()})
        except stripe.InvalidRequestError:
            return None
        for customer in sorted(found.values(), key=lambda c: c["created"], reverse=True):
            if await self.list_live_subscriptions(customer["id"]):
                return customer["id"]
        return None

    async def _update(self, operation: str, subscription_id: str, params: dict, key: str) -> dict:
        return await self._raw(operation, "post", f"/v1/subscriptions/{quote(subscription_id, safe='')}",
                               idempotency_key=key, **params)

    async def coupon_exists(self, coupon_id: str) -> bool:
        try:
            await self._raw("coupon.retrieve", "get", f"/v1/coupons/{quote(coupon_id, safe='')}")
            return True
        except stripe.InvalidRequestError as error:
            if not _is_missing(error):
                raise StripeUnavailable(N_("The payment system refused the coupon.")) from None
            return False

    async def ensure_coupon(self, offer: Offer, months: int) -> str:
        """Create the offer's coupon of this length if Stripe does not have it (safe to repeat)."""
        coupon_id = offer.coupon_id(months)
        if await self.coupon_exists(coupon_id):
            return coupon_id
        try:
            await self._raw("coupon.create", "post", "/v1/coupons", id=coupon_id, percent_off=offer.percent_off,
                            duration="repeating", duration_in_months=months, name=offer.title[:40],
                            metadata={"cancel_flow_offer": offer.id},
                            idempotency_key=idempotency_key("coupon", coupon_id))
        except stripe.InvalidRequestError as error:
            if error.code != "resource_already_exists":
                raise StripeUnavailable(N_("The payment system refused to create the coupon.")) from None
        return coupon_id

    async def apply_discount(self, subscription_id: str, offer: Offer, months: int, key: str) -> SubscriptionFacts:
        params = {"discounts": [{"coupon": offer.coupon_id(months)}], "expand": SUBSCRIPTION_EXPAND}
        try:
            return facts_from(await self._update("subscription.update_discount", subscription_id, params, key))
        except stripe.InvalidRequestError as error:
            if not _is_missing(error, "discounts"):
                raise StripeUnavailable(N_("The payment system refused the discount. Nothing was changed.")) from None
        # Whether Stripe stored that refusal under the key or not (https://docs.stripe.com/api/idempotent_requests),
        # the retry gets a key of its own, derived from the first: concurrent first uses still apply once.
        await self.ensure_coupon(offer, months)
        try:
            return facts_from(await self._update("subscription.update_discount", subscription_id, params,
                                                 idempotency_key(key, "coupon-created")))
        except stripe.InvalidRequestError:
            raise StripeUnavailable(N_("The payment system refused the discount. Nothing was changed.")) from None

    async def _apply(self, operation: str, subscription_id: str, params: dict, key: str, refused: str) -> SubscriptionFacts:
        try:
            return facts_from(await self._update(operation, subscription_id, {**params, "expand": SUBSCRIPTION_EXPAND}, key))
        except stripe.InvalidRequestError:
            raise StripeUnavailable(refused) from None

    async def apply_pause(self, subscription_id: str, resumes_at: datetime, key: str) -> SubscriptionFacts:
        # https://docs.stripe.com/billing/subscriptions/pause-payment: invoices until resumes_at are voided
        return await self._apply("subscription.update_pause", subscription_id, {
            "pause_collection": {"behavior": "void", "resumes_at": int(resumes_at.timestamp())}}, key,
            N_("The payment system refused the pause. Nothing was changed."))

    async def apply_switch(self, subscription_id: str, item_id: str, price_id: str, key: str) -> SubscriptionFacts:
        # https://docs.stripe.com/billing/subscriptions/change-price: no proration, the new price from the next invoice
        return await self._apply("subscription.update_switch", subscription_id, {
            "items": [{"id": item_id, "price": price_id}], "proration_behavior": "none"}, key,
            N_("The payment system refused the plan change. Nothing was changed."))

    async def apply_free_period(self, subscription_id: str, trial_end: datetime, key: str) -> SubscriptionFacts:
        # https://docs.stripe.com/billing/subscriptions/trials#extend-trials: the next payment moves to trial_end
        return await self._apply("subscription.update_free_period", subscription_id, {
            "trial_end": int(trial_end.timestamp()), "proration_behavior": "none"}, key,
            N_("The payment system refused to move the next payment. Nothing was changed."))

    async def keep_subscription(self, subscription_id: str, facts: SubscriptionFacts, key: str) -> SubscriptionFacts:
        """Undo a cancellation the client scheduled, whichever way it was scheduled: the portal sets `cancel_at`
        (and in recent API versions may leave `cancel_at_period_end` false). An end date the coach had fixed before
        the client cancelled earlier is put back."""
        restore = facts.restores_fixed_end
        if restore is not None and facts.next_payment is not None and restore > facts.next_payment:
            params = {"cancel_at": int(restore.timestamp()), "metadata": {FIXED_END_KEY: ""}}
        elif facts.cancel_at and not facts.cancel_at_period_end_flag:
            params = {"cancel_at": ""}
        else:
            params = {"cancel_at_period_end": False}
        return await self._apply("subscription.update_keep", subscription_id, params, key,
                                 N_("The payment system refused the change. Nothing was changed."))

    async def end_at_period_end(self, subscription_id: str, facts: SubscriptionFacts, feedback: str | None,
                                comment: str | None, key: str) -> SubscriptionFacts:
        """Cancel at the end of the current period a subscription whose coach fixed a later end date: Stripe's
        portal refuses a cancel flow once `cancel_at` is set. The coach's date is kept in the metadata (for
        "Keep my subscription"); the reason goes to `cancellation_details`."""
        params = {"cancel_at": int(facts.next_payment.timestamp()),
                  "metadata": {FIXED_END_KEY: str(int(facts.fixed_end.timestamp()))}}
        if feedback:
            params["cancellation_details"] = {"feedback": feedback, "comment": (comment or "")[:500]}
        return await self._apply("subscription.update_end_early", subscription_id, params, key,
                                 N_("The payment system refused the cancellation. Nothing was changed."))

    async def record_cancellation_details(self, subscription_id: str, feedback: str, comment: str | None) -> None:
        """The reason the subscriber gave us, on the subscription where Stripe's reports read it."""
        details = {"feedback": feedback, "comment": (comment or "")[:500]}
        await self._update("subscription.update_cancellation_details", subscription_id,
                           {"cancellation_details": details}, idempotency_key("details", subscription_id, feedback, comment or ""))

    async def read_price(self, price_id: str) -> TargetPrice | None:
        try:
            price = await self._raw("price.retrieve", "get", f"/v1/prices/{quote(price_id, safe='')}", expand=["product"])
        except stripe.InvalidRequestError:
            return None
        recurring = price.get("recurring") or {}
        product = price.get("product")
        per_unit = price.get("billing_scheme", "per_unit") == "per_unit" and price.get("unit_amount") is not None \
            and recurring.get("usage_type", "licensed") == "licensed"
        return TargetPrice(price["id"], price.get("unit_amount") or 0, price["currency"], recurring.get("interval", ""),
                           recurring.get("interval_count") or 1, bool(price.get("active")) and per_unit,
                           price.get("nickname") or (product.get("name") if isinstance(product, dict) else None))

    async def portal_configuration(self, billing: bool = False) -> str | None:
        """The portal configuration in use: STRIPE_PORTAL_CONFIGURATION (STRIPE_BILLING_PORTAL_CONFIGURATION for
        billing links), else the one `stripe setup` stored."""
        if self.connection is not None:
            connection = await self.connection.current()
            return connection.billing_portal_configuration if billing else connection.portal_configuration
        return self.settings.stripe_billing_portal_configuration if billing else self.settings.stripe_portal_configuration

    async def portal_url(self, customer_id: str, *, return_url: str, flow_data: dict | None = None,
                         billing: bool = False, language: str = DEFAULT) -> str:
        """A portal session. Cancel flows use STRIPE_PORTAL_CONFIGURATION; billing links (`billing`) use
        STRIPE_BILLING_PORTAL_CONFIGURATION, whose portal can't cancel: cancelling goes through the flow. Unset,
        Stripe's default configuration is used: in test mode the one saved in Stripe's Dashboard
        (https://docs.stripe.com/api/customer_portal/configurations/object#portal_configuration_object-is_default)."""
        setting = "STRIPE_BILLING_PORTAL_CONFIGURATION" if billing else "STRIPE_PORTAL_CONFIGURATION"
        configuration = await self.portal_configuration(billing)
        # the portal speaks the client's language, as our pages did (https://docs.stripe.com/api/customer_portal/sessions/create#create_portal_session-locale)
        params = {"customer": customer_id, "return_url": return_url, "locale": STRIPE_LOCALES.get(language, "auto")}
        if configuration:
            params["configuration"] = configuration
        if flow_data:
            params["flow_data"] = flow_data
        try:
            options = {"idempotency_key": f"cancel-flow-{uuid.uuid4().hex}"}  # the same for every attempt
            session = await self._call("billing_portal.session.create", lambda: self._once.v1.billing_portal.sessions
                                       .create_async(params=params, options=options))
        except stripe.InvalidRequestError as error:
            log_event("stripe.portal_refused", code=error.code, param=error.param)
            if not configuration and "portal settings" in (error.user_message or str(error)):
                log_event("stripe.portal_not_configured", level=40, setting=setting)
                raise PortalNotConfigured(
                    N_("This page can't open yet: the service has no Stripe customer portal to send you to. If you run "
                       "this service, press Set up Stripe on /dashboard/stripe (or run `cancel-flow stripe setup`): it "
                       "stores the portal configurations (%(setting)s in the environment wins)."),
                    setting=setting) from None
            raise PortalRefused(N_("The payment system could not open your billing page.")) from None
        return session.url

    async def cancel_portal_url(self, customer_id: str, subscription_id: str, *, return_url: str, done_url: str,
                                language: str = DEFAULT) -> str:
        return await self.portal_url(customer_id, return_url=return_url, language=language, flow_data={
            "type": "subscription_cancel",
            "subscription_cancel": {"subscription": subscription_id},
            "after_completion": {"type": "redirect", "redirect": {"return_url": done_url}},
        })

    # compliance: the account's country, withdrawals, the cancel button -----------------------------------
    async def account_country(self) -> str | None:
        """The Stripe account's country (https://docs.stripe.com/api/accounts/retrieve), read at most once an hour
        per process; None when it can't be read (a restricted key without the permission), asked again in 5 minutes."""
        now = time.monotonic()
        if self._account is not None and now < self._account[0]:
            return self._account[1]
        try:
            country = (await self._raw("account.retrieve", "get", "/v1/account")).get("country")
        except (stripe.StripeError, StripeUnavailable) as error:
            log_event("stripe.account_unreadable", level=30, error=type(error).__name__)
            self._account = (now + ACCOUNT_RETRY, None)
            return None
        self._account = (now + ACCOUNT_KEEP, country)
        return country

    async def payments_since(self, subscription_id: str, since: datetime) -> list[Payment]:
        """The subscription's payments made since `since`: each paid invoice's PaymentIntent, amount and the period
        it paid for (`payments` is included only when asked for: https://docs.stripe.com/api/invoices/object#invoice_object-payments)."""
        page = await self._raw("invoice.list", "get", "/v1/invoices", subscription=subscription_id, status="paid",
                               limit=100, expand=["data.payments"])
        start = int(since.timestamp()) - 60  # the first invoice is made with the subscription, to the second
        payments = []
        for invoice in page["data"]:
            if invoice.get("created", 0) < start:
                continue
            lines = (invoice.get("lines") or {}).get("data") or []
            period = lines[0].get("period") if lines else None
            period = period or {"start": invoice.get("period_start"), "end": invoice.get("period_end")}
            for entry in (invoice.get("payments") or {}).get("data") or []:
                intent = (entry.get("payment") or {}).get("payment_intent")
                intent = intent.get("id") if isinstance(intent, dict) else intent
                if entry.get("status") == "paid" and isinstance(intent, str) and entry.get("amount_paid"):
                    payments.append(Payment(intent, entry["amount_paid"], invoice["currency"],
                                            from_unix(period["start"]), from_unix(period["end"])))
        return payments

    async def refund(self, payment_intent: str, amount: int, key: str, metadata: dict[str, str]) -> dict | None:
        """Refund `amount` of a payment (https://docs.stripe.com/api/refunds/create); None when Stripe says it is
        refunded already (a retry after a lost answer)."""
        try:
            return await self._raw("refund.create", "post", "/v1/refunds", payment_intent=payment_intent, amount=amount,
                                   reason="requested_by_customer", metadata=metadata, idempotency_key=key)
        except stripe.InvalidRequestError as error:
            if error.code == "charge_already_refunded":
                return None
            log_event("stripe.refund_refused", code=error.code, param=error.param)
            raise StripeUnavailable(f"The payment system refused the refund: {error.user_message or error.code}") from None

    async def end_now(self, subscription_id: str, comment: str) -> SubscriptionFacts:
        """Cancel at once (https://docs.stripe.com/api/subscriptions/cancel), the reason in `cancellation_details`.
        A subscription already canceled (a retry after a lost answer) is read as it is."""
        path = f"/v1/subscriptions/{quote(subscription_id, safe='')}"
        try:
            return facts_from(await self._raw("subscription.cancel", "delete", path,
                                              cancellation_details={"comment": comment[:5000]}, expand=SUBSCRIPTION_EXPAND))
        except stripe.InvalidRequestError:
            facts = await self.read_subscription(subscription_id)
            if facts.status in ("canceled", "incomplete_expired"):
                return facts
            raise StripeUnavailable("The payment system refused to cancel the subscription.") from None

    async def cancel_at_period_end(self, subscription_id: str, comment: str, key: str) -> SubscriptionFacts:
        """Set to cancel when the paid period ends (https://docs.stripe.com/billing/subscriptions/cancel#cancel-at-end-of-cycle)."""
        return await self._apply("subscription.update_cancel", subscription_id, {
            "cancel_at_period_end": True, "cancellation_details": {"comment": comment[:5000]}}, key,
            "The payment system refused the cancellation.")

    async def close(self) -> None:
        self.budget.close()
        for sent in self._gets.values():
            if sent[3] is not None:
                sent[3].close()
        await self.http_client.close_async()


class StripeSetup:
    """What `cancel-flow stripe setup` and the demo do once per Stripe account; every step safe to repeat."""

    WEBHOOK_EVENTS = ["customer.subscription.updated", "customer.subscription.deleted",
                      "invoice.payment_failed", "invoice.paid", "invoice.voided", "invoice.marked_uncollectible",
                      "checkout.session.completed"]  # win-back: a comeback checkout paid
    # Events are rendered in the endpoint's api_version, else in the account's default version, which can
    # be years older (https://docs.stripe.com/webhooks/versioning): the endpoint is pinned to the SDK's.
    API_VERSION = stripe.api_version

    def __init__(self, gateway: StripeGateway):
        self.gateway, self.client = gateway, gateway.client

    @staticmethod
    def configuration_problems(config: dict) -> list[str]:
        """What keeps a portal configuration from serving cancel-flow, in words."""
        cancel = (config.get("features") or {}).get("subscription_cancel") or {}
        problems = []
        if not config.get("active"):
            problems.append("it is not active")
        if not cancel.get("enabled"):
            problems.append("cancellation is turned off")
        elif cancel.get("mode") != "at_period_end":
            problems.append("it cancels immediately instead of at the end of the period")
        if (cancel.get("cancellation_reason") or {}).get("enabled"):
            problems.append("it asks the cancellation reason again (cancel-flow already asked it)")
        return problems

    @staticmethod
    def billing_configuration_problems(config: dict) -> list[str]:
        """What keeps a portal configuration from serving billing links: it must not cancel (cancelling goes
        through the flow, which asks why and records it) and must let the card be updated."""
        features = config.get("features") or {}
        problems = []
        if not config.get("active"):
            problems.append("it is not active")
        if ((features.get("subscription_cancel") or {}).get("enabled")):
            problems.append("it lets clients cancel without the flow (no reason asked, nothing recorded)")
        if not (features.get("payment_method_update") or {}).get("enabled"):
            problems.append("it doesn't let clients update their card")
        return problems

    async def _configuration(self, marker: str, headline: str, features: dict, problems, return_url: str) -> str:
        """Our configuration marked `metadata.cancel_flow=marker`, brought up to date, or a new one."""
        configs = await self.client.v1.billing_portal.configurations.list_async(params={"limit": 100})
        for config in configs.data:
            data = config.to_dict()
            if (data.get("metadata") or {}).get("cancel_flow") == marker and config.active:
                if problems(data):
                    await self.client.v1.billing_portal.configurations.update_async(config.id, params={
                        "features": features})
                return config.id
        config = await self.client.v1.billing_portal.configurations.create_async(params={
            "business_profile": {"headline": headline},
            "default_return_url": return_url,
            "features": features,
            "metadata": {"cancel_flow": marker},
        })
        return config.id

    async def portal_configuration(self, return_url: str) -> str:
        """The configuration of "Continue to cancel": cancellation at period end, the reason not asked again."""
        return await self._configuration("1", "Manage your subscription", self._features(),
                                         self.configuration_problems, return_url)

    async def billing_portal_configuration(self, return_url: str) -> str:
        """The configuration of billing links: card, invoices, no cancellation (STRIPE_BILLING_PORTAL_CONFIGURATION)."""
        return await self._configuration("billing", "Your billing", {
            "invoice_history": {"enabled": True}, "payment_method_update": {"enabled": True},
            "subscription_cancel": {"enabled": False}}, self.billing_configuration_problems, return_url)

    @staticmethod
    def _features() -> dict:
        # The reason was asked on our page and reaches Stripe as cancellation_details: the portal
        # doesn't ask it again (https://docs.stripe.com/customer-management/configure-portal).
        return {
            "invoice_history": {"enabled": True},
            "payment_method_update": {"enabled": True},
            "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none",
                                    "cancellation_reason": {"enabled": False, "options": [
                                        "too_expensive", "missing_features", "switched_service", "unused",
                                        "customer_service", "too_complex", "low_quality", "other"]}},
        }

    async def find_webhook_endpoint(self, url: str) -> dict | None:
        endpoints = await self.client.v1.webhook_endpoints.list_async(params={"limit": 100})
        return next((e.to_dict() for e in endpoints.data if e.url == url), None)

    async def webhook_endpoint(self, url: str, recreate: bool = False) -> tuple[str, str | None, str | None]:
        """The endpoint's id, its signing secret when it was created now (Stripe shows it only once),
        and a warning when the existing endpoint's api_version is not the SDK's (it can't be changed
        at Stripe: only deleting and recreating the endpoint, with `recreate`, fixes it)."""
        endpoint = await self.find_webhook_endpoint(url)
        if endpoint is not None and endpoint.get("api_version") != self.API_VERSION:
            if not recreate:
                return endpoint["id"], None, (
                    f"Webhook endpoint {endpoint['id']} sends events in API version "
                    f"{endpoint.get('api_version') or 'of the account default'}, not {self.API_VERSION}. "
                    "Run `cancel-flow stripe setup --recreate-webhook` to replace it (its new signing secret is stored), "
                    "or roll the signing secret on /dashboard/stripe.")
            await self.client.v1.webhook_endpoints.delete_async(endpoint["id"])
            endpoint = None
        if endpoint is not None:
            enabled = set(endpoint.get("enabled_events") or [])
            if set(self.WEBHOOK_EVENTS) - enabled and "*" not in enabled:
                await self.client.v1.webhook_endpoints.update_async(endpoint["id"], params={
                    "enabled_events": sorted(enabled | set(self.WEBHOOK_EVENTS))})
            return endpoint["id"], None, None
        created = await self.client.v1.webhook_endpoints.create_async(params={
            "url": url, "enabled_events": self.WEBHOOK_EVENTS, "description": "cancel-flow",
            "api_version": self.API_VERSION})
        return created.id, created.secret, None

    async def create_webhook_endpoint(self, url: str) -> tuple[str, str]:
        """A new endpoint for `url` (another may exist for it), as `webhook_endpoint` makes one: its id and its
        signing secret, which Stripe shows only now."""
        created = await self.client.v1.webhook_endpoints.create_async(params={
            "url": url, "enabled_events": self.WEBHOOK_EVENTS, "description": "cancel-flow",
            "api_version": self.API_VERSION})
        return created.id, created.secret

    async def delete_webhook_endpoint(self, endpoint_id: str) -> bool:
        """False when Stripe has no such endpoint (deleted already)."""
        try:
            await self.client.v1.webhook_endpoints.delete_async(endpoint_id)
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":
                raise
            return False
        return True
