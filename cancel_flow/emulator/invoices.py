"""Subscription invoices: made at creation, at every renewal and at a trial's end, discounted by the
subscription's discounts, paid with the default payment method, or left open when the card declines."""

from decimal import ROUND_HALF_UP, Decimal

from cancel_flow.emulator import objects as build
from cancel_flow.emulator.errors import StripeError

# Stripe finalizes a subscription's renewal invoice (and attempts payment) about an hour after
# creating it: https://docs.stripe.com/billing/subscriptions/webhooks#understand. "We wait an hour after receiving
# a successful response to the invoice.created event before attempting payment. If we don't receive a successful
# response within 72 hours, we attempt to finalize and send the invoice."
# (https://stripe.com/docs/invoicing/integration/workflow-transitions#finalized)
FINALIZE_AFTER = 3600
FINALIZE_AT_THE_LATEST = 72 * 3600
DECLINE_MESSAGE = "Your card was declined."
AUTHENTICATION_MESSAGE = "Your card was declined. This transaction requires authentication."
# Stripe's automatic retries of failed renewals (https://docs.stripe.com/billing/revenue-recovery/smart-retries):
# Smart Retries are on by default for new accounts; their recommended default is "8 tries within 2 weeks"
# (https://docs.stripe.com/payments/off-session-payments/smart-retries). The emulator stands in for them with a
# fixed schedule: days after the previous attempt, as a custom retry schedule counts them; then what the
# account's settings say: cancel the subscription, mark it unpaid, or leave it past due, the invoice marked
# uncollectible (status_details.uncollectible.reason `max_payment_attempts`,
# https://docs.stripe.com/changelog/endive/2026-09-30/invoice-uncollectible-status-detail).
DEFAULT_RETRIES = {"days": [2, 2, 2, 2, 2, 2, 2], "then": "cancel"}


