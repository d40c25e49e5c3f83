"""One source of the current time, so freezegun controls it everywhere."""

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def unix_now() -> int:
    return int(utc_now().timestamp())


def from_unix(ts: int | float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """Databases without time zones (SQLite) hand back naive datetimes; they are UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's last day."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    next_month_first = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=moment.tzinfo)
    last_day = (next_month_first - datetime(year, month, 1, tzinfo=moment.tzinfo)).days
    return moment.replace(year=year, month=month, day=min(moment.day, last_day))
