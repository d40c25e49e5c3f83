"""The hosted customer-portal pages a portal session's `url` opens, for the flows cancel-flow uses."""

from datetime import datetime, timezone
from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.objects import TEST_PAYMENT_METHODS
from cancel_flow.emulator.state import StripeError

REASON_LABELS = {
    "too_expensive": "It's too expensive", "missing_features": "Some features are missing",
    "switched_service": "I'm switching to a different service", "unused": "I don't use the service enough",
    "customer_service": "Customer service was less than expected", "too_complex": "Ease of use was less than expected",
    "low_quality": "Quality was less than expected", "other": "Other reason",
}


_STYLE = """
*{box-sizing:border-box}body{margin:0;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1f36;background:#f6f9fc}
.test{margin:0;background:#ffde92;color:#3d2b00;text-align:center;padding:.35rem 1rem;font-size:.85rem;font-weight:600}
.shell{display:grid;gap:1.5rem;max-width:62rem;margin:0 auto;padding:1.5rem 1rem 3rem}
@media(min-width:48rem){.shell{grid-template-columns:18rem 1fr;padding-top:3rem}}
.business{color:#3c4257}.business strong{display:block;font-size:1.15rem;color:#1a1f36}
.business p{margin:.3rem 0 0}.business a{color:#533afd}
main{background:#fff;border-radius:12px;box-shadow:0 2px 5px rgba(60,66,87,.08),0 1px 1px rgba(0,0,0,.12);padding:1.25rem 1.25rem 1.5rem}
h1{font-size:1.35rem;margin:0 0 1rem}h2{font-size:.8rem;text-transform:uppercase;letter-spacing:.06em;color:#697386;margin:1.5rem 0 .5rem}
.item{border:1px solid #e3e8ee;border-radius:8px;padding:.8rem 1rem;margin:0 0 .8rem}.item p{margin:0}
.muted{color:#4f566b;font-size:.95rem}.notice{background:#e6f6ec;border:1px solid #1a7f37;color:#0e4f22;border-radius:8px;padding:.7rem 1rem;margin:0 0 1rem}
.problem{background:#fdecea;border:1px solid #b42318;color:#7a1a10;border-radius:8px;padding:.7rem 1rem;margin:0 0 1rem}
fieldset{border:0;padding:0;margin:0 0 1rem;min-width:0}legend{font-weight:600;margin-bottom:.4rem;padding:0}
label{display:flex;gap:.6rem;align-items:center;border:1px solid #e3e8ee;border-radius:8px;padding:.55rem .75rem;margin:.35rem 0;cursor:pointer}
label input{width:1.1rem;height:1.1rem;accent-color:#533afd}
button{font:inherit;font-weight:600;padding:.65rem 1.1rem;border-radius:8px;border:0;cursor:pointer;background:#533afd;color:#fff;width:100%}
button.danger{background:#fff;color:#b42318;border:1px solid #b42318}
a{color:#533afd}:focus-visible{outline:3px solid #0969da;outline-offset:2px}
.back{margin:1.25rem 0 0}
"""


def _page(title: str, body: str, status: int = 200, business: str = "", notice: str = "", lang: str = "en") -> HTMLResponse:
    """A hosted portal page in the shape of Stripe's: the business on one side, the task on the other; `lang`:
    the language Stripe would show it in (the emulator's words stay English)."""
    return HTMLResponse(f"""<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)} · Stripe test portal</title>
<style>{_STYLE}</style></head>
<body><header><p class="test">Test mode · local Stripe emulator</p></header><div class="shell">
<aside class="business" aria-label="Business"><strong>Test business</strong><p>{escape(business or "Manage your subscription and billing.")}</p>
<p class="muted">Powered by the Stripe emulator</p></aside>
<main><h1>{escape(title)}</h1>{notice}{body}</main></div></body></html>""", status_code=status)


def _date(ts: int) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%d %B %Y").lstrip("0")