def percent_of(amount: int, percent) -> int:
    """A percent-off discount on one line, rounded half up to the currency's minor unit. Stripe does not
    document its rounding; per line, half up, is what its invoices show for single-item subscriptions."""
    return int((Decimal(amount) * Decimal(str(percent)) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


class Invoicing:
    """Mixed into `Account`: everything about invoices and their payment."""

    # building ---------------------------------------------------------------------------------------
    def _discounts_at(self, sub: dict, at: int) -> list[dict]:
        """The subscription's discounts that apply to an invoice made at `at`: a repeating discount only
        while `at` is before its `end` (https://docs.stripe.com/api/discounts/object#discount_object-end),
        once and forever ones while attached (https://docs.stripe.com/billing/subscriptions/coupons#coupon-duration)."""
        found = []
        for discount_id in sub["discounts"]:
            disc = self.discounts[discount_id]
            if disc["start"] <= at and (disc["end"] is None or at < disc["end"]):
                found.append(disc)
        if not sub["discounts"]:
            # a subscription without a discount of its own inherits its customer's
            # (https://docs.stripe.com/api/subscriptions/create#create_subscription-discounts)
            inherited = self._customer_discount(self.customers.get(sub["customer"]), at)
            if inherited is not None and inherited["start"] <= at:
                found.append(inherited)
        return found

    def _fill_lines(self, inv: dict, sub: dict, period: tuple[int, int], trial: bool) -> None:
        for item in sub["items"]["data"]:
            price_obj = self.prices[item["price"]]
            product = self.products.get(price_obj["product"]) or {"name": price_obj["product"]}
            amount = 0 if trial else build.line_amount(price_obj, item["quantity"])  # https://docs.stripe.com/api/invoice-line-item/object#invoice_line_item_object-amount
            inv["lines"]["data"].append(build.invoice_line(inv["id"], sub, item, price_obj, product["name"], amount, period, trial))

    def _apply_discounts(self, inv: dict, discounts: list[dict]) -> None:
        """Percent-off per line (rounded half up), amount-off spread over the lines in proportion; each
        discount on what the ones before it left (https://docs.stripe.com/billing/subscriptions/coupons)."""
        lines = inv["lines"]["data"]
        left = [line["amount"] for line in lines]
        totals = []
        for disc in discounts:
            coupon_obj = self.coupons.get(disc["source"]["coupon"]) or disc.get("_coupon")
            if coupon_obj["percent_off"] is not None:
                shares = [percent_of(amount, coupon_obj["percent_off"]) for amount in left]
            elif coupon_obj["currency"] == inv["currency"]:
                shares = _spread(min(coupon_obj["amount_off"], sum(left)), left)
            else:
                continue
            for index, share in enumerate(shares):
                left[index] -= share
                lines[index]["discount_amounts"].append({"amount": share, "discount": disc["id"]})
            totals.append({"amount": sum(shares), "discount": disc["id"]})
            inv["discounts"].append(disc["id"])
        subtotal = sum(line["amount"] for line in lines)
        discount_total = sum(t["amount"] for t in totals)
        inv["total_discount_amounts"] = totals
        inv["subtotal"] = inv["subtotal_excluding_tax"] = subtotal
        inv["total"] = inv["total_excluding_tax"] = subtotal - discount_total
        inv["amount_due"] = inv["amount_remaining"] = subtotal - discount_total

    def _draft_invoice(self, sub: dict, reason: str, at: int, period: tuple[int, int],
                       lines_period: tuple[int, int], trial: bool = False) -> dict:
        cust = self.customers.get(sub["customer"]) or {"id": sub["customer"]}
        inv = build.invoice(build.new_id("in"), at, cust, sub, reason, period)
        self._fill_lines(inv, sub, lines_period, trial)
        discounts = self._discounts_at(sub, at)
        self._apply_discounts(inv, discounts)
        return inv

    def _bill(self, sub: dict, reason: str, at: int, period: tuple[int, int], lines_period: tuple[int, int],
              trial: bool = False, idempotency_key: str | None = None, attempt: bool = True) -> dict:
        """Make the invoice of a creation or renewal and run it as far as Stripe would at `at`."""
        inv = self._draft_invoice(sub, reason, at, period, lines_period, trial)
        self._stamp("invoices", inv)
        sub["latest_invoice"] = inv["id"]
        if inv["subtotal"] > 0:
            # A `once` discount is used up by the first invoice it discounts
            # (https://docs.stripe.com/api/coupons/object#coupon_object-duration).
            used = {d for d in inv["discounts"] if (self.coupons.get(self.discounts[d]["source"]["coupon"]) or {}).get("duration") == "once"}
            sub["discounts"] = [d for d in sub["discounts"] if d not in used]
            cust = self.customers.get(sub["customer"])
            if cust is not None and cust.get("_discount") in used:
                cust["_discount"] = None
        inv["_created_event"] = self.emit("invoice.created", self.render("invoices", inv), None, idempotency_key, at=at)["id"]
        if self._paused(sub, at):
            # https://docs.stripe.com/billing/subscriptions/pause-payment: invoices keep being made while collection
            # is paused; keep_as_draft leaves them draft. For void and mark_uncollectible Stripe's docs don't say
            # whether the pause is looked at when the invoice is made or when it is finalized (an hour later, up to
            # 72 hours when invoice.created isn't answered): the emulator looks at both, the stricter reading: an
            # invoice made during the pause is voided (or marked) if collection is still paused when it is
            # finalized, and charged if collection resumed meanwhile. Invoices made before the pause are collected
            # ("Invoices created before you pause subscriptions continue to be retried").
            inv["_paused_at_creation"] = True
            if sub["pause_collection"]["behavior"] == "keep_as_draft":
                inv["auto_advance"] = False
                return inv
        if reason in ("subscription_create", "subscription_update") and not inv.get("_paused_at_creation") \
                or sub["collection_method"] != "charge_automatically":
            # The first invoice, and one made by a change of billing cycle, is finalized and charged at
            # once (https://docs.stripe.com/billing/subscriptions/overview#subscription-lifecycle).
            self._finalize(inv, at, attempt=attempt, idempotency_key=idempotency_key)
        else:
            inv["automatically_finalizes_at"] = inv["next_payment_attempt"] = at + FINALIZE_AFTER
            sub.setdefault("_drafts", []).append(inv["id"])
        return inv

    @staticmethod
    def _paused(sub: dict | None, at: int) -> bool:
        pause = (sub or {}).get("pause_collection")
        return bool(pause) and (pause.get("resumes_at") is None or at < pause["resumes_at"])

    def _finalization_waits(self, inv: dict, at: int) -> bool:
        """A renewal's draft waits for its invoice.created webhook: when a delivery of it failed and none has
        succeeded since, finalization moves to 72 hours after the invoice was made."""
        event = self.events.get(inv.get("_created_event") or "")
        latest = inv["created"] + FINALIZE_AT_THE_LATEST
        if event is None or not event.get("_delivery_failed") or event.get("pending_webhooks", 0) <= 0 or at >= latest:
            return False
        inv["automatically_finalizes_at"] = inv["next_payment_attempt"] = latest
        return True

    def finalize_due(self, inv: dict, at: int) -> None:
        """The automatic finalization of a subscription's draft (and its payment, or the pause's void)."""
        if self._finalization_waits(inv, at):
            return
        sub = self.subscriptions.get((inv["parent"]["subscription_details"] or {}).get("subscription"))
        if inv.get("_paused_at_creation") and self._paused(sub, at):
            inv["auto_advance"] = False
            self._finalize(inv, at, attempt=False)
            if sub["pause_collection"]["behavior"] == "void":
                self._void(inv, at)
            else:
                self._mark_uncollectible(inv, at, "subscription_paused")
            return
        self._finalize(inv, at)

    def _mark_uncollectible(self, inv: dict, at: int, reason: str) -> None:
        inv["status"] = "uncollectible"
        inv["auto_advance"] = False
        inv["next_payment_attempt"] = None
        inv["status_transitions"]["marked_uncollectible_at"] = at
        inv["status_details"] = {"uncollectible": {"reason": reason}}
        self.emit("invoice.marked_uncollectible", self.render("invoices", inv), None, None, at=at)

    # lifecycle ---------------------------------------------------------------------------------------
    def _finalize(self, inv: dict, at: int, attempt: bool = True, idempotency_key: str | None = None) -> None:
        cust = self.customers.get(inv["customer"])
        if cust is not None:
            inv["number"] = f"{cust['invoice_prefix']}-{cust['next_invoice_sequence']:04d}"
            cust["next_invoice_sequence"] += 1
        inv["status"] = "open"
        inv["automatically_finalizes_at"] = None
        inv["next_payment_attempt"] = None
        inv["status_transitions"]["finalized_at"] = at
        inv["effective_at"] = at
        # the page where the customer pays it (or confirms with their bank): https://docs.stripe.com/invoicing/hosted-invoice-page
        inv["_secret"] = inv.get("_secret") or build.new_id("inv", 32)
        inv["hosted_invoice_url"] = f"{self.base_url}/i/{inv['_secret']}"
        self.hosted_invoices[inv["_secret"]] = inv["id"]
        self.emit("invoice.finalized", self.render("invoices", inv), None, idempotency_key, at=at)
        if attempt and inv["collection_method"] == "charge_automatically":
            self._collect(inv, at, idempotency_key)

    def _void(self, inv: dict, at: int) -> None:
        inv["status"] = "void"
        inv["auto_advance"] = False
        inv["amount_remaining"] = 0
        inv["status_transitions"]["voided_at"] = at
        self.emit("invoice.voided", self.render("invoices", inv), None, None, at=at)

    def _collect(self, inv: dict, at: int, idempotency_key: str | None = None, payment_method: dict | None = None,
                 authenticated: bool = False, automatic: bool = True) -> bool:
        """Charge the invoice: the payment method given (`/pay`'s `payment_method`), else the subscription's
        default payment method, else the customer's `invoice_settings.default_payment_method`
        (https://docs.stripe.com/billing/subscriptions/payment-methods-setting#payment-method-priority). Off
        session, a card that requires authentication fails with `authentication_required` and the PaymentIntent
        waits in `requires_action` for the customer, on the hosted invoice page
        (https://docs.stripe.com/billing/subscriptions/webhooks#payment-failures). An automatic attempt that
        fails is retried on the account's schedule."""
        sub = self.subscriptions.get((inv["parent"]["subscription_details"] or {}).get("subscription"))
        if inv["amount_due"] == 0:
            # Nothing to charge: Stripe marks a zero-amount invoice paid (https://docs.stripe.com/billing/invoices/overview#zero-amount).
            self._mark_paid(inv, at, None, idempotency_key)
            return True
        cust = self.customers.get(inv["customer"])
        method = payment_method or (self._charging_method(sub, cust) if sub and cust else None)
        inv["attempted"] = True
        inv["attempt_count"] += 1
        needs_action = method is not None and method.get("_requires_authentication") and not authenticated
        if method is not None and not method["_declines"] and not needs_action:
            self._record_payment(inv, at, method, None)
            self._mark_paid(inv, at, method, idempotency_key)
            if sub is not None and sub["status"] in ("past_due", "incomplete", "unpaid") and sub["latest_invoice"] == inv["id"]:
                # Paying the latest invoice makes the subscription active again
                # (https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses).
                before = self.render("subscriptions", sub)
                sub["status"] = "active"
                self._emit_update(sub, before, idempotency_key, at=at)
            return True
        if method is None:
            error = {"code": "resource_missing", "decline_code": None, "type": "invalid_request_error",
                     "message": "This customer has no attached payment source or default payment method."}
        elif needs_action:
            # https://docs.stripe.com/declines/codes#authentication_required
            error = {"code": "authentication_required", "decline_code": "authentication_required",
                     "type": "card_error", "message": AUTHENTICATION_MESSAGE}
        else:
            # https://docs.stripe.com/declines/codes#card-declined
            error = {"code": "card_declined", "decline_code": "generic_decline", "type": "card_error",
                     "message": DECLINE_MESSAGE}
        error.update({
            "advice_code": None, "charge": None, "doc_url": f"https://stripe.com/docs/error-codes/{error['code'].replace('_', '-')}",
            "network_advice_code": None, "network_decline_code": None, "param": None,
            "payment_method": build.public(method) if method else None,
            "payment_method_type": "card" if method else None, "request_log_url": None,
            "setup_intent": None, "source": None,
        })
        self._record_payment(inv, at, method, error)
        if needs_action:
            intent = self.payment_intents[inv["_payments"][-1]["payment"]["payment_intent"]]
            intent["status"] = "requires_action"
            intent["payment_method"] = method["id"]
            intent["next_action"] = {"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}}
        if automatic:
            self._schedule_retry(inv, at, sub, method)
        self.emit("invoice.payment_failed", self.render("invoices", inv), None, idempotency_key, at=at)
        if needs_action:
            self.emit("invoice.payment_action_required", self.render("invoices", inv), None, idempotency_key, at=at)
        if sub is not None and sub["latest_invoice"] == inv["id"] and sub["status"] in ("active", "trialing"):
            # A failed renewal makes the subscription past_due (https://docs.stripe.com/billing/subscriptions/overview#failed-payments).
            before = self.render("subscriptions", sub)
            sub["status"] = "past_due"
            self._emit_update(sub, before, None, at=at)
        if automatic and inv["next_payment_attempt"] is None and inv.get("_retried"):
            self._retries_exhausted(inv, at, sub)
        return False

    # automatic retries ----------------------------------------------------------------------------------
    def _schedule_retry(self, inv: dict, at: int, sub: dict | None, method: dict | None) -> None:
        """The next automatic attempt (`next_payment_attempt`), on the account's schedule; none when no payment
        method is available ("Stripe doesn't retry payments if no payment methods are available")."""
        days = self.retries["days"]
        made = inv.get("_retried", 0)
        if sub is None or method is None or made >= len(days) or sub["status"] in ("canceled", "incomplete_expired") \
                or inv["billing_reason"] == "subscription_create":
            inv["next_payment_attempt"] = None
            return
        inv["next_payment_attempt"] = at + int(days[made] * 86400)
        sub.setdefault("_retrying", [])
        if inv["id"] not in sub["_retrying"]:
            sub["_retrying"].append(inv["id"])

    def retry_due(self, inv: dict, at: int) -> None:
        """An automatic retry: the subscription's default payment method, else the customer's (the smart-retries
        page's "Payment method ordering")."""
        inv["_retried"] = inv.get("_retried", 0) + 1
        inv["next_payment_attempt"] = None
        if inv["status"] not in ("open",):
            return
        self._collect(inv, at)

    def _retries_exhausted(self, inv: dict, at: int, sub: dict | None) -> None:
        """The end state the account's settings choose once every retry failed."""
        self._mark_uncollectible(inv, at, "max_payment_attempts")
        then = self.retries["then"]
        if sub is None or sub["status"] in ("canceled", "incomplete_expired"):
            return
        if then == "cancel":
            self._end(sub, at, None, None, "payment_failed")
        elif then == "unpaid":
            before = self.render("subscriptions", sub)
            sub["status"] = "unpaid"
            self._emit_update(sub, before, None, at=at)

    def _retrying(self, sub: dict) -> list[dict]:
        """The subscription's open invoices waiting for an automatic retry."""
        pending = [self.invoices[i] for i in sub.get("_retrying", []) if i in self.invoices]
        sub["_retrying"] = [inv["id"] for inv in pending if inv["status"] == "open" and inv["next_payment_attempt"]]
        return [self.invoices[i] for i in sub["_retrying"]]

    def _record_payment(self, inv: dict, at: int, payment_method: dict | None, error: dict | None) -> None:
        payments = inv.setdefault("_payments", [])
        if payments:
            intent = self.payment_intents[payments[0]["payment"]["payment_intent"]]
            fresh = build.payment_intent(at, inv, payment_method, error)
            for field in ("amount_received", "last_payment_error", "payment_method", "status"):
                intent[field] = fresh[field]
            payments[0].update(build.invoice_payment(at, inv, intent), id=payments[0]["id"], created=payments[0]["created"])
        else:
            intent = self._stamp("payment_intents", build.payment_intent(at, inv, payment_method, error))
            payments.append(build.invoice_payment(at, inv, intent))
        if error is None and not intent.get("latest_charge"):
            self._charge_for(intent, payment_method, inv["id"], at)  # emulator/refunds.py

    def _mark_paid(self, inv: dict, at: int, payment_method: dict | None, idempotency_key: str | None) -> None:
        inv["status"] = "paid"
        inv["auto_advance"] = False
        inv["amount_paid"] = inv["amount_due"]
        inv["amount_remaining"] = 0
        inv["next_payment_attempt"] = None
        inv["status_transitions"]["paid_at"] = at
        rendered = self.render("invoices", inv)
        self.emit("invoice.paid", rendered, None, idempotency_key, at=at)
        self.emit("invoice.payment_succeeded", rendered, None, idempotency_key, at=at)

    # API ---------------------------------------------------------------------------------------------
    def list_invoices(self, params: dict) -> list[dict]:
        found = list(self.invoices.values())
        for field in ("customer", "status", "collection_method"):
            if params.get(field):
                found = [i for i in found if i[field] == params[field]]
        if params.get("subscription"):
            found = [i for i in found if (i["parent"]["subscription_details"] or {}).get("subscription") == params["subscription"]]
        return found

    def pay_invoice(self, invoice_id: str, params: dict, idempotency_key: str | None) -> dict:
        """POST /v1/invoices/{id}/pay (https://docs.stripe.com/api/invoices/pay): a draft is finalized first;
        a decline answers 402 card_error and the invoice stays open."""
        inv = self.get("invoices", invoice_id, "invoice")
        if inv["status"] == "paid":
            raise StripeError(400, "Invoice is already paid", code="invoice_already_paid")  # https://docs.stripe.com/error-codes/invoice-already-paid
        if inv["status"] in ("void", "deleted"):
            raise StripeError(400, f"You cannot pay an invoice with status '{inv['status']}'.", code="invoice_not_editable")
        at = self.time_for(inv["test_clock"])
        method = None
        if params.get("payment_method"):
            # "The PaymentMethod must be the ID of a PaymentMethod belonging to the customer associated with the
            # invoice being paid" (https://docs.stripe.com/api/invoices/pay#pay_invoice-payment_method): it pays
            # this time, whatever the subscription's or customer's default is.
            method = self.payment_methods[self._attached(params["payment_method"], inv["customer"], "payment_method")]
        if inv["status"] == "draft":
            self._finalize(inv, at, attempt=False, idempotency_key=idempotency_key)
        if params.get("paid_out_of_band"):
            inv["amount_paid_off_stripe"] = inv["amount_remaining"]
            self._mark_paid(inv, at, None, idempotency_key)
            return inv
        # A card that needs the customer's authentication isn't paid by an API call: off session (the default) it
        # fails with authentication_required, on session it waits for the customer's confirmation.
        if not self._collect(inv, at, idempotency_key, payment_method=method, automatic=False):
            error = inv["_payments"][-1]["payment"]["payment_intent"]
            last = self.payment_intents[error]["last_payment_error"]
            if last["type"] == "card_error":
                raise StripeError(402, last["message"], type_="card_error", code=last["code"], decline_code=last["decline_code"])
            raise StripeError(400, last["message"], code=last["code"])
        return inv

    def pay_on_hosted_page(self, inv: dict, method_id: str | None) -> bool:
        """The customer on the hosted invoice page: their card (or the one they choose), with the bank's
        authentication done there (https://docs.stripe.com/invoicing/hosted-invoice-page)."""
        at = self.time_for(inv["test_clock"])
        method = None
        if method_id:
            method = self.attach_payment_method(method_id, inv["customer"])
        else:
            intent_id = (inv.get("_payments") or [{}])[-1].get("payment", {}).get("payment_intent")
            intent = self.payment_intents.get(intent_id) if intent_id else None
            method = self.payment_methods.get((intent or {}).get("payment_method") or "")
        return self._collect(inv, at, payment_method=method, authenticated=True, automatic=False)

    def preview_invoice(self, params: dict) -> dict:
        """POST /v1/invoices/create_preview (https://docs.stripe.com/api/invoices/create_preview): the next
        renewal of a subscription, with the lines, discounts and amounts it will bill."""
        unsupported = sorted(set(params) - {"subscription", "customer", "expand"})
        if unsupported:
            raise StripeError(400, f"The emulator previews a subscription's next renewal only; it does not take {', '.join(unsupported)}.", param=unsupported[0])
        if not params.get("subscription"):
            if not params.get("customer"):
                raise StripeError(400, "Missing required param: subscription or customer.", code="parameter_missing", param="subscription")
            self.get("customers", params["customer"], "customer", "customer")
            live = [s for s in self.subscriptions.values() if s["customer"] == params["customer"] and s["status"] not in ("canceled", "incomplete_expired")]
            if not live:
                raise StripeError(404, f"No upcoming invoices for customer: {params['customer']}", code="invoice_upcoming_none")
            params = {**params, "subscription": live[0]["id"]}
        sub = self.get("subscriptions", params["subscription"], "subscription", "subscription")
        if params.get("customer") and params["customer"] != sub["customer"]:
            raise StripeError(400, "The subscription does not belong to this customer.", param="subscription")
        at = self.period_end(sub)
        if sub["status"] in ("canceled", "incomplete_expired") or (sub["cancel_at"] and sub["cancel_at"] <= at):
            raise StripeError(404, f"No upcoming invoices for customer: {sub['customer']}", code="invoice_upcoming_none")
        start, end = self._next_period(sub)
        previous = (sub["items"]["data"][0]["current_period_start"], at)
        inv = self._draft_invoice(sub, "subscription_cycle", at, previous, (start, end))
        inv["id"] = f"upcoming_{inv['id']}"
        inv["lines"]["url"] = f"/v1/invoices/{inv['id']}/lines"
        for line in inv["lines"]["data"]:
            line["invoice"] = inv["id"]
        inv["automatically_finalizes_at"] = inv["next_payment_attempt"] = at + FINALIZE_AFTER
        return inv


def _spread(total: int, amounts: list[int]) -> list[int]:
    """Split `total` over lines in proportion to their amounts, the leftover cents to the largest remainders."""
    whole = sum(amounts)
    if whole <= 0:
        return [0] * len(amounts)
    exact = [Decimal(total) * a / whole for a in amounts]
    shares = [int(x) for x in exact]
    order = sorted(range(len(amounts)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares

