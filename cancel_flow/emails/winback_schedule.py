"""What win-back has due in a pass of the email schedule (emails/scheduler.py runs it): the "changed your mind?"
email of each subscription set to cancel (found in the pass's scan of Stripe's subscriptions), and each ended
subscription's comeback step (from our records of `customer.subscription.deleted`). Each email is written once
under its key, with its outbox delivery and (for a step) the step's terms, before anything is sent."""

import html
from collections import Counter
from datetime import datetime, timedelta

import stripe

from cancel_flow import billing, winback
from cancel_flow.clock import as_utc, from_unix
from cancel_flow.emails import records, winback_emails
from cancel_flow.emails.compose import render
from cancel_flow.emails.records import Planned
from cancel_flow.errors import StripeUnavailable
from cancel_flow.links import COMEBACK_MAX_AGE, LONGEST_MAX_AGE
from cancel_flow.i18n import DEFAULT, lang_query as _lang
from cancel_flow.logs import log_event
from cancel_flow.money import format_money
from cancel_flow.outbox import enqueue_email
from cancel_flow.store import winback as store
from cancel_flow.stripe_winback import WinbackStripe

DAY = timedelta(days=1)


def price_words(unit_amount: int, quantity: int, currency: str, interval: str, interval_count: int,
                language: str = DEFAULT) -> str:
    """"$49.00/month", in the wording function's words for a plan of that price."""
    plan = billing.Plan(currency, (billing.Line(unit_amount, quantity),), interval, interval_count, None, None)
    return billing.each_payment(format_money(plan.amount, currency, language), interval, interval_count, language)


def keep_discounts(sub: dict) -> tuple:
    """(percent_off, amount_off, end) of each of a subscription's discounts whose coupon was expanded."""
    found = []
    for discount in sub.get("discounts") or []:
        if not isinstance(discount, dict):
            continue
        coupon = (discount.get("source") or {}).get("coupon")
        if isinstance(coupon, dict):
            found.append((coupon.get("percent_off"), coupon.get("amount_off"),
                          from_unix(discount["end"]) if discount.get("end") else None))
    return tuple(found)


def keep_plan(sub: dict) -> billing.Plan | None:
    """The plan that continues when a scheduled cancellation is undone: the renewal at the period's end."""
    items = sub["items"]["data"]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end")]
    recurring = items[0]["price"].get("recurring") or {}
    if not ends or not recurring.get("interval"):
        return None
    renews = from_unix(min(ends))
    anchor = from_unix(sub["billing_cycle_anchor"]) if sub.get("billing_cycle_anchor") else renews
    tax = sub.get("automatic_tax") or {}
    return billing.Plan(sub.get("currency") or items[0]["price"]["currency"],
                        tuple(billing.Line(item["price"].get("unit_amount") or 0, item.get("quantity") or 1) for item in items),
                        recurring["interval"], recurring.get("interval_count") or 1, anchor, renews,
                        bool(tax.get("enabled") or sub.get("default_tax_rates")))


async def changed_mind(mailroom, sub: dict, customer: dict, now: datetime, written: Counter) -> None:
    """One "changed your mind?" email per scheduled end, `changed_mind_days_before` days before it."""
    from cancel_flow.emails.scheduler import _cancels_at, _plan_name

    days_before = mailroom.config.winback.changed_mind_days_before
    ends_at = _cancels_at(sub)
    if not winback.changed_mind_due(days_before, ends_at, now):
        return

    language = mailroom.language(customer)

    async def make():
        if store.refused(mailroom.engine, customer.get("email")):
            return "Not sent: the mail server refused this address before."
        plan = keep_plan(sub)
        promise = billing.keep_promise(plan, now, keep_discounts(sub), language) if plan else None
        if promise is None:
            return "Not sent: no renewal to keep."
        max_age = min(max(int((ends_at - now + DAY).total_seconds()), 3600), LONGEST_MAX_AGE)
        token = mailroom.signer.keep_token(customer["id"], sub["id"], max_age)
        return winback_emails.changed_mind(
            mailroom.style, to=customer["email"], name=customer.get("name"), plan=_plan_name(sub), ends_at=ends_at,
            promise=promise.text, keep_url=f"{mailroom.settings.base_url}/keep/{token}" + _lang(language),
            unsubscribe_url=mailroom.unsubscribe_url(customer["id"], "changed_mind", language), language=language)

    await mailroom._remind("changed_mind", ends_at.date().isoformat(), days_before, sub, customer, make, written)


