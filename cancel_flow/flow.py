"""The rules of the cancel flow: amounts, eligibility, offer choice and what a decision means. No I/O."""

import functools
import json
from collections import OrderedDict
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone

import orjson

from cancel_flow import billing
from cancel_flow.clock import from_unix
from cancel_flow.i18n import DEFAULT
from cancel_flow.config.schema import Configuration, Offer
from cancel_flow.targeting import Subject, first_failed

LIVE_STATUSES = ("active", "trialing", "past_due")
# Subscription metadata: the coach's fixed end date, kept when the client cancels earlier through the flow.
FIXED_END_KEY = "cancel_flow_fixed_end"
ENDED_STATUSES = ("canceled", "incomplete_expired")  # terminal: a subscription never leaves them


@dataclass(frozen=True)
class PriceLine:
    unit_amount: int | None  # None: a price Stripe bills by tiers, usage or a decimal amount
    quantity: int
    interval: str
    interval_count: int


@dataclass(frozen=True)
class SubscriptionFacts:
    """What cancel-flow needs to know about a subscription, read from one Stripe call."""

    subscription_id: str
    customer_id: str
    customer_email: str | None
    status: str
    plan_name: str
    currency: str
    lines: tuple[PriceLine, ...]
    has_discount: bool
    paused: bool
    cancel_at_period_end: bool
    period_end: datetime | None
    anchor: datetime | None = None
    next_payment: datetime | None = None
    price_ids: tuple[str, ...] = ()
    product_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    started_at: datetime | None = None
    country: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    on_schedule: bool = False
    taxed: bool = False
    customer_name: str | None = None
    discount_coupons: tuple[str, ...] = ()
    pause_resumes_at: datetime | None = None
    cancel_at: datetime | None = None
    cancel_at_period_end_flag: bool = False
    # The discounts Stripe bills now (the subscription's, else its customer's):
    # (percent_off, amount_off, end as Unix seconds, once, start as Unix seconds) each.
    discounts: tuple[tuple, ...] = ()
    billing_mode: str = "classic"
    current_period_start: datetime | None = None
    preferred_locales: tuple[str, ...] = ()  # the Stripe customer's languages, most wanted first

    @property
    def discount_window(self) -> tuple[datetime, datetime] | None:
        """(start, end) of the subscription's repeating discount, as Stripe made it."""
        for _percent, _amount, end, _once, *start in self.discounts:
            if end and start and start[0]:
                return from_unix(start[0]), from_unix(end)
        return None

    @property
    def scheduled_by_client(self) -> bool:
        """Set to cancel the way a client does it: at the end of the current period (`cancel_at_period_end`, or a
        `cancel_at` at the period's end, which Stripe's portal and our flow set)."""
        if self.status not in LIVE_STATUSES:
            return False
        if self.cancel_at_period_end_flag:
            return True
        return self.cancel_at is not None and self.next_payment is not None \
            and abs((self.cancel_at - self.next_payment).total_seconds()) < 1

    @property
    def fixed_end(self) -> datetime | None:
        """An end date the coach fixed (a 12-week program): a `cancel_at` later than the current period's end."""
        if self.status not in LIVE_STATUSES or self.cancel_at is None or self.scheduled_by_client:
            return None
        return self.cancel_at

    @property
    def restores_fixed_end(self) -> datetime | None:
        """The coach's end date a client's earlier cancellation replaced (kept in the subscription's metadata), to
        put back when the client keeps the subscription."""
        value = dict(self.metadata).get(FIXED_END_KEY)
        try:
            return from_unix(int(value)) if value else None
        except ValueError:
            return None

    @property
    def priced(self) -> bool:
        """Every price has a unit amount (not tiered, metered or decimal): amounts can be promised."""
        return all(line.unit_amount is not None for line in self.lines)
    # How many tax ids the Stripe customer has (a business's, when any); None when the read didn't say.
    customer_tax_ids: int | None = None

    @functools.cached_property
    def plan(self) -> billing.Plan:
        """What Stripe bills, as billing.py reckons it; worked out once per facts (they are frozen, and so is the
        plan): a first view asks for it for the amount, the monthly amount and the price note."""
        discounts = tuple(billing.Discount(percent, amount, from_unix(end) if end else None, bool(once))
                          for percent, amount, end, once, *_start in self.discounts)
        return billing.Plan(self.currency, tuple(billing.Line(l.unit_amount or 0, l.quantity) for l in self.lines),
                            self.interval, self.interval_count, self.anchor or self.next_payment or self.period_end,
                            None if self.cancel_at_period_end or self.status not in LIVE_STATUSES else self.next_payment,
                            self.taxed, discounts, self.priced)

    @property
    def billed_amount(self) -> int:
        """What one payment charges now, discounts included (the list price when nothing is due)."""
        plan = self.plan
        if not self.priced:
            return 0
        return plan.billed(self.next_payment) if self.next_payment else plan.amount

    @property
    def billed_monthly(self) -> int:
        """The billed amount brought to a month, as MRR counts it."""
        if not self.lines or not self.priced or self.price_amount == 0:
            return 0
        return round(self.monthly_amount * self.billed_amount / self.price_amount)

    @property
    def subject(self) -> Subject:
        return Subject(self.interval, self.price_ids, self.product_ids, self.started_at, self.monthly_amount,
                       self.currency, self.country, dict(self.metadata))

    @property
    def price_amount(self) -> int:
        """The list price of one payment, before discounts (0 for prices without a unit amount)."""
        return sum((line.unit_amount or 0) * line.quantity for line in self.lines)

    @property
    def interval(self) -> str:
        return self.lines[0].interval if self.lines else "month"

    @property
    def interval_count(self) -> int:
        return self.lines[0].interval_count if self.lines else 1

    @property
    def monthly_amount(self) -> int:
        return monthly_amount(self.lines)



