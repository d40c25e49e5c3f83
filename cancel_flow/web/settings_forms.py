"""The settings pages' forms and the configuration document, both ways: a section of the live document as
the form's text values, and a posted form applied to a copy of the live document. No I/O.

The forms never judge what they are given: text that should be a number but isn't is passed on as text,
so the one validator (cancel_flow/config/validate.py) refuses it with the message every other way of
saving gets. `input_for` turns the validator's dotted field back into the input that shows the message."""

import copy
import re
from datetime import date

from cancel_flow.config.schema import DEFAULT_ALERT_EVENTS, TERMS
from cancel_flow.config.validate import EMAIL_INTERVALS, MAX_WINBACK_STEPS
from cancel_flow.hooks import EVENTS
from cancel_flow.i18n import DEFAULT, LANGUAGES
from cancel_flow.reasons import REASONS
from cancel_flow.targeting import INTERVALS

WHEN_LISTS = ("prices", "products", "currency", "country")
WHEN_NUMBERS = ("tenure_days_min", "tenure_days_max", "monthly_amount_min", "monthly_amount_max")
TEXT_TERMS = ("price", "url")
ARMS = 4  # arm rows on the new-experiment form
_WHOLE = re.compile(r"^[+-]?\d{1,12}$")
_DECIMAL = re.compile(r"^[+-]?\d{0,12}\.\d{1,6}$")


def number(text: str):
    """A typed number as a number; anything else stays text for the validator to refuse in its words."""
    text = text.strip()
    if _WHOLE.match(text):
        return int(text)
    if _DECIMAL.match(text):
        return float(text)
    return text


def shown(value) -> str:
    """A number or text as a form field shows it (50.0 → "50")."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def words(text: str) -> list[str]:
    """A list typed as words separated by commas or spaces."""
    return [word for word in re.split(r"[,\s]+", text.strip()) if word]


def field_text(fields: dict, name: str) -> str:
    value = fields.get(name, "")
    return value.strip() if isinstance(value, str) else ""


def _checked(fields: dict, name: str) -> bool:
    return bool(field_text(fields, name))


def new_document(live: dict) -> dict:
    """A copy of the live document to apply a form to (the live one is never changed in place)."""
    return copy.deepcopy(live)


def field_tail(field: str, section: str, key: str | None = None) -> str | None:
    """The part of a validator field after `section` (and the item `key`, for offers and experiments),
    or None when the field is about something else."""
    parts = field.split(".")
    if parts[0] != section:
        return None
    if key is None:
        return ".".join(parts[1:]) or None
    if len(parts) < 3 or parts[1] != key:
        return None
    return ".".join(parts[2:])


# brand -------------------------------------------------------------------------------------------

BRAND_FIELDS = ("name", "color", "support_email", "default_locale")


def brand_values(document: dict) -> dict:
    brand = document.get("brand") or {}
    values = {name: shown(brand.get(name)) for name in BRAND_FIELDS}
    values["default_locale"] = values["default_locale"] or DEFAULT
    return values


def apply_brand(document: dict, fields: dict) -> dict:
    brand = dict(document.get("brand") or {})
    for name in BRAND_FIELDS:
        value = field_text(fields, name)
        if name == "color" and field_text(fields, "use_color"):
            value = field_text(fields, "use_color")  # "Use this colour" on the contrast message
        if name == "default_locale" and value == DEFAULT and name not in brand:
            continue  # the default, as it was: the document stays as written
        if value:
            brand[name] = value
        else:
            brand.pop(name, None)
    document["brand"] = brand
    return document


def set_logo(document: dict, logo: str | None) -> dict:
    brand = dict(document.get("brand") or {})
    if logo:
        brand["logo"] = logo
    else:
        brand.pop("logo", None)
    document["brand"] = brand
    return document


# rules -------------------------------------------------------------------------------------------

RULE_FIELDS = ("max_offers", "offer_cooldown_days")


def rules_values(document: dict) -> dict:
    rules = document.get("rules") or {}
    return {"max_offers": shown(rules.get("max_offers", 2)),
            "offer_cooldown_days": shown(rules.get("offer_cooldown_days", 365))}


def apply_rules(document: dict, fields: dict) -> dict:
    rules = dict(document.get("rules") or {})
    for name in RULE_FIELDS:
        value = field_text(fields, name)
        if value:
            rules[name] = number(value)
        else:
            rules.pop(name, None)
    document["rules"] = rules
    return document


# offers ------------------------------------------------------------------------------------------

def offers_of(document: dict) -> list[dict]:
    offers = document.get("offer")
    return [dict(offer) for offer in offers if isinstance(offer, dict)] if isinstance(offers, list) else []


def find_offer(document: dict, offer_id: str) -> tuple[int, dict] | None:
    for index, offer in enumerate(offers_of(document)):
        if offer.get("id") == offer_id:
            return index, offer
    return None


def offer_values(offer: dict) -> dict:
    """An `[[offer]]` table as its form's fields."""
    values = {"id": shown(offer.get("id")), "kind": shown(offer.get("kind")), "title": shown(offer.get("title")),
              "description": shown(offer.get("description")), "enabled": "on" if offer.get("enabled", True) else "",
              "comeback_only": "on" if offer.get("comeback_only") is True else ""}
    for terms in TERMS.values():
        for term in terms:
            values[term] = shown(offer.get(term))
    for reason in offer.get("reasons") or ():
        values[f"reason_{reason}"] = "on"
    when = offer.get("when") if isinstance(offer.get("when"), dict) else {}
    for interval in when.get("interval") or ():
        values[f"when_interval_{interval}"] = "on"
    for name in WHEN_LISTS:
        items = when.get(name)
        values[f"when_{name}"] = ", ".join(items) if isinstance(items, list) else shown(items)
    for name in WHEN_NUMBERS:
        values[f"when_{name}"] = shown(when.get(name))
    metadata = when.get("metadata")
    values["when_metadata"] = "\n".join(f"{k} = {v}" for k, v in metadata.items()) if isinstance(metadata, dict) else ""
    texts = offer.get("text") if isinstance(offer.get("text"), dict) else {}
    for language, table in texts.items():
        if isinstance(table, dict):
            for part in TEXT_PARTS:
                values[f"text_{language}_{part}"] = shown(table.get(part))
    return values


