"""REST hooks for Zapier and Make (`/api/hooks…`, API key) and the coach's deliveries page (login)."""

from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import Field, RootModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.clock import as_utc
from cancel_flow.errors import BadRequest
from cancel_flow.hooks import EVENTS, MAX_URL, sample_event
from cancel_flow.outbox import queue
from cancel_flow.outbox.endpoints import add_endpoint, list_endpoints, remove_endpoint
from cancel_flow.web.api_models import Answer, Body, Query
from cancel_flow.store.audit import endpoint_words, record_audit
from cancel_flow.web.coach_auth import client_address, signed_in_coach, to_login
from cancel_flow.web.dates import whole_number
from cancel_flow.web.openapi import API_KEY, ApiError, ApiRoute
from cancel_flow.web.pages import csrf_token, read_form, render

PAGE_SIZE = 100
STATUS_LABELS = {"pending": "Waiting to retry", "delivering": "Sending", "delivered": "Delivered", "failed": "Failed"}
EventType = Literal[tuple(EVENTS)]
_EVENT = Field(description=f"one of {', '.join(EVENTS)}")


class HookSubscription(Body):
    target_url: str = Field(max_length=MAX_URL, description="the URL that receives the events, https://…")
    event: EventType = _EVENT


class Hook(Answer):
    id: str = Field(description="for DELETE /api/hooks/{id}")
    secret: str = Field(description="whsec_…: verifies each delivery's webhook-signature (Standard Webhooks)")


class HookPath(Query):
    hook_id: str = Field(max_length=32, description="a hook id from POST /api/hooks")


class SampleQuery(Query):
    event: EventType = _EVENT


class Event(Answer):
    """What each delivery's body holds (also signed: webhook-id, webhook-timestamp, webhook-signature)."""
    id: str = Field(description="the event id, equal to the webhook-id header; the same on every retry")
    type: EventType
    timestamp: str = Field(description="when it happened (ISO 8601, UTC)")
    data: dict[str, Any] = Field(description="customer {id, email, name, stripe_url}, subscription, plan, "
                                             "monthly_amount, currency, reason, comment, and offer/session or invoice")


class Samples(RootModel[list[Event]]):
    pass


async def subscribe(request: Request, body: HookSubscription) -> Hook:
    """Zapier's and Make's subscribe call: one endpoint per Zap, for one event."""
    state = request.app.state
    try:
        endpoint = await run_in_threadpool(add_endpoint, state.store.engine, body.target_url, [body.event],
                                           source="api", allow_private=state.settings.allow_private_urls)
    except BadRequest as refused:
        raise ApiError(422, "invalid_target_url", refused.message) from None
    await run_in_threadpool(record_audit, state.store.engine, "webhook_endpoint.added",
                            endpoint_words(endpoint.id, body.target_url, [body.event]) + " as a REST hook", **_key_holder(request))
    return Hook(id=endpoint.id, secret=endpoint.secret)


def _key_holder(request: Request) -> dict:
    """The audit row's actor and address for a request made with an API key."""
    return {"actor": f"API key '{request.scope[API_KEY].name}'", "address": client_address(request)}


async def unsubscribe(request: Request, path: HookPath) -> None:
    if not await run_in_threadpool(remove_endpoint, request.app.state.store.engine, path.hook_id):
        raise ApiError(404, "not_found", "No hook with that id.")
    await run_in_threadpool(record_audit, request.app.state.store.engine, "webhook_endpoint.removed",
                            f"{path.hook_id} (REST hook unsubscribed)", **_key_holder(request))


async def sample(request: Request, query: SampleQuery) -> Samples:
    """A list with one example event, as Zapier's set-up screen expects."""
    return Samples.model_validate([sample_event(query.event)])


def _row_id(text: str) -> int | None:
    """A delivery's id as the address gives it, within the id column's range (a 32-bit integer)."""
    return whole_number(text, 1, 2**31 - 1)


async def deliveries_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    before = request.query_params.get("before")
    if before is not None and _row_id(before) is None:
        raise BadRequest("The page must be a number.")
    engine = request.app.state.store.engine
    rows = await run_in_threadpool(queue.recent_deliveries, engine, PAGE_SIZE, int(before) if before else None)
    hooks = await run_in_threadpool(list_endpoints, engine)
    settings = request.app.state.settings
    csrf = csrf_token(settings.secret_key, f"coach|{coach.session_key}")
    zone = ZoneInfo(settings.timezone)

    def local(moment) -> str:
        return as_utc(moment).astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if moment else ""

    return render(request, "deliveries.html", coach=coach, csrf=csrf, deliveries=rows, endpoints=hooks, local=local,
                  zone=settings.timezone,
                  labels=STATUS_LABELS, resent=request.query_params.get("resent"),
                  older=rows[-1].id if len(rows) == PAGE_SIZE else None)


async def resend(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    await read_form(request, csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}"))
    delivery_id = _row_id(str(request.path_params["delivery_id"]))
    new_id = delivery_id and await run_in_threadpool(queue.resend, request.app.state.store.engine, delivery_id)
    if new_id is None:
        raise BadRequest("That delivery can't be sent again: it, or its webhook endpoint, no longer exists.")
    await run_in_threadpool(record_audit, request.app.state.store.engine, "webhook_delivery.resent",
                            f"delivery {delivery_id} sent again as {new_id}", actor=coach.email,
                            address=client_address(request))
    return RedirectResponse(f"/dashboard/deliveries?resent={new_id}", status_code=303)


routes = [
    ApiRoute("/api/hooks", subscribe, method="POST", scope="hooks", body=HookSubscription, status=201, answer=Hook,
             summary="Subscribe a URL to an event (REST hook, as Zapier and Make do)", operation_id="subscribeHook",
             description="Subscribed; deliveries are signed with the secret (Standard Webhooks)",
             errors={422: "Malformed body, unknown event, or a URL that can't receive webhooks (not http(s), or a private address)"}),
    ApiRoute("/api/hooks/sample", sample, method="GET", scope="hooks", query=SampleQuery, answer=Samples,
             summary="A sample of an event, as a list of one (for Zapier's and Make's set-up screens)",
             operation_id="sampleHookEvent", description="A list with one sample event"),
    ApiRoute("/api/hooks/{hook_id}", unsubscribe, method="DELETE", scope="hooks", path_params=HookPath, status=204, answer=None,
             summary="Unsubscribe (REST hook)", operation_id="unsubscribeHook", description="Unsubscribed",
             errors={404: "No hook with that id"}),
    Route("/dashboard/deliveries", deliveries_page, methods=["GET"]),
    Route("/dashboard/deliveries/{delivery_id:int}/resend", resend, methods=["POST"]),
]