_FIELD_NAMES = tuple(field.name for field in fields(SubscriptionFacts))
_FACT_NAMES = frozenset(_FIELD_NAMES)


def facts_of(values: dict) -> SubscriptionFacts:
    """`SubscriptionFacts(**values)` at a fraction of the cost when `values` names every field: a frozen
    dataclass's __init__ sets its fields one `object.__setattr__` at a time, which costs more than reading them
    from Stripe's answer (every first view). Anything else goes through __init__ (defaults, unknown names)."""
    if len(values) != len(_FACT_NAMES) or not _FACT_NAMES.issuperset(values):
        return SubscriptionFacts(**values)
    facts = object.__new__(SubscriptionFacts)
    facts.__dict__.update(values)
    return facts

def monthly_amount(lines) -> int:
    """Sum of unit amount × quantity, brought to a month (yearly ÷ 12, weekly × 52 ÷ 12, by interval_count)."""
    months_per_interval = {"day": 12 / 365, "week": 12 / 52, "month": 1, "year": 12}
    total = 0.0
    for line in lines:
        total += (line.unit_amount or 0) * line.quantity / (months_per_interval[line.interval] * line.interval_count)
    return round(total)


def is_yearly(interval: str, interval_count: int) -> bool:
    return interval == "year" or (interval == "month" and interval_count >= 12)


@dataclass(frozen=True)
class TargetPrice:
    """A price a `switch` offer moves to, as Stripe has it."""

    id: str
    unit_amount: int
    currency: str
    interval: str
    interval_count: int
    active: bool = True
    name: str | None = None  # the price's nickname, else its product's name