TEXT_PARTS = ("title", "description")


def _texts(fields: dict, original: dict | None) -> dict:
    """`[offer.text.<language>]` from the form's translation fields; a language the form didn't show keeps
    what it had."""
    texts = dict((original or {}).get("text") or {}) if isinstance((original or {}).get("text"), dict) else {}
    for language in LANGUAGES:
        if not any(f"text_{language}_{part}" in fields for part in TEXT_PARTS):
            continue
        table = {part: field_text(fields, f"text_{language}_{part}") for part in TEXT_PARTS}
        table = {part: value for part, value in table.items() if value}
        if table:
            texts[language] = table
        else:
            texts.pop(language, None)
    return texts


def _metadata(text: str):
    pairs = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        key, sign, value = line.partition("=")
        if not sign:
            key, sign, value = line.partition(":")
        if not sign or not key.strip():
            return text  # not key = value: the validator says what it takes
        pairs[key.strip()] = value.strip().strip('"')
    return pairs


OFFER_FORM_KEYS = {"id", "kind", "title", "description", "reasons", "when", "enabled", "text"} | {
    term for terms in TERMS.values() for term in terms}


def offer_from_form(fields: dict, offer_id: str, kind: str, original: dict | None = None) -> dict:
    """The `[[offer]]` table a posted offer form describes (fields it doesn't show are kept from `original`)."""
    offer = {"id": offer_id, "kind": kind}
    for name in ("title", "description"):
        if field_text(fields, name):
            offer[name] = field_text(fields, name)
    for term in sorted(TERMS.get(kind, ())):
        value = field_text(fields, term)
        if value:
            offer[term] = value if term in TEXT_TERMS else number(value)
    reasons = [reason for reason in REASONS if _checked(fields, f"reason_{reason}")]
    if reasons:
        offer["reasons"] = reasons
    when = {}
    intervals = [interval for interval in INTERVALS if _checked(fields, f"when_interval_{interval}")]
    if intervals:
        when["interval"] = intervals
    for name in WHEN_LISTS:
        items = words(field_text(fields, f"when_{name}"))
        if items:
            when[name] = items
    for name in WHEN_NUMBERS:
        value = field_text(fields, f"when_{name}")
        if value:
            when[name] = number(value)
    metadata = fields.get("when_metadata", "")
    if isinstance(metadata, str) and metadata.strip():
        when["metadata"] = _metadata(metadata)
    if when:
        offer["when"] = when
    if not _checked(fields, "enabled"):
        offer["enabled"] = False
    texts = _texts(fields, original)
    if texts:
        offer["text"] = texts
    for key, value in (original or {}).items():
        if key not in OFFER_FORM_KEYS:
            offer[key] = value
    if kind == "discount":  # only discounts can be kept for comeback emails; other kinds keep what they had
        if _checked(fields, "comeback_only"):
            offer["comeback_only"] = True
        elif "comeback_only" in offer:
            offer["comeback_only"] = False
    return offer


