"""What Stripe will bill: the next payment dates of a subscription, how an offer changes them, and the
one wording function that the offer cards, the done page and the emails all use. No I/O.

The rules follow Stripe's billing, and the emulator's invoices are the check (tests/test_billing_truth.py):
- Renewals fall on the billing cycle anchor plus whole intervals; an anchor on the 29th–31st bills on
  the last day of shorter months and goes back to its day after
  (https://docs.stripe.com/billing/subscriptions/billing-cycle).
- A repeating coupon's discount lasts `duration_in_months` calendar months from the moment it is
  attached (discount.start → discount.end); an invoice is discounted when it is made before the end
  (https://docs.stripe.com/billing/subscriptions/coupons#coupon-duration).
- Pausing collection with `behavior=void` voids the invoices made until `resumes_at`
  (https://docs.stripe.com/billing/subscriptions/pause-payment).
- Coupons last whole months, so a discount is offered only where whole months cover exactly the
  promised payments (monthly and longer periods); weekly and daily plans get no discount offer.
- A discount the subscription (or, when it has none, its customer) already has is billed on every payment it
  covers: percent off per line rounded half up, an amount off spread over the lines, in turn; `once` on the
  next invoice that bills something; a repeating one on invoices made before its `end`
  (https://docs.stripe.com/api/subscriptions/create#create_subscription-discounts: "If not specified or empty,
  inherits the discount from the subscription's customer"). Every promise counts it, for as long as it lasts.
- A price without `unit_amount` (tiered, metered, decimal) has no amount to promise: no money promise is made.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from cancel_flow.clock import add_months
from cancel_flow.money import format_day, format_money

# Collection resumes this long after the last skipped renewal: past the moment Stripe finalizes that renewal's
# draft invoice, which is an hour after `invoice.created` was answered, or 72 hours after it was made when the
# webhook is not answered (https://stripe.com/docs/invoicing/integration/workflow-transitions#finalized). The
# pause is looked at again when the draft is finalized, so collection must still be paused then; and well
# before the next renewal (at most half the period).
RESUME_AFTER_RENEWAL = timedelta(hours=73)
MAX_PAYMENTS_AHEAD = 240


@dataclass(frozen=True)
class Line:
    unit_amount: int
    quantity: int

    @property
    def amount(self) -> int:
        return self.unit_amount * self.quantity


@dataclass(frozen=True)
class Discount:
    """A discount Stripe already applies to the subscription's invoices."""

    percent_off: float | None = None
    amount_off: int | None = None  # minor units of the subscription's currency
    end: datetime | None = None  # invoices made at or after it are not discounted (repeating coupons)
    once: bool = False  # only the next invoice that bills something

    def applies(self, at: datetime, first: bool) -> bool:
        return (self.end is None or at < self.end) and (first or not self.once)


