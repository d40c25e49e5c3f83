"""The emulator's HTTP face: `/v1` (Stripe's API), `/_emulator` (controls), `/p` (hosted portal)."""

import asyncio
import base64
import binascii
import json
from collections import deque
import re
import threading
import time
import traceback
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cancel_flow.emulator import checkout, hosted, portal, rules
from cancel_flow.emulator.api import Call, find_route
from cancel_flow.emulator.delivery import Deliverer
from cancel_flow.emulator.forms import FormError, decode_form
from cancel_flow.emulator.objects import API_VERSION, new_id
from cancel_flow.emulator.params import ParamError
from cancel_flow.emulator.state import Account
try:
    from cancel_flow.emulator.errors import StripeError
except ImportError:  # before errors.py existed
    from cancel_flow.emulator.state import StripeError


class Faults:
    """Injected failures: the next `count` requests matching method and path fail or hang."""

    def __init__(self):
        self._rules: list[dict] = []
        self._lock = threading.Lock()

    def add(self, rule: dict) -> None:
        pattern = "/".join("[^/]+(?:/[^/]+)*" if part == "*" else re.escape(part) for part in rule["path"].split("/"))
        with self._lock:
            self._rules.append({**rule, "regex": re.compile(f"^{pattern}$")})

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str) -> dict | None:
        with self._lock:
            for rule in self._rules:
                if rule["method"] in (method, "*") and rule["regex"].match(path):
                    rule["count"] -= 1
                    if rule["count"] <= 0:
                        self._rules.remove(rule)
                    return rule
        return None


class Emulator:
    def __init__(self):
        self.account = Account()
        self.deliverer = Deliverer(on_delivered=self._delivered, on_failed=self._delivery_failed)
        self.running: set = set()  # requests executing, kept until they finish
        self.account.on_event = self._deliver
        self.faults = Faults()
        self.requests: deque[dict] = deque(maxlen=200_000)  # a long demo or benchmark must not grow it forever
        self.idempotency = rules.Idempotency()
        # Configuration, kept by DELETE /_emulator/data (which forgets objects, not settings):
        self.limits = rules.RateLimiter()
        self.permissions = rules.KeyPermissions()
        self.locks = rules.ObjectLocks()
        self.default_api_version = rules.DEFAULT_ACCOUNT_API_VERSION

    def _delivered(self, event_id: str) -> None:
        with self.account.lock:
            event = self.account.events.get(event_id)
            if event is not None and event.get("pending_webhooks", 0) > 0:
                event["pending_webhooks"] -= 1

    def _delivery_failed(self, event_id: str) -> None:
        with self.account.lock:
            event = self.account.events.get(event_id)
            if event is not None:
                event["_delivery_failed"] = True

    def _deliver(self, event: dict, endpoint: dict) -> None:
        """Each endpoint gets the event in its own API version, else the account's default."""
        version = endpoint.get("api_version") or self.default_api_version
        self.deliverer.enqueue(rules.render_event(event, version, self.account), endpoint)

    def reset(self) -> None:
        with self.account.lock:
            self.account.reset()
            self.deliverer.forget()
            self.faults.clear()
            self.requests.clear()
            self.idempotency.clear()


def _error(error: StripeError, headers: dict | None = None) -> JSONResponse:
    if error.code == "lock_timeout":
        headers = {**(headers or {}), **rules.LOCK_TIMEOUT_HEADERS}
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _key_of(header: str) -> str:
    """The API key of an Authorization header: HTTP Basic with the key as the user name (`curl -u sk_test_…:`), or
    Bearer (https://docs.stripe.com/api/authentication)."""
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0].strip()
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return ""


def _authenticate(request: Request) -> str:
    key = _key_of(request.headers.get("authorization", ""))
    if not key:
        raise StripeError(401, "You did not provide an API key. You need to provide your API key in the Authorization "
                               "header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'), or as the "
                               "user name of HTTP Basic auth (e.g. 'curl -u YOUR_SECRET_KEY:').")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 8}. The emulator accepts test keys (sk_test_…) only.",
                          code="api_key_expired" if key.startswith("sk_live_") else None)
    return key


