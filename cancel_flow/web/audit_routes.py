"""`/dashboard/audit` (owners): every change of settings, team, keys, endpoints and the Stripe connection, newest
first, and `/dashboard/audit.csv`, all of it as a spreadsheet."""


from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from cancel_flow.clock import utc_now
from cancel_flow.errors import BadRequest
from cancel_flow.spreadsheet import csv_chunks, local_times, safe_cell
from cancel_flow.store.audit import all_entries, recent_entries
from cancel_flow.web.coach_auth import signed_in_coach
from cancel_flow.web.dashboard_routes import local_clock
from cancel_flow.web.dates import whole_number
from cancel_flow.web.pages import csrf_token, render

PAGE_SIZE = 100
# What each action is called on the page; an action not listed shows its dotted name.
ACTION_LABELS = {
    "team.first_owner": "First owner made", "team.added": "Login added", "team.invited": "Invited",
    "team.invite_canceled": "Invitation canceled", "team.joined": "Joined", "team.role_changed": "Role changed",
    "team.removed": "Removed", "team.password_set": "Password set", "team.password_reset": "Password reset",
    "api_key.created": "API key created", "api_key.revoked": "API key revoked",
    "webhook_endpoint.added": "Webhook added", "webhook_endpoint.removed": "Webhook removed",
    "webhook_endpoint.test_sent": "Test event sent", "webhook_delivery.resent": "Delivery resent",
    "stripe.setup": "Stripe set up", "stripe.secret_rolled": "Signing secret rolled",
    "stripe.old_endpoint_deleted": "Old webhook endpoint deleted",
    "settings.saved": "Settings saved", "settings.restored": "Settings restored",
}
CSV_HEADER = ["id", "at", "actor", "action", "detail", "address", "time_zone"]


async def audit_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    before = request.query_params.get("before")
    if before is not None and whole_number(before, 1, 2**31 - 1) is None:
        raise BadRequest("The page must be a number.")
    rows = await run_in_threadpool(recent_entries, request.app.state.store.engine, PAGE_SIZE,
                                   int(before) if before else None)
    settings = request.app.state.settings
    return render(request, "audit.html", coach=coach, csrf=csrf_token(settings.secret_key, f"coach|{coach.session_key}"),
                  entries=rows, labels=ACTION_LABELS, local=local_clock(settings.timezone), zone=settings.timezone,
                  older=rows[-1].id if len(rows) == PAGE_SIZE else None)


def _csv_lines(rows, zone_name: str):
    """Newest first, times in the coach's time zone."""
    when = local_times(zone_name)
    return csv_chunks(CSV_HEADER, ([row.id, when(row.at), safe_cell(row.actor), row.action, safe_cell(row.detail),
                                    safe_cell(row.address), zone_name] for row in rows))


async def audit_csv(request: Request) -> Response:
    rows = all_entries(request.app.state.store.engine)
    name = f"audit-log-{utc_now().date().isoformat()}.csv"
    return StreamingResponse(iterate_in_threadpool(_csv_lines(rows, request.app.state.settings.timezone)),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


routes = [
    Route("/dashboard/audit", audit_page, methods=["GET"]),
    Route("/dashboard/audit.csv", audit_csv, methods=["GET"]),
]
