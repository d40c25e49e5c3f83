"""The coach's offers file (`offers.toml`): brand, rules and offers, checked field by field at start-up."""

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cancel_flow.errors import SettingsError
from cancel_flow.emails.config import EmailSchedule, parse_emails
from cancel_flow.experiments import parse_experiments
from cancel_flow.hooks import Alerts, parse_alerts
from cancel_flow.targeting import Conditions, parse_conditions

REASONS = {
    "too_expensive": "It's too expensive",
    "missing_features": "Some features are missing",
    "switched_service": "I'm switching to a different service",
    "unused": "I don't use it enough",
    "customer_service": "Customer service was less than expected",
    "too_complex": "It's too complicated",
    "low_quality": "Quality was less than expected",
    "other": "Another reason",
}
_OFFER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class Brand:
    name: str = "Your coach"
    color: str = "#1f6feb"
    logo: Path | None = None
    support_email: str | None = None


# Each kind's own fields, besides the ones every offer has.
TERMS = {"discount": {"percent_off", "payments"}, "pause": {"max_payments"}, "switch": {"price"},
         "free_period": {"months"}, "contact": {"url"}}
KINDS = tuple(TERMS)
# Fields of earlier versions, refused with the name of what replaced them.
RENAMED = {"months": "payments", "max_months": "max_payments"}


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

    def fits(self, reason: str) -> bool:
        return not self.reasons or reason in self.reasons

    def coupon_id(self, months: int) -> str:
        """Stable per offer, terms and coupon length: editing the terms makes a new coupon instead of
        changing an old one, and each billing period gets the length that covers its payments."""
        percent = f"{self.percent_off:g}".replace(".", "_")
        return f"cancel-flow_{self.id}_{percent}pct_{months}m"


@dataclass(frozen=True)
class OfferBook:
    brand: Brand = field(default_factory=Brand)
    offers: tuple[Offer, ...] = ()
    offer_cooldown_days: int = 365
    max_offers: int = 2
    experiments: tuple = ()
    emails: EmailSchedule = field(default_factory=EmailSchedule)
    alerts: Alerts = field(default_factory=Alerts)

    def find(self, offer_id: str) -> Offer | None:
        return next((offer for offer in self.offers if offer.id == offer_id), None)


class _Checker:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, message: str):
        raise SettingsError(f"{self.path}: {where}: {message}")

    def table(self, data: dict, where: str, allowed: set[str]) -> None:
        unknown = sorted(set(data) - allowed)
        if unknown:
            self.fail(where, f"unknown field '{unknown[0]}' (allowed: {', '.join(sorted(allowed))})")

    def text(self, data: dict, key: str, where: str, required: bool = True) -> str | None:
        value = data.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(where, f"field '{key}' must be a non-empty string")
        return value.strip()

    def whole(self, data: dict, key: str, where: str, low: int, high: int) -> int:
        value = data.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.fail(where, f"field '{key}' must be a whole number from {low} to {high}")
        return value


