"""What is due, and writing it: one pass reads our invoice records, sessions and cancellations made outside the flow
(and, once an hour, Stripe's active subscriptions for reminders), composes each due email and writes it with its outbox
delivery under a unique key. Any number of passes and workers at once write each email once."""

from collections import Counter
from datetime import datetime, timedelta

import stripe

from cancel_flow.billing import Line, Plan, schedule_lines
from cancel_flow.clock import add_months, as_utc, from_unix, utc_now
from cancel_flow.emails import compose, records
from cancel_flow.config.schema import Configuration, EmailSchedule
from cancel_flow.emails.kinds import UNSUBSCRIBABLE
from cancel_flow.emails.records import Planned
from cancel_flow.emails.tokens import unsubscribe_token
from cancel_flow.emails.winback_schedule import ComebackSteps, changed_mind
from cancel_flow.errors import StripeUnavailable
from cancel_flow.i18n import DEFAULT, choose, gettext, lang_query as _lang
from cancel_flow.links import LONGEST_MAX_AGE, LinkSigner
from cancel_flow.logs import log_event
from cancel_flow.money import format_money, format_percent_off
from cancel_flow.stripe_billing import StripeBilling, failure_of

DAY = timedelta(days=1)
# A step more than this late (the service was down) gives way to the next one instead of arriving late.
LATE = timedelta(days=2)
# Confirmations go out for decisions this recent, so turning the feature on doesn't mail old sessions.
CONFIRM_WITHIN = timedelta(days=2)
SCAN_EVERY = timedelta(hours=1)
ENDED = ("canceled", "incomplete_expired")


