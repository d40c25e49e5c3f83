"""The rules of the cancel flow: amounts, eligibility, offer choice and what a decision means. No I/O."""

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cancel_flow.clock import add_months
from cancel_flow.money import format_day, format_money
from cancel_flow.offers import Offer, OfferBook

LIVE_STATUSES = ("active", "trialing", "past_due")


@dataclass(frozen=True)
class PriceLine:
    unit_amount: int
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

    @property
    def price_amount(self) -> int:
        return sum(line.unit_amount * line.quantity for line in self.lines)

    @property
    def interval(self) -> str:
        return self.lines[0].interval if self.lines else "month"

    @property
    def interval_count(self) -> int:
        return self.lines[0].interval_count if self.lines else 1

    @property
    def monthly_amount(self) -> int:
        return monthly_amount(self.lines)


def monthly_amount(lines) -> int:
    """Sum of unit amount × quantity, brought to a month (yearly ÷ 12, weekly × 52 ÷ 12, by interval_count)."""
    months_per_interval = {"day": 12 / 365, "week": 12 / 52, "month": 1, "year": 12}
    total = 0.0
    for line in lines:
        total += line.unit_amount * line.quantity / (months_per_interval[line.interval] * line.interval_count)
    return round(total)


def is_yearly(interval: str, interval_count: int) -> bool:
    return interval == "year" or (interval == "month" and interval_count >= 12)


def eligible_offers(book: OfferBook, reason: str, *, has_discount: bool, paused: bool, interval: str,
                    interval_count: int, accepted_offer_recently: bool) -> list[Offer]:
    """Offers that fit the reason, minus those the subscription cannot take."""
    if accepted_offer_recently:
        return []
    chosen = []
    for offer in book.offers:
        if not offer.fits(reason):
            continue
        if offer.kind == "discount" and has_discount:
            continue
        if offer.kind == "pause" and (paused or is_yearly(interval, interval_count)):
            continue
        chosen.append(offer)
    return chosen


def cooldown_start(book: OfferBook, now: datetime) -> datetime:
    return now - timedelta(days=book.offer_cooldown_days)


def pause_until(now: datetime, months: int) -> datetime:
    return add_months(now, months)


def discounted_amount(price_amount: int, percent_off: float) -> int:
    return round(price_amount * (100 - percent_off) / 100)


def describe_discount(percent_off: float, months: int, price_amount: int, currency: str) -> str:
    """"50% off for the next 3 months: $24.50 instead of $49.00"."""
    period = "the next month" if months == 1 else f"the next {months} months"
    new_price = format_money(discounted_amount(price_amount, percent_off), currency)
    return f"{percent_off:g}% off for {period}: {new_price} instead of {format_money(price_amount, currency)}"


def describe_pause(resumes_at: datetime) -> str:
    return f"Payments paused until {format_day(resumes_at)}"


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
    went_to_portal_then = outcome == "sent_to_portal" or (
        outcome == "deflected" and session.decided_at is not None and state.cancel_requested_at is not None
        and state.cancel_requested_at <= session.decided_at + DEFLECTION_DELAY)
    if went_to_portal_then and not not_churn:
        changes["outcome"] = "canceled"
        changes["canceled_outside_flow"] = False
    elif outcome in ("open", "deflected") or not_churn:
        changes["canceled_outside_flow"] = True
    return changes