def offer_input(field: str, offer_id: str, position: int) -> str | None:
    """The offer form's input a validator field names (`position`: the offer's place, 1 first), or None."""
    tail = field_tail(field, "offer", offer_id) or field_tail(field, "offer", str(position))
    if tail is None:
        return None
    parts = tail.split(".")
    if parts[0] == "when":
        if len(parts) == 1:
            return "when"
        return "when_interval" if parts[1] == "interval" else f"when_{parts[1]}"
    if parts[0] == "text" and len(parts) == 3 and parts[1] in LANGUAGES and parts[2] in TEXT_PARTS:
        return f"text_{parts[1]}_{parts[2]}"
    return parts[0]


def copy_id(offer_id: str, taken: set[str]) -> str:
    """An id for a copy of `offer_id` that no offer uses (ids are at most 40 characters)."""
    for number_ in range(1, 1000):
        suffix = "-copy" if number_ == 1 else f"-copy{number_}"
        candidate = offer_id[:40 - len(suffix)] + suffix
        if candidate not in taken:
            return candidate
    raise ValueError("no free id")


# experiments -------------------------------------------------------------------------------------

def experiments_of(document: dict) -> list[dict]:
    experiments = document.get("experiment")
    return [dict(e) for e in experiments if isinstance(e, dict)] if isinstance(experiments, list) else []


def experiment_from_form(fields: dict, offer_ids: list[str], today: date) -> dict:
    experiment = {"id": field_text(fields, "id"), "start": field_text(fields, "start") or today.isoformat(),
                  "optimise": field_text(fields, "optimise") or "revenue"}
    reasons = [reason for reason in REASONS if _checked(fields, f"reason_{reason}")]
    if reasons:
        experiment["reasons"] = reasons
    arms = []
    for n in range(1, ARMS + 1):
        name = field_text(fields, f"arm{n}_name")
        offers = [offer_id for offer_id in offer_ids if _checked(fields, f"arm{n}_offer_{offer_id}")]
        weight = field_text(fields, f"arm{n}_weight")
        if not name and not offers:
            continue
        arm = {"name": name, "offers": offers}
        if weight:
            arm["weight"] = number(weight)
        arms.append(arm)
    experiment["arms"] = arms
    return experiment


def experiment_input(field: str, experiment: dict, position: int, rows: list[int]) -> str | None:
    """The new-experiment form's input a validator field names, or None. `rows`: the form rows that made
    the arms, in order (`arm_rows`)."""
    tail = field_tail(field, "experiment", experiment.get("id") or "") or field_tail(field, "experiment", str(position))
    if tail is None:
        return None
    parts = tail.split(".")
    if parts[0] != "arms":
        return parts[0]
    names = [arm.get("name") for arm in experiment.get("arms", [])]
    if len(parts) < 2:
        return "arms"
    index = names.index(parts[1]) if parts[1] in names else (int(parts[1]) - 1 if parts[1].isdigit() else -1)
    if not 0 <= index < len(rows):
        return "arms"
    return f"arm{rows[index]}_{parts[2] if len(parts) > 2 else 'name'}"


def arm_rows(fields: dict, offer_ids: list[str]) -> list[int]:
    """The form rows that made an arm, in order (blank rows are skipped)."""
    return [n for n in range(1, ARMS + 1)
            if field_text(fields, f"arm{n}_name") or any(_checked(fields, f"arm{n}_offer_{o}") for o in offer_ids)]


