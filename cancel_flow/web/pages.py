"""Rendering pages in the product's look, and the form checks every POST shares."""

import hmac
import secrets
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, pass_context, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cancel_flow.billing import per_period
from cancel_flow.emails.compose import TEMPLATES as EMAIL_TEMPLATES
from cancel_flow.errors import BadRequest
from cancel_flow.i18n import DEFAULT, LANGUAGES, N_, PerLanguage, choose, gettext, html_lang
from cancel_flow.i18n import install as install_translations
from cancel_flow.links import LONGEST_MAX_AGE
from cancel_flow.money import format_day, format_money, format_number, format_percent_off, interval_words
from cancel_flow.reasons import REASONS
from cancel_flow.templating import TemplateEnvironment
from cancel_flow.web.page_cache import PAGES, keep

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELD = 10_000
# The language a client picked with the page's switch: `?lang=` once, then this cookie, scoped to the link's
# path (/cancel/<token>), so the choice holds for that link only and every step of it.
LANGUAGE_COOKIE = "cf_lang"
# The coach's pages: English words, money and dates in the coach's locale (CANCEL_FLOW_LOCALE).
COACH_PATHS = ("/dashboard",)
# The coach's pages, in the navigation's order (the one place to add an entry); each coach sees those their role
# may open (cancel_flow/web/access.py).
NAVIGATION = (("/dashboard", "Retention"), ("/dashboard/attention", "Needs attention"),
              ("/dashboard/experiments", "Experiments"), ("/dashboard/deliveries", "Webhooks and alerts"),
              ("/dashboard/compliance", "Compliance"), ("/dashboard/settings", "Settings"),
              ("/dashboard/preview", "Preview"), ("/dashboard/integrations", "Links and integrations"),
              ("/dashboard/team", "Team"), ("/dashboard/stripe", "Stripe"), ("/dashboard/audit", "Audit log"))
# The retention dashboard's tabs (the "Retention" entry), each keeping the range and filters.
DASHBOARD_TABS = (("/dashboard", "Overview"), ("/dashboard/sessions", "Sessions"), ("/dashboard/offers", "Offers"),
                  ("/dashboard/reasons", "Reasons"), ("/dashboard/payments", "Payments and emails"))


def _may_open(coach, path: str, method: str = "GET") -> bool:
    """Whether this coach may make that request (`path` as the route's template): pages hide what they can't."""
    from cancel_flow.web.access import may_open

    return may_open(getattr(coach, "role", None), path, method)


def _make_environment(language: str) -> Environment:
    """The pages' environment in `language`. Templates ship with the package and don't change while it runs:
    no file checks per render. Money and dates follow the page's `formats` (the client's language, or the
    coach's locale on the dashboard)."""
    made = TemplateEnvironment(loader=FileSystemLoader([TEMPLATES, EMAIL_TEMPLATES]), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, auto_reload=False)
    install_translations(made, language)
    made.filters["money"] = pass_context(lambda context, amount, currency:
                                         format_money(amount, currency, context.get("formats", language)))
    made.filters["day"] = pass_context(lambda context, moment: format_day(moment, context.get("formats", language)))
    made.filters["number"] = pass_context(lambda context, value: format_number(value, context.get("formats", language)))
    made.filters["percent_off"] = pass_context(lambda context, value:
                                               format_percent_off(value, context.get("formats", language)))
    made.globals["interval_words"] = interval_words
    made.globals["per_period"] = lambda amount, interval, count: per_period(amount, interval, count, language)
    made.globals["REASONS"] = REASONS
    made.globals["reason_words"] = {code: gettext(language, words) for code, words in REASONS.items()}
    made.globals["NAVIGATION"] = NAVIGATION
    made.globals["DASHBOARD_TABS"] = DASHBOARD_TABS
    made.globals["may_open"] = _may_open
    return made


ENVIRONMENTS = PerLanguage(_make_environment)
environment = ENVIRONMENTS[DEFAULT]  # English: the coach's pages (and the words as written)


def _header(scope, name: bytes) -> bytes | None:
    """A request header's first value as sent (ASGI gives the names in lower case), without building the request's
    Headers for it."""
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def picked_language(request: Request) -> str | None:
    """The language the client picked with the switch: `?lang=` now, else the link's cookie (found once per request:
    a page asks for it more than once)."""
    scope = request.scope
    try:
        return scope["cancel_flow.picked_language"]
    except KeyError:
        pass
    picked = None
    if b"lang=" in scope.get("query_string", b""):
        asked = request.query_params.get("lang")
        if asked in LANGUAGES:
            picked = asked
    if picked is None:
        kept = request.cookies.get(LANGUAGE_COOKIE) if _header(scope, b"cookie") else None
        picked = kept if kept in LANGUAGES else None
    scope["cancel_flow.picked_language"] = picked
    return picked


def page_language(request: Request, brand=None) -> str:
    """The language a client's page is served in: the switch, the Stripe customer's `preferred_locales` (which
    the route puts in `request.state` when it has read them), the browser, the brand's `default_locale`. Chosen
    once per request for the same `preferred_locales` and brand default (a page asks for it more than once)."""
    brand = brand or request.app.state.config.current().brand
    preferred = getattr(request.state, "preferred_locales", ())
    scope = request.scope
    kept = scope.get("cancel_flow.page_language")
    if kept is not None and kept[0] == preferred and kept[1] == brand.default_locale:
        return kept[2]
    accepted = _header(scope, b"accept-language")
    language = choose(picked=picked_language(request), preferred_locales=preferred,
                      accept_language=accepted.decode("latin-1") if accepted is not None else None,
                      default=brand.default_locale)
    scope["cancel_flow.page_language"] = (preferred, brand.default_locale, language)
    return language


