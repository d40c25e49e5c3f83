"""Win-back's rules (no I/O): why a client is taken to have left, who counts as having left, which comeback step
is due for them now, when the "changed your mind?" email is due, and which price a comeback is offered at."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from cancel_flow.config.schema import Winback, WinbackStep
from cancel_flow.reasons import REASONS

DAY = timedelta(days=1)
# A step more than this late (the service was down) gives way to the next one instead of arriving late, as
# failed-payment emails do.
LATE = timedelta(days=2)
# Ends that are not a client leaving: Stripe's own test-mode clean-up, and a disputed payment (a client in a
# dispute gets no marketing). https://docs.stripe.com/api/subscriptions/object#subscription_object-cancellation_details-reason
NOT_LEAVING = ("canceled_by_retention_policy", "payment_disputed")


def recorded_reason(flow_reason: str | None, stripe_feedback: str | None) -> tuple[str | None, str | None]:
    """The reason the client left for, and where it comes from: the one given in our flow, else Stripe's
    `cancellation_details.feedback` (a cancellation outside the flow), else unknown."""
    if flow_reason in REASONS:
        return flow_reason, "flow"
    if stripe_feedback in REASONS:
        return stripe_feedback, "stripe"
    return None, None


def left(stripe_reason: str | None) -> bool:
    """Whether an ended subscription is a client who left (and may be won back)."""
    return stripe_reason not in NOT_LEAVING


def due_step(winback: Winback, reason: str | None, ended_at: datetime, now: datetime,
             planned: dict[int, int]) -> WinbackStep | None:
    """The comeback step due now for a client who left for `reason` at `ended_at`: the latest of their steps
    whose day has come, unless it is more than LATE overdue, or it or a later one was already planned
    (`planned`: step number → its days_after, for the steps written or skipped for this client). Each step
    comes once, in order; one that passed while nothing ran is not sent late."""
    come = [step for step in winback.steps_for(reason) if ended_at + step.days_after * DAY <= now]
    if not come:
        return None
    latest = come[-1]
    if now >= ended_at + latest.days_after * DAY + LATE:
        return None
    if latest.number in planned or any(days >= latest.days_after for days in planned.values()):
        return None
    return latest


def changed_mind_due(days_before: int, cancels_at: datetime | None, now: datetime) -> bool:
    """The "changed your mind?" email is due from `days_before` days before the scheduled end until it."""
    return bool(days_before) and cancels_at is not None and cancels_at - days_before * DAY <= now < cancels_at


@dataclass(frozen=True)
class ComebackPrice:
    """The price a comeback is offered at: the one the client had, or the product's current default price of
    the same interval when that one was archived (`replaced`)."""

    id: str
    unit_amount: int
    replaced: bool = False


def comeback_price(old: dict | None, default: dict | None, interval: str, interval_count: int,
                   currency: str) -> ComebackPrice | None:
    """`old` and `default` are Stripe prices (or None). An archived price can't be bought
    (https://docs.stripe.com/api/prices/object#price_object-active); the product's default price stands in when it
    is active, recurring on the same interval and in the same currency. None: no price to come back on."""
    if old is not None and old.get("active"):
        return ComebackPrice(old["id"], old.get("unit_amount") or 0)
    if default is None or not default.get("active") or default.get("currency") != currency:
        return None
    recurring = default.get("recurring") or {}
    if (recurring.get("interval"), recurring.get("interval_count") or 1) != (interval, interval_count):
        return None
    return ComebackPrice(default["id"], default.get("unit_amount") or 0, replaced=True)