def why_not(offer: Offer, facts: SubscriptionFacts, now: datetime, *, reason: str | None,
            accepted_offer_recently: bool, prices: dict[str, TargetPrice] | None = None) -> str | None:
    """The first reason this subscription can't be shown this offer, in words; None when it can."""
    if not offer.enabled:
        return "turned off in the settings"
    if offer.comeback_only:
        return "kept for win-back emails (comeback_only)"
    if reason is not None and not offer.fits(reason):
        return f"shown for other reasons ({', '.join(offer.reasons)})"
    failed = first_failed(offer.when, facts.subject, now)
    if failed:
        return f"condition not met: {failed}"
    if offer.kind == "contact":
        return None
    if accepted_offer_recently:
        return "accepted an offer within the cooldown"
    if facts.status != "active" or facts.cancel_at_period_end:
        return f"subscription is {facts.status if facts.status != 'active' else 'set to cancel'}"
    if facts.paused:
        return "payments are paused"
    if not facts.priced:
        return "its price has no fixed amount (tiered, metered or decimal), so no payment can be promised"
    plan = facts.plan
    if offer.kind == "discount":
        if facts.has_discount:
            return "already has a discount"
        if billing.discount_promise(plan, offer.percent_off, offer.payments, now) is None:
            return "no coupon can discount exactly those payments on this billing period"
    elif offer.kind == "pause":
        if is_yearly(facts.interval, facts.interval_count):
            return "yearly plans are not paused"
        if not billing.pause_choices(plan, offer.max_payments, now):
            return "no payment to skip on this billing period"
    elif offer.kind == "switch":
        if len(facts.lines) != 1:
            return "the subscription has several items"
        if facts.on_schedule:
            return "the subscription is on a schedule"
        target = (prices or {}).get(offer.price)
        if target is None or not target.active:
            return f"price {offer.price} is not available"
        if offer.price in facts.price_ids:
            return "already on that price"
        if (target.currency, target.interval, target.interval_count) != (
                facts.currency, facts.interval, facts.interval_count):
            return "that price has another currency or billing interval"
        if target.unit_amount * facts.lines[0].quantity >= facts.price_amount:
            return "that price is not cheaper"
    elif offer.kind == "free_period":
        if billing.free_period_promise(plan, offer.months, now) is None:
            if plan.next_payment and billing.add_months(plan.next_payment, offer.months) > billing.trial_limit(plan):
                return "Stripe moves a payment at most two years from the billing cycle anchor"
            return "the next payment can't move that far"
    return None


@dataclass(frozen=True)
class Card:
    """One offer as its card shows it: what it promises (per pause length for a pause)."""

    offer: Offer
    promise: billing.Promise | None
    choices: list[tuple[int, billing.Promise]]


def offer_promise(offer: Offer, facts: SubscriptionFacts, now: datetime, skip: int | None = None,
                  target: TargetPrice | None = None, language: str = DEFAULT) -> billing.Promise | None:
    """What `offer` promises this subscription now, in the one wording function's words (billing.py): the
    offer card, the done page, the emails and the coach's preview all say this. `skip`: the payments a
    pause skips (its longest by default); `target`: a switch's price as Stripe has it."""
    plan = facts.plan
    if offer.kind == "discount":
        return billing.discount_promise(plan, offer.percent_off, offer.payments, now, language)
    if offer.kind == "pause":
        return billing.pause_promise(plan, skip or offer.max_payments, now, language)
    if offer.kind == "free_period":
        return billing.free_period_promise(plan, offer.months, now, language)
    if offer.kind == "switch" and target is not None:
        return billing.switch_promise(plan, target.unit_amount, target.name or offer.title_in(language), now,
                                      current_name=facts.plan_name, language=language)
    return None


def offer_card(offer: Offer, facts: SubscriptionFacts, now: datetime,
               prices: dict[str, TargetPrice] | None = None, language: str = DEFAULT) -> Card:
    """The card of an offer shown to this subscription: a pause lists each length with its promise."""
    if offer.kind == "pause":
        return Card(offer, None, billing.pause_choices(facts.plan, offer.max_payments, now, language))
    target = (prices or {}).get(offer.price) if offer.kind == "switch" else None
    return Card(offer, offer_promise(offer, facts, now, None, target, language), [])


def eligible_offers(book: Configuration, reason: str, facts: SubscriptionFacts, now: datetime, *,
                    accepted_offer_recently: bool, prices: dict[str, TargetPrice] | None = None) -> list[Offer]:
    """Offers that fit the reason and the subscription, in file order, at most `max_offers`."""
    chosen = [offer for offer in book.offers
              if why_not(offer, facts, now, reason=reason, accepted_offer_recently=accepted_offer_recently,
                         prices=prices) is None]
    return chosen[:book.max_offers]


