"""`/dashboard…`: the coach's numbers, behind login."""

import csv
import io
import re
from datetime import date, timedelta
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.errors import BadRequest
from cancel_flow.models import OUTCOMES
from cancel_flow.money import format_money
from cancel_flow.offers import REASONS
from cancel_flow.spreadsheet import safe_cell
from cancel_flow.store.stats import PAGE_SIZE, DateRange, day_start
from cancel_flow.web import charts
from cancel_flow.web.coach_auth import (LOGIN_CSRF_COOKIE, NotSignedIn, SignInBusy, TooManyAttempts,
                                        check_credentials, current_coach, sign_in, sign_out)
from cancel_flow.web.pages import csrf_token, read_form, render, render_with_token

PRESETS = (7, 30, 90)
FIRST_YEAR, LAST_YEAR = 2000, 2100
MAX_RANGE_DAYS = 3660  # about ten years
_ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
OUTCOME_LABELS = {"open": "Still open", "saved_discount": "Saved by discount", "saved_pause": "Saved by pause",
                  "sent_to_portal": "At Stripe's portal", "canceled": "Canceled", "deflected": "Deflected"}


def parse_day(text: str, name: str) -> date:
    """A day written as YYYY-MM-DD with ASCII digits, in the years 2000–2100; BadRequest otherwise."""
    try:
        if not _ISO_DAY.fullmatch(text):
            raise ValueError
        day = date.fromisoformat(text)
    except ValueError:
        raise BadRequest(f"'{name}' must be a date like 2026-11-24.") from None
    if not FIRST_YEAR <= day.year <= LAST_YEAR:
        raise BadRequest(f"'{name}' must be a date between {FIRST_YEAR} and {LAST_YEAR}.")
    return day


def parse_day_range(start: str | None, end: str | None, default_days: int = 30,
                    today: date | None = None) -> tuple[date, date]:
    """The first and last day (both included) of a range given as 'from' and 'to' texts (YYYY-MM-DD);
    a missing 'to' is today, a missing 'from' is `default_days` before 'to'. BadRequest (400, a message
    for people) unless both days are in 2000–2100, 'from' is not after 'to' and the range is at most
    about ten years."""
    last = parse_day(end, "to") if end else (today or utc_now().date())
    first = parse_day(start, "from") if start else max(last - timedelta(days=default_days - 1), date(FIRST_YEAR, 1, 1))
    if first > last:
        raise BadRequest("The start date is after the end date.")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise BadRequest("That range is too long: choose at most ten years.")
    return first, last


class Filters:
    """Range (preset or from/to), outcome, reason and page, from the query string."""

    def __init__(self, request: Request):
        query = request.query_params
        if query.get("from") or query.get("to"):
            first, last = parse_day_range(query.get("from"), query.get("to"))
            self.preset = None
        else:
            preset = query.get("range") or "30"
            if preset not in {str(days) for days in PRESETS}:
                raise BadRequest("The range must be 7, 30 or 90 days.")
            self.preset = int(preset)
            first, last = parse_day_range(None, None, self.preset)
        page = query.get("page") or "1"
        if not (page.isascii() and page.isdigit() and len(page) <= 6 and 1 <= int(page) <= 100_000):
            raise BadRequest("The page must be a number from 1 to 100000.")
        self.page = int(page)
        self.first, self.last = first, last
        self.period = DateRange(day_start(first), day_start(last + timedelta(days=1)))
        self.outcome = query.get("outcome") or None
        self.reason = query.get("reason") or None
        if self.outcome not in (None, *OUTCOMES) or self.reason not in (None, *REASONS):
            raise BadRequest("Filter by one of the listed outcomes and reasons.")

    def query(self, **changes) -> str:
        values = {"from": self.first.isoformat(), "to": self.last.isoformat(), "outcome": self.outcome or "",
                  "reason": self.reason or "", "page": self.page}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})


async def _coach_or_redirect(request: Request):
    try:
        return await current_coach(request)
    except NotSignedIn:
        return None


def _to_login(request: Request) -> Response:
    return RedirectResponse("/dashboard/login", status_code=303)


async def login_page(request: Request) -> Response:
    if await _coach_or_redirect(request):
        return RedirectResponse("/dashboard", status_code=303)
    return _login_form(request)


def _login_form(request: Request, status_code: int = 200, error: str | None = None, email: str = "") -> Response:
    return render_with_token(request, "login.html", LOGIN_CSRF_COOKIE, "/dashboard", status_code, error=error, email=email)


