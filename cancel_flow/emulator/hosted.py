"""The hosted invoice page an invoice's `hosted_invoice_url` opens (https://docs.stripe.com/invoicing/hosted-invoice-page):
the amount due and, while a payment needs the customer's bank, the confirmation that pays it."""

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from cancel_flow.emulator.objects import TEST_PAYMENT_METHODS, money
from cancel_flow.emulator.portal import _page
from cancel_flow.emulator.state import StripeError


def _invoice(request: Request):
    account = request.app.state.emulator.account
    invoice_id = account.hosted_invoices.get(request.path_params["secret"])
    return account, (account.invoices.get(invoice_id) if invoice_id else None)


def _needs_action(account, inv: dict) -> dict | None:
    """The card whose payment waits for the customer's bank, if any."""
    payments = inv.get("_payments") or []
    intent = account.payment_intents.get(payments[-1]["payment"]["payment_intent"]) if payments else None
    if intent and intent["status"] == "requires_action":
        return account.payment_methods.get(intent["payment_method"] or "")
    return None


def _describe(inv: dict) -> str:
    amount = money(inv["amount_remaining"] if inv["status"] != "paid" else inv["amount_paid"], inv["currency"])
    return (f'<div class="item"><p><strong>{escape(amount)}</strong></p>'
            f'<p class="muted">Invoice {escape(inv["number"] or inv["id"])}</p></div>')


async def show(request: Request) -> Response:
    account, inv = _invoice(request)
    if inv is None:
        return _page("This invoice link is not valid", "<p>Ask for a new link.</p>", 404)
    secret = escape(request.path_params["secret"])
    with account.lock:
        if inv["status"] == "paid":
            return _page("Invoice paid", '<p class="notice" role="status">This invoice is paid. Thank you!</p>' + _describe(inv))
        if inv["status"] in ("void", "draft"):
            return _page("Nothing to pay", f"<p>This invoice is {escape(inv['status'])}: there is nothing to pay.</p>")
        card = _needs_action(account, inv)
        if card is not None:
            body = (_describe(inv) + '<p class="problem" role="alert">Your bank asks you to confirm this payment.</p>'
                    f'<p>{escape(card["card"]["brand"].title())} ending {escape(card["card"]["last4"])}</p>'
                    f'<form method="post" action="/i/{secret}/pay"><input type="hidden" name="confirm" value="1">'
                    '<button type="submit">Confirm with my bank (test)</button></form>')
            return _page("Confirm your payment", body)
        options = "".join(f'<label><input type="radio" name="payment_method" value="{name}"'
                          f'{" checked" if name == "pm_card_visa" else ""}> {brand.title()} ending {last4}</label>'
                          for name, (brand, last4) in TEST_PAYMENT_METHODS.items()
                          if name not in ("pm_card_chargeDeclined",))
        body = (_describe(inv) + f'<form method="post" action="/i/{secret}/pay"><fieldset><legend>Pay with</legend>'
                f'{options}</fieldset><button type="submit">Pay</button></form>')
        return _page("Pay your invoice", body)


async def pay(request: Request) -> Response:
    account, inv = _invoice(request)
    if inv is None:
        return _page("This invoice link is not valid", "<p>Ask for a new link.</p>", 404)
    form = await request.form()
    choice = form.get("payment_method") or None
    if choice is not None and choice not in TEST_PAYMENT_METHODS:
        return _page("Choose a card", "<p>Pick one of the test cards.</p>", 400)
    with account.lock:
        if inv["status"] not in ("open", "uncollectible"):
            return HTMLResponse(status_code=303, headers={"Location": f"/i/{request.path_params['secret']}"})
        try:
            paid = account.pay_on_hosted_page(inv, None if form.get("confirm") else choice)
        except StripeError as error:
            return _page("Payment failed", f'<p class="problem" role="alert">{escape(error.message)}</p>', error.status)
    if not paid:
        return _page("Payment failed", '<p class="problem" role="alert">The card was declined.</p>'
                     f'<p><a href="/i/{escape(request.path_params["secret"])}">Try another card</a></p>', 402)
    return HTMLResponse(status_code=303, headers={"Location": f"/i/{request.path_params['secret']}"})


routes = [
    Route("/i/{secret}", show, methods=["GET"]),
    Route("/i/{secret}/pay", pay, methods=["POST"]),
]