# emails ------------------------------------------------------------------------------------------

EMAIL_DEFAULTS = {"failed_payment_days": [0, 3, 7], "renewal_reminder_days_before": 30,
                  "renewal_reminder_intervals": ["year"], "discount_ending_days_before": 7, "confirmations": True}


def emails_values(document: dict) -> dict:
    emails = {**EMAIL_DEFAULTS, **(document.get("emails") or {})}
    days = emails["failed_payment_days"]
    values = {
        "send_payment_failed": "on" if days else "",
        "failed_payment_days": ", ".join(str(d) for d in (days or EMAIL_DEFAULTS["failed_payment_days"]))
        if isinstance(days, list) else shown(days),
        "send_renewal_reminder": "on" if emails["renewal_reminder_days_before"] else "",
        "renewal_reminder_days_before": shown(emails["renewal_reminder_days_before"] or 30),
        "send_discount_ending": "on" if emails["discount_ending_days_before"] else "",
        "discount_ending_days_before": shown(emails["discount_ending_days_before"] or 7),
        "confirmations": "on" if emails["confirmations"] else "",
    }
    for interval in emails["renewal_reminder_intervals"] or ():
        values[f"renewal_reminder_intervals_{interval}"] = "on"
    return values


def apply_emails(document: dict, fields: dict) -> dict:
    emails = dict(document.get("emails") or {})
    if _checked(fields, "send_payment_failed"):
        emails["failed_payment_days"] = [number(day) for day in words(field_text(fields, "failed_payment_days"))]
    else:
        emails["failed_payment_days"] = []
    if _checked(fields, "send_renewal_reminder"):
        emails["renewal_reminder_days_before"] = number(field_text(fields, "renewal_reminder_days_before") or "x")
    else:
        emails["renewal_reminder_days_before"] = 0
    emails["renewal_reminder_intervals"] = [i for i in EMAIL_INTERVALS
                                            if _checked(fields, f"renewal_reminder_intervals_{i}")]
    if _checked(fields, "send_discount_ending"):
        emails["discount_ending_days_before"] = number(field_text(fields, "discount_ending_days_before") or "x")
    else:
        emails["discount_ending_days_before"] = 0
    emails["confirmations"] = _checked(fields, "confirmations")
    document["emails"] = emails
    return document


# alerts ------------------------------------------------------------------------------------------

def alerts_values(document: dict) -> dict:
    alerts = document.get("alerts") or {}
    values = {"slack_webhook_url": shown(alerts.get("slack_webhook_url")), "email": shown(alerts.get("email"))}
    for event in alerts.get("events", list(DEFAULT_ALERT_EVENTS)) or ():
        values[f"event_{event}"] = "on"
    return values


def apply_alerts(document: dict, fields: dict) -> dict:
    alerts = dict(document.get("alerts") or {})
    for name in ("slack_webhook_url", "email"):
        if field_text(fields, name):
            alerts[name] = field_text(fields, name)
        else:
            alerts.pop(name, None)
    alerts["events"] = [event for event in EVENTS if _checked(fields, f"event_{event}")]
    document["alerts"] = alerts
    return document


# win-back ----------------------------------------------------------------------------------------

# Step rows on the win-back form: every step there can be, and the blank row that adds one.
STEP_ROWS = MAX_WINBACK_STEPS + 1


def _winback(document: dict) -> dict:
    winback = document.get("winback")
    return winback if isinstance(winback, dict) else {}


def winback_steps(document: dict) -> list[dict]:
    steps = _winback(document).get("step")
    return [dict(step) for step in steps if isinstance(step, dict)] if isinstance(steps, list) else []


def winback_values(document: dict) -> dict:
    """`[winback]` as its form's fields: one row per `[[winback.step]]`, numbered as the steps are (from 1)."""
    days = _winback(document).get("changed_mind_days_before", 3)
    values = {"send_changed_mind": "on" if days else "", "changed_mind_days_before": shown(days or 3)}
    for row, step in enumerate(winback_steps(document), start=1):
        values[f"step{row}_shown"] = "1"
        values[f"step{row}_days_after"] = shown(step.get("days_after"))
        values[f"step{row}_offer"] = shown(step.get("offer"))
        for reason in step.get("reasons") or ():
            values[f"step{row}_reason_{reason}"] = "on"
    return values


