"""The one validator of the configuration: the offers file, the settings pages and `PUT /api/config`
all come through `validate`, so a mistake gets the same message, naming the same field, everywhere.

A refusal is an InvalidConfig with a dotted `field` ("brand.color", "offer.pause.max_payments",
"experiment.trial.arms.holdout.weight") and a message in words ("offer 'pause': field 'max_payments'
must be a whole number from 1 to 12")."""

import colorsys
import re
from datetime import date
from pathlib import Path
from typing import Callable, NoReturn

from cancel_flow.config.schema import (DEFAULT_ALERT_EVENTS, KINDS, REFUND_MODES, RENAMED, SECTIONS, TERMS, Alerts,
                                       Brand, Compliance, Configuration, EmailSchedule, Offer, Winback, WinbackStep)
from cancel_flow.errors import InvalidConfig
from cancel_flow.experiments import parse_experiments
from cancel_flow.hooks import EVENTS, url_problem
from cancel_flow.i18n import DEFAULT, LANGUAGES
from cancel_flow.reasons import REASONS
from cancel_flow.targeting import parse_conditions

_OFFER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
UPLOAD_PREFIX = "upload:"  # `[brand] logo = "upload:<sha256>"`: a logo uploaded on the settings page
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
EMAIL_INTERVALS = ("day", "week", "month", "year")
EMAIL_FIELDS = ("failed_payment_days", "renewal_reminder_days_before", "renewal_reminder_intervals",
                "discount_ending_days_before", "confirmations")
# WCAG 2.1 AA for normal text: buttons carry white text on the brand colour.
AA_CONTRAST = 4.5

# "where" as the messages write it → the dotted field path of that place
_PLACES = (
    (re.compile(r"^top level$"), ""),
    (re.compile(r"^\[\[?(\w+)\]\]?$"), r"\1"),
    (re.compile(r"^offer #(\d+)$"), r"offer.\1"),
    (re.compile(r"^offer '([^']+)' \[offer\.when\]$"), r"offer.\1.when"),
    (re.compile(r"^offer '([^']+)' \[offer\.text\.(\w+)\]$"), r"offer.\1.text.\2"),
    (re.compile(r"^offer '([^']+)'$"), r"offer.\1"),
    (re.compile(r"^experiment #(\d+)$"), r"experiment.\1"),
    (re.compile(r"^experiment '([^']+)' \[experiment\.when\]$"), r"experiment.\1.when"),
    (re.compile(r"^experiment '([^']+)' arm #(\d+)$"), r"experiment.\1.arms.\2"),
    (re.compile(r"^experiment '([^']+)' arm '([^']+)'$"), r"experiment.\1.arms.\2"),
    (re.compile(r"^experiment '([^']+)'$"), r"experiment.\1"),
    (re.compile(r"^winback step #(\d+)$"), r"winback.step.\1"),
)
_NAMED = re.compile(r"^(?:unknown )?(?:field|condition) '(\w+)'")


def field_path(where: str, message: str) -> str:
    """The dotted field a message is about: its place, then the field or condition the message names."""
    place = where
    for pattern, replacement in _PLACES:
        if pattern.match(where):
            place = pattern.sub(replacement, where)
            break
    named = _NAMED.match(message)
    if named:
        place = f"{place}.{named.group(1)}" if place else named.group(1)
    return place


def fail(where: str, message: str) -> NoReturn:
    raise InvalidConfig(field_path(where, message), f"{where}: {message}")


