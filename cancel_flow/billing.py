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

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Callable

from cancel_flow.clock import add_months
from cancel_flow.i18n import DEFAULT, N_, gettext, ngettext
from cancel_flow.money import format_day, format_money, format_percent_off, format_words

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

    def discount_words(self, at: datetime | None = None, language: str = DEFAULT) -> str | None:
        """"10 % off" (and until when) for the discounts that apply at `at` (the next payment)."""
        at = at or self.next_payment
        if at is None:
            return None
        words = []
        for discount in self.discounts:
            if not discount.applies(at, True):
                continue
            if discount.percent_off is not None:
                off = f"{discount.percent_off:g} %" if language == DEFAULT else format_percent_off(discount.percent_off, language)
            else:
                off = format_money(discount.amount_off or 0, self.currency, language)
            if discount.once:
                word = gettext(language, "%(off)s off this payment", off=off)
            elif discount.end is not None:
                word = gettext(language, "%(off)s off until %(day)s", off=off, day=format_day(discount.end, language))
            else:
                word = gettext(language, "%(off)s off", off=off)
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
    """An offer's effect on the next payments, and its words (in the language asked for: `in_language`)."""

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
    # (text, card) in a language: the same promise, worded by the same function
    words: Callable[[str], tuple[str, str]] | None = field(default=None, compare=False, repr=False)

    def in_language(self, language: str) -> "Promise":
        """This promise worded in `language` (dates, amounts and words)."""
        if self.words is None:
            return self
        text, card = self.words(language)
        return replace(self, text=text, card=card)

    def texts(self, languages) -> dict[str, str]:
        """The full promise in each of `languages`, for storing with the decision."""
        return {language: self.in_language(language).text for language in languages}

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


def schedule_lines(schedule: list[list] | None, currency: str, language: str = DEFAULT) -> list[tuple[datetime, str]]:
    """The stored schedule of a promise, one (date, what is charged then) line per payment: the table of the
    done page and of the confirmation email."""
    lines = []
    for row in schedule or []:
        at, amount, regular = datetime.fromisoformat(row[0]), row[1], row[2]
        moved_from = datetime.fromisoformat(row[3]) if len(row) > 3 and row[3] else None
        charged = format_money(amount, currency, language)
        if moved_from is not None:
            lines.append((at, gettext(language, "%(amount)s (moved from %(day)s)", amount=charged,
                                      day=format_day(moved_from, language))))
        elif amount == 0 and regular:
            lines.append((at, gettext(language, "nothing (instead of %(regular)s)",
                                      regular=format_money(regular, currency, language))))
        elif amount != regular:
            lines.append((at, gettext(language, "%(amount)s (instead of %(regular)s)", amount=charged,
                                      regular=format_money(regular, currency, language))))
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


# What one payment costs, by billing period: "$24.50/month", "$24.50 every 3 months" (promises and emails) ...
_EACH = {"day": N_("%(amount)s/day"), "week": N_("%(amount)s/week"), "month": N_("%(amount)s/month"),
         "year": N_("%(amount)s/year")}
# ... and "$49.00 per month", "$49.00 per 3 months" (the plan line at the top of the pages).
_PER = {"day": N_("%(amount)s per day"), "week": N_("%(amount)s per week"), "month": N_("%(amount)s per month"),
        "year": N_("%(amount)s per year")}


def each_payment(amount: str, interval: str, count: int, language: str = DEFAULT) -> str:
    """An amount and how often it is charged: "$24.50/month", "$24.50 every 3 months"."""
    if count == 1:
        return gettext(language, _EACH.get(interval, _EACH["month"]), amount=amount)
    if interval == "day":
        return ngettext(language, "%(amount)s every %(num)s day", "%(amount)s every %(num)s days", count, amount=amount)
    if interval == "week":
        return ngettext(language, "%(amount)s every %(num)s week", "%(amount)s every %(num)s weeks", count, amount=amount)
    if interval == "year":
        return ngettext(language, "%(amount)s every %(num)s year", "%(amount)s every %(num)s years", count, amount=amount)
    return ngettext(language, "%(amount)s every %(num)s month", "%(amount)s every %(num)s months", count, amount=amount)


