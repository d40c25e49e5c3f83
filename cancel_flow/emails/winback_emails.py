"""Win-back's emails, in words: "changed your mind?" before a scheduled cancellation ends, and a comeback step after
it. Pure, like compose.py (whose Email, Style and templates they share); every word through the catalogs, in the
client's `language`; the promises come from the one wording function (cancel_flow/billing.py)."""

from datetime import datetime

from cancel_flow.emails.compose import Email, Style
from cancel_flow.i18n import gettext
from cancel_flow.money import format_day


def _day(style: Style, moment: datetime, language: str) -> str:
    from zoneinfo import ZoneInfo

    return format_day(moment.astimezone(ZoneInfo(style.timezone)), language)


def changed_mind(style: Style, *, to: str, name: str | None, plan: str, ends_at: datetime, promise: str,
                 keep_url: str, unsubscribe_url: str | None, language: str = "en") -> Email:
    """Sent `changed_mind_days_before` days before a scheduled cancellation: what they keep until when, what
    continues if they keep the plan, and the one "Keep my plan" button (nothing changes unless they press it)."""
    until = _day(style, ends_at, language)
    return Email(
        kind="changed_mind", to=to, name=name,
        subject=gettext(language, "Your %(plan)s subscription ends on %(day)s", plan=plan, day=until),
        heading=gettext(language, "Changed your mind?"),
        preheader=gettext(language, "You keep %(plan)s until %(day)s. Keeping it takes one click.", plan=plan, day=until),
        paragraphs=(
            gettext(language, "Your %(plan)s subscription is set to end on %(day)s. You keep everything until then, "
                              "and nothing more will be charged.", plan=plan, day=until),
            gettext(language, "Changed your mind? If you keep your plan: %(promise)s", promise=promise),
        ),
        facts=((gettext(language, "Plan"), plan), (gettext(language, "Ends on"), until)),
        button=(gettext(language, "Keep my plan"), keep_url),
        closing=(gettext(language, "If you'd still like to leave, there's nothing to do: your subscription ends on "
                                   "%(day)s as planned.", day=until),),
        unsubscribe_url=unsubscribe_url, language=language,
    )


def comeback(style: Style, *, to: str, name: str | None, plan: str, ended_at: datetime, promise: str,
             offer_title: str | None, price_words: str, price_replaced: bool, comeback_url: str,
             link_until: datetime, unsubscribe_url: str | None, language: str = "en") -> Email:
    """A comeback step: the plan they had, its price (the product's current one when the old price is no longer
    offered, said so), the offer's promise, and one button to the comeback page."""
    ended = _day(style, ended_at, language)
    until = _day(style, link_until, language)
    if offer_title:
        subject = gettext(language, "Come back to %(plan)s: %(offer)s", plan=plan, offer=offer_title)
    else:
        subject = gettext(language, "Your place at %(brand)s is still here", brand=style.brand.name)
    price_line = (gettext(language, "The price you had is no longer offered; %(plan)s is now %(price)s.", plan=plan,
                          price=price_words) if price_replaced
                  else gettext(language, "%(plan)s is %(price)s, as before.", plan=plan, price=price_words))
    offer_line = (gettext(language, "If you come back now: %(promise)s", promise=promise) if offer_title
                  else gettext(language, "Coming back: %(promise)s", promise=promise))
    return Email(
        kind="winback", to=to, name=name, subject=subject,
        heading=gettext(language, "We'd love to have you back"),
        preheader=offer_line,
        paragraphs=(
            gettext(language, "Your %(plan)s subscription ended on %(day)s. Whenever you're ready, you can pick up "
                              "where you left off.", plan=plan, day=ended),
            price_line,
            offer_line,
        ),
        facts=((gettext(language, "Plan"), plan), (gettext(language, "Price"), price_words),
               *(((gettext(language, "Offer"), offer_title),) if offer_title else ())),
        button=(gettext(language, "Come back"), comeback_url),
        closing=(gettext(language, "This link works until %(day)s. Nothing is charged until you confirm on the "
                                   "payment page.", day=until),),
        unsubscribe_url=unsubscribe_url, language=language,
    )
