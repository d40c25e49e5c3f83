"""The emulator's HTTP face: `/v1` (Stripe's API), `/_emulator` (controls), `/p` (hosted portal)."""

import asyncio
import json
from collections import deque
import re
import threading
import time
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cancel_flow.emulator import portal
from cancel_flow.emulator.api import Call, find_route
from cancel_flow.emulator.delivery import Deliverer
from cancel_flow.emulator.forms import FormError, decode_form
from cancel_flow.emulator.objects import API_VERSION, new_id
from cancel_flow.emulator.params import ParamError
from cancel_flow.emulator.state import Account, StripeError


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
        self.deliverer = Deliverer()
        self.account.on_event = self.deliverer.enqueue
        self.faults = Faults()
        self.requests: deque[dict] = deque(maxlen=200_000)  # a long demo or benchmark must not grow it forever
        self.idempotency: dict[tuple, tuple] = {}

    def reset(self) -> None:
        with self.account.lock:
            self.account.reset()
            self.deliverer.forget()
            self.faults.clear()
            self.requests.clear()
            self.idempotency.clear()


def _error(error: StripeError, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def _authenticate(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if not header.startswith("Bearer ") or not header[7:].strip():
        raise StripeError(401, "You did not provide an API key. Provide it in the Authorization header (Bearer auth).")
    key = header[7:].strip()
    if not key.startswith(("sk_test_", "rk_test_")):
        raise StripeError(401, f"Invalid API Key provided: {key[:8]}{'*' * 8}. The emulator accepts test keys (sk_test_…) only.",
                          code="api_key_expired" if key.startswith("sk_live_") else None)
    return key


async def stripe_api(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    path, method = request.url.path, request.method
    emulator.requests.append({"method": method, "path": path, "at": time.time()})
    request_id = new_id("req", 14)
    headers = {"Request-Id": request_id, "Stripe-Version": request.headers.get("stripe-version", API_VERSION)}
    fault = emulator.faults.take(method, path)
    if fault:
        if fault.get("hang_seconds"):
            await asyncio.sleep(float(fault["hang_seconds"]))
        else:
            status = int(fault.get("status", 500))
            kind = "api_error" if status >= 500 else "invalid_request_error"
            error = StripeError(status, "Injected fault: the emulator was told to fail this request.",
                                type_=kind, code="rate_limit" if status == 429 else None)
            return _error(error, headers)
    try:
        key = _authenticate(request)
        body = (await request.body()).decode("utf-8", errors="strict")
        pairs = parse_qsl(request.url.query, keep_blank_values=True)
        if method == "POST":
            pairs += parse_qsl(body, keep_blank_values=True)
        params = decode_form(pairs)
    except StripeError as error:
        return _error(error, headers)
    except (FormError, UnicodeDecodeError, ValueError) as error:
        return _error(StripeError(400, f"Invalid request: {error}"), headers)

    idem_key = request.headers.get("idempotency-key") if method in ("POST", "DELETE") else None
    fingerprint = (method, path, json.dumps(params, sort_keys=True))
    base_url = str(request.base_url).rstrip("/")
    with emulator.account.lock:
        if idem_key:
            headers["Idempotency-Key"] = idem_key
            cached = emulator.idempotency.get((key, idem_key))
            if cached:
                if cached[0] != fingerprint:
                    error = StripeError(400, "Keys for idempotent requests can only be used with the same parameters "
                                             f"they were first used with. Try using a key other than '{idem_key}' if you "
                                             "meant to execute a different request.", type_="idempotency_error")
                    return _error(error, headers)
                return Response(cached[2], status_code=cached[1], media_type="application/json",
                                headers={**headers, "Idempotent-Replayed": "true", "Original-Request": cached[3]})
        try:
            handler, ids = find_route(method, path)
            result = handler(Call(emulator.account, params, ids, idem_key, base_url))
            status, content = 200, json.dumps(result, indent=2)
        except ParamError as error:
            return _error(StripeError(400, str(error), code=error.code, param=error.param), headers)
        except StripeError as error:
            if error.status != 402:
                return _error(error, headers)
            status, content = error.status, json.dumps(error.body())
        if idem_key:
            emulator.idempotency[(key, idem_key)] = (fingerprint, status, content, request_id)
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
        else:
            clean["status"] = int(rule.get("status", 500))
        if clean["count"] < 1 or not clean["path"].startswith("/"):
            raise ValueError
    except (ValueError, KeyError, TypeError, AttributeError):
        return JSONResponse({"error": {"message": 'Send {"method", "path", "status" or "hang_seconds", "count"}.'}}, status_code=400)
    emulator.faults.add(clean)
    return JSONResponse(clean, status_code=201)


async def request_log(request: Request) -> Response:
    return JSONResponse(list(request.app.state.emulator.requests))


async def delivery_log(request: Request) -> Response:
    return JSONResponse(list(request.app.state.emulator.deliverer.attempts))


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
        *portal.routes,
    ])
    app.state.emulator = Emulator()
    return app
