"""Who may make each request: ONE table, `ROUTES`, from (method, path template) to the rule it needs.

    public   anyone (subscribers' signed links, sign-in, health checks, static files)
    stripe   anyone whose body carries Stripe's signature (the route checks it)
    coach    a signed-in coach whose role is at least `role`: viewer < editor < owner
    api      a valid API key holding `scope` (None: any valid key)

`guard_routes` wraps every route of the app with its rule when the app is built; a route without an
entry stops the app from being built (and tests/test_access.py fails), so no page ships unguarded.
A refused coach gets the 403 page, a refused key a JSON 403, and the route's code never runs, so
nothing changes. Without a session, a coach's page sends the browser to the sign-in page.

To add a route: add a line to `ROUTES` below with the least role (or scope) that may use it, e.g.
    ("GET", "/dashboard/preview"): coach(VIEWER),
    ("POST", "/dashboard/settings/offers"): coach(EDITOR),
Under `/dashboard/settings/` every GET is for viewers and every POST for editors already (`PREFIXES`).
HEAD follows GET.
The handler then reads the coach with `signed_in_coach(request)` (no second look-up).
"""

from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cancel_flow.web.coach_auth import COACH, current_coach_or_none, to_login
from cancel_flow.web.openapi import API_KEY, ApiRoute

VIEWER, EDITOR, OWNER = "viewer", "editor", "owner"
ROLES = (VIEWER, EDITOR, OWNER)  # each may do everything the ones before it may
ROLE_WORDS = {
    OWNER: "everything: settings, team, API keys, webhooks and the Stripe connection",
    EDITOR: "settings, and everything a viewer sees; not the team, API keys, webhooks or the Stripe connection",
    VIEWER: "the dashboard, sessions and exports; no changes",
}


@dataclass(frozen=True)
class Rule:
    kind: str  # public | stripe | coach | api
    role: str | None = None
    scope: str | None = None


PUBLIC = Rule("public")
SIGNED_BY_STRIPE = Rule("stripe")


def coach(role: str) -> Rule:
    assert role in ROLES, role
    return Rule("coach", role=role)


def api(scope: str | None) -> Rule:
    return Rule("api", scope=scope)


