"""Each billing email's words, from the brand, the billing facts and the one wording function's promise;
rendered as HTML from templates/ and as plain text by `plain_text` (one item a line, a blank line between
blocks). Pure: the scheduler gathers the facts."""

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from cancel_flow.i18n import install as install_translations
from cancel_flow.money import format_day, format_money

TEMPLATES = Path(__file__).parent / "templates"
environment = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                          trim_blocks=True, lstrip_blocks=True, auto_reload=False, keep_trailing_newline=True)
install_translations(environment)

UNSUBSCRIBE_LABELS = {
    "renewal_reminder": "Stop renewal reminders",
    "discount_ending": "Stop discount reminders",
    "offer_accepted": "Stop confirmation emails",
    "cancellation_confirmed": "Stop confirmation emails",
}


@dataclass(frozen=True)
class Email:
    kind: str
    to: str
    subject: str
    heading: str
    name: str | None
    paragraphs: tuple[str, ...]
    facts: tuple[tuple[str, str], ...] = ()
    payments: tuple[tuple[str, str, str | None], ...] = ()
    button: tuple[str, str] | None = None
    closing: tuple[str, ...] = ()
    unsubscribe_url: str | None = None
    preheader: str = ""

    @property
    def unsubscribe_label(self) -> str:
        return UNSUBSCRIBE_LABELS.get(self.kind, "Stop these emails")


@dataclass(frozen=True)
class Style:
    """What every email shares: the brand, where the service is, the coach's time zone."""

    brand: object
    base_url: str
    timezone: str = "UTC"
    extra: dict = field(default_factory=dict)

    def day(self, moment: datetime) -> str:
        return format_day(moment.astimezone(ZoneInfo(self.timezone)))


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...] = ()


def unsubscribe_headers(email: Email, support_email: str | None) -> tuple[tuple[str, str], ...]:
    """What mail clients show as their own "Unsubscribe" (RFC 2369) and use in one click (RFC 8058): the email's
    unsubscribe link, which takes a POST of `List-Unsubscribe=One-Click`, and a mailto to the coach beside it."""
    if not email.unsubscribe_url:
        return ()
    links = [f"<{email.unsubscribe_url}>"]
    if support_email:
        links.append(f"<mailto:{quote(support_email, safe='@')}?subject={quote(email.unsubscribe_label)}>")
    return (("List-Unsubscribe", ", ".join(links)), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))


def render(email: Email, style: Style) -> Rendered:
    logo_url = f"{style.base_url}{style.brand.logo_url}" if getattr(style.brand, "has_logo", False) else None
    context = {"email": email, "brand": style.brand, "logo_url": logo_url}
    return Rendered(email.subject, plain_text(email, style.brand), environment.get_template("email.html").render(**context),
                    unsubscribe_headers(email, getattr(style.brand, "support_email", None)))


def plain_text(email: Email, brand) -> str:
    """The text part: the blocks of the HTML part in the same order, one item a line (a fact, a payment, a
    link's label then its address), a blank line between blocks."""
    blocks = [brand.name, email.heading, f"Hi {email.name}," if email.name else "Hello,", *email.paragraphs]
    if email.facts:
        width = max(len(label) for label, _ in email.facts) + 1
        blocks.append("\n".join(f"{(label + ':').ljust(width)} {value}" for label, value in email.facts))
    if email.payments:
        blocks.append("\n".join(["Payment dates:"] + [
            f"{day}: {amount}" + (f" (instead of {regular})" if regular else "") for day, amount, regular in email.payments]))
    if email.button:
        blocks.append(f"{email.button[0]}:\n{email.button[1]}")
    blocks += email.closing
    support = getattr(brand, "support_email", None)
    blocks.append("-- \n" + brand.name + (f"\nQuestions? Reply or write to {support}" if support else ""))
    if email.unsubscribe_url:
        blocks.append(f"{email.unsubscribe_label}:\n{email.unsubscribe_url}")
    return "\n\n".join(block.strip() for block in blocks if block and block.strip()) + "\n"


def _per(interval: str | None, count: int = 1) -> str:
    if not interval:
        return ""
    return f"/{interval}" if count == 1 else f" every {count} {interval}s"