def is_coach_page(request: Request) -> bool:
    return request.scope["path"].startswith(COACH_PATHS)


def _switch_links(request: Request, language: str) -> list[tuple[str, str, str, bool]]:
    """The language switch: (name in itself, BCP 47 tag, address, current?) per language. A page answering a
    form links to the page the link opens on (its address only takes the form). Kept for the last few addresses
    (a reload asks for the same again)."""
    scope = request.scope
    asked = (scope["path"], scope["method"], scope.get("query_string"), language)
    links = _SWITCHES.get(asked)
    if links is None:
        links = _switch_links_for(request, language)
        keep(_SWITCHES, asked, links, 256)
    return list(links)


_SWITCHES: dict = {}  # (path, method, query string, language) -> the switch's links, for `_switch_links`


def _switch_links_for(request: Request, language: str) -> tuple:
    path, reading = request.scope["path"], request.scope["method"] in ("GET", "HEAD")
    if not reading and path.startswith("/cancel/"):
        path = "/".join(path.split("/")[:3])
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"] \
        if reading and request.scope.get("query_string") else ()
    prefix = f"{path}?{urlencode(kept)}&lang=" if kept else f"{path}?lang="
    return tuple((name, code.replace("_", "-"), prefix + code, code == language) for code, name in LANGUAGES.items())


_VARY = {"Vary": "Accept-Language, Cookie"}


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    """A page: the coach's in English (money and dates in CANCEL_FLOW_LOCALE), a client's in their language,
    with `<html lang>` and the language switch (`language_switch=False` leaves the switch out)."""
    state = request.app.state
    brand = state.config.current().brand
    if is_coach_page(request):
        language, formats, switch = DEFAULT, state.settings.locale, None
    else:
        language = page_language(request, brand)
        formats = language
        switch = _switch_links(request, language) if context.pop("language_switch", True) else None
    context = dict(brand=brand, return_url=state.settings.return_url, request_path=request.scope["path"],
                   language=language, html_lang=html_lang(language), formats=formats, language_switch=switch,
                   picked=picked_language(request), **context)
    token = (request.path_params or {}).get("token")
    if switch is None:
        html = ENVIRONMENTS[language].get_template(template).render(context)
    else:  # a client's page: the same page for the same inputs (cancel_flow/web/page_cache.py)
        # the switch is `_switch_links_for` of the address and language (in the context), the method and the query
        html = PAGES.render(ENVIRONMENTS[language], template, context, (token, context.get("csrf")),
                            {"language_switch": (request.scope["method"], request.scope.get("query_string"))})
    # a client's page: its language comes from these (a shared cache keeps one per language)
    response = HTMLResponse(html, status_code=status_code, headers=_VARY if switch is not None else None)
    if switch and token and request.scope["path"].startswith("/cancel/") and b"lang=" in request.scope.get("query_string", b""):
        picked = request.query_params.get("lang")
        if picked in LANGUAGES:
            response.set_cookie(LANGUAGE_COOKIE, picked, max_age=LONGEST_MAX_AGE, path=f"/cancel/{token}",
                                httponly=True, samesite="lax", secure=state.settings.is_https)
    return response


def csrf_token(secret_key: str, scope: str) -> str:
    """A form token bound to one link (or one login session); a page from elsewhere cannot forge it. Kept for the
    last few thousand (every page of a link, and every form it posts, asks for the same one again)."""
    token = _CSRF_TOKENS.get((secret_key, scope))
    if token is None:
        token = hmac.digest(secret_key.encode(), f"csrf|{scope}".encode(), "sha256").hex()[:40]
        keep(_CSRF_TOKENS, (secret_key, scope), token, 4096)
    return token


_CSRF_TOKENS: dict = {}  # (secret, scope) -> the form token, for `csrf_token`


async def read_form(request: Request, expected_csrf: str | None, max_fields: int = 50, max_files: int = 0) -> dict:
    """The POSTed fields as text (and, up to `max_files`, uploaded files), after the CSRF check; anything
    unreadable is a 400, never a 500."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields, max_part_size=MAX_FORM_FIELD)
    except Exception:
        raise BadRequest(N_("We couldn't read that form. Please go back and try again.")) from None
    fields = {}
    for key, value in form.multi_items():
        if not isinstance(value, str) and not max_files:
            raise BadRequest(N_("This form doesn't take files."))
        fields.setdefault(key, value)
    sent = fields.get("csrf_token", "")
    if not isinstance(sent, str) or not expected_csrf or \
            not hmac.compare_digest(sent.encode("utf-8", "replace"), expected_csrf.encode()):
        raise BadRequest(N_("This form has expired or was not sent from this page. Please go back, reload and try again."),
                         title=N_("Please try again"))
    return fields


def double_submit_token(request: Request, response: Response, cookie: str, path: str) -> str:
    """A form token for pages without a session yet: the same random value in a cookie and the form."""
    token = request.cookies.get(cookie)
    if not token or len(token) > 64:
        token = secrets.token_urlsafe(24)
    response.set_cookie(cookie, token, max_age=3600, httponly=True, samesite="lax",
                        secure=request.app.state.settings.is_https, path=path)
    return token


def render_with_token(request: Request, template: str, cookie: str, path: str, status_code: int = 200,
                      **context) -> HTMLResponse:
    page = HTMLResponse()
    token = double_submit_token(request, page, cookie, path)
    rendered = render(request, template, status_code, csrf=token, **context)
    rendered.headers.append("set-cookie", page.headers["set-cookie"])
    return rendered
