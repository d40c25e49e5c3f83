"""Pages the billing emails lead to: back from the card update (the open invoice is paid at once) and
unsubscribing (no login: a one-button page, and the mail clients' one-click POST)."""

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from cancel_flow.emails import records
from cancel_flow.emails.kinds import UNSUBSCRIBABLE
from cancel_flow.emails.tokens import read_unsubscribe
from cancel_flow.errors import BadRequest
from cancel_flow.logs import log_event
from cancel_flow.money import format_money, format_words
from cancel_flow.stripe_billing import StripeBilling
from cancel_flow.i18n import DEFAULT, N_, gettext
from cancel_flow.web.pages import page_language, picked_language, render

# What each kind of email is called on the unsubscribe page: (the emails, "Stop …" on the button, "Keep getting …").
KIND_WORDS = {
    "renewal_reminder": (N_("renewal reminders"), N_("Stop renewal reminders?"), N_("Stop renewal reminders"),
                         N_("Keep getting renewal reminders")),
    "discount_ending": (N_("reminders that a discount is ending"), N_("Stop reminders that a discount is ending?"),
                        N_("Stop reminders that a discount is ending"), N_("Keep getting reminders that a discount is ending")),
    "offer_accepted": (N_("confirmations of offers you accept"), N_("Stop confirmations of offers you accept?"),
                       N_("Stop confirmations of offers you accept"), N_("Keep getting confirmations of offers you accept")),
    "cancellation_confirmed": (N_("cancellation confirmations"), N_("Stop cancellation confirmations?"),
                               N_("Stop cancellation confirmations"), N_("Keep getting cancellation confirmations")),
    "changed_mind": (N_("reminders before your subscription ends"), N_("Stop reminders before your subscription ends?"),
                     N_("Stop reminders before your subscription ends"),
                     N_("Keep getting reminders before your subscription ends")),
    "winback": (N_("emails about coming back"), N_("Stop emails about coming back?"), N_("Stop emails about coming back"),
                N_("Keep getting emails about coming back")),
}
OTHER_WORDS = (N_("these emails"), N_("Stop these emails?"), N_("Stop these emails"), N_("Keep getting these emails"))


def card_update_flow(base_url: str, token: str, language: str = DEFAULT) -> dict:
    """The portal's card-update flow that comes back to our page when the card is saved
    (https://docs.stripe.com/customer-management/portal-deep-links#after-completion), in the portal's language."""
    back = f"{base_url}/billing/{token}/updated?lang={language}"
    return {"type": "payment_method_update", "after_completion": {"type": "redirect", "redirect": {"return_url": back}}}


def _page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    page = render(request, template, status_code, **context)
    page.headers["Cache-Control"] = "no-store"
    return page


async def card_updated(request: Request) -> Response:
    """Where the portal returns after a card update: every open invoice is paid now, with the new card (and a
    subscription with a card of its own gets the new one too, so Stripe's own retries use it)."""
    token = request.path_params["token"]
    link = request.app.state.signer.read_billing(token)
    billing = StripeBilling(request.app.state.gateway)
    customer = await billing.customer(link.customer)
    request.state.preferred_locales = tuple(customer.get("preferred_locales") or ())
    language = page_language(request)
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
    title, lines = card_update_words(paid, to_confirm, declined, language)
    retry = f"/billing/{token}?flow=payment_method_update&lang={language}" if declined else None
    # a result page: its switch would pay again, so it has none (its language came with the return address)
    return _page(request, "card_updated.html", title=title, lines=lines, retry_url=retry,
                 confirm_url=to_confirm[0].confirm_url if to_confirm else None, language_switch=False)


