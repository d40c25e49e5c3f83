"""Coach sign-in: a signed, HttpOnly, SameSite=Lax cookie; failed logins throttled per email."""

import secrets
from dataclasses import dataclass
from datetime import timedelta

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from cancel_flow.clock import utc_now
from cancel_flow.passwords import DECOY_HASH, verify_password
from cancel_flow.store.coaches import CoachStore

SESSION_COOKIE = "cf_coach"
LOGIN_CSRF_COOKIE = "cf_login_csrf"
SESSION_MAX_AGE = 12 * 3600
MAX_FAILURES = 5
FAILURE_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True)
class SignedInCoach:
    id: int
    email: str
    session_key: str  # random per sign-in; binds the dashboard's form tokens


class NotSignedIn(Exception):
    pass


class TooManyAttempts(Exception):
    pass


def _serializer(secret_key: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret_key, salt="cancel-flow.coach-session")


def current_coach(request: Request) -> SignedInCoach:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw or len(raw) > 512:
        raise NotSignedIn
    try:
        data = _serializer(request.app.state.settings.secret_key).loads(raw, max_age=SESSION_MAX_AGE)
        coach = request.app.state.coaches.get(int(data["c"]))
        session_key = str(data["k"])
    except (BadSignature, KeyError, TypeError, ValueError):
        raise NotSignedIn from None
    if coach is None:
        raise NotSignedIn
    return SignedInCoach(coach.id, coach.email, session_key)


def check_credentials(coaches: CoachStore, email: str, password: str) -> int | None:
    """The coach's id for a right password; raises TooManyAttempts inside a throttled window."""
    if coaches.failures_since(email, utc_now() - FAILURE_WINDOW) >= MAX_FAILURES:
        raise TooManyAttempts
    coach = coaches.find(email)
    if coach is not None and verify_password(password, coach.password_hash):
        coaches.forget_failures(email)
        return coach.id
    if coach is None:
        verify_password(password, DECOY_HASH)  # same time either way: don't reveal which emails exist
    coaches.record_failure(email)
    return None


def _cookie_options(request: Request) -> dict:
    return {"httponly": True, "samesite": "lax", "secure": request.app.state.settings.is_https, "path": "/"}


def sign_in(request: Request, response: Response, coach_id: int) -> None:
    value = _serializer(request.app.state.settings.secret_key).dumps({"c": coach_id, "k": secrets.token_urlsafe(16)})
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_MAX_AGE, **_cookie_options(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/dashboard")


def sign_out(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, **_cookie_options(request))
