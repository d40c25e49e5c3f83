"""`/dashboard…`: the coach's numbers, behind login."""

from datetime import date, timedelta
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.errors import BadRequest
from cancel_flow.models import OUTCOMES
from cancel_flow.money import cldr_locale, format_money, minor_unit_divisor
from cancel_flow.reasons import REASONS
from cancel_flow.spreadsheet import csv_chunks, local_times, safe_cell
from cancel_flow.store.attention import attention
from cancel_flow.store.billing_stats import billing_stats
from cancel_flow.store.stats import outside_cancellations
from cancel_flow.store.winback_stats import winback_by_subscription, winback_stats
from cancel_flow.store.stats import PAGE_SIZE, DateRange, day_start
from cancel_flow.web import charts
from cancel_flow.web.coach_auth import (LOGIN_CSRF_COOKIE, SignInBusy, TooManyAttempts, check_credentials, sign_in,
                                        sign_out, signed_in_coach, to_login)
from cancel_flow.web.dates import EARLIEST, check_range, parse_day, whole_number
from cancel_flow.web.pages import csrf_token, read_form, render, render_with_token

PRESETS = (7, 30, 90)
OUTCOME_LABELS = {"saved_discount": "Saved by discount", "saved_pause": "Saved by pause",
                  "saved_switch": "Saved by plan switch", "saved_free_period": "Saved by free time",
                  "saved_keep": "Kept after scheduling a cancel", "contact_requested": "Asked to talk to you",
                  "canceled": "Canceled", "deflected": "Deflected", "sent_to_portal": "At Stripe's portal",
                  "open": "Still open", "won_back": "Won back", "withdrawn": "Withdrew (EU)"}
# Each term explained where it appears.
OUTCOME_HINTS = {
    "saved_discount": "accepted a discount, confirmed by Stripe",
    "saved_pause": "paused their payments instead of leaving",
    "saved_switch": "moved to the cheaper plan you offered",
    "saved_free_period": "took the free time you offered",
    "saved_keep": "had a cancellation scheduled and pressed \"Keep my subscription\"",
    "contact_requested": "chose to talk to you first; becomes deflected or canceled after 24 hours",
    "canceled": "Stripe confirmed the cancellation (now or at the end of the period)",
    "deflected": "went to cancel, or opened the link, but 24 hours later the subscription was still active",
    "sent_to_portal": "pressed \"Continue to cancel\" and is on Stripe's cancel page; not confirmed yet",
    "open": "opened the link and has not decided yet",
    "won_back": "canceled, then came back through a win-back comeback link (still a cancellation in the save rate)",
    "withdrawn": "used the EU withdrawal function: canceled at once and refunded as [compliance] says",
}
KIND_LABELS = {"discount": "Discount", "pause": "Pause", "switch": "Plan switch", "free_period": "Free time",
               "contact": "Talk to you"}


def parse_day_range(start: str | None, end: str | None, default_days: int = 30,
                    today: date | None = None) -> tuple[date, date]:
    """The first and last day (both included) of a range given as 'from' and 'to' texts (YYYY-MM-DD);
    a missing 'to' is today, a missing 'from' is `default_days` before 'to'. BadDates (a 400 with a
    message for people) unless both days follow the rule of cancel_flow.web.dates: 2000–2100, 'from'
    not after 'to', at most ten years."""
    last = parse_day(end, "to") if end else (today or utc_now().date())
    first = parse_day(start, "from") if start else max(last - timedelta(days=default_days - 1), EARLIEST)
    return check_range(first, last)


