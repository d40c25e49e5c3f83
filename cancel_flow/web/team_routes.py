"""`/dashboard/team` (owners): invite by email, change roles, remove; the invitee's `/dashboard/invite/{token}`;
the first owner of a new deployment; forgotten passwords (`/dashboard/password-reset`). Every change goes
into the audit log in the change's own transaction."""

import hmac
from datetime import timedelta
from urllib.parse import quote

from markupsafe import escape
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.logs import log_event
from cancel_flow.mailer import Message
from cancel_flow.passwords import MIN_LENGTH, hash_password
from cancel_flow.store.audit import record_audit
from cancel_flow.web.access import OWNER, ROLE_WORDS, ROLES
from cancel_flow.web.coach_auth import (LOGIN_CSRF_COOKIE, THROTTLE, SignedInCoach, client_address, sign_in,
                                        signed_in_coach)
from cancel_flow.web.pages import csrf_token, read_form, render, render_with_token

INVITE_LIFETIME = timedelta(hours=72)
RESET_LIFETIME = timedelta(hours=1)
NOTICES = {"role": "Role changed.", "removed": "Removed; their sessions have ended.",
           "canceled": "Invitation canceled: its link no longer works."}


def coach_csrf(request: Request, coach: SignedInCoach) -> str:
    return csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}")


def who(request: Request, coach: SignedInCoach | None = None, actor: str | None = None) -> dict:
    """The audit row's actor and address for this request."""
    return {"actor": actor or (coach.email if coach else "unknown"), "address": client_address(request)}


def valid_email(email: str) -> bool:
    name, at, domain = email.partition("@")
    return bool(at and name and "." in domain and len(email) <= 320 and not any(c.isspace() for c in email))