def _session(request: Request):
    account = request.app.state.emulator.account
    session_id = account.portal_secrets.get(request.path_params["secret"])
    return account, (account.portal_sessions[session_id] if session_id else None)


def _language(account, session: dict, request: Request) -> str:
    """The portal's language: the session's `locale`, else ("auto" or none) the customer's `preferred_locales`, else
    the browser's (https://docs.stripe.com/api/customer_portal/sessions/create#create_portal_session-locale: "If blank
    or auto, the customer's preferred_locales or browser's locale is used")."""
    if session.get("locale") and session["locale"] != "auto":
        return session["locale"]
    preferred = (account.customers.get(session["customer"]) or {}).get("preferred_locales") or []
    if preferred:
        return preferred[0]
    browser = request.headers.get("accept-language", "").split(",")[0].split(";")[0].strip()
    return browser if browser and browser != "*" and len(browser) < 36 else "en"


def _describe(account, sub: dict) -> str:
    item = sub["items"]["data"][0]
    price = account.prices[item["price"]]
    product = account.products[price["product"]]
    amount = build.line_amount(price, item["quantity"])
    if sub["status"] == "canceled":
        state = "Canceled"
    elif sub["cancel_at"]:
        state = f"Cancels on {_date(sub['cancel_at'])}"
    else:
        state = f"Renews on {_date(item['current_period_end'])}"
    return (f'<div class="item"><p><strong>{escape(product["name"])}</strong></p>'
            f'<p>{amount / 100:.2f} {price["currency"].upper()} per {price["recurring"]["interval"]}</p>'
            f'<p class="muted">{state}</p></div>')


def _business(account, session: dict) -> str:
    config = account.portal_configurations.get(session.get("configuration")) or {}
    return ((config.get("business_profile") or {}).get("headline")) or ""


def _current_card(account, customer_id: str) -> str:
    """The customer's default card, once: "Visa ending 4242"."""
    customer = account.customers.get(customer_id) or {}
    method_id = (customer.get("invoice_settings") or {}).get("default_payment_method")
    method = account.payment_methods.get(method_id) if method_id else None
    if not method or not method.get("card"):
        return '<div class="item"><p class="muted">No card on file</p></div>'
    card = method["card"]
    return (f'<div class="item"><p><strong>{escape(card["brand"].title())} ending {escape(card["last4"])}</strong></p>'
            f'<p class="muted">Expires {card["exp_month"]:02d}/{card["exp_year"]}</p></div>')


def _after_completion(session: dict, request: Request, message: str) -> Response:
    flow = session["flow"] or {}
    after = flow.get("after_completion") or {"type": "portal_homepage"}
    if after["type"] == "redirect":
        return RedirectResponse(after["redirect"]["return_url"], status_code=303)
    if after["type"] == "hosted_confirmation":
        custom = (after.get("hosted_confirmation") or {}).get("custom_message") or ""
        back = f'<p class="back"><a href="{escape(session["return_url"])}">Return</a></p>' if session["return_url"] else ""
        return _page("Done", f'<p class="notice" role="status">{escape(message)}</p><p>{escape(custom)}</p>{back}')
    confirmation = "?updated=payment_method" if message.startswith("Your payment method") else ""
    return RedirectResponse(f"/p/session/{request.path_params['secret']}{confirmation}", status_code=303)