def _table(data: dict, where: str, allowed) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        fail(where, f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")


def _text(data: dict, key: str, where: str, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        fail(where, f"field '{key}' must be a non-empty string")
    return value.strip()


def _whole(data: dict, key: str, where: str, low: int, high: int, extra: str = "") -> int:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(where, f"field '{key}' must be a whole number from {low} to {high}{extra}")
    return value


def _section(data: dict, name: str) -> dict:
    raw = data.get(name, {})
    if not isinstance(raw, dict):
        fail(f"[{name}]", "must be a table")
    return raw


def validate(data, base: Path | None = None, check_files: bool = True,
             logos: Callable[[str], bool] | None = None) -> Configuration:
    """A configuration document (the TOML file's tables, or the same as JSON) checked field by field.

    `base` is the folder a relative `[brand] logo` path is read from (the offers file's folder). A save
    checks that the file is there (`check_files`); loading a saved version on another machine takes a
    missing logo file as no logo, so a file left behind on one replica never takes the pages down.
    `logos(sha256)` says whether an uploaded logo (`logo = "upload:<sha256>"`) is in the database: a save
    naming one that isn't is refused; loading a version takes it as no logo."""
    if not isinstance(data, dict):
        fail("top level", "must be a table of sections")
    _table(data, "top level", SECTIONS)
    brand = validate_brand(_section(data, "brand"), base or Path.cwd(), check_files, logos)
    rules = _section(data, "rules")
    _table(rules, "[rules]", {"offer_cooldown_days", "max_offers"})
    cooldown = _whole(rules, "offer_cooldown_days", "[rules]", 0, 3650) if "offer_cooldown_days" in rules else 365
    max_offers = _whole(rules, "max_offers", "[rules]", 1, 10) if "max_offers" in rules else 2
    raw_offers = data.get("offer", [])
    if not isinstance(raw_offers, list):
        fail("[[offer]]", "offers are written as [[offer]] tables")
    offers, seen = [], set()
    for index, raw in enumerate(raw_offers, start=1):
        offer = validate_offer(raw, index)
        if offer.id in seen:
            fail(f"offer '{offer.id}'", "field 'id' is used by an earlier offer; ids must be unique")
        seen.add(offer.id)
        offers.append(offer)
    experiments = parse_experiments(data.get("experiment"), seen, fail, reasons=REASONS)
    for experiment in experiments:
        if experiment.when:
            parse_conditions(experiment.when, f"experiment '{experiment.id}' [experiment.when]", fail)
    return Configuration(brand=brand, offers=tuple(offers), offer_cooldown_days=cooldown, max_offers=max_offers,
                         experiments=experiments, emails=validate_emails(data.get("emails")),
                         alerts=validate_alerts(data.get("alerts")),
                         winback=validate_winback(data.get("winback"), {offer.id: offer for offer in offers}),
                         compliance=validate_compliance(data.get("compliance")))


# brand -------------------------------------------------------------------------------------------

def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4


def contrast_with_white(color: str) -> float:
    """WCAG 2.1 contrast ratio of white text on `color` (#rrggbb)."""
    r, g, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    luminance = 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)
    return 1.05 / (luminance + 0.05)


def nearest_passing_color(color: str) -> str:
    """The same hue and saturation, darkened just enough for white text to pass AA."""
    r, g, b = (int(color[i:i + 2], 16) / 255 for i in (1, 3, 5))
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    for step in range(0, 1001):
        candidate = colorsys.hls_to_rgb(hue, max(0.0, lightness - step / 1000), saturation)
        text = "#" + "".join(f"{round(channel * 255):02x}" for channel in candidate)
        if contrast_with_white(text) >= AA_CONTRAST:
            return text
    return "#000000"


def color_problem(color) -> str | None:
    """Why `color` can't be the brand colour (its form, or white text on it failing AA); None when it can."""
    if not isinstance(color, str) or not _COLOR.match(color.strip()):
        return f"field 'color' must look like #1f6feb, not {color!r}"
    color = color.strip()
    ratio = contrast_with_white(color)
    if ratio < AA_CONTRAST:
        return (f"field 'color' {color} is too light for the white text on buttons: contrast {ratio:.2f}:1, "
                f"at least {AA_CONTRAST}:1 is needed (WCAG AA); the nearest colour that passes is "
                f"{nearest_passing_color(color)}")
    return None


def validate_brand(raw: dict, base: Path, check_files: bool = True,
                   logos: Callable[[str], bool] | None = None) -> Brand:
    _table(raw, "[brand]", {"name", "color", "logo", "support_email", "default_locale"})
    name = _text(raw, "name", "[brand]")
    color = raw.get("color", Brand.color)
    problem = color_problem(color)
    if problem:
        fail("[brand]", problem)
    logo = _text(raw, "logo", "[brand]", required=False)
    logo_path = upload = None
    if logo and logo.startswith(UPLOAD_PREFIX):
        upload = logo.removeprefix(UPLOAD_PREFIX)
        if not _SHA256.match(upload):
            fail("[brand]", f"field 'logo' names an uploaded logo as upload:<sha256>, 64 hexadecimal digits, not {logo!r}")
        if logos is None or not logos(upload):
            if check_files:
                fail("[brand]", "field 'logo' names an uploaded logo that is not in the database: upload it again "
                                "on the brand settings page")
            if logos is not None:
                upload = None
    elif logo:
        logo_path = (base / logo).resolve()
        if logo_path.suffix.lower() not in (".svg", ".png", ".jpg", ".jpeg", ".webp"):
            fail("[brand]", f"field 'logo' must name an existing .svg, .png, .jpg or .webp file, not {logo!r}")
        if not logo_path.is_file():
            if check_files:
                fail("[brand]", f"field 'logo' must name an existing .svg, .png, .jpg or .webp file ({logo_path} not found)")
            logo_path = None
    email = _text(raw, "support_email", "[brand]", required=False)
    if email and (not _EMAIL.match(email) or len(email) > 320):
        fail("[brand]", "field 'support_email' must be an email address")
    locale = raw.get("default_locale", DEFAULT)
    if locale not in LANGUAGES:
        fail("[brand]", f"field 'default_locale' must be one of the languages shipped: {', '.join(LANGUAGES)} "
                        f"(not {locale!r})")
    return Brand(name=name, color=color.strip(), logo=logo_path, support_email=email, logo_upload=upload,
                 default_locale=locale)


# offers ------------------------------------------------------------------------------------------

def validate_offer(raw, index: int = 1) -> Offer:
    """One `[[offer]]` table (the `index`-th, for messages before its id is known)."""
    where = f"offer #{index}"
    if not isinstance(raw, dict):
        fail(where, "must be a table")
    offer_id = raw.get("id")
    if not isinstance(offer_id, str) or not _OFFER_ID.match(offer_id):
        fail(where, "field 'id' must be 1-40 lowercase letters, digits, '-' or '_'")
    where = f"offer '{offer_id}'"
    kind = raw.get("kind")
    for old, new in RENAMED.items():
        if old in raw and not (kind == "free_period" and old == "months"):
            fail(where, f"field '{old}' is no longer used: offers are written in payments, use '{new}' "
                        f"(the number of payments, whatever the billing period)")
    if not isinstance(kind, str) or kind not in TERMS:
        fail(where, f"field 'kind' must be one of: {', '.join(KINDS)}")
    _table(raw, where, {"id", "kind", "title", "reasons", "description", "when", "enabled", "comeback_only", "text"} | TERMS[kind])
    comeback_only = raw.get("comeback_only", False)
    if not isinstance(comeback_only, bool):
        fail(where, "field 'comeback_only' must be true or false")
    if comeback_only and kind != "discount":
        fail(where, "field 'comeback_only' is for discount offers: win-back steps offer discounts")
    if kind == "discount":
        percent = raw.get("percent_off")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            fail(where, "field 'percent_off' must be a number above 0 and at most 100")
        extra = {"percent_off": float(percent), "payments": _whole(raw, "payments", where, 1, 36)}
    elif kind == "pause":
        extra = {"max_payments": _whole(raw, "max_payments", where, 1, 12)}
    elif kind == "switch":
        price = _text(raw, "price", where)
        if not price.startswith("price_"):
            fail(where, f"field 'price' must be a Stripe price id (price_…), not {price!r}")
        extra = {"price": price}
    elif kind == "free_period":
        extra = {"months": _whole(raw, "months", where, 1, 12)}
    else:  # contact
        url = _text(raw, "url", where)
        if not re.match(r"^(https://[^\s/]+\S*|mailto:[^\s@]+@[^\s@]+)$", url):
            fail(where, f"field 'url' must be an https:// booking page or a mailto: address, not {url!r}")
        extra = {"url": url}
    reasons = raw.get("reasons", [])
    if not isinstance(reasons, list) or any(r not in REASONS for r in reasons):
        fail(where, f"field 'reasons' must list reasons from: {', '.join(REASONS)}")
    when = parse_conditions(raw.get("when", {}), f"{where} [offer.when]", fail)
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        fail(where, "field 'enabled' must be true or false (false turns the offer off without deleting it)")
    return Offer(id=offer_id, kind=kind, title=_text(raw, "title", where), reasons=tuple(reasons),
                 description=_text(raw, "description", where, required=False), when=when, enabled=enabled,
                 comeback_only=comeback_only, texts=_offer_texts(raw.get("text"), where), **extra)


def _offer_texts(raw, where: str) -> tuple[tuple[str, str | None, str | None], ...]:
    """`[offer.text.<language>]` tables: a title and a description per shipped language, each optional."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        fail(where, f"field 'text' must be a table of languages ([offer.text.es]), from: {', '.join(LANGUAGES)}")
    texts = []
    for language, table in raw.items():
        if language not in LANGUAGES:
            fail(where, f"field 'text' names the language {language!r}, which is not shipped; the languages are: "
                        f"{', '.join(LANGUAGES)}")
        place = f"{where} [offer.text.{language}]"
        if not isinstance(table, dict):
            fail(where, f"field 'text' must hold a table per language, such as [offer.text.{language}] with title "
                        "and description")
        unknown = sorted(set(table) - {"title", "description"})
        if unknown:
            fail(where, f"field 'text' [offer.text.{language}] takes only title and description, not '{unknown[0]}'")
        title = _text(table, "title", place, required=False)
        description = _text(table, "description", place, required=False)
        texts.append((language, title, description))
    return tuple(texts)


# emails and alerts -------------------------------------------------------------------------------

def validate_emails(raw) -> EmailSchedule:
    if raw is None:
        return EmailSchedule()
    if not isinstance(raw, dict):
        fail("[emails]", "must be a table")
    _table(raw, "[emails]", EMAIL_FIELDS)
    values = {}
    off = " (0 turns it off)"
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
        values["renewal_reminder_days_before"] = _whole(raw, "renewal_reminder_days_before", "[emails]", 0, 365, off)
    if "renewal_reminder_intervals" in raw:
        intervals = raw["renewal_reminder_intervals"]
        if not isinstance(intervals, list) or any(i not in EMAIL_INTERVALS for i in intervals):
            fail("[emails]", f"field 'renewal_reminder_intervals' must list billing periods from: {', '.join(EMAIL_INTERVALS)}")
        values["renewal_reminder_intervals"] = tuple(dict.fromkeys(intervals))
    if "discount_ending_days_before" in raw:
        values["discount_ending_days_before"] = _whole(raw, "discount_ending_days_before", "[emails]", 0, 60, off)
    if "confirmations" in raw:
        if not isinstance(raw["confirmations"], bool):
            fail("[emails]", "field 'confirmations' must be true or false")
        values["confirmations"] = raw["confirmations"]
    return EmailSchedule(**values)


def validate_alerts(raw) -> Alerts:
    where = "[alerts]"
    if raw is None:
        return Alerts()
    if not isinstance(raw, dict):
        fail(where, "must be a table")
    _table(raw, where, {"slack_webhook_url", "email", "events"})
    slack = raw.get("slack_webhook_url")
    if slack is not None:
        problem = url_problem(slack)
        if problem:
            fail(where, f"field 'slack_webhook_url': {problem}")
    email = raw.get("email")
    if email is not None and (not isinstance(email, str) or not _EMAIL.match(email.strip()) or len(email) > 320):
        fail(where, "field 'email' must be an email address")
    events = raw.get("events", list(DEFAULT_ALERT_EVENTS))
    if not isinstance(events, list) or any(event not in EVENTS for event in events):
        fail(where, f"field 'events' must list events from: {', '.join(EVENTS)}")
    return Alerts(slack_webhook_url=slack or None, email=email.strip() if email else None, events=tuple(events))


# win-back ----------------------------------------------------------------------------------------

WINBACK_MAX_DAYS = 730
MAX_WINBACK_STEPS = 20


def validate_winback(raw, offers: dict[str, Offer]) -> Winback:
    """`[winback]`: `changed_mind_days_before` (0 turns the email off) and the `[[winback.step]]` list, whose
    `offer` must name a discount offer of this configuration."""
    if raw is None:
        return Winback()
    if not isinstance(raw, dict):
        fail("[winback]", "must be a table")
    _table(raw, "[winback]", {"changed_mind_days_before", "step"})
    days_before = Winback.changed_mind_days_before
    if "changed_mind_days_before" in raw:
        days_before = _whole(raw, "changed_mind_days_before", "[winback]", 0, 60, " (0 turns it off)")
    raw_steps = raw.get("step", [])
    if not isinstance(raw_steps, list):
        fail("[winback]", "field 'step' must be a list of [[winback.step]] tables")
    if len(raw_steps) > MAX_WINBACK_STEPS:
        fail("[winback]", f"field 'step' can list at most {MAX_WINBACK_STEPS} steps")
    steps = []
    for number, step in enumerate(raw_steps, start=1):
        where = f"winback step #{number}"
        if not isinstance(step, dict):
            fail(where, "must be a table")
        _table(step, where, {"reasons", "days_after", "offer"})
        days_after = _whole(step, "days_after", where, 1, WINBACK_MAX_DAYS, " after the subscription ended")
        reasons = step.get("reasons", [])
        if not isinstance(reasons, list) or any(r not in REASONS for r in reasons):
            fail(where, f"field 'reasons' must list reasons from: {', '.join(REASONS)} (empty: every reason)")
        offer_id = step.get("offer")
        if offer_id is not None:
            if not isinstance(offer_id, str) or offer_id not in offers:
                fail(where, f"field 'offer' must be the id of an [[offer]] of kind discount, not {offer_id!r}")
            if offers[offer_id].kind != "discount":
                fail(where, f"field 'offer' must name a discount offer; '{offer_id}' is a {offers[offer_id].kind}")
        steps.append(WinbackStep(number=number, days_after=days_after, reasons=tuple(dict.fromkeys(reasons)),
                                 offer=offer_id))
    return Winback(changed_mind_days_before=days_before, steps=tuple(steps))


# compliance --------------------------------------------------------------------------------------

# The EU withdrawal period is 14 days (Directive 2011/83/EU, Art. 9); a coach may give more, never less.
LEAST_WITHDRAWAL_DAYS = 14
COMPLIANCE_FIELDS = ("withdrawal_days", "withdrawal_refund", "cancel_button", "records_keep_days")


def validate_compliance(raw) -> Compliance:
    """`[compliance]`: every field optional; an absent `cancel_button` stays "not set" (None)."""
    where = "[compliance]"
    if raw is None:
        return Compliance()
    if not isinstance(raw, dict):
        fail(where, "must be a table")
    _table(raw, where, COMPLIANCE_FIELDS)
    values = {}
    if "withdrawal_days" in raw:
        days = raw["withdrawal_days"]
        if isinstance(days, bool) or not isinstance(days, int) or not (days == 0 or LEAST_WITHDRAWAL_DAYS <= days <= 365):
            fail(where, f"field 'withdrawal_days' must be 0 (turns the withdrawal function off) or a whole number of "
                        f"days from {LEAST_WITHDRAWAL_DAYS} (the period EU law gives) to 365")
        values["withdrawal_days"] = days
    if "withdrawal_refund" in raw:
        if raw["withdrawal_refund"] not in REFUND_MODES:
            fail(where, f"field 'withdrawal_refund' must be one of: {', '.join(REFUND_MODES)}")
        values["withdrawal_refund"] = raw["withdrawal_refund"]
    if "cancel_button" in raw:
        if not isinstance(raw["cancel_button"], bool):
            fail(where, "field 'cancel_button' must be true or false (leave it out: on when your Stripe account is in Germany)")
        values["cancel_button"] = raw["cancel_button"]
    if "records_keep_days" in raw:
        values["records_keep_days"] = _whole(raw, "records_keep_days", where, 30, 3650)
    return Compliance(**values)


def plain(data):
    """The document with TOML's dates as ISO strings: what the database and the JSON API hold."""
    if isinstance(data, dict):
        return {key: plain(value) for key, value in data.items()}
    if isinstance(data, list):
        return [plain(value) for value in data]
    if isinstance(data, date):
        return data.isoformat()
    return data