class Filters:
    """Range (preset or from/to), outcome, reason and page, from the query string; `path` is the tab shown."""

    def __init__(self, request: Request):
        self.path = request.url.path
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
        page = whole_number(query.get("page") or "1", 1, 100_000)
        if page is None:
            raise BadRequest("The page must be a number from 1 to 100000.")
        self.page = page
        self.first, self.last = first, last
        self.period = DateRange(day_start(first), day_start(last + timedelta(days=1)))
        self.outcome = query.get("outcome") or None
        self.reason = query.get("reason") or None
        if self.outcome not in (None, *OUTCOMES) or self.reason not in (None, *REASONS):
            raise BadRequest("Filter by one of the listed outcomes and reasons.")

    @property
    def active_preset(self) -> int | None:
        """The preset this range is (also when typed as dates ending today), or None for a custom range."""
        if self.preset:
            return self.preset
        today = utc_now().date()
        return next((days for days in PRESETS if self.last == today and (self.last - self.first).days == days - 1), None)

    def query(self, **changes) -> str:
        values = {"from": self.first.isoformat(), "to": self.last.isoformat(), "outcome": self.outcome or "",
                  "reason": self.reason or "", "page": self.page}
        values.update(changes)
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def preset_query(self, days: int) -> str:
        """A preset's link: the same outcome and reason filters, the first page."""
        values = {"range": days, "outcome": self.outcome or "", "reason": self.reason or ""}
        return urlencode({k: v for k, v in values.items() if v not in ("", None)})

    def tab_query(self) -> str:
        """Another tab's link: the same range (as a preset when it is one) and filters, the first page."""
        if self.preset:
            return self.preset_query(self.preset)
        return self.query(page="")


async def login_page(request: Request) -> Response:
    if await signed_in_coach(request):
        return RedirectResponse("/dashboard", status_code=303)
    first = not await run_in_threadpool(request.app.state.coaches.any)
    return login_form(request, first=first)


def login_form(request: Request, status_code: int = 200, error: str | None = None, email: str = "",
               first: bool = False) -> Response:
    """The sign-in page; with `first`, the form that makes a new deployment's first owner instead."""
    return render_with_token(request, "login.html", LOGIN_CSRF_COOKIE, "/dashboard", status_code, error=error,
                             email=email, first=first)


async def login(request: Request) -> Response:
    fields = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE))
    email = (fields.get("email") or "").strip().lower()[:320]
    password = fields.get("password") or ""
    try:
        coach = await check_credentials(request, email, password)
    except TooManyAttempts as refused:
        return login_form(request, 429, refused.message, email)
    except SignInBusy:
        busy = login_form(request, 503, "Sign-in is busy right now. Please try again in a few seconds.", email)
        busy.headers["Retry-After"] = "5"
        return busy
    if coach is None:
        return login_form(request, 401, "That email and password don't match.", email)
    response = RedirectResponse("/dashboard", status_code=303)
    sign_in(request, response, coach)
    return response


