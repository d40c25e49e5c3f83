"""The hosted customer-portal pages a portal session's `url` opens, for the flows cancel-flow uses."""

from datetime import datetime, timezone
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.emulator.objects import TEST_PAYMENT_METHODS
from cancel_flow.emulator.state import StripeError

REASON_LABELS = {
    "too_expensive": "It's too expensive", "missing_features": "Some features are missing",
    "switched_service": "I'm switching to a different service", "unused": "I don't use the service enough",
    "customer_service": "Customer service was less than expected", "too_complex": "Ease of use was less than expected",
    "low_quality": "Quality was less than expected", "other": "Other reason",
}


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)} · Stripe test portal</title>
<style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:2rem auto;padding:0 1rem;color:#1a1f36}}
.test{{background:#ffde92;padding:.3rem .6rem;border-radius:4px;font-size:.8rem}}button{{font-size:1rem;padding:.6rem 1rem}}
label{{display:block;margin:.3rem 0}}</style></head>
<body><p class="test">Test mode · local Stripe emulator</p><h1>{escape(title)}</h1>{body}</body></html>""", status_code=status)


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%d %B %Y").lstrip("0")


def _session(request: Request):
    account = request.app.state.emulator.account
    session_id = account.portal_secrets.get(request.path_params["secret"])
    return account, (account.portal_sessions[session_id] if session_id else None)


def _describe(account, sub: dict) -> str:
    item = sub["items"]["data"][0]
    price = account.prices[item["price"]]
    product = account.products[price["product"]]
    amount = price["unit_amount"] * item["quantity"]
    state = f"Cancels on {_date(sub['cancel_at'])}" if sub["cancel_at"] else f"Renews on {_date(item['current_period_end'])}"
    return (f"<p><strong>{escape(product['name'])}</strong> · {amount / 100:.2f} {price['currency'].upper()} "
            f"per {price['recurring']['interval']}<br>{state} · status {sub['status']}</p>")


def _after_completion(session: dict, request: Request, message: str) -> Response:
    flow = session["flow"] or {}
    after = flow.get("after_completion") or {"type": "portal_homepage"}
    if after["type"] == "redirect":
        return RedirectResponse(after["redirect"]["return_url"], status_code=303)
    if after["type"] == "hosted_confirmation":
        custom = (after.get("hosted_confirmation") or {}).get("custom_message") or ""
        back = f'<p><a href="{escape(session["return_url"])}">Return</a></p>' if session["return_url"] else ""
        return _page("Done", f"<p>{escape(message)}</p><p>{escape(custom)}</p>{back}")
    return RedirectResponse(f"/p/session/{request.path_params['secret']}", status_code=303)


async def show(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This portal link is not valid", "<p>Ask for a new link.</p>", 404)
    with account.lock:
        flow = session["flow"] or {}
        back = f'<p><a href="{escape(session["return_url"])}">Go back</a></p>' if session["return_url"] else ""
        secret = request.path_params["secret"]
        config = account.portal_configurations[session["configuration"]]
        if flow.get("type") == "subscription_cancel":
            sub = account.subscriptions[flow["subscription_cancel"]["subscription"]]
            if sub["status"] == "canceled" or sub["cancel_at"]:
                return _page("Subscription canceled", _describe(account, sub) + back)
            return _page("Cancel your subscription", _describe(account, sub) + _cancel_form(secret, sub, config) + back)
        if flow.get("type") == "payment_method_update":
            return _page("Update payment method", _payment_form(secret) + back)
        subs = [s for s in account.subscriptions.values() if s["customer"] == session["customer"] and s["status"] != "canceled"]
        body = "".join(_describe(account, s) + (_cancel_form(secret, s, config) if config["features"]["subscription_cancel"]["enabled"] and not s["cancel_at"] else "") for s in subs)
        return _page("Your subscriptions", (body or "<p>No current subscriptions.</p>") + _payment_form(secret) + back)


def _cancel_form(secret: str, sub: dict, config: dict) -> str:
    reason = config["features"]["subscription_cancel"]["cancellation_reason"]
    choices = ""
    if reason["enabled"]:
        choices = "<fieldset><legend>Why are you canceling?</legend>" + "".join(
            f'<label><input type="radio" name="reason" value="{value}"> {REASON_LABELS[value]}</label>'
            for value in reason["options"]) + "</fieldset>"
    return (f'<form method="post" action="/p/session/{secret}/cancel">'
            f'<input type="hidden" name="subscription" value="{escape(sub["id"])}">{choices}'
            f'<button type="submit">Cancel subscription</button></form>')


def _payment_form(secret: str) -> str:
    options = "".join(f'<label><input type="radio" name="payment_method" value="{name}"{" checked" if name == "pm_card_visa" else ""}> '
                      f'{brand} ending {last4}</label>' for name, (brand, last4) in TEST_PAYMENT_METHODS.items())
    return (f'<form method="post" action="/p/session/{secret}/payment_method"><fieldset><legend>Card</legend>{options}'
            f'</fieldset><button type="submit">Update card</button></form>')


async def cancel(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This portal link is not valid", "<p>Ask for a new link.</p>", 404)
    form = await request.form()
    flow = session["flow"] or {}
    sub_id = (flow.get("subscription_cancel") or {}).get("subscription") or form.get("subscription")
    reason = form.get("reason") or None
    with account.lock:
        sub = account.subscriptions.get(sub_id)
        if sub is None or sub["customer"] != session["customer"]:
            return _page("Subscription not found", "<p>This subscription is not yours to cancel.</p>", 404)
        config = account.portal_configurations[session["configuration"]]
        options = config["features"]["subscription_cancel"]["cancellation_reason"]["options"]
        if reason is not None and reason not in options:
            return _page("Choose a reason from the list", "<p>That reason is not one of the choices.</p>", 400)
        if sub["status"] != "canceled" and not sub["cancel_at"]:
            details = {"feedback": reason} if reason else {}
            try:
                if config["features"]["subscription_cancel"]["mode"] == "immediately":
                    account.cancel_subscription(sub_id, {"cancellation_details": details}, None)
                else:
                    account.update_subscription(sub_id, {"cancel_at_period_end": True, "cancellation_details": details}, None)
            except StripeError as error:
                return _page("Could not cancel", f"<p>{escape(error.message)}</p>", error.status)
        message = "Your subscription has been canceled." if sub["status"] == "canceled" else \
            f"Your subscription will end on {_date(sub['cancel_at'])}."
    return _after_completion(session, request, message)


async def update_payment_method(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This portal link is not valid", "<p>Ask for a new link.</p>", 404)
    form = await request.form()
    choice = form.get("payment_method")
    if choice not in TEST_PAYMENT_METHODS:
        return _page("Choose a card", "<p>Pick one of the test cards.</p>", 400)
    with account.lock:
        try:
            account.update_customer(session["customer"], {"invoice_settings": {"default_payment_method": choice}})
        except StripeError as error:
            # A card Stripe declines when it is attached is refused here too (https://docs.stripe.com/testing#declined-payments).
            return _page("Card not saved", f"<p>{escape(error.message)}</p>", error.status)
    return _after_completion(session, request, "Your payment method has been updated.")


routes = [
    Route("/p/session/{secret}", show, methods=["GET"]),
    Route("/p/session/{secret}/cancel", cancel, methods=["POST"]),
    Route("/p/session/{secret}/payment_method", update_payment_method, methods=["POST"]),
]