def explain(book: Configuration, reason: str | None, facts: SubscriptionFacts, now: datetime, *,
            accepted_offer_recently: bool, prices: dict[str, TargetPrice] | None = None) -> list[tuple[Offer, str | None]]:
    """Every offer in file order with why it isn't shown (None: shown), as `cancel-flow offers explain` prints."""
    result, shown = [], 0
    for offer in book.offers:
        why = why_not(offer, facts, now, reason=reason, accepted_offer_recently=accepted_offer_recently, prices=prices)
        if why is None and shown >= book.max_offers:
            why = f"{book.max_offers} offers (max_offers) are shown before it"
        shown += why is None
        result.append((offer, why))
    return result


def experiment_for(book: Configuration, reason: str, facts: SubscriptionFacts, now: datetime):
    """The first running experiment whose reasons and `when` conditions fit this subscription, or None."""
    from cancel_flow.experiments import is_running
    from cancel_flow.targeting import parse_conditions

    def refuse(where, message):
        raise ValueError(f"{where}: {message}")

    for experiment in book.experiments:
        if not is_running(experiment, now.date()) or not experiment.fits(reason):
            continue
        if experiment.when and first_failed(parse_conditions(experiment.when, "when", refuse), facts.subject, now):
            continue
        return experiment
    return None


def arm_offers(book: Configuration, arm, facts: SubscriptionFacts, now: datetime, *, accepted_offer_recently: bool,
               prices: dict[str, TargetPrice] | None = None) -> list[Offer]:
    """An experiment arm's offers that this subscription can take (none for a holdout), at most `max_offers`."""
    chosen = [offer for offer in (book.find(offer_id) for offer_id in arm.offers)
              if offer and why_not(offer, facts, now, reason=None, accepted_offer_recently=accepted_offer_recently,
                                   prices=prices) is None]
    return chosen[:book.max_offers]


def cooldown_start(book: Configuration, now: datetime) -> datetime:
    return now - timedelta(days=book.offer_cooldown_days)


# Webhooks -----------------------------------------------------------------------------------------
ACTIVE, SCHEDULED, ENDED = 0, 1, 2
DEFLECTION_DELAY = timedelta(hours=24)
NOT_CHURN_REASONS = ("canceled_by_retention_policy",)


@dataclass(frozen=True)
class StripeState:
    """A subscription's cancellation state as one Stripe event tells it."""

    subscription_id: str
    event_created: int
    stage: int  # ACTIVE, SCHEDULED or ENDED
    cancel_requested_at: datetime | None
    feedback: str | None
    comment: str | None
    reason: str | None
    discounted: bool = False
    paused: bool = False
    customer_id: str | None = None
    monthly_amount: int = 0  # what the subscription's items bill per month (list price)
    currency: str = "usd"

    @property
    def version(self) -> int:
        """Orders states: newer events first, and at the same second, the further cancellation."""
        return self.event_created * 10 + self.stage


@dataclass(frozen=True)
class SessionView:
    """The parts of a stored session that a Stripe state is compared with."""

    outcome: str
    decided_at: datetime | None = None
    claimed_offer: str | None = None
    offer_kind: str | None = None
    had_discount: bool = False
    was_paused: bool = False


def state_changes(session: SessionView, state: StripeState) -> dict:
    """What a Stripe state means for one session: the columns to set."""
    changes: dict = {}
    outcome = session.outcome
    if outcome == "open" and session.claimed_offer and (
            (session.offer_kind == "discount" and state.discounted and not session.had_discount)
            or (session.offer_kind == "pause" and state.paused and not session.was_paused)):
        # Stripe applied an offer whose record was lost: the event settles it.
        outcome = f"saved_{session.offer_kind}"
        changes.update(outcome=outcome, chosen_offer=session.claimed_offer,
                       decided_at=datetime.fromtimestamp(state.event_created, timezone.utc))
    if state.stage == ACTIVE:
        changes.update(canceled_at=None, canceled_outside_flow=False, stripe_cancellation_reason=None)
        if outcome == "canceled":
            changes["outcome"] = "sent_to_portal"  # they took the cancellation back
        return changes
    changes.update(canceled_at=state.cancel_requested_at, stripe_feedback=state.feedback,
                   stripe_comment=state.comment, stripe_cancellation_reason=state.reason)
    not_churn = state.reason in NOT_CHURN_REASONS
    went_to_portal_then = outcome in ("sent_to_portal", "contact_requested") or (
        outcome == "deflected" and session.decided_at is not None and state.cancel_requested_at is not None
        and state.cancel_requested_at <= session.decided_at + DEFLECTION_DELAY)
    if went_to_portal_then and not not_churn:
        changes["outcome"] = "canceled"
        changes["canceled_outside_flow"] = False
    elif outcome in ("open", "deflected") or not_churn:
        changes["canceled_outside_flow"] = True
    return changes