class ComebackSteps:
    """The comeback steps due in one pass."""

    def __init__(self, mailroom):
        self.mailroom = mailroom
        self.engine, self.config = mailroom.engine, mailroom.config
        self.stripe = WinbackStripe(mailroom.billing.gateway)

    async def plan(self, now: datetime, written: Counter) -> None:
        config = self.config.winback
        since = now - config.longest_wait * DAY - winback.LATE
        clients = store.waiting_clients(self.engine, since)
        planned = store.planned_steps(self.engine, [client.subscription_id for client in clients])
        for client in clients:
            step = winback.due_step(config, client.reason, as_utc(client.ended_at), now,
                                    planned.get(client.subscription_id, {}))
            if step is None:
                continue
            try:
                await self._step(client, step, now, written)
            except (StripeUnavailable, stripe.StripeError) as error:  # the next pass tries again
                log_event("winback.compose_failed", subscription=client.subscription_id, step=step.number,
                          error=type(error).__name__)

    async def _step(self, client, step, now: datetime, written: Counter) -> None:
        key = f"winback:{client.subscription_id}:{step.number}"
        row = store.step_row(client, step, key)
        if store.unsubscribed(self.engine, client.customer_id, "winback"):
            store.skip_step(self.engine, row, "Not sent: the client turned these emails off.")
            return
        returned = await self.stripe.live_subscription(client.customer_id)
        if returned:
            store.mark_returned(self.engine, client.subscription_id, returned)
            store.skip_step(self.engine, row, "Not sent: the client subscribed again.")
            log_event("winback.returned_alone", subscription=client.subscription_id, new_subscription=returned)
            return
        customer = await self.stripe.customer(client.customer_id)
        email = (customer or {}).get("email") or client.customer_email
        if not email:
            store.skip_step(self.engine, row, "Not sent: the client has no email address.")
            return
        if store.refused(self.engine, email):
            store.skip_step(self.engine, row, "Not sent: the mail server refused this address before.")
            return
        store.note_email(self.engine, client.subscription_id, email, (customer or {}).get("name"))
        language = self.mailroom.language(customer)
        price = await self._price(client)
        if price is None:
            if store.skip_step(self.engine, row, "Not sent: the plan's price was archived and its product has no "
                                                 "current price of the same interval."):
                self._alert_coach(client, step)
            return
        plan = billing.Plan(client.currency, (billing.Line(price.unit_amount, client.quantity),), client.interval,
                            client.interval_count, now, now)
        offer = self.config.find(step.offer) if step.offer else None
        promise = billing.comeback_promise(plan, now, offer.percent_off if offer else None,
                                           offer.payments if offer else None, language)
        if promise is None:  # no coupon can give exactly those payments (a weekly plan): the usual price
            offer, promise = None, billing.comeback_promise(plan, now, language=language)
        row.update(offer_id=offer.id if offer else None, percent_off=offer.percent_off if offer else None,
                   payments=offer.payments if offer else None, price_id=price.id, unit_amount=price.unit_amount,
                   price_replaced=price.replaced)
        plan_name = client.plan_name or await self._product_name(price.id)
        token = self.mailroom.signer.comeback_token(client.customer_id, step.number)
        message = winback_emails.comeback(
            self.mailroom.style, to=email, name=(customer or {}).get("name") or client.customer_name, plan=plan_name,
            ended_at=as_utc(client.ended_at), promise=promise.text, offer_title=offer.title if offer else None,
            price_words=price_words(price.unit_amount, client.quantity, client.currency, client.interval,
                                    client.interval_count, language),
            price_replaced=price.replaced, comeback_url=f"{self.mailroom.settings.base_url}/comeback/{token}" + _lang(language),
            link_until=now + timedelta(seconds=COMEBACK_MAX_AGE),
            unsubscribe_url=self.mailroom.unsubscribe_url(client.customer_id, "winback", language), language=language)
        rendered = render(message, self.mailroom.style)
        planned = Planned(key, "winback", client.customer_id, email, subscription_id=client.subscription_id,
                          session_id=client.session_id, step=step.number)
        if records.write(self.engine, planned, rendered.subject, rendered.text, rendered.html, rendered.headers,
                         along=lambda connection: store.write_step(connection, row)):
            written["winback"] += 1
            log_event("winback.step_written", subscription=client.subscription_id, step=step.number,
                      offer=row["offer_id"], price_replaced=price.replaced)

    async def _product_name(self, price_id: str) -> str:
        product = ((await self.stripe.price(price_id)) or {}).get("product")
        return (product.get("name") if isinstance(product, dict) else None) or "Subscription"

    async def _price(self, client) -> winback.ComebackPrice | None:
        old = await self.stripe.price(client.price_id) if client.price_id else None
        default = None
        if old is None or not old.get("active"):
            product = client.product_id or (old.get("product", {}).get("id") if isinstance((old or {}).get("product"), dict)
                                            else (old or {}).get("product"))
            default = await self.stripe.default_price(product) if product else None
        return winback.comeback_price(old, default, client.interval, client.interval_count, client.currency)

    def _alert_coach(self, client, step) -> None:
        """The coach hears that a step was skipped because the plan can't be bought any more."""
        config = self.config
        to = config.alerts.email or config.brand.support_email
        log_event("winback.step_skipped_price", level=30, subscription=client.subscription_id, step=step.number,
                  price=client.price_id)
        if not to:
            return
        subject = f"A win-back email was not sent: the price of {client.plan_name or 'a plan'} is archived"
        text = (f"The comeback email (step {step.number}, {step.days_after} days after the end) to the client "
                f"{client.customer_id} was not sent: their price {client.price_id} is archived, and its product has no "
                "current default price of the same interval and currency to offer instead.\n\n"
                "Set a default price on the product in Stripe (or unarchive the price), and the next clients get their "
                "comeback emails again.\n")
        with self.engine.begin() as connection:
            enqueue_email(connection, to, subject, text,
                          "".join(f"<p>{html.escape(part)}</p>" for part in text.strip().split("\n\n")),
                          event_type="winback.step_skipped",
                          key=f"winback-skipped:{client.subscription_id}:{step.number}")