def password_problem(password: str, again: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"Choose a password of at least {MIN_LENGTH} characters."
    if len(password) > 1000:
        return "That password is too long."
    if password != again:
        return "The two passwords differ. Type the same password twice."
    return None


# --- the team page ---------------------------------------------------------------------------------

async def _team_page(request: Request, coach: SignedInCoach, status_code: int = 200, **context) -> Response:
    coaches = request.app.state.coaches
    members = await run_in_threadpool(coaches.all)
    invites = await run_in_threadpool(coaches.pending_invites)
    from cancel_flow.web.dashboard_routes import local_clock

    return render(request, "team.html", status_code, coach=coach, csrf=coach_csrf(request, coach), members=members,
                  invites=invites, roles=ROLES, role_words=ROLE_WORDS, local=local_clock(request.app.state.settings.timezone),
                  notice=NOTICES.get(request.query_params.get("done", "")), owners=sum(m.role == OWNER for m in members),
                  **context)


async def team_page(request: Request) -> Response:
    return await _team_page(request, await signed_in_coach(request))


def _mail_invite(request: Request, coach: SignedInCoach, email: str, role: str, link: str) -> None:
    brand = request.app.state.config.current().brand
    text = (f"{coach.email} invited you to the {brand.name} dashboard as {role}.\n\n"
            f"Choose your password here (the link works once, for 72 hours):\n{link}\n\n"
            "If you didn't expect this, ignore this email.\n")
    html = (f"<p>{escape(coach.email)} invited you to the {escape(brand.name)} dashboard as {escape(role)}.</p>"
            f'<p><a href="{escape(link)}">Choose your password</a> (the link works once, for 72 hours).</p>'
            "<p>If you didn't expect this, ignore this email.</p>")
    request.app.state.mailer.send(Message(to=email, subject=f"Your invitation to the {brand.name} dashboard",
                                          text=text, html=html))


async def invite(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    email = (fields.get("email") or "").strip().lower()
    role = fields.get("role") or ""
    if not valid_email(email):
        return await _team_page(request, coach, 400, error="Enter the email address of the person to invite.",
                                invite_email=email[:320], invite_role=role)
    if role not in ROLES:
        return await _team_page(request, coach, 400, error="Choose owner, editor or viewer.", invite_email=email)
    coaches = request.app.state.coaches
    if await run_in_threadpool(coaches.find, email) is not None:
        return await _team_page(request, coach, 409, error=f"{email} is on the team already.", invite_email=email)

    def audited(connection):
        record_audit(connection, "team.invited", f"{email} invited as {role}", **who(request, coach))

    token = await run_in_threadpool(lambda: coaches.issue_token("invite", email, INVITE_LIFETIME, role=role,
                                                                created_by=coach.email, on_issued=audited))
    link = f"{request.app.state.settings.base_url}/dashboard/invite/{token}"
    if request.app.state.settings.smtp_url:
        try:
            await run_in_threadpool(_mail_invite, request, coach, email, role, link)
        except OSError as error:
            log_event("team.invite_mail_failed", error=type(error).__name__)
            return await _team_page(request, coach, invited=email, invite_link=link, mail_failed=True)
        return await _team_page(request, coach, invited=email, mailed=True)
    # No SMTP: the owner passes the link on; it is shown this once (only its hash is kept).
    return await _team_page(request, coach, invited=email, invite_link=link)


async def cancel_invite(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    email = (fields.get("email") or "").strip().lower()[:320]

    def audited(connection):
        record_audit(connection, "team.invite_canceled", f"invitation of {email} canceled", **who(request, coach))

    await run_in_threadpool(lambda: request.app.state.coaches.cancel_invites(email, on_canceled=audited))
    return RedirectResponse("/dashboard/team?done=canceled", status_code=303)


async def change_role(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    email, role = (fields.get("email") or "").strip().lower()[:320], fields.get("role") or ""
    if role not in ROLES:
        return await _team_page(request, coach, 400, error="Choose owner, editor or viewer.")

    def audited(connection, row):
        record_audit(connection, "team.role_changed", f"{email}: {row.role} → {role}", **who(request, coach))

    outcome = await run_in_threadpool(lambda: request.app.state.coaches.set_role(email, role, on_changed=audited))
    if outcome == "missing":
        return await _team_page(request, coach, 404, error=f"{email} is not on the team.")
    if outcome == "last_owner":
        return await _team_page(request, coach, 409, error=f"{email} is the last owner: make someone else an owner "
                                                          "first, so the account always has one.")
    if email == coach.email and role != OWNER and outcome == "changed":
        return RedirectResponse("/dashboard", status_code=303)  # the team page is for owners
    return RedirectResponse("/dashboard/team?done=role", status_code=303)


async def remove(request: Request) -> Response:
    coach = await signed_in_coach(request)
    fields = await read_form(request, coach_csrf(request, coach))
    email = (fields.get("email") or "").strip().lower()[:320]

    def audited(connection, row):
        record_audit(connection, "team.removed", f"{email} ({row.role}) removed", **who(request, coach))

    outcome = await run_in_threadpool(lambda: request.app.state.coaches.remove(email, on_removed=audited))
    if outcome == "missing":
        return await _team_page(request, coach, 404, error=f"{email} is not on the team.")
    if outcome == "last_owner":
        return await _team_page(request, coach, 409, error=f"{email} is the last owner and can't be removed: make "
                                                          "someone else an owner first.")
    if email == coach.email:
        return RedirectResponse("/dashboard/login", status_code=303)
    return RedirectResponse("/dashboard/team?done=removed", status_code=303)


# --- accepting an invitation -------------------------------------------------------------------------

def _set_password_page(request: Request, status_code: int = 200, **context) -> Response:
    return render_with_token(request, "set_password.html", LOGIN_CSRF_COOKIE, "/dashboard", status_code, **context)


def _gone(request: Request, what: str) -> Response:
    invitation = what == "invitation"
    return render(request, "coach_notice.html", 410, title=f"This {what} link no longer works",
                  message="It was used already, or it has expired. " + (
                      "Ask an owner of the account to invite you again." if invitation
                      else "Ask for a new one: the link works once, for an hour."),
                  next_url="/dashboard/login" if invitation else "/dashboard/password-reset",
                  next_label="Go to sign-in" if invitation else "Forgot your password?")


async def invitation(request: Request) -> Response:
    token = request.path_params["token"]
    invited = await run_in_threadpool(request.app.state.coaches.valid_token, "invite", token)
    if invited is None:
        return _gone(request, "invitation")
    return _set_password_page(request, kind="invite", email=invited.email, role=invited.role,
                              action=f"/dashboard/invite/{quote(token, safe='')}")


async def _chosen_password(request: Request, kind: str, what: str, address: str):
    """A set-password form sent with an invitation or reset link: (the link's holder, the new password's hash), or
    the page to answer with instead (the link is gone, or the password won't do) and None."""
    token = request.path_params["token"]
    fields = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE))
    holder = await run_in_threadpool(request.app.state.coaches.valid_token, kind, token)
    if holder is None:
        return _gone(request, what), None
    problem = password_problem(fields.get("password") or "", fields.get("password_again") or "")
    if problem:
        role = {"role": holder.role} if kind == "invite" else {}
        return _set_password_page(request, 400, kind=kind, email=holder.email, error=problem,
                                  action=f"{address}/{quote(token, safe='')}", **role), None
    return holder, await run_in_threadpool(hash_password, fields["password"])


async def accept_invitation(request: Request) -> Response:
    invited, password_hash = await _chosen_password(request, "invite", "invitation", "/dashboard/invite")
    if password_hash is None:
        return invited
    token, coaches = request.path_params["token"], request.app.state.coaches

    def audited(connection, row):
        record_audit(connection, "team.joined", f"{row.email} joined as {row.role}", **who(request, actor=row.email))

    outcome, row = await run_in_threadpool(lambda: coaches.accept_invite(token, password_hash, on_joined=audited))
    if outcome == "invalid":
        return _gone(request, "invitation")
    if outcome == "taken":
        return render(request, "coach_notice.html", 409, title="You have a login already",
                      message=f"{invited.email} can sign in already.", next_url="/dashboard/login",
                      next_label="Go to sign-in")
    response = RedirectResponse("/dashboard", status_code=303)
    sign_in(request, response, row)
    return response


# --- the first owner of a new deployment -------------------------------------------------------------

async def first_owner(request: Request) -> Response:
    """With no login yet, whoever knows CANCEL_FLOW_SECRET_KEY (the operator) makes the first owner from the
    sign-in page; attempts are counted like sign-ins. Once any login exists, this does nothing."""
    from cancel_flow.web.dashboard_routes import login_form

    fields = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE))
    coaches, address = request.app.state.coaches, client_address(request)
    email = (fields.get("email") or "").strip().lower()[:320]
    if await run_in_threadpool(coaches.any):
        return login_form(request, 409, "The account has a login already: sign in, or ask its owner to invite you.")
    attempt = await run_in_threadpool(coaches.start_attempt, email, address, THROTTLE)
    if attempt.refused_by:
        return login_form(request, 429, "Too many failed attempts. Wait 15 minutes and try again.", email, first=True)
    secret = fields.get("secret_key") or ""
    if not hmac.compare_digest(secret.encode("utf-8", "replace"), request.app.state.settings.secret_key.encode()):
        return login_form(request, 401, "That is not this service's CANCEL_FLOW_SECRET_KEY.", email, first=True)
    await run_in_threadpool(coaches.attempt_succeeded, email, address)
    if not valid_email(email):
        return login_form(request, 400, "Enter your email address.", email, first=True)
    problem = password_problem(fields.get("password") or "", fields.get("password_again") or "")
    if problem:
        return login_form(request, 400, problem, email, first=True)
    password_hash = await run_in_threadpool(hash_password, fields["password"])

    def audited(connection):
        record_audit(connection, "team.first_owner", f"{email} made the first owner", **who(request, actor=email))

    if not await run_in_threadpool(lambda: coaches.add_first_owner(email, password_hash, on_added=audited)):
        return login_form(request, 409, "The account has a login already: sign in, or ask its owner to invite you.")
    response = RedirectResponse("/dashboard", status_code=303)
    sign_in(request, response, await run_in_threadpool(coaches.find, email))
    return response