# A subscription's facts kept on the session for a few seconds (reloads reuse them) -----------------
SNAPSHOT_TTL = timedelta(seconds=10)


_MOMENTS = ("period_end", "anchor", "next_payment", "started_at", "pause_resumes_at", "cancel_at", "current_period_start")
_LISTS = ("price_ids", "product_ids", "item_ids", "discount_coupons", "preferred_locales")
_KEPT_SNAPSHOTS = 1024  # the snapshots read (or written) most recently, with their facts (`snapshot_facts`)
_snapshots: OrderedDict[str, "SubscriptionFacts"] = OrderedDict()


def facts_to_json(facts: SubscriptionFacts) -> str:
    """The facts as the session keeps them: moments as Unix seconds and price lines as lists (this runs on
    every first view of a link, and ISO dates cost more to write than the rest together)."""
    data = {name: facts.__dict__[name] for name in _FIELD_NAMES}  # not what a cached property keeps there
    data["lines"] = [(line.unit_amount, line.quantity, line.interval, line.interval_count) for line in facts.lines]
    exact = True  # whole seconds in UTC (as Stripe gives them) read back as the very same moments
    for key in _MOMENTS:
        moment = data[key]
        if moment is not None:
            exact = exact and moment.microsecond == 0 and moment.tzinfo is timezone.utc
            data[key] = moment.timestamp()
    try:
        # the standard library's compact JSON (orjson writes non-ASCII text as UTF-8, not as \u escapes)
        text = orjson.dumps(data).decode()
    except TypeError:  # text orjson refuses (a lone surrogate): the standard library's escapes
        text = json.dumps(data, separators=(",", ":"))
    if exact:
        _keep_snapshot(text, facts)
    return text


def _keep_snapshot(text: str, facts: SubscriptionFacts) -> None:
    _snapshots[text] = facts
    while len(_snapshots) > _KEPT_SNAPSHOTS:
        try:
            _snapshots.popitem(last=False)
        except KeyError:  # emptied meanwhile by another thread
            break


def snapshot_facts(text: str) -> SubscriptionFacts:
    """`facts_from_json`, kept for the snapshots written or read most recently: the pages of one link read the same
    snapshot again and again (its plan line, the client's languages), and a first view reads the one it has just
    written. The facts are frozen, and a snapshot written from facts reads back as the same facts."""
    facts = _snapshots.get(text)
    if facts is None:
        facts = facts_from_json(text)
        _keep_snapshot(text, facts)
    return facts


def facts_from_json(text: str) -> SubscriptionFacts:
    """`facts_to_json` read back; snapshots written before it used ISO dates and price lines as objects."""
    try:
        data = orjson.loads(text)
    except ValueError:  # a lone surrogate escaped: the standard library reads it
        data = json.loads(text)
    for key in _MOMENTS:
        moment = data.get(key)
        if moment is not None:
            data[key] = from_unix(moment) if isinstance(moment, (int, float)) else datetime.fromisoformat(moment)
    data["lines"] = tuple(PriceLine(**line) if isinstance(line, dict) else PriceLine(*line) for line in data["lines"])
    data["metadata"] = tuple(tuple(pair) for pair in data.get("metadata") or ())
    data["discounts"] = tuple(tuple(discount) for discount in data.get("discounts") or ())
    for key in _LISTS:
        data[key] = tuple(data.get(key) or ())
    return facts_of(data)
