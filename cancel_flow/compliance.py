"""The compliance rules: who may withdraw from a contract and until when, what a withdrawal refunds, when
the cancel button shows, and how a declaration is worded. No I/O.

- EU/EEA withdrawal function (Directive 2011/83/EU Art. 11a, added by Directive (EU) 2023/2673, from
  19 June 2026): a consumer may withdraw from a contract made online within the withdrawal period (14 days
  from the contract for services, Art. 9(2)(a)); refunds follow Art. 13 (everything paid) or, where the
  consumer asked for the service to start during the period, Art. 14(3) (keep the share for what was provided).
- German cancel button (§ 312k BGB): "Cancel contract here", a confirmation page, "Cancel now", and an
  immediate confirmation with the content, date and time of receipt and when the contract ends.
"""

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.config.schema import Compliance
from cancel_flow.flow import LIVE_STATUSES, SubscriptionFacts
from cancel_flow.i18n import gettext
from cancel_flow.money import format_day, format_money

# The EU's 27 members and the EEA's three others (Iceland, Liechtenstein, Norway), where the Consumer Rights
# Directive applies; ISO 3166-1 alpha-2 as Stripe writes `address.country` (Greece is GR).
EEA = frozenset({"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "IE", "IT", "LV", "LT",
                 "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE", "IS", "LI", "NO"})
DAY = timedelta(days=1)
KINDS = ("withdrawal", "cancellation")
CANCELLATION_TYPES = ("ordinary", "extraordinary")
MAX_NAME, MAX_CONTRACT, MAX_REASON = 200, 500, 2000


@dataclass(frozen=True)
class WithdrawalRight:
    """Whether the subscription can be withdrawn from now, and why not (`reason`: off, not_eea, business,
    period_over, ended, unknown_start)."""

    open: bool
    reason: str | None = None
    until: datetime | None = None


def withdrawal_right(compliance: Compliance, facts: SubscriptionFacts | None, now: datetime | None) -> WithdrawalRight:
    """A consumer (no tax id on the Stripe customer) with an address in the EU/EEA whose subscription started
    less than `withdrawal_days` ago and is still live may withdraw from it (`now`: None for the clock's, read only
    when the rest holds)."""
    if compliance.withdrawal_days == 0:
        return WithdrawalRight(False, "off")
    if facts is None or facts.started_at is None:
        return WithdrawalRight(False, "unknown_start")
    until = as_utc(facts.started_at) + compliance.withdrawal_days * DAY
    if facts.status not in LIVE_STATUSES:
        return WithdrawalRight(False, "ended", until)
    if (facts.country or "").upper() not in EEA:
        return WithdrawalRight(False, "not_eea", until)
    if facts.customer_tax_ids:  # None (not read) counts as none: the consumer is not turned away on a guess
        return WithdrawalRight(False, "business", until)
    if (now or utc_now()) >= until:
        return WithdrawalRight(False, "period_over", until)
    return WithdrawalRight(True, None, until)


# Refunds ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Payment:
    """A payment of the subscription: its PaymentIntent, what was paid, and the billing period it paid for."""

    payment_intent: str
    amount: int
    currency: str
    period_start: datetime
    period_end: datetime


@dataclass(frozen=True)
class Refund:
    payment_intent: str
    amount: int
    currency: str


def days_served(payment: Payment, now: datetime) -> tuple[int, int]:
    """(days of the period served, counting the day of the withdrawal as served; days in the period)."""
    total = max(1, math.ceil((as_utc(payment.period_end) - as_utc(payment.period_start)) / DAY))
    served = math.ceil(max(timedelta(0), as_utc(now) - as_utc(payment.period_start)) / DAY)
    return min(max(served, 1), total), total


def refunds_for(mode: str, payments: list[Payment], now: datetime) -> list[Refund]:
    """What a withdrawal refunds: `full` every payment made since the subscription started (Art. 13);
    `prorated` each payment less the share of its period served until now (Art. 14(3)); `manual` nothing
    (the coach decides)."""
    if mode == "manual":
        return []
    refunds = []
    for payment in payments:
        amount = payment.amount
        if mode == "prorated":
            served, total = days_served(payment, now)
            amount = payment.amount - round(payment.amount * served / total)
        if amount > 0:
            refunds.append(Refund(payment.payment_intent, amount, payment.currency))
    return refunds


def refund_total(refunds: list[Refund]) -> tuple[int, str | None]:
    return sum(refund.amount for refund in refunds), (refunds[0].currency if refunds else None)


# Words --------------------------------------------------------------------------------------------------

def moment_words(moment: datetime, zone: str, language: str = "en") -> str:
    """A moment to the second in the coach's time zone with its UTC offset: "9 December 2026, 14:03:27 (UTC+01:00)"."""
    local = as_utc(moment).astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return gettext(language, "%(day)s, %(time)s (UTC%(offset)s)", day=format_day(local, language),
                   time=local.strftime("%H:%M:%S"), offset=f"{offset[:3]}:{offset[3:]}")


def refund_words(mode: str, amount: int | None, currency: str | None, language: str = "en") -> str:
    """What the client is told about their money after a withdrawal."""
    money = format_money(amount, currency, language) if amount and currency else None
    if mode != "manual" and amount == 0:
        return gettext(language, "Nothing was charged yet, so there is nothing to refund.")
    if mode == "full":
        if money:
            return gettext(language, "Everything you paid, %(money)s, is refunded to the card you paid with.", money=money)
        return gettext(language, "Everything you paid is refunded to the card you paid with.")
    if mode == "prorated":
        if money:
            return gettext(language, "You are refunded %(money)s: what you paid, less the days you used until today.",
                           money=money)
        return gettext(language, "You are refunded what you paid, less the days you used until today.")
    return gettext(language, "Your coach will contact you about the refund of what you paid.")


def withdrawal_content(name: str, email: str, contract: str, language: str = "en") -> str:
    """The withdrawal statement as the client sent it (what is stored, and quoted in the acknowledgement)."""
    return gettext(language, "I, %(name)s (%(email)s), withdraw from my contract: %(contract)s.",
                   name=name, email=email, contract=contract)


def cancellation_content(name: str, email: str, contract: str, kind: str, reason: str | None,
                         language: str = "en") -> str:
    """The cancellation as the client sent it with the cancel button."""
    if kind == "extraordinary":
        return gettext(language, "I, %(name)s (%(email)s), cancel my contract %(contract)s extraordinarily, "
                                 "for this reason: %(reason)s", name=name, email=email, contract=contract,
                       reason=reason or "")
    return gettext(language, "I, %(name)s (%(email)s), cancel my contract %(contract)s at the earliest "
                             "possible date.", name=name, email=email, contract=contract)


def contract_words(facts: SubscriptionFacts, language: str = "en") -> str:
    """A subscription as the client knows it: its plan, price and Stripe id."""
    from cancel_flow.billing import per_period

    price = per_period(format_money(facts.price_amount, facts.currency, language), facts.interval,
                       facts.interval_count, language)
    return gettext(language, "%(plan)s, %(price)s (subscription %(id)s)", plan=facts.plan_name, price=price,
                   id=facts.subscription_id)

