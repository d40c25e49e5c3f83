"""Coach sign-in: a signed, HttpOnly, SameSite=Lax cookie that carries the coach's session generation
(logout and a new password raise it, ending every session at once); failed logins throttled per
(email, address) and per address, so guesses from elsewhere never lock the coach out of their own."""

import ipaddress
import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from cancel_flow.passwords import DECOY_HASH, PASSWORD_CHECKS, HashingBusy
from cancel_flow.store.coaches import Throttle

SESSION_COOKIE = "cf_coach"
COACH = "cancel_flow.coach"  # where the route's guard (web/access.py) leaves the SignedInCoach in the ASGI scope
LOGIN_CSRF_COOKIE = "cf_login_csrf"
SESSION_MAX_AGE = 12 * 3600
MAX_FAILURES = 5  # per email from one address
MAX_ADDRESS_FAILURES = 20  # per address, whatever the emails
FAILURE_WINDOW = timedelta(minutes=15)
THROTTLE = Throttle(MAX_FAILURES, MAX_ADDRESS_FAILURES, FAILURE_WINDOW)


@dataclass(frozen=True)
class SignedInCoach:
    id: int
    email: str
    session_key: str  # random per sign-in; binds the dashboard's form tokens
    role: str = "viewer"  # owner | editor | viewer (cancel_flow/web/access.py); the least unless told


class NotSignedIn(Exception):
    pass


class TooManyAttempts(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class SignInBusy(Exception):
    """Too many sign-ins are being checked right now; nothing was counted."""


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="cancel-flow.coach-session")


def client_address(request: Request) -> str:
    """Whom a limit counts: the client's address (uvicorn puts a trusted proxy's X-Forwarded-For here);
    for IPv6 its /64, which one subscriber line usually holds whole and could otherwise rotate through."""
    host = (request.client.host if request.client else "") or "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if address.version == 4:
        return str(address)
    if address.ipv4_mapped:
        return str(address.ipv4_mapped)
    return str(ipaddress.ip_network(f"{address}/64", strict=False))


async def current_coach(request: Request) -> SignedInCoach:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 512:
        raise NotSignedIn
    try:
        data = _serializer(request.app.state.settings.secret_key).loads(raw, max_age=SESSION_MAX_AGE)
        coach_id, email, generation, session_key = int(data["c"]), str(data["e"]), int(data["g"]), str(data["k"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise NotSignedIn from None
    coach = await run_in_threadpool(request.app.state.coaches.get, coach_id)
    # The email too: SQLite gives a removed coach's id to the next one added.
    if coach is None or coach.session_generation != generation or coach.email != email:
        raise NotSignedIn
    return SignedInCoach(coach.id, coach.email, session_key, coach.role)


async def current_coach_or_none(request: Request) -> SignedInCoach | None:
    """The coach this request's cookie names, read from the database, or None."""
    try:
        return await current_coach(request)
    except NotSignedIn:
        return None


async def signed_in_coach(request: Request) -> SignedInCoach | None:
    """The coach signed in on this request, or None (the one the route's guard read, when it did)."""
    found = request.scope.get(COACH)
    if found is not None:
        return found
    return await current_coach_or_none(request)


def to_login() -> Response:
    """Where a request that needs a signed-in coach goes without one."""
    return RedirectResponse("/dashboard/login", status_code=303)


async def check_credentials(request: Request, email: str, password: str):
    """The coach row for a right password, None for a wrong one; TooManyAttempts inside a throttled
    window, SignInBusy when the password checks are all taken."""
    coaches, address = request.app.state.coaches, client_address(request)
    attempt = await run_in_threadpool(coaches.start_attempt, email, address, THROTTLE)
    if attempt.refused_by == "pair":
        raise TooManyAttempts("Too many failed attempts for this email. Wait 15 minutes and try again.")
    if attempt.refused_by == "address":
        raise TooManyAttempts("Too many failed attempts from your network. Wait 15 minutes and try again.")
    coach = attempt.coach
    try:
        # An unknown email costs the same check, so the timing doesn't reveal which emails exist.
        right = await PASSWORD_CHECKS.verify(password, coach.password_hash if coach else DECOY_HASH)
    except HashingBusy:
        await run_in_threadpool(coaches.attempt_not_checked, email, address)
        raise SignInBusy from None
    if coach is not None and right:
        await run_in_threadpool(coaches.attempt_succeeded, email, address)
        return coach
    return None


def _cookie_options(request: Request) -> dict:
    return {"httponly": True, "samesite": "lax", "secure": request.app.state.settings.is_https, "path": "/"}


def sign_in(request: Request, response: Response, coach) -> None:
    value = _serializer(request.app.state.settings.secret_key).dumps(
        {"c": coach.id, "e": coach.email, "g": coach.session_generation, "k": secrets.token_urlsafe(16)})
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_MAX_AGE, **_cookie_options(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard")


async def sign_out(request: Request, response: Response, coach: SignedInCoach) -> None:
    """Ends every session of this coach, here and on any other device."""
    await run_in_threadpool(request.app.state.coaches.end_sessions, coach.id)
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(request))
