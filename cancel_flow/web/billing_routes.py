"""`/billing/{token}`: a fresh Stripe portal session on every click (portal URLs expire: one is reused only by
reloads of the same link within a few seconds, from memory, never stored)."""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.errors import BadRequest
from cancel_flow.i18n import N_
from cancel_flow.web.email_routes import card_update_flow
from cancel_flow.web.pages import page_language


async def billing(request: Request) -> Response:
    link = request.app.state.signer.read_billing(request.path_params["token"])
    flow = request.query_params.get("flow")
    if flow not in (None, "", "payment_method_update"):
        raise BadRequest(N_("This billing link asks for a page that doesn't exist."))
    settings = request.app.state.settings
    # The portal opens in the language a page of ours would: `?lang=` (the billing emails give their own),
    # else the browser's, else the brand's (the customer isn't read here: one Stripe call per click).
    language = page_language(request)
    # after the card update the portal returns to our page, which pays the open invoice at once
    flow_data = card_update_flow(settings.base_url, request.path_params["token"], language) if flow else None
    # Reloads within a few seconds (and simultaneous ones) get the session just made: one link holder
    # can't spend the deployment's Stripe budget, and the URL is still fresh.
    url = await request.app.state.recent_answers.get(
        ("billing", link.customer, request.path_params["token"], flow or "", language),
        lambda: request.app.state.gateway.portal_url(link.customer, return_url=settings.return_url, flow_data=flow_data,
                                                     billing=True, language=language))
    return RedirectResponse(url, status_code=303)


routes = [Route("/billing/{token}", billing, methods=["GET"])]
