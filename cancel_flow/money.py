"""Money in Stripe's minor units, shown per currency; dates in words."""

from datetime import date, datetime
from functools import lru_cache

from babel.dates import format_date
from babel.numbers import format_currency

# Stripe's zero-decimal currencies: amounts are already whole units.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
LOCALE = "en_US"


def minor_unit_divisor(currency: str) -> int:
    return 1 if currency.lower() in ZERO_DECIMAL else 100


@lru_cache(maxsize=4096)
def format_money(amount: int, currency: str) -> str:
    divisor = minor_unit_divisor(currency)
    value = amount / divisor
    pattern = None if divisor == 100 else "¤#,##0"
    return format_currency(value, currency.upper(), format=pattern, locale=LOCALE, currency_digits=divisor == 100)


def format_day(moment: datetime | date) -> str:
    day = moment.date() if isinstance(moment, datetime) else moment
    return format_date(day, format="d MMMM y", locale=LOCALE)


def interval_words(interval: str, count: int) -> str:
    if count == 1:
        return {"day": "day", "week": "week", "month": "month", "year": "year"}.get(interval, interval)
    return f"{count} {interval}s"
