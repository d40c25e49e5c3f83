"""The withdrawal function and the cancel button (the client's pages), "This wasn't me", and
`/dashboard/compliance` (the coach's record of declarations). Thin: parse, call the compliance service, render.

Dashboard routes and the role each needs: `/dashboard/compliance` and `/dashboard/compliance.csv`: viewer."""

from urllib.parse import urlsplit

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from cancel_flow.clock import as_utc
from cancel_flow.compliance import MAX_CONTRACT, MAX_NAME, MAX_REASON, contract_words, moment_words
from cancel_flow.compliance_service import ComplianceService, withdrawal_open
from cancel_flow.errors import BadRequest, Conflict
from cancel_flow.i18n import gettext
from cancel_flow.spreadsheet import csv_chunks, local_times, safe_cell
from cancel_flow.store.declarations import PAGE_SIZE
from cancel_flow.web.coach_auth import client_address, signed_in_coach, to_login
from cancel_flow.web.dashboard_routes import local_clock, stripe_customer_url
from cancel_flow.web.dates import whole_number
from cancel_flow.web.pages import csrf_token, page_language, read_form, render, render_with_token
from cancel_flow.web.shared_link_routes import CSRF_COOKIE, PER_ADDRESS_PER_HOUR, WINDOW, _valid_email

def _language(request: Request, facts=None) -> str:
    """The client's language: the switch, the Stripe customer's `preferred_locales` when the page knows the
    subscription (kept on the request for an error page), the browser, the brand's default."""
    if facts is not None and getattr(facts, "preferred_locales", None):
        request.state.preferred_locales = facts.preferred_locales
    return page_language(request)


def _service(request: Request) -> ComplianceService:
    return request.app.state.compliance


def _text(fields: dict, name: str, limit: int) -> str:
    """A form field as one clean line (no control characters), at most `limit` characters."""
    value = " ".join((fields.get(name) or "").split())
    if len(value) > limit:
        raise ValueError(name)
    return value


def _checked(fields: dict, language: str, *, contract_required: bool = False) -> tuple[dict, str | None]:
    """(name, email, contract) from a declaration form, and the first problem in words (None: none)."""
    _ = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    try:
        values = {"name": _text(fields, "name", MAX_NAME), "email": (fields.get("email") or "").strip(),
                  "contract": _text(fields, "contract", MAX_CONTRACT)}
    except ValueError:
        return {}, _("Please keep each field shorter.")
    if not values["name"]:
        return values, _("Enter your name.")
    if not _valid_email(values["email"]):
        return values, _("Enter the email address you subscribed with, like name@example.com.")
    if contract_required and not values["contract"]:
        return values, _("Say which contract you mean.")
    return values, None


async def _allowed(request: Request) -> bool:
    """The shared page's limit per network (20 an hour, with the link requests): forms that email aren't a relay."""
    return await run_in_threadpool(request.app.state.link_requests.allow, "ip", client_address(request),
                                   PER_ADDRESS_PER_HOUR, WINDOW)


def _received_page(request: Request, row, kind: str) -> Response:
    zone = request.app.state.settings.timezone
    return render(request, "declaration_received.html", kind=kind, email=row.email,
                  received=moment_words(as_utc(row.received_at), zone, row.language))


async def shared_page_links(request: Request) -> dict:
    """What the shared page offers besides the email form: the withdrawal function (to everyone: the visitor is
    unknown there) and the cancel button."""
    config = request.app.state.config.current().compliance
    return {"withdraw_url": "/withdraw" if config.withdrawal_days else None,
            "cancel_contract_url": "/cancel-contract" if await _service(request).cancel_button_on() else None}


def flow_withdraw_url(request: Request, session) -> str | None:
    """"Withdraw from contract here" on a cancel link's pages, while the subscription can be withdrawn from."""
    if withdrawal_open(request.app.state.config.current(), session):
        return f"/cancel/{request.path_params['token']}/withdraw"
    return None


# The withdrawal function from a cancel link ---------------------------------------------------------------

async def _flow_session(request: Request):
    return await request.app.state.cancel_service.open_session(request.path_params["token"])


def _flow_form(request: Request, session, facts, status_code: int = 200, error: str | None = None,
               fields: dict | None = None) -> Response:
    token = request.path_params["token"]
    fields = fields or {}
    return render(request, "withdraw.html", status_code, action=f"/cancel/{token}/withdraw", back_url=f"/cancel/{token}",
                  csrf=csrf_token(request.app.state.settings.secret_key, session.nonce), error=error,
                  days=request.app.state.config.current().compliance.withdrawal_days,
                  name=fields.get("name", facts.customer_name or ""), email=fields.get("email", facts.customer_email or ""),
                  contract=contract_words(facts, _language(request, facts)), contract_fixed=True)