@dataclass(frozen=True)
class Plan:
    """What billing needs to know about a subscription."""

    currency: str
    lines: tuple[Line, ...]
    interval: str
    interval_count: int
    anchor: datetime  # billing_cycle_anchor
    next_payment: datetime | None  # the current period's end: the next renewal
    taxed: bool = False
    discounts: tuple[Discount, ...] = ()
    priced: bool = True  # every price has a unit_amount: amounts can be promised

    @property
    def amount(self) -> int:
        """The list price of one payment (before any discount)."""
        return sum(line.amount for line in self.lines)

    def billed(self, at: datetime, first: bool = True, lines: tuple[Line, ...] | None = None) -> int:
        """What an invoice made at `at` charges, the discounts in force then included; `first`: it is the next
        invoice that bills something (a `once` discount is spent on it)."""
        lines = self.lines if lines is None else lines
        left = [line.amount for line in lines]
        for discount in self.discounts:
            if not discount.applies(at, first):
                continue
            if discount.percent_off is not None:
                left = [amount - percent_of(amount, discount.percent_off) for amount in left]
            elif discount.amount_off:
                shares = spread(min(discount.amount_off, sum(left)), left)
                left = [amount - share for amount, share in zip(left, shares)]
        return sum(left)

    def next_amount(self) -> int:
        """What the next payment charges, as things stand."""
        return self.billed(self.next_payment) if self.next_payment else self.amount

    def discount_words(self, at: datetime | None = None) -> str | None:
        """"10 % off" (and until when) for the discounts that apply at `at` (the next payment)."""
        at = at or self.next_payment
        if at is None:
            return None
        words = []
        for discount in self.discounts:
            if not discount.applies(at, True):
                continue
            if discount.percent_off is not None:
                word = f"{discount.percent_off:g} % off"
            else:
                word = f"{format_money(discount.amount_off or 0, self.currency)} off"
            if discount.once:
                word += " this payment"
            elif discount.end is not None:
                word += f" until {_day(discount.end)}"
            words.append(word)
        return ", ".join(words) or None

    @property
    def months_per_payment(self) -> int | None:
        """Whole months between two payments; None for weekly and daily plans."""
        if self.interval == "month":
            return self.interval_count
        if self.interval == "year":
            return 12 * self.interval_count
        return None

    def step(self, moment: datetime, count: int) -> datetime:
        if self.interval == "day":
            return moment + timedelta(days=count * self.interval_count)
        if self.interval == "week":
            return moment + timedelta(weeks=count * self.interval_count)
        return add_months(moment, count * self.months_per_payment)

    def upcoming(self, count: int, now: datetime) -> list[datetime]:
        """The next `count` renewals after `now` (a renewal at or before `now` is already under way)."""
        if self.next_payment is None:
            return []
        extra = 3
        while True:
            moments = [at for at in self.payments(count + extra) if at > now]
            if len(moments) >= count or extra > MAX_PAYMENTS_AHEAD:
                return moments[:count]
            extra *= 2

    def payments(self, count: int) -> list[datetime]:
        """The next `count` renewal moments, from the anchor (so month ends come back to their day)."""
        if self.next_payment is None:
            return []
        anchor, index = self.anchor, 0
        while index < 100_000:
            moment = self.step(anchor, index)
            if moment >= self.next_payment:
                break
            index += 1
        if self.step(anchor, index) != self.next_payment:
            anchor, index = self.next_payment, 0  # a trial end or a reset anchor: count from the next payment
        return [self.step(anchor, index + k) for k in range(count)]


@dataclass(frozen=True)
class Payment:
    at: datetime
    amount: int  # what Stripe will charge
    regular: int  # what it would charge without the offer
    moved_from: datetime | None = None  # a payment the offer moves to `at` (a free month on a yearly plan)

    @property
    def skipped(self) -> bool:
        return self.amount == 0 and self.regular > 0


@dataclass(frozen=True)
class Promise:
    """An offer's effect on the next payments, and its words."""

    kind: str
    changed: tuple[Payment, ...]  # the payments the offer changes
    next_regular: Payment | None  # the first payment back at the regular price (None: the change stays)
    text: str  # the full promise: dates and amounts
    card: str  # the short line on an offer card
    cost: int  # what the offer costs the coach (for a switch: per payment)
    coupon_months: int | None = None
    resumes_at: datetime | None = None
    trial_end: datetime | None = None
    new_amount: int | None = None  # a switch: what each payment charges from now on
    new_name: str | None = None  # a switch: the plan's new name

    def schedule(self) -> list[list]:
        """The payments named, for storing: [[ISO moment, amount, regular amount(, ISO moment moved from)], …]."""
        payments = [*self.changed, *([self.next_regular] if self.next_regular else [])]
        return [[p.at.isoformat(), p.amount, p.regular, *([p.moved_from.isoformat()] if p.moved_from else [])]
                for p in payments]

    @property
    def next_payment(self) -> Payment | None:
        """The first payment that will be charged after accepting."""
        charged = [p for p in self.changed if p.amount > 0]
        return charged[0] if charged else self.next_regular


