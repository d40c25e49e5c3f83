"""What a configuration holds: the brand, the rules, the offers in the order they are tried, the
experiments, the billing emails, the coach's alerts win-back and the compliance functions. Read-only values: the validator builds them."""

from dataclasses import dataclass, field
from pathlib import Path

from cancel_flow.targeting import Conditions

# Each kind's own fields, besides the ones every offer has.
TERMS = {"discount": {"percent_off", "payments"}, "pause": {"max_payments"}, "switch": {"price"},
         "free_period": {"months"}, "contact": {"url"}}
KINDS = tuple(TERMS)
# Fields of earlier versions, refused with the name of what replaced them.
RENAMED = {"months": "payments", "max_months": "max_payments"}
SECTIONS = ("brand", "rules", "offer", "experiment", "emails", "alerts", "winback", "compliance")


@dataclass(frozen=True)
class Brand:
    name: str = "Your coach"
    color: str = "#1f6feb"
    logo: Path | None = None  # a file of the operator's own
    support_email: str | None = None
    logo_upload: str | None = None  # the SHA-256 of a logo uploaded on the settings page (`logo = "upload:…"`)
    default_locale: str = "en"  # the clients' language when Stripe and the browser don't say (a shipped language)

    @property
    def has_logo(self) -> bool:
        return self.logo is not None or self.logo_upload is not None

    @property
    def logo_url(self) -> str:
        """Where pages load the logo from; an uploaded logo's address changes with it, so no browser keeps an old one."""
        return f"/brand/logo?v={self.logo_upload[:16]}" if self.logo_upload else "/brand/logo"


@dataclass(frozen=True)
class Offer:
    id: str
    kind: str
    title: str
    reasons: tuple[str, ...] = ()
    percent_off: float | None = None
    payments: int | None = None  # discount: the next N payments
    max_payments: int | None = None  # pause: skip 1..N payments
    price: str | None = None  # switch: the cheaper price
    months: int | None = None  # free_period: the next payment moves this many months later
    url: str | None = None  # contact: booking page or mailto:
    description: str | None = None
    when: Conditions = field(default_factory=Conditions)
    enabled: bool = True  # a turned-off offer is kept in the configuration but never shown nor offered
    # A discount meant only for win-back's comeback emails: never shown in the cancel flow.
    comeback_only: bool = False
    # `[offer.text.<language>]`: the title and description in other languages, ((language, title, description), …)
    texts: tuple[tuple[str, str | None, str | None], ...] = ()

    def title_in(self, language: str) -> str:
        """The title in `language`, else the one written in the default language."""
        for code, title, _description in self.texts:
            if code == language and title:
                return title
        return self.title

    def description_in(self, language: str) -> str | None:
        for code, _title, description in self.texts:
            if code == language and description:
                return description
        return self.description

    def missing_languages(self, languages) -> list[str]:
        """Which of `languages` have no title of this offer's own (they show the default language's)."""
        given = {code for code, title, _description in self.texts if title}
        return [language for language in languages if language not in given]

    def fits(self, reason: str) -> bool:
        return not self.reasons or reason in self.reasons

    def coupon_id(self, months: int) -> str:
        """Stable per offer, terms and coupon length: editing the terms makes a new coupon instead of
        changing an old one, and each billing period gets the length that covers its payments."""
        percent = f"{self.percent_off:g}".replace(".", "_")
        return f"cancel-flow_{self.id}_{percent}pct_{months}m"


# Alerts when [alerts] lists no events: the ones a coach can act on the same day.
DEFAULT_ALERT_EVENTS = ("session.canceled", "contact.requested", "payment.failed")


@dataclass(frozen=True)
class Alerts:
    """`[alerts]`: where the coach hears about events."""

    slack_webhook_url: str | None = None
    email: str | None = None
    events: tuple[str, ...] = DEFAULT_ALERT_EVENTS

    def wants(self, event_type: str) -> bool:
        return bool(self.slack_webhook_url or self.email) and event_type in self.events


@dataclass(frozen=True)
class EmailSchedule:
    """`[emails]`: which billing emails go out, and when."""

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


REFUND_MODES = ("full", "prorated", "manual")


@dataclass(frozen=True)
class Compliance:
    """`[compliance]`: the EU withdrawal function, the cancel button without a login, and how long their
    records are kept. `cancel_button` None means "not set": on when the coach's Stripe account is in Germany."""

    withdrawal_days: int = 14  # 0: off
    withdrawal_refund: str = "full"  # full | prorated | manual
    cancel_button: bool | None = None
    records_keep_days: int = 1095

    def cancel_button_on(self, account_country: str | None) -> bool:
        """Whether "Cancel contract here" is shown, given the Stripe account's country (None: unknown)."""
        if self.cancel_button is not None:
            return self.cancel_button
        return (account_country or "").upper() == "DE"


@dataclass(frozen=True)
class WinbackStep:
    """One `[[winback.step]]`: a comeback email `days_after` the subscription ended, for these reasons (none
    listed: every reason), with a discount offer's terms or at the usual price."""

    number: int  # its place in the list, from 1: what comeback links and the records name
    days_after: int
    reasons: tuple[str, ...] = ()
    offer: str | None = None

    def fits(self, reason: str | None) -> bool:
        return not self.reasons or reason in self.reasons


@dataclass(frozen=True)
class Winback:
    """`[winback]`: the "changed your mind?" email before a scheduled cancellation ends, and the comeback steps."""

    changed_mind_days_before: int = 3
    steps: tuple[WinbackStep, ...] = ()

    def steps_for(self, reason: str | None) -> list[WinbackStep]:
        """The steps a client who left for `reason` gets, in the order they come."""
        return sorted((step for step in self.steps if step.fits(reason)), key=lambda step: (step.days_after, step.number))

    def step(self, number: int) -> WinbackStep | None:
        return next((step for step in self.steps if step.number == number), None)

    @property
    def longest_wait(self) -> int:
        return max((step.days_after for step in self.steps), default=0)


@dataclass(frozen=True)
class Configuration:
    brand: Brand = field(default_factory=Brand)
    offers: tuple[Offer, ...] = ()
    offer_cooldown_days: int = 365
    max_offers: int = 2
    experiments: tuple = ()
    emails: EmailSchedule = field(default_factory=EmailSchedule)
    alerts: Alerts = field(default_factory=Alerts)
    winback: Winback = field(default_factory=Winback)
    compliance: Compliance = field(default_factory=Compliance)

    def find(self, offer_id: str) -> Offer | None:
        return next((offer for offer in self.offers if offer.id == offer_id), None)