def _fault_error(fault: dict) -> StripeError:
    status, code = int(fault.get("status", 500)), fault.get("code")
    if code == "lock_timeout":
        return rules.lock_timeout()
    if code == "rate_limit" or (status == 429 and not code):
        return StripeError(429, rules.RATE_LIMIT_MESSAGE, code="rate_limit")
    kind = "api_error" if status >= 500 else "invalid_request_error"
    return StripeError(status, "Injected fault: the emulator was told to fail this request.", type_=kind, code=code)


async def stripe_api(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    path, method = request.url.path, request.method
    emulator.requests.append({"method": method, "path": path, "at": time.time()})
    request_id = new_id("req", 14)
    headers = {"Request-Id": request_id, "Stripe-Version": request.headers.get("stripe-version", API_VERSION)}
    fault = emulator.faults.take(method, path)
    if fault and not fault.get("slow_seconds"):
        # Injected failures stand for failures before Stripe executed anything: nothing is stored.
        if not fault.get("hang_seconds"):
            return _error(_fault_error(fault), headers)
        await asyncio.sleep(float(fault["hang_seconds"]))
    # Validation: none of these failures stores an idempotent result.
    try:
        key = _authenticate(request)
        handler, ids = find_route(method, path)
        emulator.limits.admit(method, path, handler)
        emulator.permissions.check(key, method, path)
        body = (await request.body()).decode("utf-8", errors="strict")
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if method == "POST":
            pairs += parse_qsl(body, keep_blank_values=True)
        params = decode_form(pairs)
        rules.check_expand(params)
        rules.check_required(method, path, params)
        idem_key = request.headers.get("idempotency-key") if method == "POST" else None
        if idem_key is not None:
            rules.check_idempotency_key(idem_key)
    except StripeError as error:
        return _error(error, headers)
    except (FormError, UnicodeDecodeError, ValueError) as error:
        return _error(StripeError(400, f"Invalid request: {error}"), headers)

    base_url = str(request.base_url).rstrip("/")
    write_target = rules.object_key(path, ids) if method in ("POST", "DELETE") else None
    if idem_key is not None:
        headers["Idempotency-Key"] = idem_key
        fingerprint = (method, path, json.dumps(params, sort_keys=True))
        try:
            stored = emulator.idempotency.begin(key, idem_key, fingerprint, emulator.account.now())
        except StripeError as error:
            return _error(error, headers)
        if stored is not None:
            return Response(stored["content"], status_code=stored["status"], media_type="application/json",
                            headers={**headers, "Idempotent-Replayed": "true", "Original-Request": stored["request_id"]})
    async def execute() -> tuple[int, str]:
        status, content, store = 500, "", True
        try:
            if write_target and fault and fault.get("slow_seconds"):
                # The request has begun executing and holds its object (and its idempotency key) a while.
                emulator.locks.acquire(write_target)
                try:
                    await asyncio.sleep(float(fault["slow_seconds"]))
                finally:
                    emulator.locks.release(write_target)
            elif write_target and emulator.locks.held(write_target):
                raise rules.lock_timeout()
            elif fault and fault.get("slow_seconds"):
                await asyncio.sleep(float(fault["slow_seconds"]))
            with emulator.account.lock:
                emulator.account.base_url = base_url
                result = handler(Call(emulator.account, params, ids, idem_key, base_url))
            status, content = 200, json.dumps(result, indent=2)
        except ParamError as error:
            store = False
            error = StripeError(400, str(error), code=error.code, param=error.param)
            status, content = error.status, json.dumps(error.body())
        except StripeError as error:
            # Stripe stores what an executing request answered, 4xx included, except parameter
            # validation and lock timeouts (a conflict with a concurrent request: nothing executed).
            store = not rules.is_validation_error(error) and error.code != "lock_timeout"
            if error.code == "lock_timeout":
                headers.update(rules.LOCK_TIMEOUT_HEADERS)
            status, content = error.status, json.dumps(error.body())
        except Exception:  # an emulator bug: answered and stored as Stripe's 500
            traceback.print_exc()
            status, content = 500, json.dumps(StripeError(500, "An unknown error occurred", type_="api_error").body())
        if idem_key is not None:
            if store:
                emulator.idempotency.finish(key, idem_key, status, content, request_id, emulator.account.now())
            else:
                emulator.idempotency.abandon(key, idem_key)
        return status, content

    # A request that began executing finishes at Stripe even when its caller gives up waiting (a
    # timeout, a dropped connection): its result is applied and stored under its idempotency key
    # (https://docs.stripe.com/api/idempotent_requests). Shielded, the work outlives the caller.
    task = asyncio.ensure_future(execute())
    emulator.running.add(task)
    task.add_done_callback(emulator.running.discard)
    status, content = await asyncio.shield(task)
    return Response(content, status_code=status, media_type="application/json", headers=headers)


async def advance_clock(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    try:
        seconds = int((await request.json())["seconds"])
        if seconds < 0:
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": {"message": 'Send {"seconds": N} with N >= 0.'}}, status_code=400)
    with emulator.account.lock:
        emulator.account.base_url = str(request.base_url).rstrip("/")
        now = emulator.account.advance(seconds)
    return JSONResponse({"now": now})


async def read_clock(request: Request) -> Response:
    return JSONResponse({"now": request.app.state.emulator.account.now()})


async def faults(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    if request.method == "DELETE":
        emulator.faults.clear()
        return JSONResponse({"faults": []})
    try:
        rule = await request.json()
        clean = {"method": str(rule.get("method", "*")).upper(), "path": str(rule["path"]),
                 "count": int(rule.get("count", 1))}
        if "hang_seconds" in rule:
            clean["hang_seconds"] = float(rule["hang_seconds"])
        elif "slow_seconds" in rule:
            clean["slow_seconds"] = float(rule["slow_seconds"])
        else:
            clean["status"] = int(rule.get("status", 500))
            if rule.get("code") is not None:
                clean["code"] = str(rule["code"])
            if clean.get("code") == "lock_timeout":
                clean["status"] = 429
        if clean["count"] < 1 or not clean["path"].startswith("/"):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        return JSONResponse({"error": {"message": 'Send {"method", "path", "status" (and "code") or "hang_seconds" or "slow_seconds", "count"}.'}}, status_code=400)
    emulator.faults.add(clean)
    return JSONResponse(clean, status_code=201)


async def request_log(request: Request) -> Response:
    return JSONResponse(list(request.app.state.emulator.requests))


async def delivery_log(request: Request) -> Response:
    return JSONResponse(list(request.app.state.emulator.deliverer.attempts))


async def limits(request: Request) -> Response:
    """Stripe's rate limit (https://docs.stripe.com/rate-limits), off until set; `null` turns it off."""
    emulator: Emulator = request.app.state.emulator
    if request.method == "POST":
        try:
            body = await request.json()
            value = body["requests_per_second"]
            if value is not None:
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"message": 'Send {"requests_per_second": N} with N >= 1, or null for no limit.'}},
                                status_code=400)
        emulator.limits.configure(value)
    return JSONResponse(emulator.limits.report())


