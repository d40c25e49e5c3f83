"""The application: settings, the live configuration, database and Stripe wired together; errors rendered as pages."""

import asyncio
import contextlib
import gc
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cancel_flow.cancel_service import REUSE_SECONDS, CancelService
from cancel_flow.compliance_service import ComplianceService
from cancel_flow.errors import CancelFlowError, InvalidLink
from cancel_flow.i18n import DEFAULT, N_, gettext
from cancel_flow.links import LinkSigner
from cancel_flow.logs import log_event
from cancel_flow.mailer import Mailer
from cancel_flow.metrics import exposition
from cancel_flow.config.live import LiveConfiguration
from cancel_flow.recent_answers import RecentAnswers
from cancel_flow.settings import Settings, load_settings
from cancel_flow.store import Store, make_engine, make_quick_engine
from cancel_flow.store.api_keys import ApiKeyStore, LinkRequestStore
from cancel_flow.store.coaches import CoachStore
from cancel_flow.store.config_versions import ConfigVersions
from cancel_flow.store.logos import LogoStore
from cancel_flow.store.declarations import DeclarationStore
from cancel_flow.store.stats import StatsQueries
from cancel_flow.stripe_connection import LiveConnection, finish_roll_quietly
from cancel_flow.stripe_gateway import StripeGateway
from cancel_flow.hooks import is_test_mode
from cancel_flow.emails.run import send_emails_periodically
from cancel_flow.emails.sending import GuardedDispatcher
from cancel_flow.outbox import dispatch_periodically
from cancel_flow.outbox.session_events import SessionEvents
from cancel_flow.web import (api_routes, attention_routes, audit_routes, billing_routes, cancel_routes, compliance_routes,
                             config_routes, dashboard_routes, email_routes, experiment_routes, hook_routes,
                             integration_routes, preview_routes, settings_routes, shared_link_routes, stripe_routes,
                             team_routes, webhook_routes, winback_routes)
from cancel_flow.web.access import guard_routes
from cancel_flow.web.page_cache import keep
from cancel_flow.winback_service import WinbackService
from cancel_flow.web.shared_link_routes import WINDOW as LINK_REQUEST_WINDOW
from cancel_flow.web.coach_auth import FAILURE_WINDOW
from cancel_flow.web.middleware import REQUEST_ID, BodySizeLimit, HealthCheck, RequestEdge
from cancel_flow.web.pages import csrf_token, is_coach_page, page_language, render

STATIC = Path(__file__).resolve().parents[2] / "static"
if not STATIC.is_dir():
    STATIC = Path.cwd() / "static"


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(("/api/", "/webhooks/"))


def _words(text: str) -> str:
    return " ".join("".join(ch for ch in text.lower() if ch.isalnum() or ch.isspace()).split())


def without_heading(title: str, message: str) -> str:
    """The message under a heading, without a first sentence that only says the heading again
    ("This link is not valid" / "This link is not valid. Ask for a new one.")."""
    first, _, rest = message.partition(". ")
    return rest.strip() if _words(first) == _words(title) else message


def _error_page(request: Request, status: int, title: str, message: str, error: CancelFlowError | None = None,
                **values) -> Response:
    """The error as JSON for the API, else as a page: a client's in their language (`title` and `message` are
    catalog messages, `values` fill the message in), the coach's in English."""
    if _wants_json(request):
        message = message % values if values else message
        return JSONResponse({"error": {"code": title.lower().replace(" ", "_"), "message": message}}, status_code=status)
    invalid_link = title == InvalidLink.title
    language = DEFAULT if is_coach_page(request) else page_language(request)
    if error is not None:
        title, message = error.title_in(language), error.message_in(language)
    else:
        title, message = gettext(language, title), gettext(language, message, **values)
    message = without_heading(title, message)
    token = request.path_params.get("token") if request.path_params else None
    cancel_action = f"/cancel/{token}/cancel" if token and status in (409, 503) else None
    csrf = withdraw_url = None
    if cancel_action:
        try:
            link = request.app.state.signer.read_cancel(token)
            csrf = csrf_token(request.app.state.settings.secret_key, link.nonce)
        except CancelFlowError:
            cancel_action = None
        else:
            withdraw_url = _withdraw_url(request, link.nonce)
    return render(request, "error.html", status, status=status, title=title, message=message, invalid_link=invalid_link,
                  cancel_action=cancel_action, csrf=csrf, withdraw_url=withdraw_url, **_try_again(request, status, token))