ROUTES: dict[tuple[str, str], Rule] = {
    # the subscriber's pages: each link is signed and carries what it may do
    ("GET", "/"): PUBLIC,
    ("POST", "/"): PUBLIC,
    ("GET", "/cancel/{token}"): PUBLIC,
    ("POST", "/cancel/{token}/reason"): PUBLIC,
    ("POST", "/cancel/{token}/accept"): PUBLIC,
    ("POST", "/cancel/{token}/cancel"): PUBLIC,
    ("POST", "/cancel/{token}/keep"): PUBLIC,
    ("GET", "/cancel/{token}/done"): PUBLIC,
    ("GET", "/billing/{token}"): PUBLIC,
    ("GET", "/billing/{token}/updated"): PUBLIC,
    ("GET", "/emails/unsubscribe/{token}"): PUBLIC,
    ("POST", "/emails/unsubscribe/{token}"): PUBLIC,
    ("GET", "/keep/{token}"): PUBLIC,
    ("POST", "/keep/{token}"): PUBLIC,
    ("GET", "/comeback/{token}"): PUBLIC,
    ("POST", "/comeback/{token}"): PUBLIC,
    ("GET", "/comeback/{token}/welcome"): PUBLIC,
    # the EU withdrawal function and the cancel button: for anyone, as the law asks (the forms check themselves)
    ("GET", "/cancel/{token}/withdraw"): PUBLIC,
    ("POST", "/cancel/{token}/withdraw"): PUBLIC,
    ("GET", "/withdraw"): PUBLIC,
    ("POST", "/withdraw"): PUBLIC,
    ("GET", "/cancel-contract"): PUBLIC,
    ("POST", "/cancel-contract"): PUBLIC,
    ("GET", "/declarations/{token}/undo"): PUBLIC,
    ("POST", "/declarations/{token}/undo"): PUBLIC,
    # operations and look
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,
    ("GET", "/brand.css"): PUBLIC,
    ("GET", "/brand/logo"): PUBLIC,
    ("*", "/static"): PUBLIC,
    ("POST", "/webhooks/stripe"): SIGNED_BY_STRIPE,
    # signing in, invitations, forgotten passwords: each form or token checks itself
    ("GET", "/dashboard/login"): PUBLIC,
    ("POST", "/dashboard/login"): PUBLIC,
    ("POST", "/dashboard/first-owner"): PUBLIC,
    ("GET", "/dashboard/password-reset"): PUBLIC,
    ("POST", "/dashboard/password-reset"): PUBLIC,
    ("GET", "/dashboard/password-reset/{token}"): PUBLIC,
    ("POST", "/dashboard/password-reset/{token}"): PUBLIC,
    ("GET", "/dashboard/invite/{token}"): PUBLIC,
    ("POST", "/dashboard/invite/{token}"): PUBLIC,
    # what every coach sees
    ("POST", "/dashboard/logout"): coach(VIEWER),
    ("GET", "/dashboard"): coach(VIEWER),
    ("GET", "/dashboard/sessions"): coach(VIEWER),
    ("GET", "/dashboard/offers"): coach(VIEWER),
    ("GET", "/dashboard/reasons"): coach(VIEWER),
    ("GET", "/dashboard/payments"): coach(VIEWER),
    ("GET", "/dashboard/export.csv"): coach(VIEWER),
    ("GET", "/dashboard/charts/weekly.svg"): coach(VIEWER),
    ("GET", "/dashboard/charts/reasons.svg"): coach(VIEWER),
    ("GET", "/dashboard/experiments"): coach(VIEWER),
    ("GET", "/dashboard/experiments/{experiment_id}"): coach(VIEWER),
    ("GET", "/dashboard/deliveries"): coach(VIEWER),
    ("GET", "/dashboard/attention"): coach(VIEWER),
    ("GET", "/dashboard/preview"): coach(VIEWER),
    ("GET", "/dashboard/compliance"): coach(VIEWER),
    ("GET", "/dashboard/compliance.csv"): coach(VIEWER),
    ("GET", "/dashboard/integrations"): coach(VIEWER),
    # clients' links act on their subscriptions, and a handled client is a change: not for read-only viewers
    ("POST", "/dashboard/attention/handled"): coach(EDITOR),
    ("POST", "/dashboard/integrations/links"): coach(EDITOR),
    ("GET", "/dashboard/integrations/links.csv"): coach(EDITOR),
    # the configuration: everyone signed in sees it (a viewer's fields greyed out), editors change it
    ("GET", "/dashboard/settings"): coach(VIEWER),
    ("GET", "/dashboard/settings/winback"): coach(VIEWER),
    ("POST", "/dashboard/settings/winback"): coach(EDITOR),
    ("GET", "/dashboard/settings/compliance"): coach(VIEWER),
    ("POST", "/dashboard/settings/compliance"): coach(EDITOR),
    # API keys, outgoing webhooks, the team, the audit log and the Stripe connection: owners
    ("POST", "/dashboard/deliveries/{delivery_id:int}/resend"): coach(OWNER),
    ("POST", "/dashboard/integrations/keys"): coach(OWNER),
    ("POST", "/dashboard/integrations/keys/revoke"): coach(OWNER),
    ("POST", "/dashboard/integrations/webhooks"): coach(OWNER),
    ("POST", "/dashboard/integrations/webhooks/{endpoint_id}/test"): coach(OWNER),
    ("POST", "/dashboard/integrations/webhooks/{endpoint_id}/remove"): coach(OWNER),
    ("GET", "/dashboard/team"): coach(OWNER),
    ("POST", "/dashboard/team/invite"): coach(OWNER),
    ("POST", "/dashboard/team/invites/cancel"): coach(OWNER),
    ("POST", "/dashboard/team/role"): coach(OWNER),
    ("POST", "/dashboard/team/remove"): coach(OWNER),
    ("GET", "/dashboard/audit"): coach(OWNER),
    ("GET", "/dashboard/audit.csv"): coach(OWNER),
    ("GET", "/dashboard/stripe"): coach(OWNER),
    ("POST", "/dashboard/stripe/check"): coach(OWNER),
    ("POST", "/dashboard/stripe/setup"): coach(OWNER),
    ("POST", "/dashboard/stripe/roll"): coach(OWNER),
    # the JSON API, by the key's scope (SPEC §9)
    ("GET", "/api/openapi.json"): api(None),
    ("POST", "/api/links"): api("links"),
    ("GET", "/api/stats"): api("stats"),
    ("GET", "/api/attention"): api("stats"),
    ("POST", "/api/hooks"): api("hooks"),
    ("GET", "/api/hooks/sample"): api("hooks"),
    ("DELETE", "/api/hooks/{hook_id}"): api("hooks"),
    ("GET", "/api/config"): api("config"),
    ("PUT", "/api/config"): api("config"),
    ("GET", "/api/config/versions"): api("config"),
    ("POST", "/api/config/versions/{number}/restore"): api("config"),
}

