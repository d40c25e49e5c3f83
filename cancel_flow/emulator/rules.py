"""Rules that only Stripe's servers enforce: the SDK's types don't show them, the emulator must.

Each rule names the Stripe document it follows. The HTTP layer (`app.py`) applies them in the
order Stripe's API does: authentication, rate limits, permissions, parameter validation (none of
which stores an idempotent result), then the idempotency layer, then execution.
"""

import copy
import re
import threading
import time
import typing
from collections import deque

from cancel_flow.emulator.objects import public
try:
    from cancel_flow.emulator.errors import StripeError
except ImportError:  # before errors.py existed
    from cancel_flow.emulator.state import StripeError

EMULATOR_ACCOUNT = "acct_1EmulatorLocal00"

# --- Expand depth -----------------------------------------------------------------------------
# https://docs.stripe.com/api/expanding_objects : "Expansions have a maximum depth of four levels"
# (the example `data.payment_intent.customer.default_source` on a list is four, `data.` counted).
# The wording is the one Stripe answers with (quoted in stripe/stripe-java#2011).
MAX_EXPAND_DEPTH = 4


def check_expand(params: dict) -> None:
    paths = params.get("expand")
    if isinstance(paths, str):
        paths = [paths]
    for path in paths if isinstance(paths, list) else []:
        if isinstance(path, str) and len(path.split(".")) > MAX_EXPAND_DEPTH:
            raise StripeError(400, f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property.",
                              param="expand")


# --- Required parameters the SDK's types mark optional ------------------------------------------
# The SDK types `customer` optional on subscriptions and portal sessions (`customer_account` is the
# alternative), but Stripe refuses a request with neither; a subscription needs `items`; a portal
# flow needs the subscription it acts on. Every key the SDK marks required is checked in
# params.py (`__required_keys__`, nested hashes included).
# https://docs.stripe.com/api/subscriptions/create , https://docs.stripe.com/api/customer_portal/sessions/create
_REQUIRED: list[tuple[str, re.Pattern, tuple[tuple[str, ...], ...]]] = [
    ("POST", re.compile(r"^/v1/subscriptions$"), (("customer", "customer_account"), ("items",))),
    ("POST", re.compile(r"^/v1/billing_portal/sessions$"), (("customer", "customer_account"),)),
]
_FLOW_SUBSCRIPTION = {"subscription_cancel", "subscription_update", "subscription_update_confirm"}


def _missing(param: str) -> StripeError:
    return StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def check_required(method: str, path: str, params: dict) -> None:
    for route_method, pattern, groups in _REQUIRED:
        if route_method == method and pattern.match(path):
            for group in groups:
                if all(params.get(name) in (None, "", [], {}) for name in group):
                    raise _missing(group[0])
    flow = params.get("flow_data") if path == "/v1/billing_portal/sessions" else None
    if isinstance(flow, dict) and flow.get("type") in _FLOW_SUBSCRIPTION:
        kind = flow["type"]
        details = flow.get(kind)
        if not isinstance(details, dict):
            raise _missing(f"flow_data[{kind}]")
        if not details.get("subscription"):
            raise _missing(f"flow_data[{kind}][subscription]")
        if kind == "subscription_update_confirm" and not details.get("items"):
            raise _missing(f"flow_data[{kind}][items]")


def is_validation_error(error: StripeError) -> bool:
    """Parameter errors: Stripe finds them before the endpoint executes, so keeps no idempotent result."""
    return bool(error.code) and error.code.startswith("parameter_")


# --- Idempotency --------------------------------------------------------------------------------
# https://docs.stripe.com/api/idempotent_requests , https://docs.stripe.com/idempotency :
# the status and body of the first request that began executing are saved and replayed, "including
# 500 errors"; keys may be pruned once "at least 24 hours old"; parameters that fail validation and
# requests conflicting with one executing concurrently save nothing; the same key with other
# parameters is an idempotency_error. Keys belong to the API key that sent them. POST only: "Sending
# idempotency keys in GET and DELETE requests has no effect".
IDEMPOTENCY_TTL = 24 * 3600
MAX_IDEMPOTENCY_KEY = 255


