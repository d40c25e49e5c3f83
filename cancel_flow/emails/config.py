"""The `[emails]` section of offers.toml: which billing emails go out, and when."""

from dataclasses import dataclass
from typing import Callable

INTERVALS = ("day", "week", "month", "year")
KINDS = ("payment_failed", "renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed")
# Failed-payment notices are about the account itself: they have no unsubscribe link.
UNSUBSCRIBABLE = ("renewal_reminder", "discount_ending", "offer_accepted", "cancellation_confirmed")
FIELDS = ("failed_payment_days", "renewal_reminder_days_before", "renewal_reminder_intervals",
          "discount_ending_days_before", "confirmations")


@dataclass(frozen=True)
class EmailSchedule:
    failed_payment_days: tuple[int, ...] = (0, 3, 7)
    renewal_reminder_days_before: int = 30
    renewal_reminder_intervals: tuple[str, ...] = ("year",)
    discount_ending_days_before: int = 7
    confirmations: bool = True

    def sends(self, kind: str) -> bool:
        """Whether this kind is turned on (an empty list or 0 turns a kind off)."""
        return {
            "payment_failed": bool(self.failed_payment_days),
            "renewal_reminder": self.renewal_reminder_days_before > 0 and bool(self.renewal_reminder_intervals),
            "discount_ending": self.discount_ending_days_before > 0,
            "offer_accepted": self.confirmations,
            "cancellation_confirmed": self.confirmations,
        }[kind]


def _whole(raw: dict, key: str, low: int, high: int, fail) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail("[emails]", f"field '{key}' must be a whole number from {low} to {high} (0 turns it off)")
    return value


def parse_emails(raw, fail: Callable[[str, str], None]) -> EmailSchedule:
    """Check `[emails]`; `fail(where, message)` raises (offers.py reports the file and the field)."""
    if raw is None:
        return EmailSchedule()
    if not isinstance(raw, dict):
        fail("[emails]", "must be a table")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        fail("[emails]", f"unknown field '{unknown[0]}' (allowed: {', '.join(FIELDS)})")
    values = {}
    if "failed_payment_days" in raw:
        days = raw["failed_payment_days"]
        if not isinstance(days, list) or any(isinstance(d, bool) or not isinstance(d, int) or not 0 <= d <= 60
                                             for d in days):
            fail("[emails]", "field 'failed_payment_days' must list whole days from 0 to 60 after the first "
                             "failure, such as [0, 3, 7] ([] turns failed-payment emails off)")
        if len(days) != len(set(days)) or len(days) > 10:
            fail("[emails]", "field 'failed_payment_days' must list each day once, at most 10 days")
        values["failed_payment_days"] = tuple(sorted(days))
    if "renewal_reminder_days_before" in raw:
        values["renewal_reminder_days_before"] = _whole(raw, "renewal_reminder_days_before", 0, 365, fail)
    if "renewal_reminder_intervals" in raw:
        intervals = raw["renewal_reminder_intervals"]
        if not isinstance(intervals, list) or any(i not in INTERVALS for i in intervals):
            fail("[emails]", f"field 'renewal_reminder_intervals' must list billing periods from: {', '.join(INTERVALS)}")
        values["renewal_reminder_intervals"] = tuple(dict.fromkeys(intervals))
    if "discount_ending_days_before" in raw:
        values["discount_ending_days_before"] = _whole(raw, "discount_ending_days_before", 0, 60, fail)
    if "confirmations" in raw:
        if not isinstance(raw["confirmations"], bool):
            fail("[emails]", "field 'confirmations' must be true or false")
        values["confirmations"] = raw["confirmations"]
    return EmailSchedule(**values)


def schedule_of(offers) -> EmailSchedule:
    """The schedule of an OfferBook, whether offers.py already parsed `[emails]` or still holds the raw table."""
    emails = getattr(offers, "emails", None)
    if isinstance(emails, EmailSchedule):
        return emails

    def fail(where: str, message: str):
        from cancel_flow.errors import SettingsError

        raise SettingsError(f"{where}: {message}")

    return parse_emails(emails or {}, fail)
