"""`/api/…`: JSON for apps and no-code automations, behind `Authorization: Bearer <key>`."""

import json
from dataclasses import asdict
from datetime import date, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cancel_flow.clock import utc_now
from cancel_flow.errors import BadRequest, NotFound, StripeUnavailable
from cancel_flow.minting import mint_for
from cancel_flow.store.stats import DateRange, day_start
from cancel_flow.web.openapi import openapi_document

MAX_BODY = 4096


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _authorized(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip() or len(key) > 200:
        return False
    return request.app.state.api_keys.check(key.strip()) is not None


def _needs_key(endpoint):
    async def guarded(request: Request) -> Response:
        if not _authorized(request):
            return error(401, "unauthorized", "Send a valid API key as 'Authorization: Bearer <key>' (cancel-flow api-key create NAME).")
        return await endpoint(request)
    return guarded


def _stripe_id(body: dict, key: str, prefix: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(prefix) or not 4 <= len(value) <= 255 or not value.replace("_", "").isalnum():
        raise ValueError(f"'{key}' must be a Stripe id starting with {prefix}")
    return value


async def create_links(request: Request) -> Response:
    raw = await request.body()
    try:
        body = json.loads(raw) if len(raw) <= MAX_BODY else None
        if not isinstance(body, dict):
            raise ValueError('The body must be a JSON object like {"customer": "cus_…"} or {"email": "…"}')
        unknown = set(body) - {"customer", "email", "subscription"}
        if unknown:
            raise ValueError(f"Unknown field '{sorted(unknown)[0]}'; allowed: customer, email, subscription")
        customer = _stripe_id(body, "customer", "cus_")
        subscription = _stripe_id(body, "subscription", "sub_")
        email = body.get("email")
        if email is not None and (not isinstance(email, str) or "@" not in email or len(email) > 320):
            raise ValueError("'email' must be an email address")
        if (customer is None) == (email is None):
            raise ValueError("Send exactly one of 'customer' or 'email'")
    except (ValueError, UnicodeDecodeError) as problem:
        message = str(problem) if not isinstance(problem, json.JSONDecodeError) else "The body is not valid JSON"
        return error(422, "invalid_body", message)
    state = request.app.state
    try:
        minted = await mint_for(state.gateway, state.signer, state.settings.base_url, customer=customer,
                                email=email, subscription=subscription)
    except NotFound as missing:
        return error(404, "not_found", missing.message)
    except BadRequest as several:
        return error(422, "subscription_required", several.message)
    except StripeUnavailable as down:
        return error(503, "stripe_unavailable", down.message)
    return JSONResponse({"cancel_url": minted.cancel_url, "billing_url": minted.billing_url,
                         "expires_at": minted.expires_at.isoformat(timespec="seconds"),
                         "customer": minted.customer, "subscription": minted.subscription}, status_code=201)


async def stats(request: Request) -> Response:
    query = request.query_params
    today = utc_now().date()
    try:
        first = date.fromisoformat(query["from"]) if query.get("from") else today - timedelta(days=29)
        last = date.fromisoformat(query["to"]) if query.get("to") else today
    except ValueError:
        return error(422, "invalid_query", "Dates must look like 2026-11-24.")
    if first > last or (last - first).days > 3660:
        return error(422, "invalid_query", "'from' must not be after 'to', and the range must be at most ten years.")
    period = DateRange(day_start(first), day_start(last + timedelta(days=1)))
    numbers = await run_in_threadpool(request.app.state.stats.stats, period)
    body = asdict(numbers)
    body["mrr_saved"] = [{"currency": c, "amount": a} for c, a in numbers.mrr_saved]
    body["discount_cost"] = [{"currency": c, "amount": a} for c, a in numbers.discount_cost]
    body["weekly"] = [{**week, "week": week["week"].isoformat()} for week in numbers.weekly]
    body["from"], body["to"] = first.isoformat(), last.isoformat()
    return JSONResponse(body)


async def openapi(request: Request) -> Response:
    return JSONResponse(openapi_document(request.app.state.settings.base_url))


routes = [
    Route("/api/links", _needs_key(create_links), methods=["POST"]),
    Route("/api/stats", _needs_key(stats), methods=["GET"]),
    Route("/api/openapi.json", _needs_key(openapi), methods=["GET"]),
]