class Idempotency:
    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], dict] = {}

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def begin(self, api_key: str, idem_key: str, fingerprint: tuple, now: int) -> dict | None:
        """None when this request now owns the key; else the stored entry to replay. Raises a 400 for
        other parameters and a 409 while the first request still executes."""
        with self._lock:
            entry = self._entries.get((api_key, idem_key))
            if entry and entry["done"] and now - entry["at"] >= IDEMPOTENCY_TTL:
                entry = None
            if entry is None:
                self._entries[(api_key, idem_key)] = {"fingerprint": fingerprint, "done": False, "at": now}
                return None
            if not entry["done"]:
                raise StripeError(409, "There is currently another in-progress request using this Idempotent Key "
                                       "(that probably means you submitted twice, and the other request is still "
                                       f"going through): {idem_key}. Please try again later.",
                                  type_="idempotency_error", code="idempotency_key_in_use")
            if entry["fingerprint"] != fingerprint:
                raise StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                       f"they were first used with. Try using a key other than '{idem_key}' if you "
                                       "meant to execute a different request.", type_="idempotency_error")
            return entry

    def finish(self, api_key: str, idem_key: str, status: int, content: str, request_id: str, now: int) -> None:
        with self._lock:
            entry = self._entries.get((api_key, idem_key))
            if entry is not None:
                entry.update(done=True, status=status, content=content, request_id=request_id, at=now)

    def abandon(self, api_key: str, idem_key: str) -> None:
        with self._lock:
            entry = self._entries.get((api_key, idem_key))
            if entry is not None and not entry["done"]:
                del self._entries[(api_key, idem_key)]


def check_idempotency_key(idem_key: str) -> None:
    if len(idem_key) > MAX_IDEMPOTENCY_KEY:
        raise StripeError(400, f"Invalid Idempotency-Key: keys are up to {MAX_IDEMPOTENCY_KEY} characters long.")


# --- Rate limits --------------------------------------------------------------------------------
# https://docs.stripe.com/rate-limits : 25 requests/s in test mode (100 in live mode) per account;
# individual endpoints 25/s unless noted; Search 20 read requests/s, counted against the basic limit
# too. Over it: 429 with code rate_limit, Stripe's body word for word. The SDK does not retry it
# (only lock timeouts are retried, "unlike rate limiting errors"), so no Stripe-Should-Retry: true.
RATE_LIMIT_MESSAGE = ("Request rate limit exceeded. You can learn more about rate limits here "
                      "https://stripe.com/docs/rate-limits.")
ENDPOINT_LIMIT = 25
SEARCH_LIMIT = 20


