"""`/cancel/{token}…`: the subscriber's pages. Thin: parse, call the service, render.

Every page is in the client's language (cancel_flow/web/pages.py `page_language`): the Stripe customer's
`preferred_locales` come from the session's snapshot of the subscription, read where the flow reads it anyway."""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.cancel_service import MAX_COMMENT, CancelService, plan_note
from cancel_flow.errors import BadRequest
from cancel_flow.web.compliance_routes import flow_withdraw_url
from cancel_flow.web.pages import csrf_token, page_language, read_form, render


def _service(request: Request) -> CancelService:
    return request.app.state.cancel_service


def _here(request: Request, suffix: str = "") -> str:
    return f"/cancel/{request.path_params['token']}{suffix}"


def _language(request: Request, session, facts=None) -> str:
    """The page's language, with the client's Stripe `preferred_locales` (kept on the request for an error page);
    `facts`: the session's snapshot, when the caller has it."""
    if facts is None and session is not None:
        facts = _service(request).snapshot(session)
    if facts is not None:
        request.state.preferred_locales = facts.preferred_locales
    return page_language(request)


def _page(request: Request, template: str, session, status_code: int = 200, **context) -> Response:
    secret = request.app.state.settings.secret_key
    facts = _service(request).snapshot(session) if session is not None else None
    language = _language(request, session, facts)
    return render(request, template, status_code, session=session, token=request.path_params["token"],
                  csrf=csrf_token(secret, session.nonce) if session else "", max_comment=MAX_COMMENT,
                  plan_note=plan_note(session, facts, language) if session else None,
                  withdraw_url=flow_withdraw_url(request, session), **context)


async def show(request: Request) -> Response:
    visit = await _service(request).visit(request.path_params["token"], reconcile=True, show_decided=True)
    session = visit.session
    if visit.already_canceled:
        request.state.preferred_locales = visit.preferred_locales
        return render(request, "canceled.html")
    if visit.decided_elsewhere is not None:
        return await _decided_elsewhere(request, visit)
    if session.outcome != "open" or session.kept_at:
        return await done(request)
    if session.reason is not None and request.query_params.get("change") == "reason":
        return _page(request, "reason.html", session, chosen=session.reason, comment=session.comment or "")
    facts = _service(request).snapshot(session)
    if facts is not None and facts.fixed_end is not None:
        # the coach fixed an end date: kept, shown, and the client may end the plan earlier (no "keep")
        return _page(request, "fixed_end.html", session, ends_on=facts.fixed_end, period_end=facts.next_payment)
    if facts.scheduled_by_client if facts is not None else session.cancel_at_period_end:
        return _page(request, "scheduled.html", session)
    if session.reason is None:
        return _page(request, "reason.html", session)
    return await _offers_page(request, session)


async def _decided_elsewhere(request: Request, visit) -> Response:
    """A new link after an offer was accepted on another one: that decision, and cancel one click away. No
    session is opened for this link until the subscriber acts, so the dashboard counts no new one."""
    service = _service(request)
    first = visit.decided_elsewhere
    offer = service.live.offer(first.chosen_offer) if first.chosen_offer else None
    language = _language(request, first)
    outcome = await service.outcome(first, language)
    return render(request, "decided.html", session=first, outcome=outcome, offer=offer, token=request.path_params["token"],
                  csrf=csrf_token(request.app.state.settings.secret_key, visit.link.nonce),
                  plan_note=plan_note(first, service.snapshot(first), language))


async def _offers_page(request: Request, session, status_code: int = 200, error: str | None = None) -> Response:
    cards = await _service(request).cards(session, _language(request, session))
    return _page(request, "offers.html", session, status_code, cards=cards, error=error)


async def _form(request: Request):
    link, session = await _service(request).open_session(request.path_params["token"])
    _language(request, session)  # an error page from here on speaks the client's language
    fields = await read_form(request, csrf_token(request.app.state.settings.secret_key, session.nonce))
    return session, fields


async def reason(request: Request) -> Response:
    session, fields = await _form(request)
    if session.outcome != "open":
        return RedirectResponse(_here(request), status_code=303)
    service = _service(request)
    try:
        answer, comment = service.check_answer(fields.get("reason"), fields.get("comment"))
    except BadRequest as error:
        return _page(request, "reason.html", session, 400, error=error.message_in(_language(request, session)),
                     chosen=fields.get("reason"), comment=fields.get("comment", "")[:MAX_COMMENT * 2])
    await service.record_reason(session, answer, comment)
    return RedirectResponse(_here(request), status_code=303)


async def accept(request: Request) -> Response:
    session, fields = await _form(request)
    if session.outcome == "open":
        elsewhere = await _service(request).accept(session, fields.get("offer"), fields.get("payments"))
        if elsewhere:
            return RedirectResponse(elsewhere, status_code=303)
    return RedirectResponse(_here(request, "/done"), status_code=303)


async def cancel(request: Request) -> Response:
    session, fields = await _form(request)
    settings = request.app.state.settings
    service = _service(request)
    reason_given = fields.get("reason") or None
    if fields.get("end_early"):
        await service.end_early(session, reason_given, fields.get("comment"))
        return RedirectResponse(_here(request, "/done"), status_code=303)
    try:
        # the portal opens in the language of the page the client is on
        url = await service.send_to_portal(session, reason_given, fields.get("comment"), settings.return_url,
                                           settings.base_url + _here(request, "/done"), here_url=_here(request),
                                           language=_language(request, session))
    except BadRequest as error:
        if session.reason is None:
            return _page(request, "reason.html", session, 400, error=error.message_in(_language(request, session)),
                         chosen=reason_given, comment=fields.get("comment", "")[:MAX_COMMENT * 2])
        raise
    return RedirectResponse(url, status_code=303)


async def keep(request: Request) -> Response:
    session, _fields = await _form(request)
    await _service(request).keep(session)
    return RedirectResponse(_here(request, "/done"), status_code=303)


async def done(request: Request) -> Response:
    visit = await _service(request).visit(request.path_params["token"], reconcile=True)
    if visit.already_canceled:
        request.state.preferred_locales = visit.preferred_locales
        return render(request, "canceled.html")
    session = visit.session
    outcome = await _service(request).outcome(session, _language(request, session))
    if outcome is None:
        return RedirectResponse(_here(request), status_code=303)
    return _page(request, "done.html", session, outcome=outcome)


routes = [
    Route("/cancel/{token}", show, methods=["GET"]),
    Route("/cancel/{token}/reason", reason, methods=["POST"]),
    Route("/cancel/{token}/accept", accept, methods=["POST"]),
    Route("/cancel/{token}/cancel", cancel, methods=["POST"]),
    Route("/cancel/{token}/keep", keep, methods=["POST"]),
    Route("/cancel/{token}/done", done, methods=["GET"]),
]