# --- forgotten passwords ---------------------------------------------------------------------------

def _reset_request_page(request: Request, status_code: int = 200, **context) -> Response:
    return render_with_token(request, "password_reset.html", LOGIN_CSRF_COOKIE, "/dashboard", status_code,
                             can_send=request.app.state.mailer.can_send, **context)


async def password_reset_form(request: Request) -> Response:
    return _reset_request_page(request)


async def request_password_reset(request: Request) -> Response:
    """The same answer whether or not the email has a login; the look-up and the mail happen after the answer,
    so neither the words nor the timing tell. Requests are counted like sign-ins."""
    fields = await read_form(request, request.cookies.get(LOGIN_CSRF_COOKIE))
    email = (fields.get("email") or "").strip().lower()
    if not valid_email(email):
        return _reset_request_page(request, 400, error="Enter the email address you sign in with.", email=email[:320])
    if not request.app.state.mailer.can_send:
        return _reset_request_page(request, 503)
    refused = await run_in_threadpool(request.app.state.coaches.count_reset_request, email, client_address(request),
                                      THROTTLE)
    if refused:
        return _reset_request_page(request, 429, email=email, error=(
            "Too many requests for this email. Wait 15 minutes and try again." if refused == "pair"
            else "Too many requests from your network. Wait 15 minutes and try again."))
    response = _reset_request_page(request, sent_to=email)
    response.background = BackgroundTask(_send_reset_link, request.app.state, email)
    return response