async def flow_withdraw_form(request: Request) -> Response:
    _, session = await _flow_session(request)
    if session.outcome == "withdrawn":
        return RedirectResponse(f"/cancel/{request.path_params['token']}/done", status_code=303)
    cancel_service = request.app.state.cancel_service
    facts = cancel_service.snapshot(session) or await cancel_service.facts(session)
    right = _service(request).right(facts)
    if not right.open:
        language = _language(request, facts)
        raise Conflict(_service(request).why_not(right, facts, language),
                       title=gettext(language, "Withdrawal not available"))
    return _flow_form(request, session, facts)


async def flow_withdraw(request: Request) -> Response:
    _, session = await _flow_session(request)
    fields = await read_form(request, csrf_token(request.app.state.settings.secret_key, session.nonce))
    done = RedirectResponse(f"/cancel/{request.path_params['token']}/done", status_code=303)
    if session.outcome == "withdrawn":
        return done
    facts = await request.app.state.cancel_service.facts(session)
    language = _language(request, facts)
    values, problem = _checked(fields, language)
    if problem:
        return _flow_form(request, session, facts, 400, problem, values)
    await _service(request).withdraw_in_flow(session, facts, values["name"], values["email"], language)
    return done


# The shared page's withdrawal function and cancel button ------------------------------------------------

def _shared_withdraw_form(request: Request, status_code: int = 200, error: str | None = None,
                          fields: dict | None = None) -> Response:
    fields = fields or {}
    return render_with_token(request, "withdraw.html", CSRF_COOKIE, "/", status_code, action="/withdraw", back_url="/",
                             error=error, days=request.app.state.config.current().compliance.withdrawal_days,
                             name=fields.get("name"), email=fields.get("email"), contract=fields.get("contract"),
                             contract_fixed=False)


def _withdrawal_on(request: Request) -> None:
    if not request.app.state.config.current().compliance.withdrawal_days:
        raise HTTPException(404)


async def shared_withdraw_form(request: Request) -> Response:
    _withdrawal_on(request)
    return _shared_withdraw_form(request)


async def shared_withdraw(request: Request) -> Response:
    _withdrawal_on(request)
    fields = await read_form(request, request.cookies.get(CSRF_COOKIE))
    language = _language(request)
    values, problem = _checked(fields, language)
    if problem:
        return _shared_withdraw_form(request, 400, problem, values)
    if not await _allowed(request):
        return _shared_withdraw_form(request, 429, gettext(language, "Too many requests from your network. Please try "
                                                                      "again in an hour."), values)
    service = _service(request)
    row = await service.receive("withdrawal", values["name"], values["email"], values["contract"], language)
    page = _received_page(request, row, "withdrawal")
    page.background = BackgroundTask(service.process, row.id)  # after the answer: it reads the same either way
    return page


def _cancel_contract_form(request: Request, status_code: int = 200, error: str | None = None,
                          fields: dict | None = None) -> Response:
    return render_with_token(request, "cancel_contract.html", CSRF_COOKIE, "/", status_code, error=error,
                             **(fields or {}))


async def _cancel_button_on(request: Request) -> None:
    if not await _service(request).cancel_button_on():
        raise HTTPException(404)


async def cancel_contract_form(request: Request) -> Response:
    await _cancel_button_on(request)
    return _cancel_contract_form(request)


async def cancel_contract(request: Request) -> Response:
    await _cancel_button_on(request)
    fields = await read_form(request, request.cookies.get(CSRF_COOKIE))
    language = _language(request)
    values, problem = _checked(fields, language)
    kind = fields.get("cancellation") or "ordinary"
    try:
        reason = _text(fields, "reason", MAX_REASON) if kind == "extraordinary" else None
    except ValueError:
        reason, problem = None, problem or gettext(language, "Please keep your reason under 2,000 characters.")
    if kind not in ("ordinary", "extraordinary"):
        problem = problem or gettext(language, "Choose an ordinary or an extraordinary cancellation.")
    elif kind == "extraordinary" and not reason and not problem:
        problem = gettext(language, "Give the reason for an extraordinary cancellation.")
    if problem:
        return _cancel_contract_form(request, 400, problem, {**values, "cancellation": kind, "reason": reason})
    if not await _allowed(request):
        return _cancel_contract_form(request, 429, gettext(language, "Too many requests from your network. Please try "
                                                                      "again in an hour."), values)
    service = _service(request)
    row = await service.receive("cancellation", values["name"], values["email"], values["contract"], language,
                                cancellation=kind, reason=reason)
    page = _received_page(request, row, "cancellation")
    page.background = BackgroundTask(service.process, row.id)  # after the answer: it reads the same either way
    return page


# "This wasn't me — keep my plan" ------------------------------------------------------------------------

async def _undo_target(request: Request):
    """The declaration the signed link names (a bad link is the 400 page), and whether it can still be undone."""
    declaration_id = request.app.state.signer.read_declaration(request.path_params["token"])
    return declaration_id, await _service(request).undoable(declaration_id)


def _undo_page(request: Request, row, status_code: int = 200, message: str | None = None, title: str | None = None):
    zone, language = request.app.state.settings.timezone, _language(request)
    title = title or gettext(language, "Keep your plan?")
    return render_with_token(request, "declaration_undo.html", CSRF_COOKIE, "/", status_code, row=row, title=title,
                             message=message, action=request.url.path,
                             received=moment_words(as_utc(row.received_at), zone, language) if row else None)


