"""Money in Stripe's minor units, shown per currency; dates in words; both in the reader's language.

`locale` is one of the languages shipped (cancel_flow/i18n.py LANGUAGES, written the way the CLDR map
below says) or any CLDR locale Babel knows ("en_GB", "fr_CA": the coach's CANCEL_FLOW_LOCALE)."""

from datetime import date, datetime
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton
from babel.lists import format_list
from babel.numbers import format_currency, format_decimal, format_percent

# Stripe's zero-decimal currencies: amounts are already whole units.
ZERO_DECIMAL = {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"}
# The CLDR locale each language's money and dates are written in (cancel_flow/i18n.py LANGUAGES).
CLDR = {"en": "en_US", "es": "es_ES", "fr": "fr_FR", "de": "de_DE", "pt_BR": "pt_BR"}
# Dates: "7 December 2026" in English; each other language's own long form ("25 de enero de 2027").
_DAY_PATTERN = {"en": "d MMMM y"}
_DAY_MONTH_PATTERN = {"en": "d MMMM"}
# Lists of dates: "7 December, 7 January and 7 February" in English (no serial comma).
_LIST_LOCALE = {"en": "en_GB"}


@lru_cache(maxsize=256)
def cldr_locale(locale: str) -> str:
    """The CLDR locale `locale` is written in: a shipped language's, else `locale` itself when Babel knows it,
    else American English."""
    if locale in CLDR:
        return CLDR[locale]
    try:
        Locale.parse(locale)
    except (UnknownLocaleError, ValueError, TypeError):
        return CLDR["en"]
    return locale


def known_locale(value: str) -> str | None:
    """`value` ("en_GB", "fr-CA", "de") as the CLDR locale Babel knows, or None."""
    try:
        return str(Locale.parse(value.strip().replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError, AttributeError):
        return None


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
def _format_day(day: date, language: str, with_year: bool) -> str:
    if with_year:
        return format_date(day, format=_DAY_PATTERN.get(language, "long"), locale=cldr_locale(language))
    if language in _DAY_MONTH_PATTERN:
        return format_date(day, format=_DAY_MONTH_PATTERN[language], locale=cldr_locale(language))
    return format_skeleton("MMMMd", day, locale=cldr_locale(language))


def format_day(moment: datetime | date, language: str = "en", with_year: bool = True) -> str:
    """"25 January 2027"; without the year, "25 January" ("25 de enero")."""
    return _format_day(moment.date() if isinstance(moment, datetime) else moment, language, with_year)


@lru_cache(maxsize=1024)
def format_percent_off(percent: float, language: str = "en") -> str:
    """A coupon's percentage: "50%" in English, "50 %" in German, "12,5 %" in French."""
    return format_percent(percent / 100, locale=cldr_locale(language), decimal_quantization=False)


@lru_cache(maxsize=1024)  # the same few numbers on every page (a comment's longest length)
def format_number(value: float, language: str = "en") -> str:
    """A number as the language writes it ("2,000"; "2.000" in German), without trailing zeros."""
    return format_decimal(value, locale=cldr_locale(language), decimal_quantization=False)


def format_words(words: list[str], language: str = "en") -> str:
    """"a, b and c" in the language's own words."""
    return format_list(list(words), locale=_LIST_LOCALE.get(language) or cldr_locale(language))


def interval_words(interval: str, count: int) -> str:
    if count == 1:
        return {"day": "day", "week": "week", "month": "month", "year": "year"}.get(interval, interval)
    return f"{count} {interval}s"
