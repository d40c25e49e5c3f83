"""`/dashboard/stripe` (owners): the Stripe connection in use and where each value comes from; `stripe check` on
demand (its lines kept, so every worker shows the last run); "Set up Stripe", which does what `stripe setup`
does and stores what it makes; rolling the webhook signing secret."""

import time

import stripe
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.errors import CancelFlowError, SettingsError
from cancel_flow.logs import log_event
from cancel_flow.setup import run_stripe_setup
from cancel_flow.store.stripe_connection import finish_check_run, last_check_run, start_check_run
from cancel_flow.stripe_check import StripeCheck, explain, summary
from cancel_flow.stripe_connection import (DATABASE, ENVIRONMENT, RollRefused, effective_settings, finish_roll_quietly,
                                           roll_signing_secret)
from cancel_flow.web.coach_auth import client_address, signed_in_coach
from cancel_flow.web.dashboard_routes import local_clock
from cancel_flow.web.pages import read_form, render
from cancel_flow.web.team_routes import coach_csrf

SOURCE_WORDS = {ENVIRONMENT: "from the environment", DATABASE: "stored in the database (encrypted)"}
NOTICES = {"running": "The check is running: it takes up to a minute. This page shows its lines when it is done.",
           "busy": "A check is running already: its lines appear here when it is done."}


async def _page(request: Request, status_code: int = 200, **context) -> Response:
    state = request.app.state
    coach = await signed_in_coach(request)
    connection = await state.stripe_connection.current(max_age=0)
    run = await run_in_threadpool(last_check_run, state.store.engine)
    settings = state.settings
    done = request.query_params.get("done", "")
    if done == "running" and run is not None and run.finished_at is not None:
        done = ""  # it has finished: its lines say the rest
    return render(request, "stripe.html", status_code, coach=coach, csrf=coach_csrf(request, coach),
                  connection=connection, source_words=SOURCE_WORDS, run=run, local=local_clock(settings.timezone),
                  zone=settings.timezone, webhook_url=f"{settings.base_url}/webhooks/stripe",
                  test_mode=(settings.stripe_api_key or "").startswith(("sk_test_", "rk_test_")),
                  notice=NOTICES.get(done), **context)


async def stripe_page(request: Request) -> Response:
    # a rolled secret's old endpoint goes once its 24 hours are over (the periodic sweep does it too)
    await finish_roll_quietly(request.app.state.settings, request.app.state.store.engine)
    return await _page(request)


async def _run_check(state, run_id: int) -> None:
    """The check with the connection in use (environment, else stored); its lines are stored when it ends."""
    started = time.monotonic()
    lines, ok = [], False
    try:
        connection = await state.stripe_connection.current(max_age=0)
        check = StripeCheck(effective_settings(state.settings, connection),
                            **getattr(state, "stripe_check_timeouts", {}))
        results = await check.run()
        lines = [{"status": r.status, "name": r.name, "detail": r.detail, "advice": r.advice} for r in results]
        last, ok = summary(results, check.test_mode, time.monotonic() - started)
        lines.append({"status": "OK" if ok else "FAILED", "name": "summary", "detail": last, "advice": None})
    except Exception as error:  # the run is stored either way, so the page never shows it running for ever
        log_event("stripe.check_stopped", level=40, error=type(error).__name__)
        lines.append({"status": "FAIL", "name": "check", "detail": f"the check stopped ({type(error).__name__}).",
                      "advice": "run it again; if it keeps stopping, run `cancel-flow stripe check` to see where."})
    await run_in_threadpool(finish_check_run, state.store.engine, run_id, lines, ok)


async def check_again(request: Request) -> Response:
    coach = await signed_in_coach(request)
    await read_form(request, coach_csrf(request, coach))
    state = request.app.state
    run_id = await run_in_threadpool(start_check_run, state.store.engine, coach.email)
    if run_id is None:
        return RedirectResponse("/dashboard/stripe?done=busy#check", status_code=303)
    # after the answer: the page reloads while it runs (a check at Stripe takes up to a minute)
    return RedirectResponse("/dashboard/stripe?done=running#check", status_code=303,
                            background=BackgroundTask(_run_check, state, run_id))


async def set_up(request: Request) -> Response:
    coach = await signed_in_coach(request)
    await read_form(request, coach_csrf(request, coach))
    state = request.app.state
    try:
        lines = await run_stripe_setup(state.settings, engine=state.store.engine, actor=coach.email,
                                       address=client_address(request))
    except stripe.StripeError as error:
        detail, advice = explain(error, "setting up the account")
        return await _page(request, 502, setup_error=f"{detail} To fix: {advice}")
    except (CancelFlowError, SettingsError) as error:
        return await _page(request, 502, setup_error=getattr(error, "message", str(error)))
    finally:
        state.stripe_connection.forget()
    return await _page(request, setup_lines=[line for line in lines if line])


async def roll(request: Request) -> Response:
    coach = await signed_in_coach(request)
    await read_form(request, coach_csrf(request, coach))
    state = request.app.state
    try:
        lines = await roll_signing_secret(state.settings, state.store.engine, actor=coach.email,
                                          address=client_address(request))
    except RollRefused as refused:
        return await _page(request, 409, roll_error=refused.message)
    except stripe.StripeError as error:
        detail, advice = explain(error, "making a new webhook endpoint")
        return await _page(request, 502, roll_error=f"{detail} To fix: {advice}")
    finally:
        state.stripe_connection.forget()
    return await _page(request, roll_lines=lines)


routes = [
    Route("/dashboard/stripe", stripe_page, methods=["GET"]),
    Route("/dashboard/stripe/check", check_again, methods=["POST"]),
    Route("/dashboard/stripe/setup", set_up, methods=["POST"]),
    Route("/dashboard/stripe/roll", roll, methods=["POST"]),
]