def _withdraw_url(request: Request, nonce: str) -> str | None:
    """"Withdraw from contract here" beside "Continue to cancel" on a cancel link's error pages too, when the session
    can be read at once (the quick store never waits on a lock: an error page must not hang)."""
    if request.url.path.endswith("/withdraw"):
        return None  # the withdrawal's own refusal
    try:
        session = request.app.state.quick_store.find_session(nonce)
    except Exception:
        return None
    return compliance_routes.flow_withdraw_url(request, session)


def _try_again(request: Request, status: int, token: str | None) -> dict:
    """A 503 offers to send the same request again: a GET as a link to the same address, a subscriber's
    form as the same fields (its CSRF token included). Other forms (a coach's login) are not re-sent."""
    if status != 503:
        return {}
    if request.method in ("GET", "HEAD") and not request.url.path.startswith("//"):
        query = request.url.query
        return {"retry_url": request.url.path + (f"?{query}" if query else "")}
    form = getattr(request, "_form", None)  # what the route already read; never read again here
    if request.method == "POST" and token and request.url.path.startswith("/cancel/") and form is not None:
        return {"retry_action": request.url.path,
                "retry_fields": [(key, value) for key, value in form.multi_items() if isinstance(value, str)]}
    return {}


async def on_domain_error(request: Request, error: CancelFlowError) -> Response:
    return _error_page(request, error.status_code, error.title, error.message, error)


HTTP_TITLES = {404: N_("Page not found"), 405: N_("Not allowed"), 413: N_("That was too large")}


async def on_http_error(request: Request, error: HTTPException) -> Response:
    return _error_page(request, error.status_code, HTTP_TITLES.get(error.status_code, N_("Something went wrong")),
                       error.detail if error.status_code not in (404, 405) else N_("There is nothing here."))


async def on_database_error(request: Request, error: SQLAlchemyError) -> Response:
    log_event("database.failed", level=40, request_id=request.scope.get(REQUEST_ID), error=type(error).__name__,
              path_template=getattr(request.scope.get("route"), "path", None))
    return _error_page(request, 503, N_("We couldn't do that just now"),
                       N_("Our records are unavailable for a moment. Please try again shortly."))


async def unexpected_error_page(scope: Scope, request_id: str) -> Response:
    """What an unexpected exception shows (RequestEdge has logged it): the reference to quote."""
    response = _error_page(Request(scope), 500, N_("Something went wrong"),
                           N_("Nothing was changed. Please try again in a moment. If it keeps happening, tell us this "
                              "reference: %(reference)s."), reference=request_id)
    return response  # RequestEdge adds the X-Request-ID header


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


READY_WAIT = 2  # seconds readyz waits for a lock before saying the database is locked
_READ_ONLY, _LOCKED = {"25006"}, {"55P03", "57014", "40P01"}


def _database_takes_a_write(engine: Engine) -> None:
    """Raise unless the database takes a write now. The write is an UPDATE of the one-row alembic_version
    table, rolled back, so it leaves nothing behind but needs what any write needs: PostgreSQL refuses
    it in a read-only database or transaction, and waits at most READY_WAIT for a lock another
    connection holds; SQLite refuses it in a read-only file and while another connection holds the
    write lock (for READY_WAIT)."""
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            busy = connection.exec_driver_sql("PRAGMA busy_timeout").scalar()
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {READY_WAIT * 1000}")
        else:
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{READY_WAIT}s'")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = '{READY_WAIT + 1}s'")
        try:
            connection.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))
        finally:
            connection.rollback()
            if sqlite:
                connection.exec_driver_sql(f"PRAGMA busy_timeout = {int(busy)}")


def _database_problem(error: Exception) -> str:
    code = getattr(getattr(error, "orig", None), "sqlstate", None)
    text = str(getattr(error, "orig", error)).lower()
    if code in _READ_ONLY or "readonly" in text or "read-only" in text:
        return "read_only"
    if code in _LOCKED or "locked" in text:
        return "locked"
    return "unreachable"