def schedule_lines(schedule: list[list] | None, currency: str) -> list[tuple[datetime, str]]:
    """The stored schedule of a promise, one (date, what is charged then) line per payment: the table of the
    done page and of the confirmation email."""
    lines = []
    for row in schedule or []:
        at, amount, regular = datetime.fromisoformat(row[0]), row[1], row[2]
        moved_from = datetime.fromisoformat(row[3]) if len(row) > 3 and row[3] else None
        charged = format_money(amount, currency)
        if moved_from is not None:
            lines.append((at, f"{charged} (moved from {_day(moved_from)})"))
        elif amount == 0 and regular:
            lines.append((at, f"nothing (instead of {format_money(regular, currency)})"))
        elif amount != regular:
            lines.append((at, f"{charged} (instead of {format_money(regular, currency)})"))
        else:
            lines.append((at, charged))
    return lines


def percent_of(amount: int, percent: float) -> int:
    """A percentage of an amount in minor units, rounded half up to the minor unit."""
    return int((Decimal(amount) * Decimal(str(percent)) / 100).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def spread(total: int, amounts: list[int]) -> list[int]:
    """An amount off split over lines in proportion to their amounts, the leftover cents to the largest remainders."""
    whole = sum(amounts)
    if whole <= 0:
        return [0] * len(amounts)
    exact = [Decimal(total) * a / whole for a in amounts]
    shares = [int(x) for x in exact]
    order = sorted(range(len(amounts)), key=lambda i: exact[i] - shares[i], reverse=True)
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def discounted(plan: Plan, percent: float) -> int:
    """One payment with a percent-off coupon: each line's discount rounded to the minor unit."""
    return sum(line.amount - percent_of(line.amount, percent) for line in plan.lines)


def covered(payments: list[datetime], start: datetime, end: datetime) -> int:
    return sum(1 for at in payments if start <= at < end)


def coupon_months(plan: Plan, payments: int, start: datetime) -> int | None:
    """The repeating coupon's length in months that discounts exactly the next `payments` payments after
    `start`, or None when no whole number of months does. A renewal at `start` itself is already under way
    (its invoice exists), so a coupon attached then starts with the one after."""
    per_payment = plan.months_per_payment
    if per_payment is None or plan.next_payment is None:
        return None
    start = start.replace(microsecond=0)  # Stripe's timestamps are whole seconds: the discount starts on one
    upcoming = plan.upcoming(payments + 1, start)
    wanted = payments * per_payment
    for months in [wanted, *range(max(1, wanted - per_payment + 1), wanted + per_payment + 1)]:
        if covered(upcoming, start, add_months(start, months)) == payments:
            return months
    return None


def covers_promise(promise: Promise, start: datetime, end: datetime) -> bool:
    """Whether a discount from `start` to `end` (as Stripe made it) discounts exactly the payments promised."""
    inside = lambda at: start <= at < end  # noqa: E731
    return all(inside(p.at) for p in promise.changed) and not (promise.next_regular and inside(promise.next_regular.at))


def months_for_promise(promise: Promise, start: datetime) -> int | None:
    """The coupon length that, from `start`, discounts exactly the payments promised; None if none does."""
    for months in range(1, 12 * 20 + 1):
        if covers_promise(promise, start, add_months(start, months)):
            return months
    return None


def _day(moment: datetime, with_year: bool = True) -> str:
    text = format_day(moment)
    return text if with_year else text.rsplit(" ", 1)[0]


def _dates(moments: list[datetime]) -> str:
    same_year = len({m.year for m in moments}) == 1
    words = [_day(m, with_year=False) for m in moments] if same_year and len(moments) > 1 else [_day(m) for m in moments]
    if same_year and len(moments) > 1:
        words[-1] = _day(moments[-1])
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]


def _per(plan: Plan) -> str:
    if plan.interval_count == 1:
        return f"/{plan.interval}"
    return f" every {plan.interval_count} {plan.interval}s"


def _tax(plan: Plan) -> str:
    return " (before tax)" if plan.taxed else ""


def _billed(plan: Plan, moments: list[datetime], lines: tuple[Line, ...] | None = None) -> list[int]:
    """What each of `moments` charges as things stand: a `once` discount on the first of them only."""
    return [plan.billed(at, index == 0, lines) for index, at in enumerate(moments)]