def winback_rows(fields: dict) -> list[int]:
    """The form's rows that make a step, in order: each step the form showed unless marked to remove, and a
    new row when anything in it is filled in."""
    rows = []
    for row in range(1, STEP_ROWS + 1):
        prefix = f"step{row}_"
        if _checked(fields, prefix + "shown"):
            if not _checked(fields, prefix + "remove"):
                rows.append(row)
        elif field_text(fields, prefix + "days_after") or field_text(fields, prefix + "offer") or any(
                _checked(fields, f"{prefix}reason_{reason}") for reason in REASONS):
            rows.append(row)
    return rows


def _step_from_form(fields: dict, row: int, original: dict | None) -> dict:
    prefix = f"step{row}_"
    step = {}
    ticked = [reason for reason in REASONS if _checked(fields, f"{prefix}reason_{reason}")]
    kept = [reason for reason in (original or {}).get("reasons") or () if reason in ticked]
    reasons = kept + [reason for reason in ticked if reason not in kept]  # the order they were written in stays
    if reasons:
        step["reasons"] = reasons
    days = field_text(fields, prefix + "days_after")
    if days:
        step["days_after"] = number(days)
    offer = field_text(fields, prefix + "offer")
    if offer:
        step["offer"] = offer
    return step


def apply_winback(document: dict, fields: dict) -> dict:
    winback = dict(_winback(document))
    if _checked(fields, "send_changed_mind"):
        winback["changed_mind_days_before"] = number(field_text(fields, "changed_mind_days_before") or "x")
    else:
        winback["changed_mind_days_before"] = 0
    originals = winback_steps(document)
    steps = [_step_from_form(fields, row, originals[row - 1] if row <= len(originals) else None)
             for row in winback_rows(fields)]
    if steps:
        winback["step"] = steps
    else:
        winback.pop("step", None)
    document["winback"] = winback
    return document


def winback_input(field: str, rows: list[int]) -> str | None:
    """The win-back form's input a validator field names (`rows`: the form rows that made the steps, in
    order, `winback_rows`), or None."""
    tail = field_tail(field, "winback")
    if tail is None:
        return None
    parts = tail.split(".")
    if parts[0] != "step":
        return parts[0]
    if len(parts) < 2 or not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(rows):
        return "steps"
    return f"step{rows[int(parts[1]) - 1]}_{parts[2] if len(parts) > 2 else 'days_after'}"


# compliance --------------------------------------------------------------------------------------

COMPLIANCE_DEFAULTS = {"withdrawal_days": 14, "withdrawal_refund": "full", "records_keep_days": 1095}
# `cancel_button` on the form: "auto" leaves it out (on when the Stripe account is in Germany)
CANCEL_BUTTON = {"on": True, "off": False}


def compliance_values(document: dict) -> dict:
    compliance = document.get("compliance") if isinstance(document.get("compliance"), dict) else {}
    compliance = {**COMPLIANCE_DEFAULTS, **compliance}
    days, button = compliance["withdrawal_days"], compliance.get("cancel_button")
    return {"withdrawal_on": "on" if days else "", "withdrawal_days": shown(days or 14),
            "withdrawal_refund": shown(compliance["withdrawal_refund"]),
            "cancel_button": "auto" if button is None else ("on" if button is True else "off" if button is False
                                                            else shown(button)),
            "records_keep_days": shown(compliance["records_keep_days"])}


def apply_compliance(document: dict, fields: dict) -> dict:
    compliance = dict(document.get("compliance") or {}) if isinstance(document.get("compliance"), dict) else {}
    if _checked(fields, "withdrawal_on"):
        compliance["withdrawal_days"] = number(field_text(fields, "withdrawal_days") or "x")
    else:
        compliance["withdrawal_days"] = 0
    compliance["withdrawal_refund"] = field_text(fields, "withdrawal_refund")
    choice = field_text(fields, "cancel_button") or "auto"
    if choice == "auto":
        compliance.pop("cancel_button", None)
    else:
        compliance["cancel_button"] = CANCEL_BUTTON.get(choice, choice)
    compliance["records_keep_days"] = number(field_text(fields, "records_keep_days") or "x")
    document["compliance"] = compliance
    return document