class RateLimiter:
    """Sliding one-second windows on the real clock (time.monotonic), off until configured."""

    def __init__(self, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self.requests_per_second: int | None = None
        self.refused = 0
        self._windows: dict = {}

    def configure(self, requests_per_second: int | None) -> None:
        with self._lock:
            self.requests_per_second = requests_per_second
            self.refused = 0
            self._windows.clear()

    def report(self) -> dict:
        return {"requests_per_second": self.requests_per_second,
                "endpoint_per_second": ENDPOINT_LIMIT, "search_per_second": SEARCH_LIMIT,
                "refused": self.refused}

    def admit(self, method: str, path: str, endpoint) -> None:
        """Count the request, or raise Stripe's 429 rate_limit when a window is full."""
        with self._lock:
            if self.requests_per_second is None:
                return
            now = self._clock()
            limits = [("account", self.requests_per_second), (("endpoint", method, endpoint), ENDPOINT_LIMIT)]
            if method == "GET" and path.endswith("/search"):
                limits.append(("search", SEARCH_LIMIT))
            windows = []
            for key, limit in limits:
                window = self._windows.setdefault(key, deque())
                while window and now - window[0] >= 1.0:
                    window.popleft()
                if len(window) >= limit:
                    self.refused += 1
                    raise StripeError(429, RATE_LIMIT_MESSAGE, code="rate_limit")
                windows.append(window)
            for window in windows:
                window.append(now)


# --- Lock timeouts ------------------------------------------------------------------------------
# https://docs.stripe.com/rate-limits#object-lock-timeouts : concurrent writes to one object can
# answer 429 lock_timeout; "the automatic retry mechanisms built into Stripe's client libraries will
# retry 429s caused by lock timeouts" — the Python SDK retries on `Stripe-Should-Retry: true`.
# Message as Stripe words it (stripe/stripe-node#2056).
LOCK_TIMEOUT_MESSAGE = ("This object cannot be accessed right now because another API request or Stripe process is "
                        "currently accessing it. If you see this error intermittently, retry the request. If you see "
                        "this error frequently and are making multiple concurrent requests to a single object, make "
                        "your requests serially or at a lower rate.")
LOCK_TIMEOUT_HEADERS = {"Stripe-Should-Retry": "true"}


def lock_timeout() -> StripeError:
    return StripeError(429, LOCK_TIMEOUT_MESSAGE, code="lock_timeout")


class ObjectLocks:
    """Objects held by a write in progress; another write to one of them answers lock_timeout."""

    def __init__(self):
        self._lock = threading.Lock()
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> None:
        with self._lock:
            if self._held.get(key):
                raise lock_timeout()
            self._held[key] = 1

    def held(self, key: str) -> bool:
        with self._lock:
            return bool(self._held.get(key))

    def release(self, key: str) -> None:
        with self._lock:
            self._held.pop(key, None)


def object_key(path: str, ids: tuple) -> str | None:
    """`/v1/subscriptions/sub_1` for any path on that object; None for collections."""
    if not ids or not ids[0]:
        return None
    position = path.find("/" + ids[0])
    return path[:position + len(ids[0]) + 1] if position >= 0 else None


# --- Restricted keys ----------------------------------------------------------------------------
# https://docs.stripe.com/keys/restricted-api-keys : "If a restricted API key lacks the permissions
# required to complete an API request, Stripe returns an invalid request error" — a 403 with type
# invalid_request_error, "The provided key 'rk_test_…' does not have
# the required permissions for this endpoint on account 'acct_…'. Having the 'rak_…' permission
# would allow this request to continue." (wording as seen in public error reports).
_RAK_NAMES = {
    "customers": "customer", "subscriptions": "subscription", "subscription_items": "subscription",
    "coupons": "coupon", "prices": "plan", "products": "product", "invoices": "invoice",
    "billing_portal": "customer_portal", "webhook_endpoints": "webhook", "events": "event",
    "payment_methods": "payment_method", "test_helpers": "test_clock",
}


def _pattern(path: str) -> re.Pattern:
    """`*` stands for one path segment or more; a pattern also covers the paths below it."""
    body = "/".join("[^/]+(?:/[^/]+)*" if part == "*" else re.escape(part) for part in path.rstrip("/").split("/"))
    return re.compile(f"^{body}(?:/.*)?$")


def redact(key: str) -> str:
    return key[:8] + "*" * max(len(key) - 12, 0) + key[-4:]


class KeyPermissions:
    def __init__(self):
        self._lock = threading.Lock()
        self._denied: dict[str, list[tuple[str, str, re.Pattern]]] = {}

    def set(self, key: str, deny: list[str]) -> list[str]:
        rules = []
        for entry in deny:
            method, _, path = entry.strip().partition(" ")
            path = path.strip()
            if method.upper() not in ("GET", "POST", "DELETE", "*") or not path.startswith("/v1"):
                raise ValueError(entry)
            rules.append((method.upper(), path, _pattern(path)))
        with self._lock:
            self._denied[key] = rules
        return [f"{method} {path}" for method, path, _ in rules]

    def clear(self) -> None:
        with self._lock:
            self._denied.clear()

    def report(self) -> dict:
        with self._lock:
            return {key: [f"{m} {p}" for m, p, _ in rules] for key, rules in self._denied.items()}

    def check(self, key: str, method: str, path: str) -> None:
        with self._lock:
            rules = self._denied.get(key) or []
        for rule_method, _, pattern in rules:
            if rule_method in (method, "*") and pattern.match(path):
                resource = path.split("/")[2] if path.count("/") >= 2 else "api"
                access = "read" if method == "GET" else "write"
                permission = f"rak_{_RAK_NAMES.get(resource, resource.rstrip('s'))}_{access}"
                raise StripeError(403, f"The provided key '{redact(key)}' does not have the required permissions "
                                       f"for this endpoint on account '{EMULATOR_ACCOUNT}'. Having the "
                                       f"'{permission}' permission would allow this request to continue.")


# --- API versions of webhook events -------------------------------------------------------------
# https://docs.stripe.com/api/webhook_endpoints/create#create_webhook_endpoint-api_version : "Events
# sent to this endpoint will be generated with this Stripe Version instead of your account's default
# Stripe Version"; https://docs.stripe.com/webhooks/versioning . The emulated account's default is
# older than the SDK's, as on a Stripe account opened before the SDK's release.
DEFAULT_ACCOUNT_API_VERSION = "2024-06-20"
# 2025-03-31.basil: subscription periods moved to the items
# (https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-subscription-current-period-start-and-end),
# the singular coupon/discount left subscriptions
# (https://docs.stripe.com/changelog/basil/2025-03-31/deprecate-singular-coupon-promotion-code), and
# invoices gained `parent` in place of `subscription` / `subscription_details`
# (https://docs.stripe.com/changelog/basil/2025-03-31/adds-new-parent-field-to-invoicing-objects).
BASIL = "2025-03-31"
# 2025-09-30.clover: a discount's coupon moved under `source`
# (https://docs.stripe.com/changelog/clover/2025-09-30/add-discount-source-property).
CLOVER = "2025-09-30"


def known_api_versions() -> tuple[str, ...]:
    from cancel_flow.emulator.params import _hints, params_type

    annotation = _hints(params_type("WebhookEndpointCreateParams"))["api_version"]
    while typing.get_origin(annotation) is not typing.Literal and typing.get_args(annotation):
        annotation = typing.get_args(annotation)[0]
    return typing.get_args(annotation)


def render_event(event: dict, version: str, account) -> dict:
    """The event as an endpoint pinned to `version` receives it."""
    rendered = copy.deepcopy(event)
    rendered["api_version"] = version
    data = rendered.get("data") or {}
    obj, previous = data.get("object"), data.get("previous_attributes")
    if isinstance(obj, dict) and version[:10] < BASIL:
        if obj.get("object") == "subscription":
            _subscription_before_basil(obj, previous, account, version)
        elif obj.get("object") == "invoice":
            _invoice_before_basil(obj, previous)
    return rendered


def _first_period(items) -> tuple | None:
    data = (items or {}).get("data") if isinstance(items, dict) else None
    if not data or not isinstance(data[0], dict):
        return None
    return data[0].get("current_period_start"), data[0].get("current_period_end")


def _discount_object(discount_id, account, version: str):
    if isinstance(discount_id, dict):
        discount_id = discount_id.get("id")
    stored = (getattr(account, "discounts", None) or {}).get(discount_id)
    if stored is None:
        return None
    rendered = copy.deepcopy(public(stored))
    coupon_id = rendered.get("coupon")
    if not isinstance(coupon_id, (str, dict)):
        coupon_id = (rendered.get("source") or {}).get("coupon")
    if isinstance(coupon_id, dict):
        coupon_id = coupon_id.get("id")
    coupon = (getattr(account, "coupons", None) or {}).get(coupon_id)
    rendered["coupon"] = copy.deepcopy(public(coupon)) if coupon else coupon_id
    if version[:10] < CLOVER:
        rendered.pop("source", None)
    return rendered


def _subscription_before_basil(obj: dict, previous: dict | None, account, version: str) -> None:
    period = _first_period(obj.get("items"))
    if period:
        obj["current_period_start"], obj["current_period_end"] = period
    discounts = obj.get("discounts") or []
    obj["discount"] = _discount_object(discounts[0], account, version) if discounts else None
    if not isinstance(previous, dict):
        return
    if "items" in previous:
        before = _first_period(previous["items"])
        if before and before != period:
            previous["current_period_start"], previous["current_period_end"] = before
    if "discounts" in previous:
        earlier = previous["discounts"] or []
        before = _discount_object(earlier[0], account, version) if earlier else None
        if before != obj["discount"]:
            previous["discount"] = before


def _invoice_before_basil(obj: dict, previous: dict | None) -> None:
    parent = obj.pop("parent", None) or {}
    details = parent.get("subscription_details") or {} if isinstance(parent, dict) else {}
    obj["subscription"] = details.get("subscription")
    obj["subscription_details"] = {"metadata": details.get("metadata")} if details else None
    if isinstance(previous, dict):
        previous.pop("parent", None)