# Families of pages, for paths not listed above: (path prefix, {method: rule}).
PREFIXES: tuple[tuple[str, dict[str, Rule]], ...] = (
    ("/dashboard/settings/", {"GET": coach(VIEWER), "POST": coach(EDITOR)}),
)


class RouteWithoutRule(Exception):
    """A route the table doesn't list: the app is not built until it does."""


def rule_for(method: str, path: str) -> Rule | None:
    """The rule of a route, by its method and path template (HEAD follows GET)."""
    method = "GET" if method == "HEAD" else method
    found = ROUTES.get((method, path))
    if found is not None:
        return found
    for prefix, rules in PREFIXES:
        if path.startswith(prefix) and method in rules:
            return rules[method]
    return None


def allows(role: str | None, needed: str) -> bool:
    """Whether a coach of `role` may do what needs `needed`."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def may_open(role: str | None, path: str, method: str = "GET") -> bool:
    """Whether a coach of `role` may open a page (the navigation shows only these)."""
    rule = rule_for(method, path)
    return rule is not None and (rule.kind == "public" or (rule.kind == "coach" and allows(role, rule.role)))


def methods_of(route: BaseRoute) -> list[str]:
    if isinstance(route, Route):
        return sorted(set(route.methods or ("GET",)) - {"HEAD"})
    return ["*"]


def unlisted(routes) -> list[str]:
    """Each route (as 'METHOD /path') the table has no rule for."""
    return [f"{method} {route.path}" for route in routes for method in methods_of(route)
            if rule_for(method, route.path) is None]


def guard_routes(routes: list[BaseRoute]) -> None:
    """Wrap each route with its rules; RouteWithoutRule naming every route the table lacks."""
    missing = unlisted(routes)
    if missing:
        raise RouteWithoutRule(f"No rule for {', '.join(missing)}: add each to ROUTES in cancel_flow/web/access.py")
    differ = [f"{route.path} (the table: {rule_for(route.operation.method.upper(), route.path).scope}, the route: "
              f"{route.operation.scope})" for route in routes if isinstance(route, ApiRoute)
              and rule_for(route.operation.method.upper(), route.path).scope != route.operation.scope]
    if differ:
        raise RouteWithoutRule(f"The scope differs for {', '.join(differ)}: make ROUTES in cancel_flow/web/access.py and "
                               "the ApiRoute say the same")
    for route in routes:
        if isinstance(route, Mount):
            if rule_for("*", route.path).kind != "public":
                raise RouteWithoutRule(f"{route.path}: a mounted app can only be public")
            continue
        rules = {method: rule_for(method, route.path) for method in methods_of(route)}
        if any(rule.kind != "public" for rule in rules.values()):
            route.app = Guard(route.app, rules)


class Guard:
    """The ASGI app around one route: lets a request through only when its rule allows it."""

    def __init__(self, app: ASGIApp, rules: dict[str, Rule]):
        self.app, self.rules = app, rules

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = "GET" if scope["method"] == "HEAD" else scope["method"]
        rule = self.rules.get(method)
        refusal = None if rule is None else await _refusal(Request(scope, receive), rule)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def _refusal(request: Request, rule: Rule) -> Response | None:
    if rule.kind == "coach":
        return await _coach_refusal(request, rule.role)
    if rule.kind == "api":
        return await _key_refusal(request, rule.scope)
    return None


async def _coach_refusal(request: Request, role: str) -> Response | None:
    coach = await current_coach_or_none(request)
    if coach is None:
        return to_login()
    request.scope[COACH] = coach
    if allows(coach.role, role):
        return None
    from cancel_flow.web.pages import render

    return render(request, "forbidden.html", 403, coach=coach, needed=role, role_words=ROLE_WORDS)


def _api_error(status: int, code: str, message: str) -> Response:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


async def _key_refusal(request: Request, scope: str | None) -> Response | None:
    header = request.headers.get("authorization", "")
    kind, _, key = header.partition(" ")
    holder = None
    if kind.lower() == "bearer" and key.strip() and len(key) <= 200:
        holder = await run_in_threadpool(request.app.state.api_keys.check, key.strip())
    if holder is None:
        return _api_error(401, "unauthorized", "Send a valid API key as 'Authorization: Bearer <key>' "
                                               "(made on /dashboard/integrations or with cancel-flow api-key create NAME).")
    if scope is not None and scope not in holder.scopes:
        return _api_error(403, "forbidden", f"This key lacks the '{scope}' scope this route needs; its scopes: "
                                            f"{', '.join(sorted(holder.scopes)) or 'none'}. Make a key with it on "
                                            f"/dashboard/integrations (or cancel-flow api-key create NAME --scope {scope}).")
    request.scope[API_KEY] = holder
    return None
