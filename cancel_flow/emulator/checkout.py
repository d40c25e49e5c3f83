"""Checkout Sessions in subscription mode (https://docs.stripe.com/api/checkout/sessions): create, retrieve,
expire, and the hosted page a session's `url` opens, whose form pays with a test card and creates the
subscription with the session's discount, with the events Stripe sends."""

from html import escape
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.errors import StripeError
from cancel_flow.emulator.invoices import percent_of
from cancel_flow.emulator.objects import TEST_PAYMENT_METHODS

# https://docs.stripe.com/payments/checkout/managing-limited-inventory: `expires_at` must be between 30 minutes
# and 24 hours after creation; without it the session expires 24 hours after it was made.
MIN_EXPIRY, MAX_EXPIRY = 30 * 60, 24 * 3600
# https://docs.stripe.com/payments/checkout/discounts: "Checkout Sessions supports up to one coupon or promotion code."
SUCCESS_TEMPLATE = "{CHECKOUT_SESSION_ID}"


def checkout_session(now: int, params: dict, customer_id: str | None, currency: str, amounts: dict, url: str,
                     expires_at: int) -> dict:
    """A Checkout Session as the current API version shapes it (https://docs.stripe.com/api/checkout/sessions/object)."""
    return {
        "id": build.new_id("cs_test", 58), "object": "checkout.session", "adaptive_pricing": {"enabled": False},
        "after_expiration": None, "allow_promotion_codes": params.get("allow_promotion_codes"),
        "amount_subtotal": amounts["subtotal"], "amount_total": amounts["total"],
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": params.get("billing_address_collection"), "branding_settings": None,
        "cancel_url": params.get("cancel_url"), "client_reference_id": params.get("client_reference_id"),
        "client_secret": None, "collected_information": None, "consent": None, "consent_collection": None,
        "created": now, "currency": currency, "currency_conversion": None, "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": customer_id, "customer_account": None,
        "customer_creation": None if customer_id else "always", "customer_details": None,
        "customer_email": params.get("customer_email"),
        "discounts": [{"coupon": entry.get("coupon"), "promotion_code": entry.get("promotion_code")}
                      for entry in params.get("discounts") or []],
        "excluded_payment_method_types": [], "expires_at": expires_at, "integration_identifier": None,
        "invoice": None, "invoice_creation": None, "livemode": False, "locale": params.get("locale"),
        "managed_payments": None, "metadata": dict(params.get("metadata") or {}), "mode": params["mode"],
        "name_collection": None, "optional_items": None, "origin_context": None, "payment_intent": None,
        "payment_link": None, "payment_method_collection": params.get("payment_method_collection") or "always",
        "payment_method_configuration_details": None, "payment_method_options": {}, "payment_method_types": ["card"],
        "payment_status": "unpaid", "permissions": None, "phone_number_collection": {"enabled": False},
        "presentment_details": None, "recovered_from": None, "redirect_on_completion": None, "return_url": None,
        "saved_payment_method_options": None, "setup_intent": None, "shipping_address_collection": None,
        "shipping_cost": None, "shipping_options": [], "status": "open", "submit_type": None, "subscription": None,
        "success_url": params.get("success_url"), "tax_id_collection": {"enabled": False, "required": "never"},
        "total_details": {"amount_discount": amounts["discount"], "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": params.get("ui_mode") or "hosted_page", "url": url, "wallet_options": None,
    }


class Checkout:
    """Mixed into `Account`: Checkout Sessions and their completion."""

    def _checkout_items(self, params: dict) -> list[tuple[dict, int]]:
        items = params.get("line_items") or []
        if not items:
            # https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-line_items: required in
            # `payment` and `subscription` mode.
            raise StripeError(400, "Missing required param: line_items.", code="parameter_missing", param="line_items")
        if len(items) > 20:
            raise StripeError(400, "A subscription-mode Checkout Session can have at most 20 line items with recurring "
                                   "prices.", param="line_items")
        found = []
        for index, item in enumerate(items):
            param = f"line_items[{index}][price]"
            if item.get("price_data"):
                raise StripeError(400, "The emulator's Checkout takes existing prices only (line_items[][price]).",
                                  param=f"line_items[{index}][price_data]")
            if not item.get("price"):
                raise StripeError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)
            price = self.get("prices", item["price"], "price", param)
            if not price["active"]:
                # https://docs.stripe.com/api/prices/object#price_object-active: "Whether the price can be used for
                # new purchases."
                raise StripeError(400, "The price specified is inactive. This field only accepts active prices.",
                                  param=param)
            if not price["recurring"]:
                raise StripeError(400, "The emulator's Checkout takes recurring prices only in subscription mode.",
                                  param=param)
            found.append((price, int(item.get("quantity") or 1)))
        if len({p["currency"] for p, _ in found}) > 1 or len({self._interval_of(p) for p, _ in found}) > 1:
            raise StripeError(400, "All prices on a subscription must have the same currency and recurring interval.",
                              param="line_items")
        return found

    def _checkout_amounts(self, items: list[tuple[dict, int]], coupon: dict | None) -> dict:
        """What the first invoice will charge: each line's amount, less the coupon (percent per line, rounded
        half up, as invoices do)."""
        lines = [price["unit_amount"] * quantity for price, quantity in items]
        subtotal = sum(lines)
        discount = 0
        if coupon is not None:
            if coupon["percent_off"] is not None:
                discount = sum(percent_of(amount, coupon["percent_off"]) for amount in lines)
            elif coupon["currency"] == items[0][0]["currency"]:
                discount = min(coupon["amount_off"], subtotal)
        return {"subtotal": subtotal, "discount": discount, "total": subtotal - discount}

    def create_checkout_session(self, params: dict, base_url: str) -> dict:
        mode = params.get("mode")
        if not mode:
            raise StripeError(400, "Missing required param: mode.", code="parameter_missing", param="mode")
        if mode != "subscription":
            raise StripeError(400, f"The emulator offers Checkout in subscription mode only, not {mode}.", param="mode")
        if (params.get("ui_mode") or "hosted_page") != "hosted_page":
            raise StripeError(400, "The emulator offers the hosted Checkout page only (ui_mode=hosted_page).",
                              param="ui_mode")
        if params.get("customer") and params.get("customer_email"):
            # https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-customer_email
            raise StripeError(400, "You may only specify one of these parameters: customer, customer_email.",
                              param="customer_email")
        customer = self.get("customers", params["customer"], "customer", "customer") if params.get("customer") else None
        items = self._checkout_items(params)
        discounts = params.get("discounts") or []
        if len(discounts) > 1:
            raise StripeError(400, "You may only specify one discount.", param="discounts")
        if discounts and params.get("allow_promotion_codes"):
            raise StripeError(400, "You may only specify one of these parameters: allow_promotion_codes, discounts.",
                              param="discounts")
        coupon = None
        if discounts:
            if discounts[0].get("promotion_code"):
                raise StripeError(400, "The emulator's Checkout takes coupons only (discounts[][coupon]).",
                                  param="discounts[0][promotion_code]")
            coupon = self.get("coupons", discounts[0].get("coupon"), "coupon", "discounts[0][coupon]")
            if not coupon["valid"]:
                raise StripeError(400, f"Coupon expired: {coupon['id']}", code="coupon_expired", param="discounts[0][coupon]")
        if not params.get("success_url"):
            raise StripeError(400, "Missing required param: success_url.", code="parameter_missing", param="success_url")
        now = self.time_for(customer["test_clock"] if customer else None)
        expires_at = now + MAX_EXPIRY
        if params.get("expires_at") not in (None, ""):
            expires_at = int(params["expires_at"])
            if not now + MIN_EXPIRY <= expires_at <= now + MAX_EXPIRY:
                raise StripeError(400, "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                                       "Checkout Session creation.", param="expires_at")
        session = checkout_session(now, params, customer["id"] if customer else None, items[0][0]["currency"],
                                   self._checkout_amounts(items, coupon), "", expires_at)
        session["url"] = f"{base_url}/c/pay/{session['id']}"
        session["_items"] = [(price["id"], quantity) for price, quantity in items]
        session["_subscription_metadata"] = dict((params.get("subscription_data") or {}).get("metadata") or {})
        session["_test_clock"] = customer["test_clock"] if customer else None
        return self._stamp("checkout_sessions", session)

    def checkout_line_items(self, session: dict) -> dict:
        """`line_items`, included when expanded (https://docs.stripe.com/api/checkout/sessions/object#checkout_session_object-line_items)."""
        data = []
        for price_id, quantity in session["_items"]:
            price = self.prices[price_id]
            product = self.products.get(price["product"]) or {}
            amount = price["unit_amount"] * quantity
            data.append({"id": build.new_id("li", 24), "object": "item", "amount_discount": 0, "amount_subtotal": amount,
                         "amount_tax": 0, "amount_total": amount, "currency": price["currency"],
                         "description": product.get("name"), "price": build.public(price), "quantity": quantity})
        return build.list_object(data, f"/v1/checkout/sessions/{session['id']}/line_items")

    def checkout(self, session_id: str) -> dict:
        session = self.get("checkout_sessions", session_id, "checkout.session")
        self._expire_if_due(session)
        return session

    def _expire_if_due(self, session: dict) -> None:
        if session["status"] == "open" and self.time_for(session["_test_clock"]) >= session["expires_at"]:
            self._expire(session)

    def _expire(self, session: dict, at: int | None = None) -> None:
        session["status"], session["url"] = "expired", None
        self.emit("checkout.session.expired", self.render("checkout_sessions", session), None, None,
                  at=at if at is not None else self.time_for(session["_test_clock"]))

    def expire_checkout_session(self, session_id: str) -> dict:
        """https://docs.stripe.com/api/checkout/sessions/expire: only an open session can be expired."""
        session = self.checkout(session_id)
        if session["status"] != "open":
            raise StripeError(400, f"Only Checkout Sessions with a status in [\"open\"] can be expired. This Checkout "
                                   f"Session has a status of \"{session['status']}\".", param="session")
        self._expire(session)
        return session

    def expire_due_checkouts(self, clock_id: str | None, until: int) -> None:
        """Sessions whose `expires_at` has come as a clock moves expire, with `checkout.session.expired`."""
        for session in list(self.checkout_sessions.values()):
            if session["_test_clock"] == clock_id and session["status"] == "open" and session["expires_at"] <= until:
                self._expire(session, session["expires_at"])

    def complete_checkout_session(self, session_id: str, card: str) -> dict:
        """The hosted page's Subscribe: the card is attached to the customer, the subscription is created with the
        session's prices and discount and that card as its default payment method, its first invoice is paid,
        and `checkout.session.completed` follows the subscription's own events."""
        session = self.checkout(session_id)
        if session["status"] != "open":
            raise StripeError(400, "This Checkout Session is no longer active.")
        customer = self.customers.get(session["customer"]) if session["customer"] else None
        if customer is None:
            customer = self._stamp("customers", build.customer(self.now(), {"email": session["customer_email"]}))
        payment_method = self.attach_payment_method(card, customer["id"], "payment_method")["id"]
        if self.payment_methods[payment_method]["_declines"]:
            # https://docs.stripe.com/testing#declined-payments: the charge is declined; Checkout shows it and the
            # session stays open for another card.
            raise StripeError(402, "Your card was declined.", type_="card_error", code="card_declined",
                              decline_code="generic_decline")
        params = {"customer": customer["id"], "items": [{"price": price, "quantity": quantity}
                                                        for price, quantity in session["_items"]],
                  "default_payment_method": payment_method, "metadata": session["_subscription_metadata"]}
        if session["discounts"]:
            params["discounts"] = [{"coupon": session["discounts"][0]["coupon"]}]
        sub = self.create_subscription(params, None)
        invoice = self.invoices[sub["latest_invoice"]]
        session.update(status="complete", url=None, customer=customer["id"], subscription=sub["id"],
                       invoice=invoice["id"], payment_status="paid" if invoice["amount_due"] else "no_payment_required",
                       amount_subtotal=invoice["subtotal"], amount_total=invoice["total"],
                       customer_details={"address": None, "business_name": None, "email": customer["email"],
                                         "individual_name": None, "name": customer["name"], "phone": None,
                                         "tax_exempt": "none", "tax_ids": []})
        session["total_details"]["amount_discount"] = invoice["subtotal"] - invoice["total"]
        self.emit("checkout.session.completed", self.render("checkout_sessions", session), None, None,
                  at=self.time_for(customer["test_clock"]))
        return session


# The hosted page ------------------------------------------------------------------------------------

_STYLE = """
*{box-sizing:border-box}body{margin:0;font:1rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1a1f36;background:#fff}
.test{margin:0;background:#ffde92;color:#3d2b00;text-align:center;padding:.35rem 1rem;font-size:.85rem;font-weight:600}
.shell{display:grid;gap:1.5rem;max-width:62rem;margin:0 auto;padding:1.5rem 1rem 3rem}
@media(min-width:48rem){.shell{grid-template-columns:1fr 1fr;padding-top:3rem}}
.summary{color:#3c4257}.summary .total{font-size:2rem;font-weight:700;color:#1a1f36;margin:.2rem 0}
.line{display:flex;justify-content:space-between;gap:1rem;border-bottom:1px solid #e3e8ee;padding:.4rem 0}
main{background:#fff;border-radius:12px;box-shadow:0 2px 5px rgba(60,66,87,.08),0 1px 1px rgba(0,0,0,.12);padding:1.25rem}
h1{font-size:1.2rem;margin:0 0 1rem}.problem{background:#fdecea;border:1px solid #b42318;color:#7a1a10;border-radius:8px;padding:.7rem 1rem}
fieldset{border:0;padding:0;margin:0 0 1rem}legend{font-weight:600;margin-bottom:.4rem;padding:0}
label{display:flex;gap:.6rem;align-items:center;border:1px solid #e3e8ee;border-radius:8px;padding:.55rem .75rem;margin:.35rem 0}
label input{width:1.1rem;height:1.1rem;accent-color:#533afd}
button{font:inherit;font-weight:600;padding:.75rem 1.1rem;border-radius:8px;border:0;background:#533afd;color:#fff;width:100%}
a{color:#533afd}.muted{color:#4f566b;font-size:.95rem}
"""


def _money(amount: int, currency: str) -> str:
    return build.money(amount, currency)


def _page(title: str, body: str, status: int = 200, lang: str = "en") -> HTMLResponse:
    return HTMLResponse(f"""<!doctype html><html lang="{escape(lang)}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)} · Stripe test Checkout</title>
<style>{_STYLE}</style></head><body><header><p class="test">Test mode · local Stripe emulator</p></header>
<div class="shell">{body}</div></body></html>""", status_code=status)


def _summary(account, session: dict) -> str:
    lines = []
    for price_id, quantity in session["_items"]:
        price = account.prices[price_id]
        product = account.products.get(price["product"]) or {"name": price["product"]}
        every = price["recurring"]["interval"]
        lines.append(f'<div class="line"><span>{escape(product["name"])}{f" × {quantity}" if quantity > 1 else ""}</span>'
                     f'<span>{_money(price["unit_amount"] * quantity, price["currency"])} / {escape(every)}</span></div>')
    discount = session["total_details"]["amount_discount"]
    if discount:
        coupon = account.coupons.get(session["discounts"][0]["coupon"]) or {}
        lines.append(f'<div class="line"><span>{escape(coupon.get("name") or coupon.get("id") or "Discount")}</span>'
                     f'<span>−{_money(discount, session["currency"])}</span></div>')
    return (f'<section class="summary" aria-label="Order summary"><p>Subscribe</p>'
            f'<p class="total">{_money(session["amount_total"], session["currency"])}</p>'
            f'<p class="muted">due today</p>{"".join(lines)}</section>')


def _form(session: dict, problem: str = "") -> str:
    options = []
    seen = set()
    for name, (brand, last4) in TEST_PAYMENT_METHODS.items():
        if (brand, last4) in seen:
            continue
        seen.add((brand, last4))
        checked = " checked" if name == "pm_card_visa" else ""
        options.append(f'<label><input type="radio" name="payment_method" value="{name}"{checked}> '
                       f'{brand.title()} ending {last4}</label>')
    back = (f'<p><a href="{escape(session["cancel_url"])}">← Back</a></p>' if session.get("cancel_url") else "")
    alert = f'<p class="problem" role="alert">{escape(problem)}</p>' if problem else ""
    return (f'<main><h1>Pay with card</h1>{alert}<form method="post" action="/c/pay/{escape(session["id"])}">'
            f'<fieldset><legend>Test card</legend>{"".join(options)}</fieldset>'
            f'<button type="submit">Subscribe</button></form>{back}</main>')


def _session(request: Request):
    account = request.app.state.emulator.account
    session = account.checkout_sessions.get(request.path_params["session"])
    return account, session


async def show(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This Checkout link is not valid", "<main><h1>Something went wrong</h1><p>The page you were "
                     "looking for could not be found.</p></main>", 404)
    with account.lock:
        account._expire_if_due(session)
        lang = (session.get("locale") or "en").split("-")[0]
        if session["status"] == "expired":
            return _page("Session expired", "<main><h1>Your session has expired</h1><p>Please go back and try again."
                         "</p></main>", 410, lang)
        if session["status"] == "complete":
            return RedirectResponse(_success_url(session), status_code=303)
        return _page("Subscribe", _summary(account, session) + _form(session), lang=lang)


def _success_url(session: dict) -> str:
    return session["success_url"].replace(SUCCESS_TEMPLATE, quote(session["id"], safe=""))


async def pay(request: Request) -> Response:
    account, session = _session(request)
    if session is None:
        return _page("This Checkout link is not valid", "<main><h1>Something went wrong</h1></main>", 404)
    form = await request.form()
    card = form.get("payment_method")
    if card not in TEST_PAYMENT_METHODS:
        with account.lock:
            return _page("Choose a card", _summary(account, session) + _form(session, "Pick one of the test cards."), 400)
    with account.lock:
        try:
            account.complete_checkout_session(session["id"], card)
        except StripeError as error:
            if session["status"] != "open":
                return _page("Session expired", "<main><h1>This Checkout Session is no longer active</h1></main>", 410)
            return _page("Payment failed", _summary(account, session) + _form(session, error.message), error.status)
        return RedirectResponse(_success_url(session), status_code=303)


routes = [
    Route("/c/pay/{session}", show, methods=["GET"]),
    Route("/c/pay/{session}", pay, methods=["POST"]),
]