async def logout(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    await read_form(request, csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}"))
    response = RedirectResponse("/dashboard/login", status_code=303)
    await sign_out(request, response, coach)
    return response


def _money_list(pairs, locale: str = "en") -> str:
    """Amounts per currency in the coach's locale (CANCEL_FLOW_LOCALE)."""
    return ", ".join(format_money(amount, currency, locale) for currency, amount in pairs) or format_money(0, "usd", locale)


def _change(now, before, kind: str) -> dict | None:
    """The change against the previous period: {"words", "direction"}; None when there is nothing to compare."""
    if now is None or before is None:
        return None
    if kind == "rate":
        points = round((now - before) * 100)
        words = f"{points:+d} points" if points else "no change"
    else:
        if before == 0:
            return {"words": "new" if now else "no change", "direction": "up" if now else "same"}
        percent = round((now - before) / before * 100)
        words = f"{percent:+d}%" if percent else "no change"
    direction = "same" if words == "no change" else ("up" if now > before else "down")
    return {"words": words, "direction": direction}


def _pages(current: int, last: int) -> list[int | None]:
    """Page numbers to link: the first, the last, and two either side of the current one (None: a gap)."""
    wanted = sorted({1, last, *range(max(1, current - 2), min(last, current + 2) + 1)})
    shown: list[int | None] = []
    for number in wanted:
        if shown and number - shown[-1] > 1:
            shown.append(None)
        shown.append(number)
    return shown


def stripe_customer_url(api_key: str | None, customer_id: str) -> str:
    """The customer in Stripe's dashboard: test-mode keys open the test-mode page."""
    test = (api_key or "").startswith(("sk_test_", "rk_test_"))
    return f"https://dashboard.stripe.com/{'test/' if test else ''}customers/{customer_id}"


def local_clock(zone_name: str, locale: str = "en"):
    """A moment in the coach's time zone, "07 Dec 2026, 14:05" (a `pattern` of strftime's); in another locale
    (CANCEL_FLOW_LOCALE) that locale's medium date, and its time when the pattern has one."""
    zone = ZoneInfo(zone_name)

    def local(moment, pattern: str = "%d %b %Y, %H:%M") -> str:
        if not moment:
            return ""
        moment = as_utc(moment).astimezone(zone)
        if locale == "en":
            return moment.strftime(pattern)
        day = format_date(moment, "medium", locale=cldr_locale(locale))
        return f"{day}, {format_time(moment, 'HH:mm', locale=cldr_locale(locale))}" if "%H" in pattern else day
    return local


# Stripe's cancellation_details.reason, in words (https://docs.stripe.com/api/subscriptions/object#subscription_object-cancellation_details-reason)
STRIPE_REASONS = {"cancellation_requested": "canceled in Stripe (its portal, or by you)",
                  "payment_failed": "payments failed until Stripe gave up",
                  "payment_disputed": "a payment was disputed",
                  "canceled_by_retention_policy": "Stripe's test-mode clean-up"}


def recovered_payments(request: Request, period) -> dict | None:
    """Failed payments of the range and how many were recovered (paid after a failure), with the billing
    emails sent (cancel_flow/store/billing_stats.py); None when no payment failed in this range or the
    one before, so the summary shows the card only where it means something."""
    engine = request.app.state.store.engine
    now = billing_stats(engine, period)
    length = period.end - period.start
    before = billing_stats(engine, DateRange(period.start - length, period.start))
    if not now["failed_payments"] and not before["failed_payments"] and not any(now["emails_sent"].values()):
        return None
    return {"count": now["recovered"], "amounts": sorted(now["recovered_amount"].items()),
            "previous_count": before["recovered"], "billing": now}


def winback_figures(request: Request, period) -> dict | None:
    """Win-back's figures (cancel_flow/store/winback_stats.py); None while win-back is off and has nothing to show."""
    figures = winback_stats(request.app.state.store.engine, period)
    config = request.app.state.config.current().winback
    shown = figures["emails_sent"] or figures["won_back"] or figures["changed_mind"]["emails_sent"]
    return figures if shown or config.steps or config.changed_mind_days_before else None


def _offers_ever(request: Request) -> dict:
    """Every offer id the configuration ever had → its newest form: a removed offer still reads right."""
    return request.app.state.config.offer_history()


def payback(offer_cost: list[tuple[str, int]], mrr_saved: list[tuple[str, int]], locale: str = "en") -> list[str]:
    """The offers' cost on the footing of the MRR saved: how many months of it the cost is, per currency."""
    monthly = dict(mrr_saved)
    words = []
    for currency, cost in offer_cost:
        mrr = monthly.get(currency)
        if not mrr:
            continue
        months = cost / mrr
        amount = format_money(cost, currency, locale)
        if months < 0.95:
            words.append(f"{amount} is less than one month of the MRR saved")
        else:
            shown = f"{months:.1f}".removesuffix(".0")
            words.append(f"{amount} is {shown} month{'' if shown == '1' else 's'} of the MRR saved")
    return words


def kept_against_cost(offer_kinds: list[dict]) -> list[dict]:
    """Per currency, over the acceptances at least 90 days old in the range: the revenue their subscriptions
    brought in the 90 days after accepting, what those offers cost, and the difference (the offers table's
    figures added up over every kind)."""
    totals: dict[str, list[int]] = {}
    for kind in offer_kinds:
        for money in kind["money"]:
            if money["revenue_kept_90"] is None:
                continue
            kept = totals.setdefault(money["currency"], [0, 0])
            kept[0] += money["revenue_kept_90"]
            kept[1] += money["revenue_kept_90"] - money["net_revenue_kept_90"]
    return [{"currency": currency, "kept": kept, "cost": cost, "net": kept - cost}
            for currency, (kept, cost) in sorted(totals.items())]


async def _signed_in(request: Request):
    coach = await signed_in_coach(request)
    if coach is None:
        return None, None
    return coach, csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}")


