"""Rendering pages in the product's look, and the form checks every POST shares."""

import hashlib
import hmac
import secrets
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from cancel_flow.errors import BadRequest
from cancel_flow.i18n import install as install_translations
from cancel_flow.money import format_day, format_money, interval_words
from cancel_flow.reasons import REASONS

TEMPLATES = Path(__file__).parent / "templates"
MAX_FORM_FIELD = 10_000

# Templates ship with the package and don't change while it runs: no file checks per render.
environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True, auto_reload=False)
install_translations(environment)
environment.filters["money"] = lambda amount, currency: format_money(amount, currency)
environment.filters["day"] = format_day
environment.globals["interval_words"] = interval_words
environment.globals["REASONS"] = REASONS
# The coach's pages, in the navigation's order (the one place to add an entry); each coach sees those their role
# may open (cancel_flow/web/access.py).
environment.globals["NAVIGATION"] = (("/dashboard", "Retention"), ("/dashboard/attention", "Needs attention"),
                                     ("/dashboard/experiments", "Experiments"), ("/dashboard/deliveries", "Webhooks and alerts"),
                                     ("/dashboard/compliance", "Compliance"), ("/dashboard/settings", "Settings"),
                                     ("/dashboard/preview", "Preview"), ("/dashboard/integrations", "Links and integrations"),
                                     ("/dashboard/team", "Team"), ("/dashboard/stripe", "Stripe"), ("/dashboard/audit", "Audit log"))
# The retention dashboard's tabs (the "Retention" entry), each keeping the range and filters.
DASHBOARD_TABS = (("/dashboard", "Overview"), ("/dashboard/sessions", "Sessions"), ("/dashboard/offers", "Offers"),
                  ("/dashboard/reasons", "Reasons"), ("/dashboard/payments", "Payments and emails"))
environment.globals["DASHBOARD_TABS"] = DASHBOARD_TABS


def _may_open(coach, path: str, method: str = "GET") -> bool:
    """Whether this coach may make that request (`path` as the route's template): pages hide what they can't."""
    from cancel_flow.web.access import may_open

    return may_open(getattr(coach, "role", None), path, method)


environment.globals["may_open"] = _may_open


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    state = request.app.state
    html = environment.get_template(template).render(brand=state.config.current().brand, return_url=state.settings.return_url,
                                                     request_path=request.scope["path"], **context)
    return HTMLResponse(html, status_code=status_code)


def csrf_token(secret_key: str, scope: str) -> str:
    """A form token bound to one link (or one login session); a page from elsewhere cannot forge it."""
    return hmac.new(secret_key.encode(), f"csrf|{scope}".encode(), hashlib.sha256).hexdigest()[:40]


async def read_form(request: Request, expected_csrf: str | None, max_fields: int = 50, max_files: int = 0) -> dict:
    """The POSTed fields as text (and, up to `max_files`, uploaded files), after the CSRF check; anything
    unreadable is a 400, never a 500."""
    try:
        form = await request.form(max_files=max_files, max_fields=max_fields, max_part_size=MAX_FORM_FIELD)
    except Exception:
        raise BadRequest("We couldn't read that form. Please go back and try again.") from None
    fields = {}
    for key, value in form.multi_items():
        if not isinstance(value, str) and not max_files:
            raise BadRequest("This form doesn't take files.")
        fields.setdefault(key, value)
    sent = fields.get("csrf_token", "")
    if not isinstance(sent, str) or not expected_csrf or \
            not hmac.compare_digest(sent.encode("utf-8", "replace"), expected_csrf.encode()):
        raise BadRequest("This form has expired or was not sent from this page. Please go back, reload and try again.",
                         title="Please try again")
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
