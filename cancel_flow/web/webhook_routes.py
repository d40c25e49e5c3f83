"""`POST /webhooks/stripe`: verified, stored once, applied idempotently and in order."""

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import stripe
from starlette.concurrency import run_in_threadpool

from cancel_flow.clock import from_unix
from cancel_flow.errors import StripeUnavailable
from cancel_flow.flow import ACTIVE
from cancel_flow.logs import log_event
from cancel_flow.stripe_gateway import WebhookRefused, invoice_from_event, state_from_event, verify_webhook


FRESH_ENOUGH = 1.0  # seconds: a refusal with an older copy of the secrets asks the database once more


async def _verified(request: Request, payload: bytes) -> dict:
    """The event, verified against the signing secrets in use (STRIPE_WEBHOOK_SECRET, else the stored ones, read
    through the worker's copy); a refusal with a copy older than a second is tried once more with a fresh one,
    so a secret stored by another worker a moment ago already works."""
    connection, signature = request.app.state.stripe_connection, request.headers.get("stripe-signature")
    try:
        return verify_webhook(payload, signature, (await connection.current()).webhook_secrets)
    except WebhookRefused as refused:
        if refused.status != 401 or connection.age() < FRESH_ENOUGH:
            raise
    return verify_webhook(payload, signature, (await connection.current(max_age=FRESH_ENOUGH)).webhook_secrets)


async def stripe_webhook(request: Request) -> Response:
    payload = await request.body()
    try:
        event = await _verified(request, payload)
    except WebhookRefused as refused:
        log_event("webhook.refused", status=refused.status)
        return JSONResponse({"error": {"code": "webhook_refused", "message": refused.message}}, status_code=refused.status)
    try:
        state, invoice = state_from_event(event), invoice_from_event(event)
    except WebhookRefused as refused:
        log_event("webhook.refused", status=refused.status, type=event["type"])
        return JSONResponse({"error": {"code": "webhook_refused", "message": refused.message}}, status_code=refused.status)
    if event["type"] in WINBACK_EVENTS:
        handled = await _winback(request, event)
        if state is None and invoice is None:
            return JSONResponse({"received": True, "handled": handled})
    if state is None and invoice is None:
        return JSONResponse({"received": True, "handled": False})
    # One short transaction, off the event loop: a locked table must not stall the worker.
    stored = await run_in_threadpool(request.app.state.store.record_stripe_event,
        event["id"], event["type"], int(event.get("created") or 0), payload.decode("utf-8"), state, invoice)
    log_event("webhook.received", event_id=event["id"], type=event["type"],
              subscription=state.subscription_id if state else invoice["subscription_id"], duplicate=not stored)
    if stored and state is not None and state.stage != ACTIVE and not state.feedback:
        await _report_reason(request, state.subscription_id)
    return JSONResponse({"received": True, "handled": True, "duplicate": not stored})


# Win-back: a subscription that ended is a client who left (its comeback steps); a completed comeback checkout is
# the client back (https://docs.stripe.com/payments/checkout/fulfill-orders: the webhook, not the success page,
# is what a fulfilment relies on).
WINBACK_EVENTS = ("customer.subscription.deleted", "checkout.session.completed")


async def _winback(request: Request, event: dict) -> bool:
    """Both are recorded once whatever Stripe repeats (the rows are keyed by subscription), so they are applied on
    every delivery: one that failed after the event was stored is applied by Stripe's retry."""
    service = request.app.state.winback
    if event["type"] == "customer.subscription.deleted":
        await run_in_threadpool(service.subscription_ended, event)
        return True
    session = (event.get("data") or {}).get("object") or {}
    if not isinstance(session, dict) or session.get("object") != "checkout.session":
        return False
    created = event.get("created")
    at = from_unix(created) if isinstance(created, int) and created > 0 else None
    return await run_in_threadpool(service.checkout_completed, session, at)


async def _report_reason(request: Request, subscription_id: str) -> None:
    """The reason asked on our page reaches Stripe's cancellation_details (the portal doesn't ask it again)."""
    given = await run_in_threadpool(request.app.state.store.reason_to_report, subscription_id)
    if given is None:
        return
    try:
        await request.app.state.gateway.record_cancellation_details(subscription_id, *given)
    except (StripeUnavailable, stripe.StripeError) as error:
        log_event("stripe.cancellation_details_failed", subscription=subscription_id, error=type(error).__name__)


routes = [Route("/webhooks/stripe", stripe_webhook, methods=["POST"])]
