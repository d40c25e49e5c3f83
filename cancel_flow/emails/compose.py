"""Each billing email's words, from the brand, the billing facts and the one wording function's promise;
rendered as HTML from templates/ and as plain text by `plain_text` (one item a line, a blank line between
blocks). Each email is written in the client's language (`language`: their Stripe `preferred_locales`, else the
brand's `default_locale`, chosen by the scheduler). Pure: the scheduler gathers the facts."""

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, select_autoescape

from cancel_flow.billing import each_payment
from cancel_flow.i18n import DEFAULT, N_, PerLanguage, gettext, html_lang
from cancel_flow.i18n import install as install_translations
from cancel_flow.money import format_day, format_money
from cancel_flow.templating import TemplateEnvironment

TEMPLATES = Path(__file__).parent / "templates"


def _make_environment(language: str) -> Environment:
    made = TemplateEnvironment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]),
                       trim_blocks=True, lstrip_blocks=True, auto_reload=False, keep_trailing_newline=True)
    install_translations(made, language)
    return made


ENVIRONMENTS = PerLanguage(_make_environment)
environment = ENVIRONMENTS[DEFAULT]

UNSUBSCRIBE_LABELS = {
    "renewal_reminder": N_("Stop renewal reminders"),
    "discount_ending": N_("Stop discount reminders"),
    "offer_accepted": N_("Stop confirmation emails"),
    "cancellation_confirmed": N_("Stop confirmation emails"),
    "changed_mind": N_("Stop reminders before my subscription ends"),
    "winback": N_("Stop emails about coming back"),
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
    language: str = DEFAULT

    @property
    def unsubscribe_label(self) -> str:
        return gettext(self.language, UNSUBSCRIBE_LABELS.get(self.kind, N_("Stop these emails")))

    @property
    def greeting(self) -> str:
        return gettext(self.language, "Hi %(name)s,", name=self.name) if self.name else gettext(self.language, "Hello,")


@dataclass(frozen=True)
class Style:
    """What every email shares: the brand, where the service is, the coach's time zone."""

    brand: object
    base_url: str
    timezone: str = "UTC"
    extra: dict = field(default_factory=dict)

    def day(self, moment: datetime, language: str = DEFAULT) -> str:
        return format_day(moment.astimezone(ZoneInfo(self.timezone)), language)

    def moment(self, moment: datetime, language: str = DEFAULT) -> str:
        """A moment to the second, in the coach's time zone with its offset."""
        from cancel_flow.compliance import moment_words

        return moment_words(moment, self.timezone, language)


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
    context = {"email": email, "brand": style.brand, "logo_url": logo_url, "html_lang": html_lang(email.language)}
    html = ENVIRONMENTS[email.language].get_template("email.html").render(**context)
    return Rendered(email.subject, plain_text(email, style.brand), html,
                    unsubscribe_headers(email, getattr(style.brand, "support_email", None)))


def plain_text(email: Email, brand) -> str:
    """The text part: the blocks of the HTML part in the same order, one item a line (a fact, a payment, a
    link's label then its address), a blank line between blocks."""
    say = lambda message, **values: gettext(email.language, message, **values)  # noqa: E731
    blocks = [brand.name, email.heading, email.greeting, *email.paragraphs]
    if email.facts:
        width = max(len(label) for label, _ in email.facts) + 1
        blocks.append("\n".join(f"{(label + ':').ljust(width)} {value}" for label, value in email.facts))
    if email.payments:
        blocks.append("\n".join([say("Payment dates:")] + [
            f"{day}: {amount}" + (" " + say("(instead of %(regular)s)", regular=regular) if regular else "")
            for day, amount, regular in email.payments]))
    if email.button:
        blocks.append(f"{email.button[0]}:\n{email.button[1]}")
    blocks += email.closing
    support = getattr(brand, "support_email", None)
    blocks.append("-- \n" + brand.name + ("\n" + say("Questions? Reply or write to %(email)s", email=support)
                                          if support else ""))
    if email.unsubscribe_url:
        blocks.append(f"{email.unsubscribe_label}:\n{email.unsubscribe_url}")
    return "\n\n".join(block.strip() for block in blocks if block and block.strip()) + "\n"


def _per(amount: str, interval: str | None, count: int, language: str) -> str:
    return each_payment(amount, interval, count, language) if interval else amount


def payment_failed(style: Style, *, to: str, name: str | None, step: int, amount: int, currency: str, plan: str,
                   failed_at: datetime, card: str | None, reason: str, update_url: str,
                   next_attempt: datetime | None = None, confirm_url: str | None = None,
                   language: str = DEFAULT) -> Email:
    """`next_attempt`: when Stripe tries the card again by itself; `confirm_url`: the bank wants the customer to
    confirm the payment, on Stripe's hosted invoice page (no new card needed). `card` and `reason` come in
    `language` (cancel_flow/stripe_billing.py)."""
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    money = format_money(amount, currency, language)
    first = step == 0
    subject = (say("Your payment of %(amount)s for %(plan)s didn't go through", amount=money, plan=plan) if first
               else say("Reminder: your payment of %(amount)s for %(plan)s is still due", amount=money, plan=plan))
    facts = [(say("Amount"), money), (say("Plan"), plan), (say("Tried on"), style.day(failed_at, language))]
    if card:
        facts.append((say("Card"), card))
    if next_attempt is not None:
        facts.append((say("Next automatic try"), style.day(next_attempt, language)))
    retry = (say("We'll try the card on file again automatically on %(day)s.", day=style.day(next_attempt, language)) + " "
             if next_attempt is not None else "")
    if confirm_url:
        action = retry + say("Your bank asks you to confirm this payment: open the page below and confirm it with "
                             "your bank, and it's done. It takes about a minute.")
        button = (say("Confirm the payment with my bank"), confirm_url)
        preheader = say("Confirm the payment of %(amount)s for %(plan)s with your bank.", amount=money, plan=plan)
    else:
        action = retry + say("Update your card and we'll take the payment right away, so nothing is interrupted. "
                             "It takes about a minute.")
        button = (say("Update my card"), update_url)
        preheader = say("Update your card to pay %(amount)s for %(plan)s.", amount=money, plan=plan)
    if card:
        tried = say("We tried to charge %(amount)s to your %(card)s for %(plan)s on %(day)s, and the payment didn't "
                    "go through: %(reason)s.", amount=money, card=card, plan=plan, day=style.day(failed_at, language),
                    reason=reason)
    else:
        tried = say("We tried to charge %(amount)s to your card for %(plan)s on %(day)s, and the payment didn't go "
                    "through: %(reason)s.", amount=money, plan=plan, day=style.day(failed_at, language), reason=reason)
    return Email(
        kind="payment_failed", to=to, subject=subject, name=name, language=language,
        heading=say("Your payment didn't go through") if first else say("Your payment is still due"),
        preheader=preheader,
        paragraphs=(tried, action),
        facts=tuple(facts), button=button,
        closing=(say("If you've already updated your card, you can ignore this email."),),
    )


def renewal_reminder(style: Style, *, to: str, name: str | None, plan: str, amount: int, currency: str,
                     interval: str, interval_count: int, renews_at: datetime, cancel_url: str,
                     unsubscribe_url: str | None, language: str = DEFAULT) -> Email:
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    money = format_money(amount, currency, language)
    day = style.day(renews_at, language)
    return Email(
        kind="renewal_reminder", to=to, subject=say("Your %(plan)s subscription renews on %(day)s", plan=plan, day=day),
        name=name, language=language,
        heading=say("Your subscription renews on %(day)s", day=day),
        preheader=say("%(amount)s on %(day)s. Nothing to do if you'd like to continue.", amount=money, day=day),
        paragraphs=(
            say("Your %(plan)s subscription renews automatically on %(day)s, and %(amount)s will be charged to the "
                "card on file.", plan=plan, day=day, amount=money),
            say("Nothing to do if you'd like to continue. If you'd rather not renew, cancel before that date with the "
                "button below: you keep access until the end of the period you paid for."),
        ),
        facts=((say("Plan"), plan), (say("Renews on"), day),
               (say("Amount"), _per(money, interval, interval_count, language))),
        button=(say("Cancel or change my plan"), cancel_url), unsubscribe_url=unsubscribe_url,
    )


def discount_ending(style: Style, *, to: str, name: str | None, plan: str, discount: str, ends_at: datetime,
                    next_payment_at: datetime | None, amount: int, currency: str, interval: str, interval_count: int,
                    cancel_url: str, unsubscribe_url: str | None, language: str = DEFAULT) -> Email:
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    money = _per(format_money(amount, currency, language), interval, interval_count, language)
    end = style.day(ends_at, language)
    from_then = (say("From your payment on %(day)s you pay %(amount)s.", day=style.day(next_payment_at, language),
                     amount=money) if next_payment_at else say("After that you pay %(amount)s.", amount=money))
    return Email(
        kind="discount_ending", to=to, subject=say("Your discount on %(plan)s ends on %(day)s", plan=plan, day=end),
        name=name, language=language,
        heading=say("Your discount ends on %(day)s", day=end), preheader=from_then,
        paragraphs=(say("Your discount on %(plan)s (%(discount)s) ends on %(day)s.", plan=plan, discount=discount,
                        day=end) + " " + from_then,
                    say("If you'd rather not continue at that price, you can cancel or change your plan before then.")),
        facts=((say("Plan"), plan), (say("Discount ends"), end), (say("Price from then"), money)),
        button=(say("Cancel or change my plan"), cancel_url), unsubscribe_url=unsubscribe_url,
    )


def offer_accepted(style: Style, *, to: str, name: str | None, plan: str, promise: str,
                   payments: list[tuple[datetime, str]], billing_url: str, unsubscribe_url: str | None,
                   language: str = DEFAULT) -> Email:
    """`payments`: the promise's payments in the wording function's words (billing.schedule_lines), and
    `promise` its words, both in `language`."""
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    rows = tuple((style.day(at, language), words, None) for at, words in payments)
    return Email(
        kind="offer_accepted", to=to, subject=say("Confirmed: your %(plan)s subscription continues", plan=plan),
        name=name, language=language,
        heading=say("Thanks for staying"), preheader=promise,
        paragraphs=(say("Here is what changes on your %(plan)s subscription:", plan=plan), promise),
        payments=rows, button=(say("Manage my billing"), billing_url),
        closing=(say("You can keep this email: it is your record of what was agreed."),),
        unsubscribe_url=unsubscribe_url,
    )


@dataclass(frozen=True)
class Declaration:
    """A withdrawal or cancel-button declaration the confirmation acknowledges (cancel_flow/compliance_service.py):
    its words as sent, and what came of it. `outcome`: accepted (acted on), needs_coach or not_eligible."""

    kind: str  # withdrawal | cancellation
    content: str
    outcome: str
    contract: str
    refund: str | None = None  # the refund in words (a withdrawal)
    undo_url: str | None = None  # "This wasn't me — keep my plan" (a cancellation anyone knowing the email could send)
    cancel_url: str | None = None  # the ordinary way to cancel (a withdrawal that can't be one)
    why_not: str | None = None  # why a withdrawal can't be one, in words


def cancellation_confirmed(style: Style, *, to: str, name: str | None, plan: str, access_until: datetime | None,
                           keep_url: str | None, unsubscribe_url: str | None, received_at: datetime | None = None,
                           declaration: Declaration | None = None, language: str = DEFAULT) -> Email:
    """What was canceled, when it was received, when it takes effect and what the subscriber keeps until then; for
    a withdrawal or a cancel-button declaration also its content, to the second (the acknowledgement on a durable
    medium that Art. 11a of Directive 2011/83/EU and § 312k BGB ask for)."""
    def _(message: str, **values) -> str:
        return gettext(language, message, **values)

    received = style.moment(received_at, language) if received_at else None
    if declaration is not None:
        return _acknowledgement(style, to=to, name=name, plan=plan, access_until=access_until, received=received,
                                declaration=declaration, language=language)
    facts = [(_("Plan"), plan)]
    if received:
        facts.append((_("Received"), received))
    if access_until is not None:
        until = style.day(access_until, language)
        facts += [(_("Takes effect"), until), (_("Until then"), _("Full access, no further payments"))]
        return Email(
            kind="cancellation_confirmed", to=to, subject=_("Your %(plan)s subscription is canceled", plan=plan), name=name,
            language=language,
            heading=_("Your subscription is canceled"), preheader=_("You keep access until %(day)s.", day=until),
            paragraphs=(_("Your %(plan)s subscription is canceled. You keep access until %(day)s, "
                          "and you won't be charged again.", plan=plan, day=until),
                        _("Changed your mind? You can keep your subscription any time before %(day)s.", day=until)),
            facts=tuple(facts),
            button=(_("Keep my subscription"), keep_url) if keep_url else None, unsubscribe_url=unsubscribe_url,
        )
    facts.append((_("Takes effect"), _("At once")))
    return Email(
        kind="cancellation_confirmed", to=to, subject=_("Your %(plan)s subscription has ended", plan=plan), name=name,
        language=language,
        heading=_("Your subscription has ended"), preheader=_("You won't be charged again."),
        paragraphs=(_("Your %(plan)s subscription has ended, and you won't be charged again.", plan=plan),
                    _("Thank you for the time you spent with us.")),
        facts=tuple(facts), unsubscribe_url=unsubscribe_url,
    )


def _acknowledgement(style: Style, *, to: str, name: str | None, plan: str, access_until: datetime | None,
                     received: str | None, declaration: Declaration, language: str) -> Email:
    def _(message: str, **values) -> str:
        return gettext(language, message, **values)

    withdrawal = declaration.kind == "withdrawal"
    facts = [(_("Contract"), declaration.contract), (_("Received"), received or "")]
    quote = (_("Your declaration, as you sent it:"), f"“{declaration.content}”",
             _("Keep this email: it is your record of the declaration and of when we received it."))
    button = None
    if declaration.outcome == "accepted" and withdrawal:
        subject = _("Your withdrawal from %(plan)s is confirmed", plan=plan)
        heading = _("You have withdrawn from your contract")
        paragraphs = (_("We received your withdrawal on %(moment)s. Your %(plan)s subscription ended at once, "
                        "and you won't be charged again.", moment=received, plan=plan),) + \
            ((declaration.refund,) if declaration.refund else ())
        facts += [(_("Takes effect"), _("At once, on receipt")), (_("Until then"), _("Nothing: the subscription has ended"))]
        if declaration.refund:
            facts.append((_("Refund"), declaration.refund))
    elif declaration.outcome == "accepted":
        until = style.day(access_until, language) if access_until else _("at once")
        subject = _("Your cancellation of %(plan)s is confirmed", plan=plan)
        heading = _("Your cancellation is confirmed")
        paragraphs = (_("We received your cancellation on %(moment)s. Your %(plan)s subscription ends on %(day)s: "
                        "you keep access until then, and you won't be charged again.", moment=received, plan=plan,
                        day=until) if access_until else
                      _("We received your cancellation on %(moment)s. Your %(plan)s subscription has ended, and you "
                        "won't be charged again.", moment=received, plan=plan),) + \
            ((_("Didn't send this? Anyone who knows your email address can use the cancellation form. "
                "Press the button below and your plan continues as before."),) if declaration.undo_url else ())
        facts += [(_("Takes effect"), until), (_("Until then"), _("Full access, no further payments") if access_until
                                               else _("Nothing: the subscription has ended"))]
        button = (_("This wasn't me — keep my plan"), declaration.undo_url) if declaration.undo_url else None
    elif declaration.outcome == "not_eligible":
        subject = _("We received your withdrawal")
        heading = _("We received your withdrawal")
        paragraphs = (_("We received your withdrawal on %(moment)s.", moment=received),
                      declaration.why_not or "",
                      _("You can still cancel your subscription the ordinary way with the button below: you keep "
                        "access until the end of the period you paid for."))
        button = (_("Cancel my subscription"), declaration.cancel_url) if declaration.cancel_url else None
    else:
        subject = _("We received your withdrawal") if withdrawal else _("We received your cancellation")
        heading = subject
        paragraphs = ((_("We received your withdrawal on %(moment)s.", moment=received) if withdrawal else
                       _("We received your cancellation on %(moment)s.", moment=received)),
                      _("Your coach will confirm by email when your contract ends. You don't need to do anything "
                        "else."))
        facts.append((_("Takes effect"), _("Your coach will confirm the date")))
    return Email(kind="declaration_acknowledged", to=to, subject=subject, heading=heading, name=name, language=language,
                 preheader=paragraphs[0], paragraphs=tuple(p for p in paragraphs if p), facts=tuple(facts),
                 button=button, closing=quote)