def _nothing_to_undo(request: Request) -> Response:
    language = _language(request)
    return _undo_page(request, None, 410, gettext(language, "This cancellation can no longer be undone here: it was "
                                                            "undone already, or the contract has ended. Please write "
                                                            "to your coach."), gettext(language, "Nothing to undo"))


async def undo_form(request: Request) -> Response:
    _, row = await _undo_target(request)
    if row is None:
        return _nothing_to_undo(request)
    return _undo_page(request, row)


async def undo(request: Request) -> Response:
    declaration_id, row = await _undo_target(request)
    await read_form(request, request.cookies.get(CSRF_COOKIE))
    if row is None or not await _service(request).undo(declaration_id):
        return _nothing_to_undo(request)
    language = _language(request)
    return _undo_page(request, None, 200, gettext(language, "Your plan continues as before. We've told your coach that "
                                                            "the cancellation wasn't yours."),
                      gettext(language, "Your plan continues"))


# /dashboard/compliance ------------------------------------------------------------------------------------

KIND_LABELS = {"withdrawal": "Withdrawal", "cancellation": "Cancellation (cancel button)"}
STATUS_LABELS = {"received": "Received, being handled", "accepted": "Done", "needs_coach": "Needs you",
                 "not_eligible": "Not a withdrawal: answered with the ordinary way to cancel",
                 "undone": "Undone by the client (\"This wasn't me\")"}


async def dashboard_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    page = whole_number(request.query_params.get("page") or "1", 1, 100_000)
    if page is None:
        raise BadRequest("The page must be a number from 1 to 100000.")
    settings = request.app.state.settings
    rows, total = await run_in_threadpool(_service(request).store.page, page)
    config = request.app.state.config.current().compliance
    account_country = await request.app.state.gateway.account_country() if config.cancel_button is None else None
    return render(request, "compliance.html", coach=coach, csrf=csrf_token(settings.secret_key, f"coach|{coach.session_key}"),
                  rows=rows, page=page, pages=max(1, -(-total // PAGE_SIZE)), compliance=config,
                  withdrawal_on=bool(config.withdrawal_days), cancel_button_on=config.cancel_button_on(account_country),
                  account_country=account_country, base_url=settings.base_url, zone=settings.timezone,
                  local=local_clock(settings.timezone), kinds=KIND_LABELS, statuses=STATUS_LABELS,
                  customer_url=lambda customer: stripe_customer_url(settings.stripe_api_key, customer))


CSV_HEADER = ["declaration_id", "kind", "received_at", "name", "email", "contract", "cancellation", "reason", "content",
              "source", "customer_id", "subscription_id", "status", "detail", "effective_at", "refund_mode", "refund",
              "refund_minor", "currency", "done_in_stripe_at", "undone_at", "acknowledgement_to",
              "acknowledgement_sent_at", "acknowledgement_status", "time_zone"]


def _csv_lines(rows, zone_name: str):
    from cancel_flow.web.dashboard_routes import _major

    when = local_times(zone_name)

    def cells(row) -> list:
        currency = row.refund_currency or ""
        return [
            row.id, row.kind, when(row.received_at), safe_cell(row.name), safe_cell(row.email), safe_cell(row.contract),
            row.cancellation or "", safe_cell(row.reason), safe_cell(row.content), row.source, safe_cell(row.customer_id),
            safe_cell(row.subscription_id), row.status, safe_cell(row.detail), when(row.effective_at),
            row.refund_mode or "", _major(row.refund_amount, currency) if currency else "",
            "" if row.refund_amount is None else row.refund_amount, currency.upper(), when(row.applied_at),
            when(row.undone_at), safe_cell(row.ack_to), when(row.ack_sent_at), row.ack_status or "", zone_name]

    return csv_chunks(CSV_HEADER, map(cells, rows))


async def export_csv(request: Request) -> Response:
    if await signed_in_coach(request) is None:
        return to_login()
    host = urlsplit(request.app.state.settings.base_url).hostname or "cancel-flow"
    return StreamingResponse(_csv_lines(_service(request).store.export_rows(), request.app.state.settings.timezone),
                             media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="declarations-{host}.csv"'})


routes = [
    Route("/cancel/{token}/withdraw", flow_withdraw_form, methods=["GET"]),
    Route("/cancel/{token}/withdraw", flow_withdraw, methods=["POST"]),
    Route("/withdraw", shared_withdraw_form, methods=["GET"]),
    Route("/withdraw", shared_withdraw, methods=["POST"]),
    Route("/cancel-contract", cancel_contract_form, methods=["GET"]),
    Route("/cancel-contract", cancel_contract, methods=["POST"]),
    Route("/declarations/{token}/undo", undo_form, methods=["GET"]),
    Route("/declarations/{token}/undo", undo, methods=["POST"]),
    Route("/dashboard/compliance", dashboard_page, methods=["GET"]),
    Route("/dashboard/compliance.csv", export_csv, methods=["GET"]),
]
