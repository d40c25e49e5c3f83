"""`/dashboard/integrations`: the shared link to paste anywhere, API keys, outgoing webhooks and clients' own links.
Everyone signed in sees the shared link; editors find clients' links; owners manage keys and webhooks."""

import csv
import io
import secrets

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cancel_flow.clock import utc_now
from cancel_flow.errors import BadRequest, StripeUnavailable
from cancel_flow.hooks import EVENTS
from cancel_flow.minting import EXPORT_HEADER, export_rows, links_for_email
from cancel_flow.outbox.endpoints import (add_endpoint, check_events, list_endpoints, recent_deliveries_of,
                                          remove_endpoint, send_test_event)
from cancel_flow.store.api_keys import DEFAULT_SCOPES, SCOPES, check_scopes, scopes_of
from cancel_flow.store.audit import endpoint_words, record_audit
from cancel_flow.web.access import EDITOR, OWNER, allows
from cancel_flow.web.coach_auth import signed_in_coach
from cancel_flow.web.dashboard_routes import local_clock
from cancel_flow.web.hook_routes import STATUS_LABELS
from cancel_flow.web.pages import read_form, render
from cancel_flow.web.team_routes import coach_csrf, valid_email, who

SCOPE_WORDS = {"links": "mint cancel and billing links (POST /api/links)", "stats": "read the numbers (GET /api/stats)",
               "hooks": "subscribe Zapier and Make to events (/api/hooks)",
               "config": "read and change the configuration (/api/config)"}
SOURCE_WORDS = {"cli": "command line", "api": "REST hook (Zapier or Make)", "web": "this page"}
EXPORT_DAYS = (1, 7, 14, 30, 90)
NOTICES = {"revoked": "Key revoked: it stops working at once.", "removed": "Webhook removed; nothing more goes to it.",
           "tested": "Test event queued: it goes out within a few seconds; its answer appears below."}


async def _page(request: Request, status_code: int = 200, **context) -> Response:
    coach = await signed_in_coach(request)
    state = request.app.state
    owner = allows(coach.role, OWNER)
    keys = endpoints = []
    recent = {}
    if owner:
        keys = await run_in_threadpool(state.api_keys.all)
        endpoints = await run_in_threadpool(list_endpoints, state.store.engine)
        recent = await run_in_threadpool(recent_deliveries_of, state.store.engine, [e.id for e in endpoints])
    base_url = state.settings.base_url
    return render(request, "integrations.html", status_code, coach=coach, csrf=coach_csrf(request, coach),
                  shared_link=f"{base_url}/", api_url=f"{base_url}/api/links", owner=owner,
                  editor=allows(coach.role, EDITOR), keys=keys, scopes_of=scopes_of, scopes=SCOPES,
                  default_scopes=DEFAULT_SCOPES, scope_words=SCOPE_WORDS, endpoints=endpoints, recent=recent,
                  events=EVENTS, source_words=SOURCE_WORDS, status_labels=STATUS_LABELS, export_days=EXPORT_DAYS,
                  local=local_clock(state.settings.timezone), zone=state.settings.timezone,
                  notice=NOTICES.get(request.query_params.get("done", "")), **context)


async def integrations_page(request: Request) -> Response:
    return await _page(request)


# --- clients' links ---------------------------------------------------------------------------------