async def readyz(request: Request) -> Response:
    """200 when the database takes a write and a valid live configuration is loaded; 503 naming what is wrong."""
    if request.app.state.config.current() is None:
        return JSONResponse({"status": "unavailable", "config": "not_loaded"}, status_code=503)
    try:
        await run_in_threadpool(_database_takes_a_write, request.app.state.store.engine)
    except Exception as error:
        problem = _database_problem(error)
        log_event("readyz.database_" + problem, level=30, error=type(error).__name__)
        return JSONResponse({"status": "unavailable", "database": problem, "config": "loaded"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok", "config": "loaded"})


async def metrics(request: Request) -> Response:
    body, content_type = exposition()
    return Response(body, media_type=content_type)


async def brand_css(request: Request) -> Response:
    color = request.app.state.config.current().brand.color
    return Response(f":root {{ --brand: {color}; }}\n", media_type="text/css",
                    headers={"Cache-Control": "public, max-age=300"})


LOGOS_KEPT = 8  # uploaded logos each process keeps in memory, by SHA-256 (a logo never changes under its hash)


async def brand_logo(request: Request) -> Response:
    """The brand's logo: an uploaded one from the database (kept in memory by its hash afterwards), else
    the operator's file named by `[brand] logo`. Images only: nothing in them runs (CSP), and the type
    sent is the one read from the bytes at upload, never guessed by the browser (nosniff, on every response)."""
    brand = request.app.state.config.current().brand
    if brand.logo_upload:
        kept = request.app.state.logo_cache
        logo = kept.get(brand.logo_upload)
        if logo is None:
            logo = await run_in_threadpool(request.app.state.logos.get, brand.logo_upload)
            if logo is None:
                raise HTTPException(404)
            keep(kept, logo.sha256, logo, LOGOS_KEPT)
        return Response(logo.data, media_type=logo.content_type, headers={
            "Cache-Control": "public, max-age=3600", "Content-Security-Policy": "default-src 'none'"})
    if brand.logo is None:
        raise HTTPException(404)
    return FileResponse(brand.logo, headers={"Cache-Control": "public, max-age=3600"})


def _prune_counts(coaches: CoachStore, link_requests: LinkRequestStore) -> int:
    return coaches.prune_attempts(FAILURE_WINDOW) + link_requests.prune(LINK_REQUEST_WINDOW) + coaches.prune_tokens()


async def _sweep_periodically(store: Store, every: float, coaches: CoachStore, link_requests: LinkRequestStore,
                              settings: Settings) -> None:
    while True:
        await asyncio.sleep(every)
        await finish_roll_quietly(settings, store.engine)  # a rolled signing secret's old endpoint, after 24 hours
        try:
            marked = await run_in_threadpool(store.sweep_deflected)
            if marked:
                log_event("sweep.deflected", sessions=marked)
        except Exception as error:  # the next round tries again
            log_event("sweep.failed", level=40, error=type(error).__name__)
        try:
            pruned = await run_in_threadpool(_prune_counts, coaches, link_requests)
            if pruned:
                log_event("sweep.counts_pruned", rows=pruned)
        except Exception as error:
            log_event("sweep.prune_failed", level=40, error=type(error).__name__)


async def _declarations_periodically(compliance: ComplianceService, live: LiveConfiguration, every: float) -> None:
    """Declarations a stopped worker left, Stripe work to retry, and records past `records_keep_days` deleted."""
    while True:
        await asyncio.sleep(every)
        try:
            await compliance.process_due()
            deleted = await run_in_threadpool(compliance.store.prune, live.current().compliance.records_keep_days)
            if deleted:
                log_event("sweep.declarations_deleted", declarations=deleted)
        except Exception as error:  # the next round tries again
            log_event("sweep.declarations_failed", level=40, error=type(error).__name__)


class App(Starlette):
    """Starlette without its outermost ServerErrorMiddleware: RequestEdge, inside it, already takes every exception
    (logs it and renders the error page), so that layer only cost a coroutine and a `send` wrapper per request.
    With a handler for 500 or debug on, the layer stays, as Starlette builds it."""

    def build_middleware_stack(self):
        stack = super().build_middleware_stack()
        if isinstance(stack, ServerErrorMiddleware) and stack.handler is None and not stack.debug:
            return stack.app
        return stack


def create_app(settings: Settings | None = None, sweep_every: float | None = None) -> Starlette:
    """Validate everything the service needs before it takes a request.

    `sweep_every` (seconds) runs the background work as `serve` does: the 24-hour deflection sweep,
    deliveries, billing emails, and following the live configuration's version."""
    settings = settings or load_settings()
    settings.require_stripe()
    engine = make_engine(settings.database_url, settings.database_pool_size, settings.database_pool_timeout)
    live = LiveConfiguration.start(ConfigVersions(engine), settings.offers_path)
    events = SessionEvents(live, is_test_mode(settings.stripe_api_key))
    store = Store(engine, on_event=events)
    quick_store = Store(make_quick_engine(settings.database_url, settings.database_pool_size), on_event=events)
    signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        gateway = StripeGateway(settings, connection=app.state.stripe_connection)
        app.state.gateway = gateway
        # Stripe's answers of the last seconds, per worker, for reloads of one link (billing and cancel links)
        app.state.recent_answers = RecentAnswers(REUSE_SECONDS)
        app.state.cancel_service = CancelService(store, gateway, live, signer, quick_store=quick_store,
                                                 recent=app.state.recent_answers)
        app.state.winback = WinbackService(store.engine, gateway, live, signer, settings, app.state.cancel_service)
        app.state.compliance = ComplianceService(DeclarationStore(store.engine), gateway, live, signer, settings,
                                                 is_test_mode(settings.stripe_api_key))
        sweeper = asyncio.create_task(_sweep_periodically(store, sweep_every, app.state.coaches, app.state.link_requests,
                                                           settings)) \
            if sweep_every else None
        # Outgoing webhooks, alerts and emails: any worker delivers what is due (see cancel_flow/outbox).
        # (a GuardedDispatcher: billing emails are marked as sending before SMTP, so none goes out twice)
        sender = asyncio.create_task(dispatch_periodically(GuardedDispatcher.for_config(store.engine, settings, live))) \
            if sweep_every else None
        emailer = asyncio.create_task(send_emails_periodically(store.engine, settings, live)) if sweep_every else None
        follower = asyncio.create_task(live.follow()) if sweep_every else None
        declarations = asyncio.create_task(_declarations_periodically(app.state.compliance, live, sweep_every)) \
            if sweep_every else None
        # Everything loaded so far (the Stripe SDK alone is thousands of classes) lives as long as
        # the process: keep it out of the collector's full passes, which otherwise stall requests.
        gc.freeze()
        yield
        for task in (sweeper, sender, emailer, follower, declarations):
            if task:
                task.cancel()
        await gateway.close()
        store.engine.dispose()
        quick_store.engine.dispose()

    health = Route("/healthz", healthz)
    routes = [
        *cancel_routes.routes,  # first: the subscriber's pages are matched before any other route is tried
        *compliance_routes.routes,
        health,  # then the health checks, which a load balancer asks every few seconds (answered by HealthCheck)
        Route("/readyz", readyz),
        *billing_routes.routes,
        *winback_routes.routes,
        *email_routes.routes,
        *webhook_routes.routes,
        *hook_routes.routes,
        *experiment_routes.routes,
        *dashboard_routes.routes,
        *attention_routes.routes,
        *settings_routes.routes,
        *preview_routes.routes,
        *team_routes.routes,
        *audit_routes.routes,
        *integration_routes.routes,
        *stripe_routes.routes,
        *api_routes.routes,
        *config_routes.routes,
        *shared_link_routes.routes,
        Route("/metrics", metrics),
        Route("/brand.css", brand_css),
        Route("/brand/logo", brand_logo),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    guard_routes(routes)  # who may make each request: one table, cancel_flow/web/access.py
    app = App(routes=routes, lifespan=lifespan, exception_handlers={
        CancelFlowError: on_domain_error, HTTPException: on_http_error, SQLAlchemyError: on_database_error,
    })
    app.state.settings, app.state.config, app.state.store, app.state.signer = settings, live, store, signer
    app.state.quick_store = quick_store
    # the signing secret and portal configurations in use: the environment's, else those `stripe setup` stored
    app.state.stripe_connection = LiveConnection(store.engine, settings)
    app.state.coaches, app.state.stats = CoachStore(store.engine), StatsQueries(store.engine)
    app.state.api_keys, app.state.link_requests = ApiKeyStore(store.engine), LinkRequestStore(store.engine)
    app.state.logos, app.state.logo_cache = LogoStore(store.engine), {}
    no_reply = f"no-reply@{urlsplit(settings.base_url).hostname}"
    app.state.mailer = Mailer(settings, sender=lambda: live.current().brand.support_email or no_reply)
    app.add_middleware(BodySizeLimit, larger={settings_routes.LOGO_PATH: settings_routes.MAX_LOGO_BODY})
    app.add_middleware(HealthCheck, route=health)
    app.add_middleware(RequestEdge, page=unexpected_error_page, https=settings.is_https)
    return app
