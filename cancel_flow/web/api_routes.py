"""`/api/…`: JSON for apps and no-code automations, behind `Authorization: Bearer <key>`.

Each endpoint is a handler and one `ApiRoute` naming its models (api_models.py); the key check,
the validation and `/api/openapi.json` all come from those (openapi.py)."""

from dataclasses import asdict
from datetime import timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from cancel_flow.errors import BadRequest, NotFound, StripeUnavailable
from cancel_flow.minting import mint_for
from cancel_flow.store.stats import DateRange, day_start, outside_cancellations
from cancel_flow.store.billing_stats import billing_stats
from cancel_flow.web.experiment_routes import experiment_report
from cancel_flow.web.api_models import LinkRequest, Links, OpenApiDocument, Stats, StatsQuery
from cancel_flow.web.openapi import ApiError, ApiRoute, openapi_document


async def create_links(request: Request, body: LinkRequest) -> Links:
    state = request.app.state
    try:
        minted = await mint_for(state.gateway, state.signer, state.settings.base_url, customer=body.customer,
                                email=body.email, subscription=body.subscription)
    except NotFound as missing:
        raise ApiError(404, "not_found", missing.message) from None
    except BadRequest as several:
        raise ApiError(422, "subscription_required", several.message) from None
    except StripeUnavailable as down:
        raise ApiError(503, "stripe_unavailable", down.message) from None
    return Links(cancel_url=minted.cancel_url, billing_url=minted.billing_url,
                 expires_at=minted.expires_at.isoformat(timespec="seconds"),
                 customer=minted.customer, subscription=minted.subscription)


async def stats(request: Request, query: StatsQuery) -> Stats:
    period = DateRange(day_start(query.first), day_start(query.last + timedelta(days=1)))
    offers = await run_in_threadpool(request.app.state.config.offer_history)
    kinds = {offer_id: offer.kind for offer_id, offer in offers.items()}
    numbers = await run_in_threadpool(request.app.state.stats.stats, period, kinds)
    payments = await run_in_threadpool(billing_stats, request.app.state.store.engine, period)
    outside = await run_in_threadpool(outside_cancellations, request.app.state.store.engine, period)
    experiment = None
    if query.experiment:
        experiment = await run_in_threadpool(experiment_report, request, query.experiment)
        if experiment is None:
            raise ApiError(404, "not_found", f"No experiment '{query.experiment}' in offers.toml or in the history.")
    previous = numbers.previous
    return Stats.model_validate({
        **asdict(numbers), "from": query.first, "to": query.last,
        "mrr_saved": [{"currency": c, "amount": a} for c, a in numbers.mrr_saved],
        "discount_cost": [{"currency": c, "amount": a} for c, a in numbers.discount_cost],
        "offer_cost": [{"currency": c, "amount": a} for c, a in numbers.offer_cost],
        "previous": {**previous, "mrr_saved": [{"currency": c, "amount": a} for c, a in previous["mrr_saved"]]},
        "payments": payments, "outside_cancellations": outside, "experiment": experiment,
    })


async def openapi(request: Request) -> OpenApiDocument:
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = OpenApiDocument(openapi_document(state.settings.base_url, request.app.routes))
    return state.openapi


routes = [
    ApiRoute("/api/links", create_links, method="POST", body=LinkRequest, status=201, answer=Links, scope="links",
             summary="Mint a cancel link and a billing link for a customer", operation_id="createLinks",
             description="Links minted",
             errors={404: "No such customer, or no active subscription",
                     422: "Malformed body, or a subscription must be chosen",
                     503: "Stripe could not be reached"}),
    ApiRoute("/api/stats", stats, method="GET", query=StatsQuery, answer=Stats, scope="stats",
             summary="The dashboard's numbers for a date range (UTC, inclusive; default the last 30 days)",
             operation_id="getStats", description="Numbers",
             errors={404: "No such experiment (in offers.toml or in the history)",
                     422: "Invalid dates: not YYYY-MM-DD, outside 2000–2100, 'from' after 'to', or over ten years"}),
    ApiRoute("/api/openapi.json", openapi, method="GET", answer=OpenApiDocument, scope=None,
             summary="This document", operation_id="getOpenapi", description="OpenAPI document"),
]
