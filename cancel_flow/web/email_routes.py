"""Pages the billing emails lead to: back from the card update (the open invoice is paid at once) and
unsubscribing (no login: a one-button page, and the mail clients' one-click POST)."""

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from cancel_flow.emails import records
from cancel_flow.emails.compose import TEMPLATES as EMAIL_TEMPLATES
from cancel_flow.emails.kinds import UNSUBSCRIBABLE
from cancel_flow.emails.tokens import read_unsubscribe
from cancel_flow.errors import BadRequest
from cancel_flow.logs import log_event
from cancel_flow.money import format_money
from cancel_flow.stripe_billing import StripeBilling
from cancel_flow.i18n import install as install_translations
from cancel_flow.web.pages import TEMPLATES as WEB_TEMPLATES

environment = Environment(loader=FileSystemLoader([EMAIL_TEMPLATES, WEB_TEMPLATES]), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True, auto_reload=False)
install_translations(environment)
KIND_WORDS = {"renewal_reminder": "renewal reminders", "discount_ending": "reminders that a discount is ending",
              "offer_accepted": "confirmations of offers you accept", "cancellation_confirmed": "cancellation confirmations"}


def card_update_flow(base_url: str, token: str) -> dict:
    """The portal's card-update flow that comes back to our page when the card is saved
    (https://docs.stripe.com/customer-management/portal-deep-links#after-completion)."""
    return {"type": "payment_method_update",
            "after_completion": {"type": "redirect", "redirect": {"return_url": f"{base_url}/billing/{token}/updated"}}}


def _page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    state = request.app.state
    html = environment.get_template(template).render(brand=state.config.current().brand, return_url=state.settings.return_url,
                                                     **context)
    return HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})


async def card_updated(request: Request) -> Response:
    """Where the portal returns after a card update: every open invoice is paid now, with the new card (and a
    subscription with a card of its own gets the new one too, so Stripe's own retries use it)."""
    token = request.path_params["token"]
    link = request.app.state.signer.read_billing(token)
    billing = StripeBilling(request.app.state.gateway)
    customer = await billing.customer(link.customer)
    card = (customer.get("invoice_settings") or {}).get("default_payment_method")
    card = card.get("id") if isinstance(card, dict) else card
    if card:
        for sub in await billing.subscriptions_with_own_card(link.customer):
            own = sub["default_payment_method"]
            if (own.get("id") if isinstance(own, dict) else own) != card:
                await billing.use_card_for_subscription(sub["id"], card)
    payments = [await billing.pay(invoice, card) for invoice in await billing.open_invoices(link.customer)]
    paid = [p for p in payments if p.paid]
    to_confirm = [p for p in payments if p.needs_confirmation]
    declined = [p for p in payments if not p.paid and not p.needs_confirmation]
    log_event("billing.card_updated_paid", customer=link.customer, paid=len(paid), declined=len(declined),
              to_confirm=len(to_confirm))
    lines = []
    if to_confirm and not declined:
        # the bank wants the customer to confirm: Stripe's hosted invoice page does that, never a dead end
        title = "Confirm the payment with your bank"
        lines.append(f"Your card was updated. Your bank asks you to confirm the payment of "
                     f"{' and '.join(format_money(p.amount, p.currency) for p in to_confirm)}: it takes a moment on "
                     "the next page.")
        if paid:
            lines.append("Your payment of " + " and ".join(format_money(p.amount, p.currency) for p in paid)
                         + " went through.")
        return _page(request, "card_updated.html", title=title, lines=lines, retry_url=None,
                     confirm_url=to_confirm[0].confirm_url)
    if not payments:
        title, lines = "Your card was updated", ["Your card was updated. There is nothing to pay right now."]
    elif not declined:
        title = "Your payment went through"
        amounts = " and ".join(format_money(p.amount, p.currency) for p in paid)
        lines.append(f"Your card was updated and your payment of {amounts} went through. Thank you!")
    else:
        title = "Your payment didn't go through"
        for p in declined:
            reason = p.failure.in_words if p.failure else "the payment was declined"
            card_words = f" ({p.failure.card})" if p.failure and p.failure.card else ""
            lines.append(f"Your card was updated, but the payment of {format_money(p.amount, p.currency)} didn't go "
                         f"through{card_words}: {reason}.")
        if paid:
            lines.append("Your payment of " + " and ".join(format_money(p.amount, p.currency) for p in paid)
                         + " went through.")
        lines.append("Please try another card, or contact your bank and try again.")
    retry = f"/billing/{token}?flow=payment_method_update" if declined else None
    return _page(request, "card_updated.html", title=title, lines=lines, retry_url=retry,
                 confirm_url=to_confirm[0].confirm_url if to_confirm else None)


async def unsubscribe(request: Request) -> Response:
    """GET shows one button and changes nothing (mail scanners open links); the button POSTs
    `action=unsubscribe`. A POST without a page works too: mail clients' one-click unsubscribe
    (RFC 8058, body `List-Unsubscribe=One-Click`) stops the emails at once. `action=resubscribe` undoes it."""
    token = request.path_params["token"]
    link = read_unsubscribe(request.app.state.settings.secret_key, token)
    if request.method == "HEAD":  # link checkers and mail clients look before anyone clicks: nothing changes
        return HTMLResponse(None, headers={"Cache-Control": "no-store"})
    engine = request.app.state.store.engine
    words = KIND_WORDS[link.kind] if link.kind in UNSUBSCRIBABLE else "these emails"
    brand = request.app.state.config.current().brand.name
    action = f"/emails/unsubscribe/{token}"
    if request.method == "GET":
        if await run_in_threadpool(records.unsubscribed, engine, link.customer, link.kind):
            return _stopped(request, words, action)
        return _page(request, "unsubscribed.html", title=f"Stop {words}?", subscribed=True,
                     message=f"Press the button to stop {words} from {brand}. Emails about a failed payment still "
                             "reach you, as they concern your account.",
                     button=f"Stop {words}", action=action)
    try:
        form = await request.form(max_files=0, max_fields=5, max_part_size=1000)
    except Exception:
        raise BadRequest("We couldn't read that form. Please go back and try again.") from None
    choice = form.get("action") or "unsubscribe"
    if choice not in ("unsubscribe", "resubscribe"):
        raise BadRequest("That is not something this page can do.")
    if choice == "resubscribe":
        await run_in_threadpool(records.resubscribe, engine, link.customer, link.kind)
        log_event("emails.resubscribe", customer=link.customer, kind=link.kind)
        return _page(request, "unsubscribed.html", title="You're back on the list", subscribed=True,
                     message=f"You'll get {words} again.", button=f"Stop {words}", action=action)
    await run_in_threadpool(records.unsubscribe, engine, link.customer, link.kind)
    log_event("emails.unsubscribe", customer=link.customer, kind=link.kind)
    return _stopped(request, words, action)


def _stopped(request: Request, words: str, action: str) -> Response:
    return _page(request, "unsubscribed.html", title="You won't get these emails any more", subscribed=False,
                 message=f"You won't get {words} from {request.app.state.config.current().brand.name} any more. Emails about "
                         "a failed payment still reach you, as they concern your account.",
                 button=f"Keep getting {words}", action=action)


routes = [
    Route("/billing/{token}/updated", card_updated, methods=["GET"]),
    Route("/emails/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
]