def per_period(amount: str, interval: str, count: int, language: str = DEFAULT) -> str:
    """An amount per billing period, as the plan line says it: "$49.00 per month", "$49.00 per 3 months"."""
    if count == 1:
        return gettext(language, _PER.get(interval, _PER["month"]), amount=amount)
    if interval == "day":
        return ngettext(language, "%(amount)s per %(num)s day", "%(amount)s per %(num)s days", count, amount=amount)
    if interval == "week":
        return ngettext(language, "%(amount)s per %(num)s week", "%(amount)s per %(num)s weeks", count, amount=amount)
    if interval == "year":
        return ngettext(language, "%(amount)s per %(num)s year", "%(amount)s per %(num)s years", count, amount=amount)
    return ngettext(language, "%(amount)s per %(num)s month", "%(amount)s per %(num)s months", count, amount=amount)


_EVERY = {"day": N_("every day"), "week": N_("every week"), "month": N_("every month"), "year": N_("every year")}


def every_period(interval: str, count: int, language: str = DEFAULT) -> str:
    """"every month", "every 3 months"."""
    if count == 1:
        return gettext(language, _EVERY.get(interval, _EVERY["month"]))
    if interval == "day":
        return ngettext(language, "every %(num)s day", "every %(num)s days", count)
    if interval == "week":
        return ngettext(language, "every %(num)s week", "every %(num)s weeks", count)
    if interval == "year":
        return ngettext(language, "every %(num)s year", "every %(num)s years", count)
    return ngettext(language, "every %(num)s month", "every %(num)s months", count)


class _Words:
    """The pieces every promise is worded with, in one language."""

    def __init__(self, plan: Plan, language: str):
        self.plan, self.language = plan, language

    def money(self, amount: int) -> str:
        return format_money(amount, self.plan.currency, self.language)

    def day(self, moment: datetime, with_year: bool = True) -> str:
        return format_day(moment, self.language, with_year)

    def dates(self, moments: list[datetime]) -> str:
        """"7 December, 7 January and 7 February 2027": the year once when they share it."""
        same_year = len({m.year for m in moments}) == 1
        words = [self.day(m, with_year=not (same_year and len(moments) > 1)) for m in moments]
        if same_year and len(moments) > 1:
            words[-1] = self.day(moments[-1])
        return format_words(words, self.language)

    def each(self, amount: int) -> str:
        """"$24.50/month"."""
        return each_payment(self.money(amount), self.plan.interval, self.plan.interval_count, self.language)

    def taxed(self, text: str) -> str:
        """"$24.50/month (before tax)" when Stripe adds tax to the amount."""
        return gettext(self.language, "%(amount)s (before tax)", amount=text) if self.plan.taxed else text

    def percent(self, percent: float) -> str:
        return format_percent_off(percent, self.language)


def _worded(words: Callable[[_Words], tuple[str, str]], plan: Plan) -> Callable[[str], tuple[str, str]]:
    return lambda language: words(_Words(plan, language))


def _billed(plan: Plan, moments: list[datetime], lines: tuple[Line, ...] | None = None) -> list[int]:
    """What each of `moments` charges as things stand: a `once` discount on the first of them only."""
    return [plan.billed(at, index == 0, lines) for index, at in enumerate(moments)]


def plan_words(plan: Plan, language: str = DEFAULT) -> str | None:
    """The plan line at the top of the pages: what the client pays today, "$44.10 per month (10 % off)"."""
    if not plan.priced:
        return None
    amount = per_period(format_money(plan.next_amount(), plan.currency, language), plan.interval, plan.interval_count,
                        language)
    off = plan.discount_words(language=language)
    return f"{amount} ({off})" if off else amount