def plan_words(plan: Plan) -> str | None:
    """The plan line at the top of the pages: what the client pays today, "$44.10 per month (10 % off)"."""
    if not plan.priced:
        return None
    per = "month" if plan.interval_count == 1 and plan.interval == "month" else \
        plan.interval if plan.interval_count == 1 else f"{plan.interval_count} {plan.interval}s"
    amount = format_money(plan.next_amount(), plan.currency)
    off = plan.discount_words()
    return f"{amount} per {per}" + (f" ({off})" if off else "")


def discount_promise(plan: Plan, percent: float, payments: int, now: datetime) -> Promise | None:
    """`percent` off the next `payments` payments, or None when a coupon can't do exactly that."""
    if not plan.priced or plan.discounts:
        return None
    months = coupon_months(plan, payments, now)
    if months is None:
        return None
    upcoming = plan.upcoming(payments + 1, now)
    price, lowered = plan.amount, discounted(plan, percent)
    changed = tuple(Payment(at, lowered, price) for at in upcoming[:payments])
    back = Payment(upcoming[payments], price, price)
    pct = f"{percent:g}%"
    money = lambda amount: format_money(amount, plan.currency)  # noqa: E731
    if payments == 1:
        text = (f"{pct} off your {'renewal' if (plan.months_per_payment or 0) >= 12 else 'payment'} on "
                f"{_day(changed[0].at)}: {money(lowered)} instead of {money(price)}{_tax(plan)}, "
                f"then {money(price)}{_per(plan)} from {_day(back.at)}")
        card = f"{money(lowered)} for your next payment, then {money(price)}{_per(plan)}"
    else:
        text = (f"{pct} off your next {payments} payments ({_dates([p.at for p in changed])}): "
                f"{money(lowered)}{_per(plan)}{_tax(plan)}, then {money(price)}{_per(plan)} from {_day(back.at)}")
        card = f"{money(lowered)}{_per(plan)} for {payments} payments, then {money(price)}{_per(plan)}"
    return Promise("discount", changed, back, text, card, cost=(price - lowered) * payments, coupon_months=months)


def pause_promise(plan: Plan, skip: int, now: datetime) -> Promise | None:
    """Skip the next `skip` payments; collection resumes after the last skipped renewal's invoice is final."""
    if not plan.priced or plan.next_payment is None or plan.interval == "day" or skip < 1:
        return None
    upcoming = plan.upcoming(skip + 1, now)
    if len(upcoming) <= skip:
        return None
    regular = _billed(plan, upcoming)
    changed = tuple(Payment(at, 0, amount) for at, amount in zip(upcoming[:skip], regular))
    # the skipped invoices are still made (and voided): a `once` discount is spent on the first of them
    back_amount = plan.billed(upcoming[skip], first=False)
    back = Payment(upcoming[skip], back_amount, back_amount)
    resumes_at = upcoming[skip - 1] + min(RESUME_AFTER_RENEWAL, (upcoming[skip] - upcoming[skip - 1]) / 2)
    noun = "payment" if skip == 1 else "payments"
    text = (f"Skip your {noun} of {_dates([p.at for p in changed])}; your next payment is "
            f"{format_money(back_amount, plan.currency)}{_tax(plan)} on {_day(back.at)}. You keep your access meanwhile.")
    card = f"Skip {skip} {noun}; next payment {_day(back.at)}"
    return Promise("pause", changed, back, text, card, cost=sum(regular[:skip]), resumes_at=resumes_at)


def pause_choices(plan: Plan, max_payments: int, now: datetime) -> list[tuple[int, Promise]]:
    """Each pause length the subscriber may choose, with its promise."""
    choices = []
    for skip in range(1, max_payments + 1):
        promise = pause_promise(plan, skip, now)
        if promise is not None:
            choices.append((skip, promise))
    return choices


