"""`/dashboard/attention` and `GET /api/attention`: the clients who need the coach this week, each with a link to
them in Stripe's dashboard and their links (cancel and billing) to send; "talk to your coach" requests are
marked handled from the page."""

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.errors import BadRequest
from cancel_flow.money import format_money
from cancel_flow.reasons import REASONS
from cancel_flow.store.attention import HORIZON, KINDS, Row, attention, mark_talk_handled
from cancel_flow.web.api_models import Attention as AttentionAnswer
from cancel_flow.web.coach_auth import signed_in_coach, to_login
from cancel_flow.web.dashboard_routes import OUTCOME_LABELS, local_clock, stripe_customer_url
from cancel_flow.web.dates import whole_number
from cancel_flow.web.openapi import ApiRoute
from cancel_flow.web.pages import csrf_token, read_form, render

TITLES = {
    "failed_payments": "Failed payments not recovered",
    "pauses_ending": "Pauses ending in the next 14 days",
    "discounts_ending": "Discounts ending in the next 14 days",
    "cancellations": "Cancellations taking effect in the next 14 days",
    "talk_requests": "Asked to talk to you",
}
EMPTY = {
    "failed_payments": "No failed payment waiting.",
    "pauses_ending": "No pause ends in the next 14 days.",
    "discounts_ending": "No discount ends in the next 14 days.",
    "cancellations": "No cancellation takes effect in the next 14 days.",
    "talk_requests": "Nobody is waiting to talk to you.",
}
# Links made for the coach to send this week: they work for as long as the list looks ahead.
LINK_MAX_AGE = int(HORIZON.total_seconds())


def dunning_step(row: Row, schedule_days: tuple[int, ...]) -> str:
    """How far the failed-payment emails have gone, in words."""
    tries = f"Stripe has tried {row.attempts} time{'' if row.attempts == 1 else 's'}" if row.attempts else None
    if not schedule_days:
        emails = "failed-payment emails are off"
    elif not row.emails_sent:
        emails = "no email sent yet"
    else:
        sent = [day for day in schedule_days if day in row.emails_sent] or list(row.emails_sent)
        last = sent[-1]
        emails = (f"email {len(sent)} of {len(schedule_days)} sent (day {last})" if len(sent) < len(schedule_days)
                  else f"all {len(schedule_days)} emails sent (the last on day {last})")
    words = "; ".join(part for part in (tries, emails) if part)
    return words[:1].upper() + words[1:]


@dataclass(frozen=True)
class Links:
    stripe: str
    cancel: str | None
    billing: str


def _links(request: Request, row: Row) -> Links:
    state = request.app.state
    base = state.settings.base_url
    cancel = None
    if row.subscription_id:
        token, _ = state.signer.cancel_token(row.customer_id, row.subscription_id, max_age=LINK_MAX_AGE)
        cancel = f"{base}/cancel/{token}"
    billing, _ = state.signer.billing_token(row.customer_id)
    flow = "?flow=payment_method_update" if row.kind == "failed_payments" else ""
    return Links(stripe=stripe_customer_url(state.settings.stripe_api_key, row.customer_id), cancel=cancel,
                 billing=f"{base}/billing/{billing}{flow}")


async def _attention(request: Request):
    return await run_in_threadpool(attention, request.app.state.store.engine)


async def attention_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    settings = request.app.state.settings
    found = await _attention(request)
    schedule = request.app.state.config.current().emails.failed_payment_days
    return render(request, "attention.html", coach=coach, csrf=csrf_token(settings.secret_key, f"coach|{coach.session_key}"),
                  found=found, kinds=KINDS, titles=TITLES, empty=EMPTY, links=lambda row: _links(request, row),
                  dunning=lambda row: dunning_step(row, schedule), outcome_labels=OUTCOME_LABELS,
                  describe=lambda row: describe(row, settings.locale), local=local_clock(settings.timezone, settings.locale),
                  zone=settings.timezone,
                  until=found.now + HORIZON, handled=request.query_params.get("handled"))


async def mark_handled(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    fields = await read_form(request, csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}"))
    session_id = whole_number(fields.get("session") or "", 1, 2**63 - 1)
    if session_id is None:
        raise BadRequest("Choose a request from the list to mark as handled.")
    done = await run_in_threadpool(mark_talk_handled, request.app.state.store.engine, session_id, coach.email)
    return RedirectResponse(f"/dashboard/attention?handled={'1' if done else '0'}#talk_requests", status_code=303)


def _answer_row(request: Request, row: Row, schedule: tuple[int, ...]) -> dict:
    links = _links(request, row)
    return {"client": {"id": row.customer_id, "email": row.customer_email, "stripe_url": links.stripe},
            "subscription": row.subscription_id, "plan": row.plan, "at": row.at.isoformat(timespec="seconds"),
            "amount": row.amount, "currency": row.currency, "reason": row.reason,
            "reason_text": REASONS.get(row.reason) if row.reason else None, "comment": row.comment,
            "offer": row.offer if row.kind in ("pauses_ending", "discounts_ending") else None,
            "terms": row.promise if row.kind in ("pauses_ending", "discounts_ending") else None,
            "failure_message": row.failure_message, "card": row.card, "attempts": row.attempts,
            "emails_sent": list(row.emails_sent),
            "dunning_step": dunning_step(row, schedule) if row.kind == "failed_payments" else None,
            "session": row.session_id if row.kind == "talk_requests" else None,
            "cancel_url": links.cancel, "billing_url": links.billing}


async def attention_api(request: Request) -> AttentionAnswer:
    found = await _attention(request)
    schedule = request.app.state.config.current().emails.failed_payment_days
    return AttentionAnswer.model_validate({
        "generated_at": found.now.isoformat(timespec="seconds"), "days": HORIZON.days, "count": found.count,
        **{kind: [_answer_row(request, row, schedule) for row in getattr(found, kind)] for kind in KINDS}})


def describe(row: Row, locale: str = "en") -> str:
    """The plan and price as the page shows them."""
    if not row.plan:
        return "–"
    if row.amount is None or not row.currency or not row.interval:
        return row.plan
    per = row.interval if row.interval_count == 1 else f"{row.interval_count} {row.interval}s"
    return f"{row.plan} · {format_money(row.amount, row.currency, locale)}/{per}"


routes = [
    Route("/dashboard/attention", attention_page, methods=["GET"]),
    Route("/dashboard/attention/handled", mark_handled, methods=["POST"]),
    ApiRoute("/api/attention", attention_api, method="GET", answer=AttentionAnswer, scope="stats",
             summary="The clients who need the coach: failed payments not recovered, pauses, discounts and cancellations "
                     "ending in the next 14 days, requests to talk not yet handled", operation_id="getAttention",
             description="The attention list"),
]