async def keys(request: Request) -> Response:
    """Restricted keys lacking permissions: {"key": "rk_test_…", "deny": ["POST /v1/billing_portal/sessions"]}."""
    emulator: Emulator = request.app.state.emulator
    if request.method == "DELETE":
        emulator.permissions.clear()
    elif request.method == "POST":
        try:
            body = await request.json()
            key, deny = body["key"], body.get("deny", [])
            if not isinstance(key, str) or not key.startswith(("rk_test_", "sk_test_")) or not isinstance(deny, list) \
                    or not all(isinstance(entry, str) for entry in deny):
                raise ValueError
            emulator.permissions.set(key, deny)
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": {"message": 'Send {"key": "rk_test_…", "deny": ["METHOD /v1/path", …]}.'}},
                                status_code=400)
    return JSONResponse({"keys": emulator.permissions.report()})


async def account_settings(request: Request) -> Response:
    """The account's default API version, in which events reach endpoints created without one, and its country
    (GET /v1/account; back to US when the data is reset)."""
    emulator: Emulator = request.app.state.emulator
    if request.method == "POST":
        try:
            body = await request.json()
            if not isinstance(body, dict) or not ({"default_api_version", "country"} & set(body)):
                raise ValueError
            version = body.get("default_api_version", emulator.default_api_version)
            country = body.get("country", emulator.account.country)
            if version not in rules.known_api_versions() or not isinstance(country, str) \
                    or not re.fullmatch(r"[A-Z]{2}", country):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": {"message": "Send {\"default_api_version\": V} with V one of Stripe's API "
                                                      "versions (as the SDK lists them), and/or {\"country\": \"DE\"} "
                                                      "(two capital letters)."}}, status_code=400)
        emulator.default_api_version = version
        with emulator.account.lock:
            emulator.account.country = country
    return JSONResponse({"id": rules.EMULATOR_ACCOUNT, "default_api_version": emulator.default_api_version,
                         "country": emulator.account.country})