def _promise(kind: str, plan: Plan, words: Callable[[_Words], tuple[str, str]], language: str, *args, **terms) -> Promise:
    """A promise worded in `language`, able to word itself in any other."""
    worded = _worded(words, plan)
    text, card = worded(language)
    return Promise(kind, *args, text=text, card=card, words=worded, **terms)


def discount_promise(plan: Plan, percent: float, payments: int, now: datetime, language: str = DEFAULT) -> Promise | None:
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

    def words(w: _Words) -> tuple[str, str]:
        if payments == 1:
            values = dict(percent=w.percent(percent), day=w.day(changed[0].at), lowered=w.money(lowered),
                          price=w.taxed(w.money(price)), regular=w.each(price), back=w.day(back.at))
            if (plan.months_per_payment or 0) >= 12:
                text = gettext(w.language, "%(percent)s off your renewal on %(day)s: %(lowered)s instead of %(price)s, "
                             "then %(regular)s from %(back)s", **values)
            else:
                text = gettext(w.language, "%(percent)s off your payment on %(day)s: %(lowered)s instead of %(price)s, "
                             "then %(regular)s from %(back)s", **values)
            card = gettext(w.language, "%(lowered)s for your next payment, then %(regular)s", lowered=w.money(lowered),
                         regular=w.each(price))
            return text, card
        text = ngettext(w.language, "%(percent)s off your next payment (%(dates)s): %(lowered)s, then %(regular)s from %(back)s",
                        "%(percent)s off your next %(num)s payments (%(dates)s): %(lowered)s, then %(regular)s "
                        "from %(back)s", payments, percent=w.percent(percent), dates=w.dates([p.at for p in changed]),
                        lowered=w.taxed(w.each(lowered)), regular=w.each(price), back=w.day(back.at))
        card = ngettext(w.language, "%(lowered)s for %(num)s payment, then %(regular)s",
                        "%(lowered)s for %(num)s payments, then %(regular)s", payments,
                        lowered=w.each(lowered), regular=w.each(price))
        return text, card

    return _promise("discount", plan, words, language, changed, back, cost=(price - lowered) * payments,
                    coupon_months=months)


def pause_promise(plan: Plan, skip: int, now: datetime, language: str = DEFAULT) -> Promise | None:
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

    def words(w: _Words) -> tuple[str, str]:
        text = ngettext(w.language, "Skip your payment of %(dates)s; your next payment is %(amount)s on %(day)s. "
                        "You keep your access meanwhile.",
                        "Skip your payments of %(dates)s; your next payment is %(amount)s on %(day)s. "
                        "You keep your access meanwhile.", skip, dates=w.dates([p.at for p in changed]),
                        amount=w.taxed(w.money(back_amount)), day=w.day(back.at))
        card = ngettext(w.language, "Skip %(num)s payment; next payment %(day)s", "Skip %(num)s payments; next payment %(day)s",
                        skip, day=w.day(back.at))
        return text, card

    return _promise("pause", plan, words, language, changed, back, cost=sum(regular[:skip]), resumes_at=resumes_at)


def pause_choices(plan: Plan, max_payments: int, now: datetime, language: str = DEFAULT) -> list[tuple[int, Promise]]:
    """Each pause length the subscriber may choose, with its promise."""
    choices = []
    for skip in range(1, max_payments + 1):
        promise = pause_promise(plan, skip, now, language)
        if promise is not None:
            choices.append((skip, promise))
    return choices


