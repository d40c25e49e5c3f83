"""`/`: the one link a coach pastes anywhere. Email in; links go out by email, never onto the page.

The page answers the same whether or not the email is known, and the lookup and the sending
happen after the answer, so neither the words nor the timing reveal a customer.
"""

from datetime import timedelta

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cancel_flow.errors import StripeUnavailable
from cancel_flow.i18n import DEFAULT, choose, gettext, html_lang, lang_query
from cancel_flow.logs import log_event
from cancel_flow.mailer import Message, MessageRefused
from cancel_flow.minting import links_for_email
from cancel_flow.web.coach_auth import client_address
from cancel_flow.web.pages import ENVIRONMENTS, page_language, picked_language, read_form, render, render_with_token

CSRF_COOKIE = "cf_form_csrf"
PER_EMAIL_PER_HOUR = 3
PER_ADDRESS_PER_HOUR = 20
WINDOW = timedelta(hours=1)


async def _page(request: Request, status_code: int = 200, **context) -> Response:
    from cancel_flow.web.compliance_routes import shared_page_links

    return render_with_token(request, "shared_link.html", CSRF_COOKIE, "/", status_code,
                             can_send=request.app.state.mailer.can_send, **await shared_page_links(request), **context)


async def ask_for_email(request: Request) -> Response:
    return await _page(request)


def _valid_email(email: str) -> bool:
    name, at, domain = email.partition("@")
    return bool(at and name and "." in domain and len(email) <= 320 and not any(c.isspace() for c in email))


async def send_links(request: Request) -> Response:
    fields = await read_form(request, request.cookies.get(CSRF_COOKIE))
    email = (fields.get("email") or "").strip()
    language = page_language(request)
    if not _valid_email(email):
        return await _page(request, 400, error=gettext(language, "Enter the email address you subscribed with, like "
                                                           "name@example.com."))
    if not request.app.state.mailer.can_send:
        return await _page(request, 503)
    requests = request.app.state.link_requests
    address = client_address(request)
    # Each count is one conditional statement: parallel requests can't slip past a limit.
    if not await run_in_threadpool(requests.allow, "ip", address, PER_ADDRESS_PER_HOUR, WINDOW):
        return await _page(request, 429, error=gettext(language, "Too many requests from your network. Please try again in "
                                                           "an hour."))
    email_allowed = await run_in_threadpool(requests.allow, "email", email, PER_EMAIL_PER_HOUR, WINDOW)
    # the email speaks the language picked on this page with the switch, else the customer's in Stripe, else the
    # brand's (never the browser's: the email may be read elsewhere)
    task = BackgroundTask(_find_and_send, request.app.state, email, picked_language(request)) if email_allowed else None
    response = render(request, "shared_link.html", sent_to=email, can_send=True)
    response.background = task
    return response


def links_message(brand, links, to: str, name: str | None = None, language: str = DEFAULT) -> Message:
    """The email with a client's billing link and cancel links, as plain text and HTML, in `language`."""
    context = {"brand": brand, "links": links, "name": name, "formats": language, "html_lang": html_lang(language)}
    environment = ENVIRONMENTS[language]
    return Message(to=to, subject=gettext(language, "Your %(brand)s subscription links", brand=brand.name),
                   text=environment.get_template("mail_links.txt").render(**context),
                   html=environment.get_template("mail_links.html").render(**context))


async def _find_and_send(state, email: str, picked: str | None = None) -> None:
    try:
        links = await links_for_email(state.gateway, state.signer, state.settings.base_url, email)
    except StripeUnavailable:
        log_event("shared_link.lookup_failed")
        return
    brand = state.config.current().brand
    if not links:
        comeback = await run_in_threadpool(state.winback.fresh_comeback_url, email)
        if comeback is None:
            log_event("shared_link.no_customer")
            return
        # a client who left, with a comeback step sent: a fresh comeback link (theirs had expired or was lost)
        language = choose(picked=picked, default=brand.default_locale)
        environment = ENVIRONMENTS[language]
        context = {"brand": brand, "comeback_url": comeback + lang_query(language), "formats": language, "html_lang": html_lang(language)}
        message = Message(to=email, subject=gettext(language, "Your link to come back to %(brand)s", brand=brand.name),
                          text=environment.get_template("mail_comeback.txt").render(**context),
                          html=environment.get_template("mail_comeback.html").render(**context))
        log_event("shared_link.comeback_link")
    else:
        language = choose(picked=picked, preferred_locales=links[0].preferred_locales, default=brand.default_locale)
        message = links_message(brand, links, email, language=language)
    try:
        await run_in_threadpool(state.mailer.send, message)
    except (OSError, MessageRefused) as error:
        log_event("shared_link.mail_failed", error=type(error).__name__)


routes = [
    Route("/", ask_for_email, methods=["GET"]),
    Route("/", send_links, methods=["POST"]),
]
