"""Money in Stripe's minor units, shown per currency; dates in words; both in the reader's language."""

from datetime import date, datetime
from functools import lru_cache

from babel.dates import format_date
from babel.numbers import format_currency

# Stripe's zero-decimal currencies: amounts are already whole units.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
# The CLDR locale each language's money and dates are written in (cancel_flow/i18n.py LANGUAGES).
CLDR = {"en": "en_US", "es": "es_ES", "fr": "fr_FR", "de": "de_DE", "pt_BR": "pt_BR"}
# Dates: "7 December 2026" in English; each other language's own long form ("25 de enero de 2027").
_DAY_PATTERN = {"en": "d MMMM y"}


def cldr_locale(language: str) -> str:
    return CLDR.get(language) or CLDR["en"]


def minor_unit_divisor(currency: str) -> int:
    return 1 if currency.lower() in ZERO_DECIMAL else 100


@lru_cache(maxsize=4096)
def format_money(amount: int, currency: str, language: str = "en") -> str:
    divisor = minor_unit_divisor(currency)
    value = amount / divisor
    pattern = None
    if divisor == 1:  # the locale's own pattern, without decimals
        pattern = "¤#,##0" if language == "en" else None
    return format_currency(value, currency.upper(), format=pattern, locale=cldr_locale(language),
                           currency_digits=divisor == 100 or pattern is None)


@lru_cache(maxsize=4096)
def _format_day(day: date, language: str) -> str:
    return format_date(day, format=_DAY_PATTERN.get(language, "long"), locale=cldr_locale(language))


def format_day(moment: datetime | date, language: str = "en") -> str:
    return _format_day(moment.date() if isinstance(moment, datetime) else moment, language)


def interval_words(interval: str, count: int) -> str:
    if count == 1:
        return {"day": "day", "week": "week", "month": "month", "year": "year"}.get(interval, interval)
    return f"{count} {interval}s"
