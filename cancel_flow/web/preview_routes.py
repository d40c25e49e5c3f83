"""`/dashboard/preview`: what a client would be offered right now, for each reason, with the exact promise
each offer card would make, and for each offer not shown, why (as `cancel-flow offers explain` says).

The client is a real one (by email or customer id, read from Stripe) or a sample plan (monthly, quarterly
or yearly, with an amount and currency). A preview only reads: it records no session, and sends Stripe
nothing but reads. The offer form previews its unsaved draft the same way (`preview`)."""

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cancel_flow import billing, flow
from cancel_flow.clock import utc_now
from cancel_flow.config.schema import Configuration, Offer
from cancel_flow.errors import NotFound, StripeUnavailable
from cancel_flow.experiments import assign_arm
from cancel_flow.flow import Card, PriceLine, SubscriptionFacts
from cancel_flow.money import format_money, minor_unit_divisor
from cancel_flow.reasons import REASONS
from cancel_flow.web.coach_auth import signed_in_coach, to_login
from cancel_flow.web.pages import csrf_token, render

PERIODS = {"monthly": ("month", 1, "Monthly"), "quarterly": ("month", 3, "Quarterly"), "yearly": ("year", 1, "Yearly")}
_AMOUNT = re.compile(r"^\d{1,7}(\.\d{1,2})?$")
_CURRENCY = re.compile(r"^[a-zA-Z]{3}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CUSTOMER = re.compile(r"^cus_[A-Za-z0-9]{1,250}$")
SAMPLE_TENURE_DAYS = 120


@dataclass(frozen=True)
class Subject:
    """Whom to preview: a client (email or customer id) or a sample plan."""

    email: str = ""
    customer: str = ""
    period: str = "monthly"
    amount: str = "49.00"
    currency: str = "usd"
    reason: str = ""
    client_form: bool = False  # sent from the page's "A client" form, which names a client or nothing


    @property
    def is_client(self) -> bool:
        return bool(self.email or self.customer)

    @classmethod
    def read(cls, values, prefix: str = "") -> "Subject":
        def value(name: str, default: str = "") -> str:
            found = values.get(prefix + name)
            return found.strip()[:320] if isinstance(found, str) and found.strip() else default
        client_form = prefix + "plan" not in values and (prefix + "email" in values or prefix + "customer" in values)
        return cls(email=value("email"), customer=value("customer"), period=value("plan", "monthly"),
                   amount=value("amount", "49.00"), currency=value("currency", "usd").lower(), reason=value("reason"),
                   client_form=client_form)

    def problem(self) -> str | None:
        if self.reason and self.reason not in REASONS:
            return "Choose a reason from the list."
        if self.client_form and not self.is_client:
            return "Type the client's email, or their Stripe customer id."
        if self.email and not _EMAIL.match(self.email):
            return f"{self.email!r} is not an email address."
        if self.customer and not _CUSTOMER.match(self.customer):
            return "A Stripe customer id starts with cus_."
        if not self.is_client:
            if self.period not in PERIODS:
                return "Choose monthly, quarterly or yearly for the sample plan."
            if not _CURRENCY.match(self.currency):
                return "The currency is three letters, such as usd or eur."
            if not _AMOUNT.match(self.amount) or self.minor_amount() <= 0:
                return "The amount is a price such as 49.00."
        return None

    def minor_amount(self) -> int:
        divisor = minor_unit_divisor(self.currency)
        return round(float(self.amount) * divisor) if _AMOUNT.match(self.amount) else 0


def sample_facts(subject: Subject, now: datetime) -> SubscriptionFacts:
    """A made-up active subscription on the sample plan, started SAMPLE_TENURE_DAYS ago, renewing on its
    anchor: what a client on that plan looks like to the rules."""
    interval, count, label = PERIODS[subject.period]
    started = (now - timedelta(days=SAMPLE_TENURE_DAYS)).replace(hour=12, minute=0, second=0, microsecond=0)
    amount = subject.minor_amount()
    plan = billing.Plan(subject.currency, (billing.Line(amount, 1),), interval, count, started, None)
    renewal = next(plan.step(started, k) for k in range(1, 1000) if plan.step(started, k) > now)
    return SubscriptionFacts(
        subscription_id="sample", customer_id="sample", customer_email=None, status="active",
        plan_name=f"{label} plan, {format_money(amount, subject.currency)}", currency=subject.currency,
        lines=(PriceLine(amount, 1, interval, count),), has_discount=False, paused=False, cancel_at_period_end=False,
        period_end=renewal, anchor=started, next_payment=renewal, started_at=started)


@dataclass
class ReasonPreview:
    reason: str
    cards: list[Card]
    not_shown: list[tuple[Offer, str]]
    experiment: str | None = None
    arm: str | None = None


@dataclass
class SubscriptionPreview:
    facts: SubscriptionFacts
    sample: bool
    reasons: list[ReasonPreview] = field(default_factory=list)
    cooldown: bool = False


@dataclass
class Preview:
    subject: Subject
    subscriptions: list[SubscriptionPreview] = field(default_factory=list)
    problem: str | None = None


async def _prices(request: Request, config: Configuration) -> dict:
    """The switch offers' prices as Stripe has them (reads only)."""
    gateway, prices = request.app.state.gateway, {}
    for offer in config.offers:
        if offer.kind == "switch" and offer.price not in prices:
            price = await gateway.read_price(offer.price)
            if price is not None:
                prices[offer.price] = price
    return prices


async def _client_subscriptions(request: Request, subject: Subject) -> list[SubscriptionFacts] | str:
    gateway = request.app.state.gateway
    customer = subject.customer
    if not customer:
        customer = await gateway.find_customer_by_email(subject.email)
        if customer is None:
            return f"No client with the email {subject.email} has an active subscription in Stripe."
    try:
        subscriptions = await gateway.list_live_subscriptions(customer)
    except NotFound:
        return f"There is no customer {customer} in Stripe."
    if not subscriptions:
        return f"{customer} has no active, trialing or past-due subscription, so no offer would be shown."
    return subscriptions


def _reason_preview(config: Configuration, reason: str, facts: SubscriptionFacts, now: datetime, *, recent: bool,
                    prices: dict, stored_arm) -> ReasonPreview:
    """What the offers page would show for `reason`, as CancelService.record_reason decides it (experiments
    included), without recording anything."""
    experiment = flow.experiment_for(config, reason, facts, now)
    if experiment is None:
        explained = flow.explain(config, reason, facts, now, accepted_offer_recently=recent, prices=prices)
        shown = [offer for offer, why in explained if why is None]
        return ReasonPreview(reason, [flow.offer_card(o, facts, now, prices) for o in shown],
                             [(offer, why) for offer, why in explained if why is not None])
    stored = stored_arm(experiment.id)
    arm = (experiment.arm(stored) if stored else None) or assign_arm(experiment, facts.subscription_id)
    shown = flow.arm_offers(config, arm, facts, now, accepted_offer_recently=recent, prices=prices)
    not_shown = []
    for offer in config.offers:
        if offer in shown:
            continue
        if offer.id not in arm.offers:
            why = f"experiment '{experiment.id}' shows the offers of its arm '{arm.name}' instead"
        else:
            why = flow.why_not(offer, facts, now, reason=None, accepted_offer_recently=recent, prices=prices) \
                or f"{config.max_offers} offers (max_offers) are shown before it"
        not_shown.append((offer, why))
    return ReasonPreview(reason, [flow.offer_card(o, facts, now, prices) for o in shown], not_shown,
                         experiment=experiment.id, arm=arm.name)


async def preview(request: Request, config: Configuration, subject: Subject) -> Preview:
    """The preview of `subject` under `config` (the live configuration, or an unsaved draft)."""
    result = Preview(subject)
    result.problem = subject.problem()
    if result.problem:
        return result
    now = utc_now()
    store = request.app.state.store
    try:
        if subject.is_client:
            found = await _client_subscriptions(request, subject)
            if isinstance(found, str):
                result.problem = found
                return result
            subscriptions, sample = found, False
        else:
            subscriptions, sample = [sample_facts(subject, now)], True
        prices = await _prices(request, config)
    except StripeUnavailable:
        result.problem = "Stripe didn't answer just now, so there is nothing to preview. Please try again."
        return result
    reasons = [subject.reason] if subject.reason else list(REASONS)
    for facts in subscriptions:
        recent = False if sample else await run_in_threadpool(
            store.accepted_offer_since, facts.customer_id, flow.cooldown_start(config, now))
        arms = {}
        if not sample:
            for experiment in config.experiments:
                arms[experiment.id] = await run_in_threadpool(store.experiment_arm_of, facts.subscription_id, experiment.id)
        item = SubscriptionPreview(facts, sample, cooldown=recent)
        for reason in reasons:
            item.reasons.append(_reason_preview(config, reason, facts, now, recent=recent, prices=prices,
                                                stored_arm=lambda experiment_id: arms.get(experiment_id)))
        result.subscriptions.append(item)
    return result


def preview_context() -> dict:
    """What the preview templates need besides the preview itself."""
    return {"periods": PERIODS, "reasons": REASONS}


async def preview_page(request: Request) -> Response:
    coach = await signed_in_coach(request)
    if coach is None:
        return to_login()
    subject = Subject.read(request.query_params)
    asked = any(name in request.query_params for name in ("email", "customer", "plan"))
    result = await preview(request, request.app.state.config.current(), subject) if asked else None
    return render(request, "preview.html", 422 if asked and subject.problem() else 200, coach=coach,
                  csrf=csrf_token(request.app.state.settings.secret_key, f"coach|{coach.session_key}"),
                  subject=subject, preview=result, **preview_context())


routes = [Route("/dashboard/preview", preview_page, methods=["GET"])]