async def show(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This portal link is not valid", "<p>Ask for a new link.</p>", 404)
    with account.lock:
        flow = session["flow"] or {}
        back = (f'<p class="back"><a href="{escape(session["return_url"])}">← Go back</a></p>'
                if session["return_url"] else "")
        secret = request.path_params["secret"]
        config = account.portal_configurations[session["configuration"]]
        business = _business(account, session)
        lang = _language(account, session, request)
        notice = ('<p class="notice" role="status">Your payment method has been updated.</p>'
                  if request.query_params.get("updated") == "payment_method" else "")
        if flow.get("type") == "subscription_cancel":
            sub = account.subscriptions[flow["subscription_cancel"]["subscription"]]
            if sub["status"] == "canceled" or sub["cancel_at"]:
                return _page("Subscription canceled", _describe(account, sub) + back, business=business, lang=lang)
            return _page("Cancel your subscription", _describe(account, sub) + _cancel_form(secret, sub, config) + back,
                         business=business, lang=lang)
        if flow.get("type") == "payment_method_update":
            return _page("Update payment method", "<h2>Current card</h2>" + _current_card(account, session["customer"])
                         + _payment_form(secret) + back, business=business, notice=notice, lang=lang)
        subs = [s for s in account.subscriptions.values() if s["customer"] == session["customer"] and s["status"] != "canceled"]
        body = "".join(_describe(account, s) + (_cancel_form(secret, s, config) if config["features"]["subscription_cancel"]["enabled"] and not s["cancel_at"] else "") for s in subs)
        return _page("Your account", "<h2>Current subscription</h2>" + (body or "<p>No current subscriptions.</p>")
                     + "<h2>Payment method</h2>" + _current_card(account, session["customer"]) + _payment_form(secret) + back,
                     business=business, notice=notice, lang=lang)


def _cancel_form(secret: str, sub: dict, config: dict) -> str:
    reason = config["features"]["subscription_cancel"]["cancellation_reason"]
    choices = ""
    if reason["enabled"]:
        choices = "<fieldset><legend>Why are you canceling?</legend>" + "".join(
            f'<label><input type="radio" name="reason" value="{value}"> {REASON_LABELS[value]}</label>'
            for value in reason["options"]) + "</fieldset>"
    return (f'<form method="post" action="/p/session/{secret}/cancel">'
            f'<input type="hidden" name="subscription" value="{escape(sub["id"])}">{choices}'
            f'<button type="submit" class="danger">Cancel subscription</button></form>')


# What each test card does, so the choice reads like a card list rather than a list of ids.
_CARD_NOTES = {"pm_card_chargeDeclined": "declined when charged", "pm_card_visa_chargeDeclined": "declined when charged",
               "pm_card_chargeCustomerFail": "attaches, then payments fail",
               "pm_card_authenticationRequired": "your bank asks you to confirm each payment"}


def _payment_form(secret: str) -> str:
    """One line per distinct test card (two ids for the same declining Visa are one choice)."""
    seen, options = set(), []
    for name, (brand, last4) in TEST_PAYMENT_METHODS.items():
        if (brand, last4) in seen:
            continue
        seen.add((brand, last4))
        note = f' <span class="muted">({_CARD_NOTES[name]})</span>' if name in _CARD_NOTES else ""
        options.append(f'<label><input type="radio" name="payment_method" value="{name}"{" checked" if name == "pm_card_visa" else ""}> '
                       f'{brand.title()} ending {last4}{note}</label>')
    return (f'<form method="post" action="/p/session/{secret}/payment_method"><fieldset><legend>New card</legend>{"".join(options)}'
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
            # the portal attaches the new card and makes it the customer's default; a subscription's own default
            # is left as it is (https://docs.stripe.com/billing/revenue-recovery/smart-retries: "if a subscription
            # has a default_payment_method, but you only update customer.invoice_settings.default_payment_method,
            # Stripe continues to retry on the subscription's default_payment_method")
            method = account.attach_payment_method(choice, session["customer"])
            account.update_customer(session["customer"], {"invoice_settings": {"default_payment_method": method["id"]}})
        except StripeError as error:
            # A card Stripe declines when it is attached is refused here too (https://docs.stripe.com/testing#declined-payments).
            return _page("Card not saved", f'<p class="problem" role="alert">{escape(error.message)}</p>'
                         f'<p><a href="/p/session/{escape(request.path_params["secret"])}">Try another card</a></p>', error.status)
    return _after_completion(session, request, "Your payment method has been updated.")


routes = [
    Route("/p/session/{secret}", show, methods=["GET"]),
    Route("/p/session/{secret}/cancel", cancel, methods=["POST"]),
    Route("/p/session/{secret}/payment_method", update_payment_method, methods=["POST"]),
]
