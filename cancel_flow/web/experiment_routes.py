"""`/dashboard/experiments`: each experiment's arms, posteriors, verdict and planner line (coach login)."""

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cancel_flow.experiments import analyse, analyse_experiment
from cancel_flow.store.experiment_stats import experiment_ids, session_results
from cancel_flow.web.coach_auth import signed_in_coach, to_login
from cancel_flow.web.pages import csrf_token, render


def experiment_report(request: Request, experiment_id: str) -> dict | None:
    """The experiment's figures as a dict (the page and `/api/stats?experiment=` read the same); None if unknown."""
    engine = request.app.state.store.engine
    book = request.app.state.config.current()
    experiment = next((e for e in book.experiments if e.id == experiment_id), None)
    if experiment is None and experiment_id not in experiment_ids(engine):
        return None
    results, weekly = session_results(engine, experiment_id)
    if experiment is not None:
        report = analyse_experiment(experiment, results, weekly_sessions=weekly)
    else:  # ended and removed from the offers file: its history stays readable
        report = analyse(results, experiment_id=experiment_id, weekly_sessions=weekly)
    data = report.to_dict()
    data["in_offers_file"] = experiment is not None
    data["start"] = experiment.start.isoformat() if experiment and experiment.start else None
    data["end"] = experiment.end.isoformat() if experiment and experiment.end else None
    data["arm_offers"] = {arm.name: list(arm.offers) for arm in experiment.arms} if experiment else {}
    return data


async def experiments_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    csrf = csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}")
    known = [e.id for e in request.app.state.config.current().experiments]
    ids = known + [i for i in await run_in_threadpool(experiment_ids, request.app.state.store.engine) if i not in known]
    chosen = request.path_params.get("experiment_id") or (ids[0] if ids else None)
    report = await run_in_threadpool(experiment_report, request, chosen) if chosen else None
    if chosen and report is None:
        raise HTTPException(404)
    offers = await run_in_threadpool(request.app.state.config.offer_history)
    titles = {offer_id: offer.title for offer_id, offer in offers.items()}
    return render(request, "experiment.html", coach=coach, csrf=csrf, ids=ids, chosen=chosen, report=report,
                  offer_titles=titles)


routes = [
    Route("/dashboard/experiments", experiments_page, methods=["GET"]),
    Route("/dashboard/experiments/{experiment_id}", experiments_page, methods=["GET"]),
]
