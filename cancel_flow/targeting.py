"""Offer targeting: the `when` conditions of an offer (or an experiment), all of which must hold. No I/O."""

from dataclasses import dataclass, field
from datetime import datetime

INTERVALS = ("day", "week", "month", "year")
_LISTS = ("interval", "prices", "products", "currency", "country")
_NUMBERS = ("tenure_days_min", "tenure_days_max", "monthly_amount_min", "monthly_amount_max")


@dataclass(frozen=True)
class Conditions:
    interval: tuple[str, ...] = ()
    prices: tuple[str, ...] = ()
    products: tuple[str, ...] = ()
    currency: tuple[str, ...] = ()
    country: tuple[str, ...] = ()
    tenure_days_min: int | None = None
    tenure_days_max: int | None = None
    monthly_amount_min: int | None = None
    monthly_amount_max: int | None = None
    metadata: tuple[tuple[str, str], ...] = field(default=())

    def __bool__(self) -> bool:
        return any(getattr(self, name) not in ((), None) for name in self.__dataclass_fields__)


def parse_conditions(raw, where: str, fail) -> Conditions:
    """`[offer.when]` as written in offers.toml; `fail(where, message)` raises the start-up error."""
    if not isinstance(raw, dict):
        fail(where, "must be a table of conditions")
    allowed = set(_LISTS) | set(_NUMBERS) | {"metadata"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        fail(where, f"unknown condition '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")
    values: dict = {}
    for name in _LISTS:
        if name not in raw:
            continue
        items = raw[name]
        if isinstance(items, str):
            items = [items]
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
            fail(where, f"condition '{name}' must be a list of strings")
        items = [i.strip() for i in items]
        if name == "interval" and any(i not in INTERVALS for i in items):
            fail(where, f"condition 'interval' takes {', '.join(INTERVALS)}")
        if name == "currency":
            items = [i.lower() for i in items]
            if any(len(i) != 3 or not i.isalpha() for i in items):
                fail(where, "condition 'currency' takes three-letter currency codes such as usd")
        if name == "country":
            items = [i.upper() for i in items]
            if any(len(i) != 2 or not i.isalpha() for i in items):
                fail(where, "condition 'country' takes two-letter country codes such as US")
        if name == "prices" and any(not i.startswith("price_") for i in items):
            fail(where, "condition 'prices' takes Stripe price ids (price_…)")
        if name == "products" and any(not i.startswith("prod_") for i in items):
            fail(where, "condition 'products' takes Stripe product ids (prod_…)")
        values[name] = tuple(items)
    for name in _NUMBERS:
        if name in raw:
            number = raw[name]
            if isinstance(number, bool) or not isinstance(number, int) or number < 0:
                fail(where, f"condition '{name}' must be a whole number of at least 0"
                            + (" (minor units, e.g. 4900 for $49.00)" if "amount" in name else " (days)"))
            values[name] = number
    for low, high in (("tenure_days_min", "tenure_days_max"), ("monthly_amount_min", "monthly_amount_max")):
        if low in values and high in values and values[low] > values[high]:
            fail(where, f"condition '{low}' is above '{high}'")
    if "metadata" in raw:
        metadata = raw["metadata"]
        if not isinstance(metadata, dict) or not metadata or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            fail(where, "condition 'metadata' must be a table of key = \"value\" strings")
        values["metadata"] = tuple(sorted(metadata.items()))
    return Conditions(**values)


@dataclass(frozen=True)
class Subject:
    """What the conditions are checked against: one subscription and its customer."""

    interval: str
    price_ids: tuple[str, ...]
    product_ids: tuple[str, ...]
    started_at: datetime | None
    monthly_amount: int
    currency: str
    country: str | None
    metadata: dict


def first_failed(conditions: Conditions, subject: Subject, now: datetime) -> str | None:
    """The first condition that does not hold, in words; None when all hold."""
    if conditions.interval and subject.interval not in conditions.interval:
        return f"billed every {subject.interval}, not {' or '.join(conditions.interval)}"
    if conditions.prices and not set(subject.price_ids) & set(conditions.prices):
        return f"price {', '.join(subject.price_ids)} is not one of {', '.join(conditions.prices)}"
    if conditions.products and not set(subject.product_ids) & set(conditions.products):
        return f"product {', '.join(subject.product_ids)} is not one of {', '.join(conditions.products)}"
    if conditions.tenure_days_min is not None or conditions.tenure_days_max is not None:
        tenure = (now - subject.started_at).days if subject.started_at else 0
        if conditions.tenure_days_min is not None and tenure < conditions.tenure_days_min:
            return f"subscribed {tenure} days ago, fewer than {conditions.tenure_days_min}"
        if conditions.tenure_days_max is not None and tenure > conditions.tenure_days_max:
            return f"subscribed {tenure} days ago, more than {conditions.tenure_days_max}"
    if conditions.monthly_amount_min is not None and subject.monthly_amount < conditions.monthly_amount_min:
        return f"monthly amount {subject.monthly_amount} is below {conditions.monthly_amount_min}"
    if conditions.monthly_amount_max is not None and subject.monthly_amount > conditions.monthly_amount_max:
        return f"monthly amount {subject.monthly_amount} is above {conditions.monthly_amount_max}"
    if conditions.currency and subject.currency.lower() not in conditions.currency:
        return f"currency {subject.currency} is not {' or '.join(conditions.currency)}"
    if conditions.country and (subject.country or "").upper() not in conditions.country:
        return f"country {subject.country or 'unknown'} is not {' or '.join(conditions.country)}"
    for key, value in conditions.metadata:
        if subject.metadata.get(key) != value:
            return f"metadata {key} is {subject.metadata.get(key)!r}, not {value!r}"
    return None