def _tab(title: str, template: str, build):
    """A dashboard tab: signed in, the range and filters read (a bad range shows the range form again, inside
    the dashboard), then `build(request, filters)`'s figures on `template`."""
    async def endpoint(request: Request) -> Response:
        coach, csrf = await _signed_in(request)
        if coach is None:
            return to_login()
        settings = request.app.state.settings
        shared = dict(coach=coach, csrf=csrf, presets=PRESETS, page_title=title, zone=settings.timezone)
        try:
            filters = Filters(request)
        except BadRequest as refused:
            return render(request, "dashboard_bad_range.html", 400, message=refused.message, tab_path=request.url.path,
                          today=utc_now().date(), **shared)
        if template == "dashboard.html" and not await run_in_threadpool(request.app.state.stats.any_session):
            return render(request, "dashboard_empty.html", coach=coach, csrf=csrf)
        figures = await build(request, filters)
        length = (filters.last - filters.first).days + 1
        return render(request, template, filters=filters, previous_length=length,
                      previous_first=filters.first - timedelta(days=length),
                      previous_last=filters.first - timedelta(days=1),
                      chart_query=urlencode({"from": filters.first.isoformat(), "to": filters.last.isoformat()}),
                      **shared, **figures)
    return endpoint


async def _stats(request: Request, filters: Filters):
    offers = await run_in_threadpool(_offers_ever, request)
    kinds = {offer_id: offer.kind for offer_id, offer in offers.items()}
    return await run_in_threadpool(request.app.state.stats.stats, filters.period, kinds)


async def _offer_titles(request: Request) -> dict[str, str]:
    offers = await run_in_threadpool(_offers_ever, request)
    return {offer_id: offer.title for offer_id, offer in offers.items()}


async def _overview(request: Request, filters: Filters) -> dict:
    """How am I doing, and what changed: the cards, the trend, the top reasons, who needs attention."""
    stats = await _stats(request, filters)
    recovered = await run_in_threadpool(recovered_payments, request, filters.period)
    needing = await run_in_threadpool(attention, request.app.state.store.engine)
    previous = stats.previous
    mrr_now = sum(amount for _, amount in stats.mrr_saved) if len(stats.mrr_saved) <= 1 else None
    mrr_before = sum(amount for _, amount in previous["mrr_saved"]) if len(previous["mrr_saved"]) <= 1 else None
    same_currency = {c for c, _ in stats.mrr_saved} | {c for c, _ in previous["mrr_saved"]}
    changes = {
        "sessions": _change(stats.sessions, previous["sessions"], "count"),
        "save_rate": _change(stats.save_rate, previous["save_rate"], "rate"),
        "mrr": _change(mrr_now, mrr_before, "count") if len(same_currency) <= 1 else None,
    }
    if recovered:
        changes["recovered"] = _change(recovered.get("count"), recovered.get("previous_count"), "count")
    locale = request.app.state.settings.locale
    return dict(stats=stats, changes=changes, recovered=recovered, attention=needing,
                mrr_saved=_money_list(stats.mrr_saved, locale), discount_cost=_money_list(stats.discount_cost, locale),
                offer_cost=_money_list(stats.offer_cost, locale),
                payback=payback(stats.offer_cost, stats.mrr_saved, locale),
                top_reasons=stats.reasons[:3], reasons_size=charts.reasons_size)