def switch_promise(plan: Plan, new_unit_amount: int, new_name: str, now: datetime, current_name: str | None = None) -> Promise | None:
    """Move to a cheaper price from the next payment; the current period is not refunded
    (https://docs.stripe.com/billing/subscriptions/prorations: proration_behavior=none). The discounts the
    subscription has go on billing the new price."""
    if not plan.priced or plan.next_payment is None or len(plan.lines) != 1:
        return None
    quantity = plan.lines[0].quantity
    new_lines = (Line(new_unit_amount, quantity),)
    if new_unit_amount * quantity >= plan.amount:
        return None
    upcoming = plan.upcoming(2, now)
    if len(upcoming) < 2:
        return None
    before, after = _billed(plan, upcoming), _billed(plan, upcoming, lines=new_lines)
    money = lambda amount: format_money(amount, plan.currency)  # noqa: E731
    changed = tuple(Payment(at, new, old) for at, new, old in zip(upcoming, after, before))
    new, old = after[0], before[0]
    renamed = bool(new_name) and new_name.strip().casefold() != (current_name or "").strip().casefold()
    if renamed:
        text = (f"Your plan changes to {new_name} at {money(new)}{_per(plan)}{_tax(plan)} instead of "
                f"{money(old)}, from your next payment on {_day(upcoming[0])}. Nothing changes before then.")
    else:
        text = (f"Your price changes to {money(new)}{_per(plan)}{_tax(plan)} instead of {money(old)}, from your "
                f"next payment on {_day(upcoming[0])}. Nothing changes before then.")
    card = f"{money(new)}{_per(plan)} instead of {money(old)}, from {_day(upcoming[0])}"
    return Promise("switch", changed, None, text, card, cost=old - new, new_amount=new,
                   new_name=new_name if renamed else None)


# Stripe accepts a trial_end at most two years from the subscription's billing_cycle_anchor
# (https://docs.stripe.com/api/subscriptions/update#update_subscription-trial_end).
MAX_TRIAL_MONTHS_FROM_ANCHOR = 24


def trial_limit(plan: Plan) -> datetime:
    return add_months(plan.anchor, MAX_TRIAL_MONTHS_FROM_ANCHOR)


def free_period_promise(plan: Plan, months: int, now: datetime) -> Promise | None:
    """The next payment moves `months` calendar months later (a trial until then, `trial_end`, which Stripe
    accepts at most two years from the billing_cycle_anchor: offered only where Stripe will take it). On a plan
    billed every month that is `months` payments skipped; on a longer period, the payment moves."""
    if not plan.priced or plan.next_payment is None or plan.interval in ("day", "week"):
        return None
    upcoming = plan.upcoming(1, now)
    if not upcoming:
        return None
    next_payment = upcoming[0]
    moved = add_months(next_payment, months)
    if moved > trial_limit(plan):
        return None
    skipped = [at for at in plan.upcoming(months * 12 + 1, now) if at < moved]
    regular = _billed(plan, skipped)
    # a trial's invoices bill nothing, so a `once` discount waits for the payment at its end
    back_amount = plan.billed(moved, first=True)
    money = lambda amount: format_money(amount, plan.currency)  # noqa: E731
    per_payment = plan.months_per_payment or 1
    moves = months < per_payment
    if moves:
        changed = ()
        back = Payment(moved, back_amount, back_amount, moved_from=next_payment)
        following = Plan(plan.currency, plan.lines, plan.interval, plan.interval_count, moved, moved).payments(2)[1]
        text = (f"Your next payment of {money(back_amount)}{_tax(plan)} moves from {_day(next_payment)} to "
                f"{_day(moved)}; after that you are billed on {_day(following)} and so on.")
    else:
        changed = tuple(Payment(at, 0, amount) for at, amount in zip(skipped, regular))
        back = Payment(moved, back_amount, back_amount)
        noun = "payment" if len(skipped) == 1 else "payments"
        every = plan.interval if plan.interval_count == 1 else f"{plan.interval_count} {plan.interval}s"
        text = (f"{months} month{'s' if months > 1 else ''} free: your {noun} of {_dates(skipped)} "
                f"{'is' if len(skipped) == 1 else 'are'} skipped and your next payment is {money(back_amount)}"
                f"{_tax(plan)} on {_day(moved)}, then every {every} from there.")
    card = f"{months} month{'s' if months > 1 else ''} free: next payment {_day(moved)}"
    per_month = plan.billed(next_payment) / per_payment
    return Promise("free_period", changed, back, text, card, cost=round(per_month * months), trial_end=moved)
