"""The one rule for dates a user types into a range (the dashboard, its CSV and charts, `/api/stats`), and
for the page numbers and row ids in the dashboard's addresses (`whole_number`).

Only `YYYY-MM-DD` in ASCII digits, between EARLIEST and LATEST, the start not after the end, and a
span of at most MAX_SPAN_DAYS: anything else is a `BadDates` (a 400 page; the API answers 422 JSON),
never an overflow deep in a query."""

import re
from datetime import date

from cancel_flow.errors import BadRequest

EARLIEST = date(2000, 1, 1)
LATEST = date(2100, 12, 31)
MAX_SPAN_DAYS = 3660  # ten years and their leap days
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def whole_number(text: str, low: int, high: int) -> int | None:
    """`text` as a whole number from `low` to `high` written in ASCII digits only (not "²", "٣" or "-1"), else
    None; too many digits are refused before they are converted."""
    if text.isascii() and text.isdigit() and len(text) <= len(str(high)) and low <= int(text) <= high:
        return int(text)
    return None


class BadDates(BadRequest):
    title = "Those dates don't work"


def parse_day(text: str, name: str = "date") -> date:
    """`text` as a day, or BadDates naming the field and what it accepts."""
    if not isinstance(text, str) or not _DAY.fullmatch(text):
        raise BadDates(f"'{name}' must be a date like 2026-11-24.")
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise BadDates(f"'{name}' is not a day of the calendar.") from None
    if not EARLIEST <= day <= LATEST:
        raise BadDates(f"'{name}' must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}.")
    return day


def check_range(first: date, last: date) -> tuple[date, date]:
    """The range itself, or BadDates when it is inverted, out of bounds or longer than ten years."""
    if not (EARLIEST <= first <= LATEST and EARLIEST <= last <= LATEST):
        raise BadDates(f"Dates must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}.")
    if first > last:
        raise BadDates("The start date is after the end date.")
    if (last - first).days > MAX_SPAN_DAYS:
        raise BadDates("The range must be at most ten years.")
    return first, last