def switch_promise(plan: Plan, new_unit_amount: int, new_name: str, now: datetime, current_name: str | None = None,
                   language: str = DEFAULT) -> Promise | None:
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
    changed = tuple(Payment(at, new, old) for at, new, old in zip(upcoming, after, before))
    new, old = after[0], before[0]
    renamed = bool(new_name) and new_name.strip().casefold() != (current_name or "").strip().casefold()

    def words(w: _Words) -> tuple[str, str]:
        values = dict(new=w.taxed(w.each(new)), old=w.money(old), day=w.day(upcoming[0]))
        if renamed:
            text = gettext(w.language, "Your plan changes to %(name)s at %(new)s instead of %(old)s, from your next payment on "
                         "%(day)s. Nothing changes before then.", name=new_name, **values)
        else:
            text = gettext(w.language, "Your price changes to %(new)s instead of %(old)s, from your next payment on %(day)s. "
                         "Nothing changes before then.", **values)
        card = gettext(w.language, "%(new)s instead of %(old)s, from %(day)s", new=w.each(new), old=w.money(old), day=w.day(upcoming[0]))
        return text, card

    return _promise("switch", plan, words, language, changed, None, cost=old - new, new_amount=new,
                    new_name=new_name if renamed else None)


# Stripe accepts a trial_end at most two years from the subscription's billing_cycle_anchor
# (https://docs.stripe.com/api/subscriptions/update#update_subscription-trial_end).
MAX_TRIAL_MONTHS_FROM_ANCHOR = 24


def trial_limit(plan: Plan) -> datetime:
    return add_months(plan.anchor, MAX_TRIAL_MONTHS_FROM_ANCHOR)


def free_period_promise(plan: Plan, months: int, now: datetime, language: str = DEFAULT) -> Promise | None:
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
    per_payment = plan.months_per_payment or 1
    moves = months < per_payment
    following = None
    if moves:
        changed = ()
        back = Payment(moved, back_amount, back_amount, moved_from=next_payment)
        following = Plan(plan.currency, plan.lines, plan.interval, plan.interval_count, moved, moved).payments(2)[1]
    else:
        changed = tuple(Payment(at, 0, amount) for at, amount in zip(skipped, regular))
        back = Payment(moved, back_amount, back_amount)

    def words(w: _Words) -> tuple[str, str]:
        if moves:
            text = gettext(w.language, "Your next payment of %(amount)s moves from %(before)s to %(after)s; after that you are "
                         "billed on %(following)s and so on.", amount=w.taxed(w.money(back_amount)),
                         before=w.day(next_payment), after=w.day(moved), following=w.day(following))
        else:
            free = ngettext(w.language, "%(num)s month free", "%(num)s months free", months)
            gone = ngettext(w.language, "your payment of %(dates)s is skipped", "your payments of %(dates)s are skipped",
                            len(skipped), dates=w.dates(skipped))
            text = gettext(w.language, "%(free)s: %(skipped)s and your next payment is %(amount)s on %(day)s, then %(every)s from "
                         "there.", free=free, skipped=gone, amount=w.taxed(w.money(back_amount)), day=w.day(moved),
                         every=every_period(plan.interval, plan.interval_count, w.language))
        card = ngettext(w.language, "%(num)s month free: next payment %(day)s", "%(num)s months free: next payment %(day)s", months,
                        day=w.day(moved))
        return text, card

    per_month = plan.billed(next_payment) / per_payment
    return _promise("free_period", plan, words, language, changed, back, cost=round(per_month * months), trial_end=moved)


# Win-back: what continues when a scheduled cancellation is undone, and what a comeback costs ----------