def _send_reset_link(state, email: str) -> None:
    if state.coaches.find(email) is None:
        return
    token = state.coaches.issue_token("reset", email, RESET_LIFETIME)
    link = f"{state.settings.base_url}/dashboard/password-reset/{token}"
    brand = state.config.current().brand
    text = (f"Someone asked for a new password for {email} on the {brand.name} dashboard.\n\n"
            f"Choose a new password here (the link works once, for 1 hour):\n{link}\n\n"
            "If it wasn't you, ignore this email: your password stays as it is.\n")
    html = (f"<p>Someone asked for a new password for {escape(email)} on the {escape(brand.name)} dashboard.</p>"
            f'<p><a href="{escape(link)}">Choose a new password</a> (the link works once, for 1 hour).</p>'
            "<p>If it wasn't you, ignore this email: your password stays as it is.</p>")
    try:
        state.mailer.send(Message(to=email, subject=f"A new password for the {brand.name} dashboard", text=text, html=html))
    except OSError as error:
        log_event("team.reset_mail_failed", error=type(error).__name__)


async def reset_page(request: Request) -> Response:
    token = request.path_params["token"]
    found = await run_in_threadpool(request.app.state.coaches.valid_token, "reset", token)
    if found is None:
        return _gone(request, "password reset")
    return _set_password_page(request, kind="reset", email=found.email,
                              action=f"/dashboard/password-reset/{quote(token, safe='')}")


async def reset_password(request: Request) -> Response:
    page, password_hash = await _chosen_password(request, "reset", "password reset", "/dashboard/password-reset")
    if password_hash is None:
        return page
    token, coaches = request.path_params["token"], request.app.state.coaches

    def audited(connection, row):
        record_audit(connection, "team.password_reset", f"{row.email} chose a new password with a reset link",
                     **who(request, actor=row.email))

    row = await run_in_threadpool(lambda: coaches.reset_password(token, password_hash, on_reset=audited))
    if row is None:
        return _gone(request, "password reset")
    response = RedirectResponse("/dashboard", status_code=303)
    sign_in(request, response, row)
    return response


routes = [
    Route("/dashboard/team", team_page, methods=["GET"]),
    Route("/dashboard/team/invite", invite, methods=["POST"]),
    Route("/dashboard/team/invites/cancel", cancel_invite, methods=["POST"]),
    Route("/dashboard/team/role", change_role, methods=["POST"]),
    Route("/dashboard/team/remove", remove, methods=["POST"]),
    Route("/dashboard/invite/{token}", invitation, methods=["GET"]),
    Route("/dashboard/invite/{token}", accept_invitation, methods=["POST"]),
    Route("/dashboard/first-owner", first_owner, methods=["POST"]),
    Route("/dashboard/password-reset", password_reset_form, methods=["GET"]),
    Route("/dashboard/password-reset", request_password_reset, methods=["POST"]),
    Route("/dashboard/password-reset/{token}", reset_page, methods=["GET"]),
    Route("/dashboard/password-reset/{token}", reset_password, methods=["POST"]),
]