class Mailroom:
    """Everything a pass needs: the database, the schedule, the brand, links, and Stripe."""

    def __init__(self, engine, settings, config: Configuration, signer: LinkSigner, gateway,
                 schedule: EmailSchedule | None = None):
        self.engine, self.settings, self.signer = engine, settings, signer
        self.config = config
        self.schedule = schedule or config.emails
        self.billing = StripeBilling(gateway)
        self.style = compose.Style(config.brand, settings.base_url, settings.timezone)
        self.default_locale = config.brand.default_locale

    def language(self, customer: dict | None) -> str:
        """The email's language: the customer's first `preferred_locales` we ship, else the brand's default."""
        return choose(preferred_locales=(customer or {}).get("preferred_locales") or (), default=self.default_locale)

    # links ----------------------------------------------------------------------------------------
    # Pages and the portal a link leads to speak the email's language (`lang`; English needs none: it is where
    # every choice ends when nothing else is known).
    def card_update_url(self, customer_id: str, language: str = DEFAULT) -> str:
        token, _ = self.signer.billing_token(customer_id)
        return f"{self.settings.base_url}/billing/{token}?flow=payment_method_update" + _lang(language, "&")

    def billing_url(self, customer_id: str, language: str = DEFAULT) -> str:
        token, _ = self.signer.billing_token(customer_id)
        return f"{self.settings.base_url}/billing/{token}" + _lang(language)

    def cancel_url(self, customer_id: str, subscription_id: str, until: datetime | None, now: datetime) -> str:
        """A fresh cancel link that works at least until `until` (a day more, at most a year)."""
        max_age = None
        if until is not None:
            max_age = min(max(int((until - now + DAY).total_seconds()), self.signer.cancel_max_age), LONGEST_MAX_AGE)
        token, _ = self.signer.cancel_token(customer_id, subscription_id, max_age=max_age)
        return f"{self.settings.base_url}/cancel/{token}"

    def unsubscribe_url(self, customer_id: str, kind: str, language: str = DEFAULT) -> str | None:
        if kind not in UNSUBSCRIBABLE:
            return None
        token = unsubscribe_token(self.settings.secret_key, customer_id, kind)
        return f"{self.settings.base_url}/emails/unsubscribe/{token}" + _lang(language)

    # the pass -------------------------------------------------------------------------------------
    async def plan(self, now: datetime | None = None, scan: bool | None = None) -> Counter:
        """Write every email due now; the number written per kind. `scan`: look at Stripe's subscriptions for
        reminders now (True), never (False), or when this deployment hasn't in the last hour (None)."""
        now = now or utc_now()
        written: Counter = Counter()
        if self.schedule.sends("payment_failed"):
            await self._failed_payments(now, written)
        if self.schedule.confirmations:
            await self._confirmations(now, written)
        if self.config.winback.steps:
            await ComebackSteps(self).plan(now, written)
        reminders = self.schedule.sends("renewal_reminder") or self.schedule.sends("discount_ending") \
            or bool(self.config.winback.changed_mind_days_before)
        if reminders and (scan or (scan is None and records.start_scan(self.engine, "reminders", SCAN_EVERY))):
            await self._reminders(now, written)
        if written:
            log_event("emails.planned", **{kind: count for kind, count in written.items()})
        return written

    async def _write(self, planned: Planned, email: compose.Email, written: Counter) -> None:
        rendered = compose.render(email, self.style)
        if records.write(self.engine, planned, rendered.subject, rendered.text, rendered.html, rendered.headers):
            written[planned.kind] += 1

    async def _each(self, planned: Planned, make, written: Counter) -> None:
        """Compose one email (Stripe reads may fail: the next pass tries again) and write it."""
        try:
            email = await make()
        except (StripeUnavailable, stripe.StripeError) as error:
            log_event("emails.compose_failed", kind=planned.kind, key=planned.key, error=type(error).__name__)
            return
        if isinstance(email, str):
            records.skip(self.engine, planned, email)
        elif email is not None:
            await self._write(planned, email, written)

    # failed payments ------------------------------------------------------------------------------
    def due_step(self, first_failed: datetime, now: datetime) -> int | None:
        """The latest step of the schedule that has come, unless it is more than LATE overdue."""
        come = [day for day in self.schedule.failed_payment_days if first_failed + day * DAY <= now]
        if not come or now >= first_failed + come[-1] * DAY + LATE:
            return None
        return come[-1]

    async def _failed_payments(self, now: datetime, written: Counter) -> None:
        horizon = now - max(self.schedule.failed_payment_days) * DAY - LATE
        due = []
        for invoice in records.failing_invoices(self.engine, horizon):
            step = self.due_step(as_utc(invoice.first_failed_at), now)
            if step is not None:
                due.append((f"payment_failed:{invoice.id}:{step}", step, invoice))
        known = records.known_keys(self.engine, [key for key, _, _ in due])
        for key, step, invoice in due:
            if key in known:
                continue
            planned = Planned(key, "payment_failed", invoice.customer_id, invoice_id=invoice.id,
                              subscription_id=invoice.subscription_id, step=step)
            await self._each(planned, lambda invoice=invoice, step=step, planned=planned:
                             self._payment_failed(invoice, step, planned), written)

    async def _payment_failed(self, record, step: int, planned: Planned):
        invoice = await self.billing.invoice(record.id)
        if invoice.get("status") not in records.UNPAID:
            return f"Not sent: the invoice is {invoice.get('status')} at Stripe."
        sub = await self.billing.subscription(record.subscription_id)
        if sub.get("status") in ENDED:
            return "Not sent: the subscription has ended."
        customer = sub["customer"] if isinstance(sub.get("customer"), dict) else await self.billing.customer(record.customer_id)
        if not customer.get("email"):
            return "Not sent: the customer has no email address."
        failure = failure_of(invoice)
        planned.email = customer["email"]
        language = self.language(customer)
        # while the invoice waits for the customer's bank, the button goes where they confirm it
        confirm = invoice.get("hosted_invoice_url") if failure.needs_authentication else None
        retry = invoice.get("next_payment_attempt")
        return compose.payment_failed(
            self.style, to=customer["email"], name=customer.get("name"), step=step,
            amount=invoice.get("amount_remaining") or invoice.get("amount_due") or record.amount_due,
            currency=invoice.get("currency") or record.currency, plan=_plan_name(sub),
            failed_at=as_utc(record.first_failed_at), card=failure.card_in(language), reason=failure.words_in(language),
            update_url=self.card_update_url(record.customer_id, language),
            next_attempt=from_unix(retry) if retry else None, confirm_url=confirm, language=language)

    # confirmations --------------------------------------------------------------------------------
    async def _confirmations(self, now: datetime, written: Counter) -> None:
        saved, canceled = records.sessions_to_confirm(self.engine, now - CONFIRM_WITHIN)
        rows = [(f"offer_accepted:{row.id}", "offer_accepted", row) for row in saved] + \
               [(f"cancellation_confirmed:{row.id}", "cancellation_confirmed", row) for row in canceled]
        known = records.known_keys(self.engine, [key for key, _, _ in rows])
        for key, kind, row in rows:
            if key in known:
                continue
            planned = Planned(key, kind, row.customer_id, row.customer_email, subscription_id=row.subscription_id,
                              session_id=row.id)
            if records.unsubscribed(self.engine, row.customer_id, kind):
                records.skip(self.engine, planned, "Not sent: the subscriber turned these emails off.")
                continue
            make = self._offer_accepted if kind == "offer_accepted" else self._cancellation_confirmed
            await self._each(planned, lambda make=make, row=row, planned=planned: make(row, planned, now), written)
        await self._outside_confirmations(now, written)

    async def _outside_confirmations(self, now: datetime, written: Counter) -> None:
        """Cancellations asked for in Stripe's portal (or by the coach in Stripe) without our flow get the same receipt."""
        rows = [(records.outside_key(row.subscription_id, as_utc(row.canceled_at)), row, declaration)
                for row, declaration in records.outside_cancellations_to_confirm(self.engine, now - CONFIRM_WITHIN)]
        known = records.known_keys(self.engine, [key for key, _, _ in rows])
        for key, row, declaration in rows:
            if key in known:
                continue
            planned = Planned(key, "cancellation_confirmed", row.customer_id, subscription_id=row.subscription_id)
            if declaration is not None:
                records.skip(self.engine, planned, f"Not sent: the acknowledgement of declaration {declaration} "
                                                   "confirmed this cancellation.")
            elif records.unsubscribed(self.engine, row.customer_id, "cancellation_confirmed"):
                records.skip(self.engine, planned, "Not sent: the subscriber turned these emails off.")
            else:
                received = as_utc(row.canceled_at)  # the moment Stripe recorded the cancellation
                await self._each(planned, lambda planned=planned, received=received:
                                 self._receipt(planned, None, received, now), written)

    async def _offer_accepted(self, row, planned: Planned, now: datetime):
        customer = await self.billing.customer(row.customer_id)
        to = row.customer_email or customer.get("email")
        if not to:
            return "Not sent: the customer has no email address."
        planned.email = to
        language = self.language(customer)
        payments = [(as_utc(at), words) for at, words in schedule_lines(row.schedule, row.currency, language)]
        promise = (row.promise_texts or {}).get(language) or row.promise
        return compose.offer_accepted(
            self.style, to=to, name=customer.get("name"), plan=row.plan_name, promise=promise, payments=payments,
            billing_url=self.billing_url(row.customer_id, language),
            unsubscribe_url=self.unsubscribe_url(row.customer_id, "offer_accepted", language), language=language)

    async def _cancellation_confirmed(self, row, planned: Planned, now: datetime):
        return await self._receipt(planned, row.customer_email, as_utc(row.canceled_at) if row.canceled_at else None, now)

    async def _receipt(self, planned: Planned, to: str | None, received_at: datetime | None, now: datetime):
        """The cancellation's receipt as Stripe has the subscription now: what was canceled, when it was received, when
        it takes effect (the date it is set to end, or at once when it has ended) and what they keep until then."""
        sub = await self.billing.subscription(planned.subscription_id)
        customer = sub["customer"] if isinstance(sub.get("customer"), dict) else {}
        to = to or customer.get("email")
        if not to:
            return "Not sent: the customer has no email address."
        planned.email = to
        language = self.language(customer)
        if sub.get("status") in ENDED:
            access_until, keep = None, None
        else:
            access_until = _cancels_at(sub)
            if access_until is None:
                return "Not sent: the subscriber kept the subscription."
            keep = self.cancel_url(planned.customer_id, planned.subscription_id, access_until, now)
        return compose.cancellation_confirmed(
            self.style, to=to, name=customer.get("name"), plan=_plan_name(sub), access_until=access_until, keep_url=keep,
            received_at=received_at, language=language,
            unsubscribe_url=self.unsubscribe_url(planned.customer_id, "cancellation_confirmed", language))

    # renewal and discount reminders ---------------------------------------------------------------
    async def _reminders(self, now: datetime, written: Counter) -> None:
        schedule = self.schedule
        async for sub in self.billing.active_subscriptions():
            customer = sub["customer"] if isinstance(sub.get("customer"), dict) else {"id": sub.get("customer")}
            if schedule.sends("renewal_reminder"):
                await self._renewal(sub, customer, now, written)
            if schedule.sends("discount_ending"):
                for discount in sub.get("discounts") or []:
                    if isinstance(discount, dict):
                        await self._discount(sub, customer, discount, now, written)
            if self.config.winback.changed_mind_days_before:
                await changed_mind(self, sub, customer, now, written)

    async def _renewal(self, sub: dict, customer: dict, now: datetime, written: Counter) -> None:
        price = sub["items"]["data"][0]["price"]
        recurring = price.get("recurring") or {}
        if recurring.get("interval") not in self.schedule.renewal_reminder_intervals:
            return
        if sub.get("cancel_at_period_end") or sub.get("cancel_at") or sub.get("pause_collection"):
            return
        renews = _period_end(sub)
        if renews is None or not renews - self.schedule.renewal_reminder_days_before * DAY <= now < renews:
            return

        async def make():
            amount = await self.billing.preview_amount(sub["id"])
            language = self.language(customer)
            return compose.renewal_reminder(
                self.style, to=customer["email"], name=customer.get("name"), plan=_plan_name(sub),
                amount=_regular(sub) if amount is None else amount, currency=sub.get("currency") or price["currency"],
                interval=recurring["interval"], interval_count=recurring.get("interval_count") or 1, renews_at=renews,
                cancel_url=self.cancel_url(customer["id"], sub["id"], renews, now),
                unsubscribe_url=self.unsubscribe_url(customer["id"], "renewal_reminder", language), language=language)

        await self._remind("renewal_reminder", renews.date().isoformat(), self.schedule.renewal_reminder_days_before,
                           sub, customer, make, written)

    async def _discount(self, sub: dict, customer: dict, discount: dict, now: datetime, written: Counter) -> None:
        if not discount.get("end") or not discount.get("start"):
            return  # a discount forever never ends
        start, end = from_unix(discount["start"]), from_unix(discount["end"])
        if end <= add_months(start, 1):
            return  # a month or less: no notice (its end is hardly news)
        if not end - self.schedule.discount_ending_days_before * DAY <= now < end:
            return
        price = sub["items"]["data"][0]["price"]
        recurring = price.get("recurring") or {}

        async def make():
            currency = sub.get("currency") or price["currency"]
            language = self.language(customer)
            return compose.discount_ending(
                self.style, to=customer["email"], name=customer.get("name"), plan=_plan_name(sub),
                discount=_discount_words(discount, currency, language), ends_at=end,
                next_payment_at=_first_payment_from(sub, end),
                amount=_regular(sub), currency=currency, interval=recurring.get("interval"),
                interval_count=recurring.get("interval_count") or 1,
                cancel_url=self.cancel_url(customer["id"], sub["id"], end, now),
                unsubscribe_url=self.unsubscribe_url(customer["id"], "discount_ending", language), language=language)

        await self._remind("discount_ending", discount["id"], self.schedule.discount_ending_days_before,
                           sub, customer, make, written)

    async def _remind(self, kind: str, occasion: str, days_before: int, sub: dict, customer: dict, make,
                      written: Counter) -> None:
        """One reminder of `kind` per subscription and occasion, written once; none to a customer without an
        address or who turned these emails off."""
        key = f"{kind}:{sub['id']}:{occasion}"
        if records.known_keys(self.engine, [key]):
            return
        planned = Planned(key, kind, customer["id"], customer.get("email"), subscription_id=sub["id"], step=days_before)

        async def checked_make():
            if not customer.get("email"):
                return "Not sent: the customer has no email address."
            if records.unsubscribed(self.engine, customer["id"], kind):
                return "Not sent: the subscriber turned these emails off."
            return await make()

        await self._each(planned, checked_make, written)