def payment_failed(style: Style, *, to: str, name: str | None, step: int, amount: int, currency: str, plan: str,
                   failed_at: datetime, card: str | None, reason: str, update_url: str,
                   next_attempt: datetime | None = None, confirm_url: str | None = None) -> Email:
    """`next_attempt`: when Stripe tries the card again by itself; `confirm_url`: the bank wants the customer to
    confirm the payment, on Stripe's hosted invoice page (no new card needed)."""
    money = format_money(amount, currency)
    charged = f"your {card}" if card else "your card"
    first = step == 0
    subject = (f"Your payment of {money} for {plan} didn't go through" if first
               else f"Reminder: your payment of {money} for {plan} is still due")
    facts = [("Amount", money), ("Plan", plan), ("Tried on", style.day(failed_at))]
    if card:
        facts.append(("Card", card))
    if next_attempt is not None:
        facts.append(("Next automatic try", style.day(next_attempt)))
    retry = (f"We'll try the card on file again automatically on {style.day(next_attempt)}. "
             if next_attempt is not None else "")
    if confirm_url:
        action = (f"{retry}Your bank asks you to confirm this payment: open the page below and confirm it with your "
                  "bank, and it's done. It takes about a minute.")
        button = ("Confirm the payment with my bank", confirm_url)
        preheader = f"Confirm the payment of {money} for {plan} with your bank."
    else:
        action = (f"{retry}Update your card and we'll take the payment right away, so nothing is interrupted. "
                  "It takes about a minute.")
        button = ("Update my card", update_url)
        preheader = f"Update your card to pay {money} for {plan}."
    return Email(
        kind="payment_failed", to=to, subject=subject, name=name,
        heading="Your payment didn't go through" if first else "Your payment is still due",
        preheader=preheader,
        paragraphs=(
            f"We tried to charge {money} to {charged} for {plan} on {style.day(failed_at)}, "
            f"and the payment didn't go through: {reason}.",
            action,
        ),
        facts=tuple(facts), button=button,
        closing=("If you've already updated your card, you can ignore this email.",),
    )


def renewal_reminder(style: Style, *, to: str, name: str | None, plan: str, amount: int, currency: str,
                     interval: str, interval_count: int, renews_at: datetime, cancel_url: str,
                     unsubscribe_url: str | None) -> Email:
    money = format_money(amount, currency)
    day = style.day(renews_at)
    return Email(
        kind="renewal_reminder", to=to, subject=f"Your {plan} subscription renews on {day}", name=name,
        heading=f"Your subscription renews on {day}",
        preheader=f"{money} on {day}. Nothing to do if you'd like to continue.",
        paragraphs=(
            f"Your {plan} subscription renews automatically on {day}, and {money} will be charged to the card on file.",
            "Nothing to do if you'd like to continue. If you'd rather not renew, cancel before that date with the "
            "button below: you keep access until the end of the period you paid for.",
        ),
        facts=(("Plan", plan), ("Renews on", day), ("Amount", f"{money}{_per(interval, interval_count)}")),
        button=("Cancel or change my plan", cancel_url), unsubscribe_url=unsubscribe_url,
    )


def discount_ending(style: Style, *, to: str, name: str | None, plan: str, discount: str, ends_at: datetime,
                    next_payment_at: datetime | None, amount: int, currency: str, interval: str, interval_count: int,
                    cancel_url: str, unsubscribe_url: str | None) -> Email:
    money = f"{format_money(amount, currency)}{_per(interval, interval_count)}"
    end = style.day(ends_at)
    from_then = (f"From your payment on {style.day(next_payment_at)} you pay {money}." if next_payment_at
                 else f"After that you pay {money}.")
    return Email(
        kind="discount_ending", to=to, subject=f"Your discount on {plan} ends on {end}", name=name,
        heading=f"Your discount ends on {end}", preheader=from_then,
        paragraphs=(f"Your discount on {plan} ({discount}) ends on {end}. {from_then}",
                    "If you'd rather not continue at that price, you can cancel or change your plan before then."),
        facts=(("Plan", plan), ("Discount ends", end), ("Price from then", money)),
        button=("Cancel or change my plan", cancel_url), unsubscribe_url=unsubscribe_url,
    )


def offer_accepted(style: Style, *, to: str, name: str | None, plan: str, promise: str,
                   payments: list[tuple[datetime, str]], billing_url: str, unsubscribe_url: str | None) -> Email:
    """`payments`: the promise's payments in the wording function's words (billing.schedule_lines)."""
    rows = tuple((style.day(at), words, None) for at, words in payments)
    return Email(
        kind="offer_accepted", to=to, subject=f"Confirmed: your {plan} subscription continues", name=name,
        heading="Thanks for staying", preheader=promise,
        paragraphs=(f"Here is what changes on your {plan} subscription:", promise),
        payments=rows, button=("Manage my billing", billing_url),
        closing=("You can keep this email: it is your record of what was agreed.",),
        unsubscribe_url=unsubscribe_url,
    )


def cancellation_confirmed(style: Style, *, to: str, name: str | None, plan: str, access_until: datetime | None,
                           keep_url: str | None, unsubscribe_url: str | None) -> Email:
    if access_until is not None:
        until = style.day(access_until)
        return Email(
            kind="cancellation_confirmed", to=to, subject=f"Your {plan} subscription is canceled", name=name,
            heading="Your subscription is canceled", preheader=f"You keep access until {until}.",
            paragraphs=(f"Your {plan} subscription is canceled. You keep access until {until}, "
                        "and you won't be charged again.",
                        f"Changed your mind? You can keep your subscription any time before {until}."),
            facts=(("Plan", plan), ("Access until", until)),
            button=("Keep my subscription", keep_url) if keep_url else None, unsubscribe_url=unsubscribe_url,
        )
    return Email(
        kind="cancellation_confirmed", to=to, subject=f"Your {plan} subscription has ended", name=name,
        heading="Your subscription has ended", preheader="You won't be charged again.",
        paragraphs=(f"Your {plan} subscription has ended, and you won't be charged again.",
                    "Thank you for the time you spent with us."),
        facts=(("Plan", plan),), unsubscribe_url=unsubscribe_url,
    )