def load_offers(path: Path) -> OfferBook:
    if not path.is_file():
        raise SettingsError(f"CANCEL_FLOW_OFFERS: offers file {path} not found (copy offers.toml from the cancel-flow repository)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise SettingsError(f"{path}: not valid TOML: {error}") from None
    check = _Checker(path)
    check.table(data, "top level", {"brand", "rules", "offer", "experiment", "emails", "alerts"})
    brand = _brand(data.get("brand", {}), check, path.parent)
    rules = data.get("rules", {})
    if not isinstance(rules, dict):
        check.fail("[rules]", "must be a table")
    check.table(rules, "[rules]", {"offer_cooldown_days", "max_offers"})
    cooldown = check.whole(rules, "offer_cooldown_days", "[rules]", 0, 3650) if "offer_cooldown_days" in rules else 365
    max_offers = check.whole(rules, "max_offers", "[rules]", 1, 10) if "max_offers" in rules else 2
    raw_offers = data.get("offer", [])
    if not isinstance(raw_offers, list):
        check.fail("[[offer]]", "offers are written as [[offer]] tables")
    offers, seen = [], set()
    for index, raw in enumerate(raw_offers, start=1):
        offer = _offer(raw, index, check)
        if offer.id in seen:
            check.fail(f"offer '{offer.id}'", "field 'id' is used by an earlier offer; ids must be unique")
        seen.add(offer.id)
        offers.append(offer)
    experiments = parse_experiments(data.get("experiment"), {o.id for o in offers}, check.fail, reasons=REASONS)
    for experiment in experiments:
        if experiment.when:
            parse_conditions(experiment.when, f"experiment '{experiment.id}' [experiment.when]", check.fail)
    return OfferBook(brand=brand, offers=tuple(offers), offer_cooldown_days=cooldown, max_offers=max_offers,
                     experiments=experiments, emails=parse_emails(data.get("emails", {}), check.fail),
                     alerts=parse_alerts(data.get("alerts"), check.fail))


def _brand(raw, check: _Checker, base: Path) -> Brand:
    if not isinstance(raw, dict):
        check.fail("[brand]", "must be a table")
    check.table(raw, "[brand]", {"name", "color", "logo", "support_email"})
    name = check.text(raw, "name", "[brand]")
    color = check.text(raw, "color", "[brand]", required=False) or Brand.color
    if not _COLOR.match(color):
        check.fail("[brand]", f"field 'color' must look like #1f6feb, not {color!r}")
    logo = check.text(raw, "logo", "[brand]", required=False)
    logo_path = None
    if logo:
        logo_path = (base / logo).resolve()
        if logo_path.suffix.lower() not in (".svg", ".png", ".jpg", ".jpeg", ".webp") or not logo_path.is_file():
            check.fail("[brand]", f"field 'logo' must name an existing .svg, .png, .jpg or .webp file ({logo_path} not found)")
    email = check.text(raw, "support_email", "[brand]", required=False)
    if email and "@" not in email:
        check.fail("[brand]", "field 'support_email' must be an email address")
    return Brand(name=name, color=color, logo=logo_path, support_email=email)


def _offer(raw, index: int, check: _Checker) -> Offer:
    where = f"offer #{index}"
    if not isinstance(raw, dict):
        check.fail(where, "must be a table")
    offer_id = raw.get("id")
    if not isinstance(offer_id, str) or not _OFFER_ID.match(offer_id):
        check.fail(where, "field 'id' must be 1-40 lowercase letters, digits, '-' or '_'")
    where = f"offer '{offer_id}'"
    kind = raw.get("kind")
    for old, new in RENAMED.items():
        if old in raw and not (kind == "free_period" and old == "months"):
            check.fail(where, f"field '{old}' is no longer used: offers are written in payments, use '{new}' "
                              f"(the number of payments, whatever the billing period)")
    if not isinstance(kind, str) or kind not in TERMS:
        check.fail(where, f"field 'kind' must be one of: {', '.join(KINDS)}")
    check.table(raw, where, {"id", "kind", "title", "reasons", "description", "when"} | TERMS[kind])
    if kind == "discount":
        percent = raw.get("percent_off")
        if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 < percent <= 100:
            check.fail(where, "field 'percent_off' must be a number above 0 and at most 100")
        extra = {"percent_off": float(percent), "payments": check.whole(raw, "payments", where, 1, 36)}
    elif kind == "pause":
        extra = {"max_payments": check.whole(raw, "max_payments", where, 1, 12)}
    elif kind == "switch":
        price = check.text(raw, "price", where)
        if not price.startswith("price_"):
            check.fail(where, f"field 'price' must be a Stripe price id (price_…), not {price!r}")
        extra = {"price": price}
    elif kind == "free_period":
        extra = {"months": check.whole(raw, "months", where, 1, 12)}
    else:  # contact
        url = check.text(raw, "url", where)
        if not re.match(r"^(https://[^\s/]+\S*|mailto:[^\s@]+@[^\s@]+)$", url):
            check.fail(where, f"field 'url' must be an https:// booking page or a mailto: address, not {url!r}")
        extra = {"url": url}
    reasons = raw.get("reasons", [])
    if not isinstance(reasons, list) or any(r not in REASONS for r in reasons):
        check.fail(where, f"field 'reasons' must list reasons from: {', '.join(REASONS)}")
    when = parse_conditions(raw.get("when", {}), f"{where} [offer.when]", check.fail)
    return Offer(id=offer_id, kind=kind, title=check.text(raw, "title", where), reasons=tuple(reasons),
                 description=check.text(raw, "description", where, required=False), when=when, **extra)