def _plan_name(sub: dict) -> str:
    names = []
    for item in sub["items"]["data"]:
        product = item["price"].get("product")
        name = product.get("name") if isinstance(product, dict) else (sub.get("_product_names") or {}).get(product)
        names.append(name or item["price"].get("nickname") or "Subscription")
    return " + ".join(dict.fromkeys(names)) or "Subscription"


def _period_end(sub: dict) -> datetime | None:
    ends = [item["current_period_end"] for item in sub["items"]["data"] if item.get("current_period_end")]
    return from_unix(min(ends)) if ends else None


def _cancels_at(sub: dict) -> datetime | None:
    if sub.get("cancel_at"):
        return from_unix(sub["cancel_at"])
    if sub.get("cancel_at_period_end"):
        return _period_end(sub)
    return None


def _regular(sub: dict) -> int:
    return sum((item["price"].get("unit_amount") or 0) * (item.get("quantity") or 1) for item in sub["items"]["data"])


def _first_payment_from(sub: dict, moment: datetime) -> datetime | None:
    """The first renewal at or after `moment` (the first one billed at the price without the discount)."""
    price = sub["items"]["data"][0]["price"]
    recurring = price.get("recurring") or {}
    renews = _period_end(sub)
    if renews is None or not recurring.get("interval"):
        return None
    anchor = from_unix(sub["billing_cycle_anchor"]) if sub.get("billing_cycle_anchor") else renews
    plan = Plan(price["currency"], tuple(Line(item["price"].get("unit_amount") or 0, item.get("quantity") or 1)
                                         for item in sub["items"]["data"]),
                recurring["interval"], recurring.get("interval_count") or 1, anchor, renews)
    return next((at for at in plan.payments(60) if at >= moment), None)


def _discount_words(discount: dict, currency: str, language: str = DEFAULT) -> str:
    coupon = (discount.get("source") or {}).get("coupon") or discount.get("coupon")
    if isinstance(coupon, dict):
        if coupon.get("percent_off"):
            return gettext(language, "%(off)s off", off=format_percent_off(coupon["percent_off"], language))
        if coupon.get("amount_off"):
            return gettext(language, "%(off)s off",
                           off=format_money(coupon["amount_off"], coupon.get("currency") or currency, language))
        if coupon.get("name"):
            return coupon["name"]
    return gettext(language, "your discount")