async def _sessions(request: Request, filters: Filters) -> dict:
    settings = request.app.state.settings
    queries = request.app.state.stats
    stats = await _stats(request, filters)
    recent, total = await run_in_threadpool(queries.recent, filters.period, filters.outcome, filters.reason, filters.page)
    pages = max(1, -(-total // PAGE_SIZE))
    return dict(stats=stats, recent=recent, total=total, pages=pages, page_links=_pages(filters.page, pages),
                outcome_labels=OUTCOME_LABELS, outcome_hints=OUTCOME_HINTS, offer_titles=await _offer_titles(request),
                local=local_clock(settings.timezone, settings.locale),
                customer_url=lambda customer: stripe_customer_url(settings.stripe_api_key, customer))


async def _offers(request: Request, filters: Filters) -> dict:
    stats = await _stats(request, filters)
    locale = request.app.state.settings.locale
    return dict(stats=stats, kind_labels=KIND_LABELS, offer_titles=await _offer_titles(request),
                kept=kept_against_cost(stats.offer_kinds), mrr_saved=_money_list(stats.mrr_saved, locale),
                discount_cost=_money_list(stats.discount_cost, locale), offer_cost=_money_list(stats.offer_cost, locale),
                payback=payback(stats.offer_cost, stats.mrr_saved, locale))


async def _reasons(request: Request, filters: Filters) -> dict:
    outside = await run_in_threadpool(outside_cancellations, request.app.state.store.engine, filters.period)
    return dict(stats=await _stats(request, filters), reasons_size=charts.reasons_size, outside=outside,
                stripe_reasons=STRIPE_REASONS)


async def _payments(request: Request, filters: Filters) -> dict:
    billing = await run_in_threadpool(billing_stats, request.app.state.store.engine, filters.period)
    winback = await run_in_threadpool(winback_figures, request, filters.period)
    return dict(billing=billing, winback=winback, reason_labels=REASONS)


dashboard = _tab("Retention dashboard", "dashboard.html", _overview)


def _chart(render_svg):
    async def endpoint(request: Request) -> Response:
        if await signed_in_coach(request) is None:
            return to_login()
        filters = Filters(request)
        size = request.query_params.get("size") or "wide"
        if size not in charts.SIZES:
            raise BadRequest("The chart size must be 'wide' or 'narrow'.")
        stats = await run_in_threadpool(request.app.state.stats.stats, filters.period)
        svg = render_svg(stats, request.app.state.config.current().brand.color, size)
        # Shown as an <img>, where scripts never run; the SVG carries no script and no outside reference.
        return Response(svg, media_type="image/svg+xml", headers={
            "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'", "Cache-Control": "no-store"})
    return endpoint


CSV_HEADER = ["session_id", "created_at", "customer_id", "customer_email", "subscription_id", "plan",
              "price", "interval", "monthly_amount", "currency", "reason", "comment", "offers_shown",
              "chosen_offer", "offer_kind", "outcome", "decided_at", "canceled_at", "canceled_outside_flow",
              "stripe_feedback", "offer_cost", "price_minor", "monthly_amount_minor", "offer_cost_minor", "time_zone",
              "experiment", "experiment_arm", "winback_emails_sent", "winback_pages_opened", "won_back_at",
              "won_back_subscription", "won_back_step", "mrr_won_back", "mrr_won_back_minor"]


def _major(amount, currency: str) -> str:
    """Minor units as a plain decimal number in major units (4900 usd → 49.00; 500 jpy → 500)."""
    if amount is None:
        return ""
    divisor = minor_unit_divisor(currency)
    if divisor == 1:
        return str(int(amount))
    digits = len(str(divisor)) - 1
    sign = "-" if amount < 0 else ""
    whole, part = divmod(abs(int(amount)), divisor)
    return f"{sign}{whole}.{part:0{digits}d}"


def _with_winback(rows, engine, batch: int = 200):
    """The rows with their subscription's win-back figures (a lookup per batch of rows, not per row)."""
    chunk = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch:
            found = winback_by_subscription(engine, sorted({r.subscription_id for r in chunk}))
            yield from ((r, found.get(r.subscription_id, {})) for r in chunk)
            chunk = []
    if chunk:
        found = winback_by_subscription(engine, sorted({r.subscription_id for r in chunk}))
        yield from ((r, found.get(r.subscription_id, {})) for r in chunk)


def _csv_lines(rows, zone_name: str, engine=None):
    """Newest first; times in the coach's time zone to the second, with its offset; money in major units, and
    again in minor units for machines."""
    when = local_times(zone_name)

    def cells(session, winback) -> list:
        currency = session.currency
        return [
            session.id, when(session.created_at), safe_cell(session.customer_id), safe_cell(session.customer_email),
            safe_cell(session.subscription_id), safe_cell(session.plan_name), _major(session.price_amount, currency),
            session.interval, _major(session.monthly_amount, currency), currency.upper(), safe_cell(session.reason),
            safe_cell(session.comment), safe_cell(" ".join(session.offers_shown or [])), safe_cell(session.chosen_offer),
            session.offer_kind or "", session.outcome, when(session.decided_at), when(session.canceled_at),
            str(session.canceled_outside_flow).lower(), safe_cell(session.stripe_feedback),
            _major(session.offer_cost, currency), session.price_amount, session.monthly_amount,
            "" if session.offer_cost is None else session.offer_cost, zone_name,
            safe_cell(session.experiment_id), safe_cell(session.experiment_arm),
            winback.get("emails_sent", 0), winback.get("pages_opened", 0), when(session.won_back_at),
            safe_cell(session.won_back_subscription_id), winback.get("won_back_step") or "",
            _major(winback.get("mrr_won_back"), currency), "" if winback.get("mrr_won_back") is None
            else winback["mrr_won_back"],
        ]

    pairs = _with_winback(rows, engine) if engine is not None else ((row, {}) for row in rows)
    return csv_chunks(CSV_HEADER, (cells(session, winback) for session, winback in pairs))


async def export_csv(request: Request) -> Response:
    if await signed_in_coach(request) is None:
        return to_login()
    filters = Filters(request)
    rows = request.app.state.stats.export_rows(filters.period, filters.outcome, filters.reason)
    name = f"cancel-sessions-{filters.first.isoformat()}-to-{filters.last.isoformat()}.csv"
    return StreamingResponse(_csv_lines(rows, request.app.state.settings.timezone, request.app.state.store.engine),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


routes = [
    Route("/dashboard/login", login_page, methods=["GET"]),
    Route("/dashboard/login", login, methods=["POST"]),
    Route("/dashboard/logout", logout, methods=["POST"]),
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/sessions", _tab("Sessions", "dashboard_sessions.html", _sessions), methods=["GET"]),
    Route("/dashboard/offers", _tab("Offers", "dashboard_offers.html", _offers), methods=["GET"]),
    Route("/dashboard/reasons", _tab("Reasons", "dashboard_reasons.html", _reasons), methods=["GET"]),
    Route("/dashboard/payments", _tab("Payments and emails", "dashboard_payments.html", _payments), methods=["GET"]),
    Route("/dashboard/export.csv", export_csv, methods=["GET"]),
    Route("/dashboard/charts/weekly.svg", _chart(lambda stats, color, size: charts.weekly_trend_svg(stats.weekly, color, size))),
    Route("/dashboard/charts/reasons.svg", _chart(lambda stats, color, size: charts.reasons_svg(stats.reasons, color, size))),
]
