"""`/keep/{token}` ("changed your mind?": what continues, and one button that undoes the scheduled cancellation)
and `/comeback/{token}` (the plan they had, the comeback offer, and one button to a Stripe Checkout Session
made per click). Thin: parse, call the win-back service, render."""

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.winback_service import WinbackService
from cancel_flow.web.pages import csrf_token, page_language, read_form, render


def _service(request: Request) -> WinbackService:
    return request.app.state.winback


def _secret(request: Request) -> str:
    return request.app.state.settings.secret_key


async def keep_page(request: Request) -> Response:
    token = request.path_params["token"]
    view = await _service(request).keep_view(token, page_language(request))
    return render(request, "keep.html", view=view, token=token,
                  csrf=csrf_token(_secret(request), f"keep|{view.link.nonce}"))


async def keep(request: Request) -> Response:
    token = request.path_params["token"]
    link = request.app.state.signer.read_keep(token)
    await read_form(request, csrf_token(_secret(request), f"keep|{link.nonce}"))
    await _service(request).keep(token)
    return RedirectResponse(f"/keep/{token}", status_code=303)


def _comeback_csrf(request: Request, view) -> str:
    return csrf_token(_secret(request), f"comeback|{view.link.customer}|{view.link.step}")


async def comeback_page(request: Request) -> Response:
    token = request.path_params["token"]
    view = await _service(request).comeback_view(token, language=page_language(request))
    return render(request, "comeback.html", view=view, token=token, csrf=_comeback_csrf(request, view))


async def comeback(request: Request) -> Response:
    token = request.path_params["token"]
    link = request.app.state.signer.read_comeback(token)
    await read_form(request, csrf_token(_secret(request), f"comeback|{link.customer}|{link.step}"))
    url = await _service(request).checkout_url(token, page_language(request))
    return RedirectResponse(url, status_code=303)


async def welcome(request: Request) -> Response:
    token = request.path_params["token"]
    step = await _service(request).welcome(token, request.query_params.get("session_id"), page_language(request))
    return render(request, "comeback_welcome.html", step=step)


routes = [
    Route("/keep/{token}", keep_page, methods=["GET"]),
    Route("/keep/{token}", keep, methods=["POST"]),
    Route("/comeback/{token}", comeback_page, methods=["GET"]),
    Route("/comeback/{token}", comeback, methods=["POST"]),
    Route("/comeback/{token}/welcome", welcome, methods=["GET"]),
]