async def login(request: Request) -> Response:
    fields = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE))
    email = (fields.get("email") or "").strip().lower()[:320]
    password = fields.get("password") or ""
    try:
        coach = await check_credentials(request, email, password)
    except TooManyAttempts as refused:
        return _login_form(request, 429, refused.message, email)
    except SignInBusy:
        busy = _login_form(request, 503, "Sign-in is busy right now. Please try again in a few seconds.", email)
        busy.headers["Retry-After"] = "5"
        return busy
    if coach is None:
        return _login_form(request, 401, "That email and password don't match.", email)
    response = RedirectResponse("/dashboard", status_code=303)
    sign_in(request, response, coach)
    return response


async def logout(request: Request) -> Response:
    coach = await _coach_or_redirect(request)
    if coach is None:
        return _to_login(request)
    await read_form(request, csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}"))
    response = RedirectResponse("/dashboard/login", status_code=303)
    await sign_out(request, response, coach)
    return response


def _money_list(pairs) -> str:
    return ", ".join(format_money(amount, currency) for currency, amount in pairs) or format_money(0, "usd")


async def dashboard(request: Request) -> Response:
    coach = await _coach_or_redirect(request)
    if coach is None:
        return _to_login(request)
    filters = Filters(request)
    queries = request.app.state.stats
    csrf = csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}")
    if not await run_in_threadpool(queries.any_session):
        return render(request, "dashboard_empty.html", coach=coach, csrf=csrf)
    stats = await run_in_threadpool(queries.stats, filters.period)
    recent, total = await run_in_threadpool(queries.recent, filters.period, filters.outcome, filters.reason, filters.page)
    pages = max(1, -(-total // PAGE_SIZE))
    return render(request, "dashboard.html", coach=coach, csrf=csrf, stats=stats, filters=filters, recent=recent,
                  total=total, pages=pages, presets=PRESETS, outcome_labels=OUTCOME_LABELS,
                  mrr_saved=_money_list(stats.mrr_saved), discount_cost=_money_list(stats.discount_cost),
                  chart_query=urlencode({"from": filters.first.isoformat(), "to": filters.last.isoformat()}))


def _chart(render_svg):
    async def endpoint(request: Request) -> Response:
        if await _coach_or_redirect(request) is None:
            return _to_login(request)
        filters = Filters(request)
        stats = await run_in_threadpool(request.app.state.stats.stats, filters.period)
        svg = render_svg(stats, request.app.state.offers.brand.color)
        # Shown as an <img>, where scripts never run; pygal styles the SVG inline.
        return Response(svg, media_type="image/svg+xml", headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'", "Cache-Control": "private, max-age=60"})
    return endpoint


def _iso(moment) -> str:
    return as_utc(moment).isoformat() if moment else ""


CSV_HEADER = ["session_id", "created_at", "customer_id", "customer_email", "subscription_id", "plan",
              "price_amount", "interval", "monthly_amount", "currency", "reason", "comment", "offers_shown",
              "chosen_offer", "outcome", "decided_at", "canceled_at", "canceled_outside_flow", "stripe_feedback"]


def _csv_lines(rows):
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_HEADER)
    for index, session in enumerate(rows):
        writer.writerow([
            session.id, _iso(session.created_at), safe_cell(session.customer_id), safe_cell(session.customer_email),
            safe_cell(session.subscription_id), safe_cell(session.plan_name), session.price_amount, session.interval,
            session.monthly_amount, session.currency, safe_cell(session.reason), safe_cell(session.comment),
            safe_cell(" ".join(session.offers_shown or [])), safe_cell(session.chosen_offer), session.outcome,
            _iso(session.decided_at), _iso(session.canceled_at), str(session.canceled_outside_flow).lower(),
            safe_cell(session.stripe_feedback),
        ])
        if index % 200 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def export_csv(request: Request) -> Response:
    if await _coach_or_redirect(request) is None:
        return _to_login(request)
    filters = Filters(request)
    rows = request.app.state.stats.export_rows(filters.period, filters.outcome, filters.reason)
    name = f"cancel-sessions-{filters.first.isoformat()}-to-{filters.last.isoformat()}.csv"
    return StreamingResponse(_csv_lines(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


routes = [
    Route("/dashboard/login", login_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/export.csv", export_csv, methods=["GET"]),
    Route("/dashboard/charts/weekly.svg", _chart(lambda stats, color: charts.weekly_trend_svg(stats.weekly, color))),
    Route("/dashboard/charts/reasons.svg", _chart(lambda stats, color: charts.reasons_svg(stats.reasons, color))),
]