async def customer_discount(request: Request) -> Response:
    """A customer-level discount (legacy: the API no longer takes `coupon` on customers): {"coupon": "ID"}."""
    emulator: Emulator = request.app.state.emulator
    try:
        coupon = (await request.json())["coupon"]
        if not isinstance(coupon, str):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        return JSONResponse({"error": {"message": 'Send {"coupon": "ID"}.'}}, status_code=400)
    try:
        with emulator.account.lock:
            discount = emulator.account.set_customer_discount(request.path_params["customer"], coupon)
            return JSONResponse(emulator.account.render("discounts", discount), status_code=201)
    except StripeError as error:
        return _error(error)


async def retries(request: Request) -> Response:
    """Stripe's automatic retries of failed renewals: {"days": [3, 5, 7], "then": "cancel"} (days after the previous
    attempt; `then`: cancel, unpaid or past_due; {"days": []}: none). On by default; DELETE /_emulator/data
    restores the default."""
    emulator: Emulator = request.app.state.emulator
    if request.method == "POST":
        try:
            body = await request.json()
            days, then = body["days"], body.get("then", "cancel")
            if not isinstance(days, list) or len(days) > 8 or not all(
                    isinstance(d, (int, float)) and not isinstance(d, bool) and 0 < d <= 60 for d in days) \
                    or then not in ("cancel", "unpaid", "past_due"):
                raise ValueError
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": {"message": 'Send {"days": [3, 5, 7], "then": "cancel"} (up to 8 retries of '
                                                      '1 to 60 days each; then: cancel, unpaid or past_due).'}},
                                status_code=400)
        with emulator.account.lock:
            emulator.account.retries = {"days": list(days), "then": then}
    return JSONResponse(emulator.account.retries)


async def dashboard_portal_settings(request: Request) -> Response:
    """Stands for saving the customer portal settings in Stripe's Dashboard, which makes the account's default
    configuration (the body: the configuration's `features`, optional)."""
    emulator: Emulator = request.app.state.emulator
    try:
        body = await request.json() if (await request.body()) else {}
        if not isinstance(body, dict):
            raise ValueError
    except ValueError:
        return JSONResponse({"error": {"message": 'Send {} or {"features": {…}} as a portal configuration takes it.'}},
                            status_code=400)
    with emulator.account.lock:
        config = emulator.account.save_dashboard_portal_settings({"features": body.get("features") or {},
                                                                  "business_profile": {"headline": body.get("headline")}})
        return JSONResponse(emulator.account.render("portal_configurations", config))


async def reset_data(request: Request) -> Response:
    request.app.state.emulator.reset()
    return JSONResponse({"deleted": True})


def create_emulator_app() -> Starlette:
    app = Starlette(routes=[
        Route("/v1/{path:path}", stripe_api, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/clock/advance", advance_clock, methods=["POST"]),
        Route("/_emulator/clock", read_clock, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["POST", "DELETE"]),
        Route("/_emulator/requests", request_log, methods=["GET"]),
        Route("/_emulator/deliveries", delivery_log, methods=["GET"]),
        Route("/_emulator/data", reset_data, methods=["DELETE"]),
        Route("/_emulator/customers/{customer}/discount", customer_discount, methods=["POST"]),
        Route("/_emulator/retries", retries, methods=["GET", "POST"]),
        Route("/_emulator/portal_settings", dashboard_portal_settings, methods=["POST"]),
        Route("/_emulator/limits", limits, methods=["GET", "POST"]),
        Route("/_emulator/keys", keys, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/account", account_settings, methods=["GET", "POST"]),
        *portal.routes,
        *hosted.routes,
        *checkout.routes,
    ])
    app.state.emulator = Emulator()
    return app