def card_update_words(paid: list, to_confirm: list, declined: list, language: str) -> tuple[str, list[str]]:
    """The card-update page's title and lines, in `language`."""
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    amounts = lambda payments: format_words([format_money(p.amount, p.currency, language) for p in payments],  # noqa: E731
                                            language)
    lines = []
    if to_confirm and not declined:
        # the bank wants the customer to confirm: Stripe's hosted invoice page does that, never a dead end
        lines.append(say("Your card was updated. Your bank asks you to confirm the payment of %(amounts)s: it takes a "
                         "moment on the next page.", amounts=amounts(to_confirm)))
        if paid:
            lines.append(say("Your payment of %(amounts)s went through.", amounts=amounts(paid)))
        return say("Confirm the payment with your bank"), lines
    if not paid and not declined:
        return say("Your card was updated"), [say("Your card was updated. There is nothing to pay right now.")]
    if not declined:
        return say("Your payment went through"), [
            say("Your card was updated and your payment of %(amounts)s went through. Thank you!", amounts=amounts(paid))]
    for p in declined:
        reason = p.failure.words_in(language) if p.failure else say("the payment was declined")
        card = p.failure.card_in(language) if p.failure else None
        if card:
            lines.append(say("Your card was updated, but the payment of %(amount)s didn't go through (%(card)s): "
                             "%(reason)s.", amount=format_money(p.amount, p.currency, language), card=card, reason=reason))
        else:
            lines.append(say("Your card was updated, but the payment of %(amount)s didn't go through: %(reason)s.",
                             amount=format_money(p.amount, p.currency, language), reason=reason))
    if paid:
        lines.append(say("Your payment of %(amounts)s went through.", amounts=amounts(paid)))
    lines.append(say("Please try another card, or contact your bank and try again."))
    return say("Your payment didn't go through"), lines


async def unsubscribe(request: Request) -> Response:
    """GET shows one button and changes nothing (mail scanners open links); the button POSTs
    `action=unsubscribe`. A POST without a page works too: mail clients' one-click unsubscribe
    (RFC 8058, body `List-Unsubscribe=One-Click`) stops the emails at once. `action=resubscribe` undoes it."""
    token = request.path_params["token"]
    link = read_unsubscribe(request.app.state.settings.secret_key, token)
    if request.method == "HEAD":  # link checkers and mail clients look before anyone clicks: nothing changes
        return HTMLResponse(None, headers={"Cache-Control": "no-store"})
    engine = request.app.state.store.engine
    language = page_language(request)
    words, ask, stop, keep = (gettext(language, text)
                              for text in (KIND_WORDS[link.kind] if link.kind in UNSUBSCRIBABLE else OTHER_WORDS))
    brand = request.app.state.config.current().brand.name
    picked = picked_language(request)
    action = f"/emails/unsubscribe/{token}" + (f"?lang={picked}" if picked else "")
    if request.method == "GET":
        if await run_in_threadpool(records.unsubscribed, engine, link.customer, link.kind):
            return _stopped(request, language, words, keep, action)
        return _page(request, "unsubscribed.html", title=ask, subscribed=True,
                     message=gettext(language, "Press the button to stop %(emails)s from %(brand)s. Emails about a failed "
                                               "payment still reach you, as they concern your account.",
                                     emails=words, brand=brand),
                     button=stop, action=action)
    try:
        form = await request.form(max_files=0, max_fields=5, max_part_size=1000)
    except Exception:
        raise BadRequest(N_("We couldn't read that form. Please go back and try again.")) from None
    choice = form.get("action") or "unsubscribe"
    if choice not in ("unsubscribe", "resubscribe"):
        raise BadRequest(N_("That is not something this page can do."))
    if choice == "resubscribe":
        await run_in_threadpool(records.resubscribe, engine, link.customer, link.kind)
        log_event("emails.resubscribe", customer=link.customer, kind=link.kind)
        return _page(request, "unsubscribed.html", title=gettext(language, "You're back on the list"), subscribed=True,
                     message=gettext(language, "You'll get %(emails)s again.", emails=words), button=stop, action=action)
    await run_in_threadpool(records.unsubscribe, engine, link.customer, link.kind)
    log_event("emails.unsubscribe", customer=link.customer, kind=link.kind)
    return _stopped(request, language, words, keep, action)


def _stopped(request: Request, language: str, words: str, keep: str, action: str) -> Response:
    return _page(request, "unsubscribed.html", title=gettext(language, "You won't get these emails any more"),
                 subscribed=False,
                 message=gettext(language, "You won't get %(emails)s from %(brand)s any more. Emails about a failed "
                                           "payment still reach you, as they concern your account.",
                                 emails=words, brand=request.app.state.config.current().brand.name),
                 button=keep, action=action)


routes = [
    Route("/billing/{token}/updated", card_updated, methods=["GET"]),
    Route("/emails/unsubscribe/{token}", unsubscribe, methods=["GET", "POST"]),
]