def keep_promise(plan: Plan, now: datetime, discounts: tuple[tuple[float | None, int | None, datetime | None], ...] = (),
                 language: str = DEFAULT) -> Promise | None:
    """What continues when a subscription set to cancel at `plan.next_payment` (its period end) is kept: that
    renewal is charged, with the discounts still running then ((percent_off, amount_off, end) each; a discount
    ends before an invoice made at or after its end, https://docs.stripe.com/api/discounts/object#discount_object-end),
    and the plan renews as before."""
    if plan.next_payment is None or plan.next_payment <= now:
        return None
    first, second = plan.payments(2)
    price, amount = plan.amount, plan.amount
    for percent, amount_off, end in discounts:
        if end is not None and end <= first:
            continue
        if percent:
            amount = sum(line.amount - percent_of(line.amount, percent) for line in plan.lines) if amount == price \
                else amount - percent_of(amount, percent)
        elif amount_off:
            amount = max(0, amount - amount_off)

    def words(w: _Words) -> tuple[str, str]:
        if amount == price:
            text = gettext(w.language, "Your subscription continues as it is: your next payment is %(amount)s on "
                                       "%(day)s, then %(regular)s from %(next)s.",
                           amount=w.taxed(w.money(price)), day=w.day(first), regular=w.each(price), next=w.day(second))
        else:
            text = gettext(w.language, "Your subscription continues as it is: your next payment is %(amount)s on "
                                       "%(day)s (with your discount), then %(regular)s when the discount ends.",
                           amount=w.taxed(w.money(amount)), day=w.day(first), regular=w.each(price))
        card = gettext(w.language, "Next payment: %(amount)s on %(day)s", amount=w.money(amount), day=w.day(first))
        return text, card

    return _promise("keep", plan, words, language, (), Payment(first, amount, price), cost=0)


def comeback_promise(plan: Plan, now: datetime, percent: float | None = None, payments: int | None = None,
                     language: str = DEFAULT) -> Promise | None:
    """Coming back today on `plan` (a new subscription: the first payment now, then every period from today),
    with `percent` off the first `payments` payments (a repeating coupon whose months cover exactly those
    payments, https://docs.stripe.com/billing/subscriptions/coupons#coupon-duration), or at the usual price.
    None when no whole number of coupon months covers exactly those payments (weekly and daily plans)."""
    start = Plan(plan.currency, plan.lines, plan.interval, plan.interval_count, now, now, plan.taxed)
    price = start.amount
    if not percent or not payments:
        first, second = start.payments(2)

        def usual(w: _Words) -> tuple[str, str]:
            return (gettext(w.language, "%(regular)s: your first payment today, the next on %(next)s.",
                            regular=w.taxed(w.each(price)), next=w.day(second)), w.each(price))

        return _promise("comeback", start, usual, language, (), Payment(first, price, price), cost=0)
    # A new subscription's payments fall on whole periods from its start, the first at the start itself: a
    # coupon of that many periods' months covers exactly the first `payments` (its end is not discounted).
    if start.months_per_payment is None:
        return None
    months = payments * start.months_per_payment
    upcoming = start.payments(payments + 1)
    lowered = discounted(start, percent)
    changed = tuple(Payment(at, lowered, price) for at in upcoming[:payments])
    back = Payment(upcoming[payments], price, price)

    def words(w: _Words) -> tuple[str, str]:
        if payments == 1:
            text = gettext(w.language, "%(percent)s off your first payment: %(lowered)s today instead of %(price)s, "
                                       "then %(regular)s from %(back)s.",
                           percent=w.percent(percent), lowered=w.money(lowered), price=w.taxed(w.money(price)),
                           regular=w.each(price), back=w.day(back.at))
            card = gettext(w.language, "%(lowered)s today, then %(regular)s", lowered=w.money(lowered),
                           regular=w.each(price))
            return text, card
        text = gettext(w.language, "%(percent)s off your first %(num)s payments (today, then %(dates)s): %(lowered)s, "
                                   "then %(regular)s from %(back)s.",
                       percent=w.percent(percent), num=payments, dates=w.dates([p.at for p in changed[1:]]),
                       lowered=w.taxed(w.each(lowered)), regular=w.each(price), back=w.day(back.at))
        card = gettext(w.language, "%(lowered)s for %(num)s payments, then %(regular)s", lowered=w.each(lowered),
                       num=payments, regular=w.each(price))
        return text, card

    return _promise("comeback", start, words, language, changed, back, cost=(price - lowered) * payments,
                    coupon_months=months)