async def client_links(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    email = (fields.get("email") or "").strip()
    if not valid_email(email):
        return await _page(request, 400, links_error="Enter the client's email address.", links_email=email[:320])
    state = request.app.state
    try:
        found = await links_for_email(state.gateway, state.signer, state.settings.base_url, email)
    except StripeUnavailable as down:
        return await _page(request, 503, links_error=down.message, links_email=email)
    return await _page(request, links_email=email, found_links=found, links_looked_up=True)


async def links_csv(request: Request) -> Response:
    days = request.query_params.get("days") or "14"
    if days not in {str(d) for d in EXPORT_DAYS}:
        raise BadRequest(f"The links can stay valid for {', '.join(map(str, EXPORT_DAYS))} days.")
    state = request.app.state

    async def lines():
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        buffer.write("\ufeff")
        writer.writerow(EXPORT_HEADER)
        async for row in export_rows(state.gateway, state.signer, state.settings.base_url, int(days) * 86400):
            writer.writerow(row)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()

    name = f"client-links-{utc_now().date().isoformat()}.csv"
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


# --- API keys (owners) --------------------------------------------------------------------------------

async def create_key(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    form = await request.form()  # read (and checked) by read_form: the list fields from the same form
    name = (fields.get("name") or "").strip()
    try:
        scopes = check_scopes([value for value in form.getlist("scope") if isinstance(value, str)])
    except ValueError as unknown:
        return await _page(request, 400, key_error=str(unknown), key_name=name[:100])
    if not name or len(name) > 100:
        return await _page(request, 400, key_error="Name the key (up to 100 characters), e.g. the app that uses it.",
                           key_name=name[:100])
    if not scopes:
        return await _page(request, 400, key_error="Tick at least one thing the key may do.", key_name=name)
    key = "cfk_" + secrets.token_urlsafe(32)

    def audited(connection):
        record_audit(connection, "api_key.created", f"'{name}' with scopes {', '.join(scopes)}", **who(request, coach))

    if not await run_in_threadpool(lambda: request.app.state.api_keys.add(name, key, scopes, on_added=audited)):
        return await _page(request, 409, key_error=f"A key named '{name}' exists already: choose another name.",
                           key_name=name)
    return await _page(request, new_key=key, new_key_name=name, new_key_scopes=scopes)


async def revoke_key(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    name = (fields.get("name") or "")[:100]

    def audited(connection):
        record_audit(connection, "api_key.revoked", f"'{name}'", **who(request, coach))

    if not await run_in_threadpool(lambda: request.app.state.api_keys.revoke(name, on_revoked=audited)):
        return await _page(request, 404, key_error=f"No active key named '{name}'.")
    return RedirectResponse("/dashboard/integrations?done=revoked#keys", status_code=303)


# --- outgoing webhooks (owners) ------------------------------------------------------------------------

async def add_webhook(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    form = await request.form()  # read (and checked) by read_form: the list fields from the same form
    url = (fields.get("url") or "").strip()
    state = request.app.state
    try:
        events = check_events([value for value in form.getlist("event") if isinstance(value, str)])
        endpoint = await run_in_threadpool(add_endpoint, state.store.engine, url, events, source="web",
                                           allow_private=state.settings.allow_private_urls)
    except BadRequest as refused:
        return await _page(request, 400, hook_error=refused.message, hook_url=url[:2048])
    await run_in_threadpool(record_audit, state.store.engine, "webhook_endpoint.added",
                            endpoint_words(endpoint.id, url, events), **who(request, coach))
    return await _page(request, new_hook=endpoint, new_hook_url=url)


async def test_webhook(request: Request) -> Response:
    coach = await signed_in_coach(request)
    await read_form(request, coach_csrf(request, coach))
    endpoint_id = request.path_params["endpoint_id"][:32]
    engine = request.app.state.store.engine
    if await run_in_threadpool(send_test_event, engine, endpoint_id) is None:
        return await _page(request, 404, hook_error="That webhook no longer exists.")
    await run_in_threadpool(record_audit, engine, "webhook_endpoint.test_sent", endpoint_id, **who(request, coach))
    return RedirectResponse("/dashboard/integrations?done=tested#webhooks", status_code=303)


async def remove_webhook(request: Request) -> Response:
    coach = await signed_in_coach(request)
    await read_form(request, coach_csrf(request, coach))
    endpoint_id = request.path_params["endpoint_id"][:32]
    engine = request.app.state.store.engine
    if not await run_in_threadpool(remove_endpoint, engine, endpoint_id):
        return await _page(request, 404, hook_error="That webhook no longer exists.")
    await run_in_threadpool(record_audit, engine, "webhook_endpoint.removed", endpoint_id, **who(request, coach))
    return RedirectResponse("/dashboard/integrations?done=removed#webhooks", status_code=303)


routes = [
    Route("/dashboard/integrations", integrations_page, methods=["GET"]),
    Route("/dashboard/integrations/links", client_links, methods=["POST"]),
    Route("/dashboard/integrations/links.csv", links_csv, methods=["GET"]),
    Route("/dashboard/integrations/keys", create_key, methods=["POST"]),
    Route("/dashboard/integrations/keys/revoke", revoke_key, methods=["POST"]),
    Route("/dashboard/integrations/webhooks", add_webhook, methods=["POST"]),
    Route("/dashboard/integrations/webhooks/{endpoint_id}/test", test_webhook, methods=["POST"]),
    Route("/dashboard/integrations/webhooks/{endpoint_id}/remove", remove_webhook, methods=["POST"]),
]
