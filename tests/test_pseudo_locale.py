"""Every word a client reads comes from the catalogs: each client page and email is rendered in a pseudo-language
whose catalog writes every message accented and in ⟦…⟧ (placeholders and markup kept), and any word left that
is neither pseudo nor a value (a name, an email, a plan, the coach's own offer texts, an amount, a date, an
address) is a word that skipped the catalogs."""

import html
import re
import textwrap
from datetime import datetime, timedelta, timezone
from gettext import NullTranslations
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

import pytest

from cancel_flow import i18n
from cancel_flow.config.schema import Brand
from cancel_flow.emails import compose
from cancel_flow.stripe_billing import Failure, Payment
from cancel_flow.web.email_routes import card_update_words
from tests.helpers import csrf_of

PSEUDO = "en_XA"  # the pseudo-locale's usual tag (accented English)
_ACCENTS = str.maketrans("aeiouyAEIOUYcnszCNSZ", "áéíóúýÁÉÍÓÚÝçñšžÇÑŠŽ")
_KEPT = re.compile(r"(%\(\w+\)s|%%|<[^>]*>|&\w+;)")  # placeholders, markup and entities stay as they are
MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
# Values, not words: dates ("January 7, 2027", "January 7", and a list of them: the locale's own), money,
# addresses and ids.
VALUES = [re.compile(pattern) for pattern in (
    rf"\band(?= (?:{MONTHS}))", rf"\b(?:{MONTHS}) \d{{1,2}}(?:, \d{{4}})?", r"https?://\S+", r"mailto:\S+",
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", r"\b(?:cus|sub|price|prod|in|pm|req)_\w+", r"\bUS\$|\bJP¥|\bCA\$|€|£",
    r"\b[0-9a-f]{32}\b")]


def pseudo(message: str) -> str:
    parts = _KEPT.split(message)
    return "⟦" + "".join(part if index % 2 else part.translate(_ACCENTS) for index, part in enumerate(parts)) + "⟧"


class Pseudo(NullTranslations):
    def gettext(self, message):
        return pseudo(message)

    def ngettext(self, singular, plural, n):
        return pseudo(singular if n == 1 else plural)


@pytest.fixture
def pseudo_language(monkeypatch):
    """The pseudo-language, shipped for this test only (its catalog built here, not read from a file)."""
    monkeypatch.setitem(i18n.LANGUAGES, PSEUDO, "Ƥšéúđó")
    monkeypatch.setitem(i18n._catalogs, PSEUDO, Pseudo())
    return PSEUDO


class _Reader(HTMLParser):
    """A page's text as read: the title, every text node of the body (scripts and styles left out), and the
    attributes people hear (aria-label, alt, title, placeholder), in document order."""

    SPOKEN = ("aria-label", "alt", "title", "placeholder")

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts, self.skip = [], 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        self.parts.extend(value for name, value in attrs if name in self.SPOKEN and value)

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def read(page: str) -> str:
    reader = _Reader()
    reader.feed(page)
    return " ".join(" ".join(reader.parts).split())


def unmarked(text: str, data: list[str]) -> list[str]:
    """The words of `text` that didn't come through the catalogs: every word left once the values are taken out
    that has a vowel unaccented (a pseudo word has every vowel accented)."""
    for value in sorted((v for v in data if v), key=len, reverse=True):
        text = text.replace(value, " ")
    for pattern in VALUES:
        text = pattern.sub(" ", text)
    return re.findall(r"[^\W\d_]*[aeiouyAEIOUY][^\W\d_]*", text)


def check(where: str, text: str, data: list[str], problems: list[str]) -> None:
    assert "⟦" in text, f"{where}: nothing came from the catalogs"
    found = unmarked(text, data)
    if found:
        problems.append(f"{where}: {sorted(set(found))} in {text[:300]!r}")


@pytest.fixture
def every_offer(tmp_path, catalogue):
    lite = catalogue.price(amount=2900, name="Coaching Lite")
    path = tmp_path / "offers.toml"
    path.write_text(textwrap.dedent(f"""
        [brand]
        name = "Peak Performance Coaching"
        support_email = "coach@example.com"
        [rules]
        max_offers = 2
        [[offer]]
        id = "half"
        kind = "discount"
        percent_off = 50
        payments = 3
        reasons = ["too_expensive"]
        title = "Stay for half price"
        [[offer]]
        id = "lite"
        kind = "switch"
        price = "{lite.id}"
        reasons = ["too_expensive"]
        title = "Switch to Coaching Lite"
        description = "The same plan, without the live calls."
        [[offer]]
        id = "pause"
        kind = "pause"
        max_payments = 3
        reasons = ["unused"]
        title = "Take a break instead"
        [[offer]]
        id = "month-free"
        kind = "free_period"
        months = 2
        reasons = ["unused", "other"]
        title = "Have two months on us"
        [[offer]]
        id = "talk"
        kind = "contact"
        url = "mailto:coach@example.com"
        reasons = ["missing_features"]
        title = "Talk to your coach first"
        description = "Tell me what isn't working."
    """))
    return path


DATA = ["Peak Performance Coaching", "Coaching Plan", "Coaching Lite", "Casey Client", "Stay for half price",
        "Switch to Coaching Lite", "The same plan, without the live calls.", "Take a break instead",
        "Have two months on us", "Talk to your coach first", "Tell me what isn't working.", "English", "Español",
        "Français", "Deutsch", "Português (Brasil)", "Ƥšéúđó", "cancel-flow stripe setup",
        "STRIPE_PORTAL_CONFIGURATION"]


def test_every_client_page_shows_only_words_from_the_catalogs(pseudo_language, make_client, every_offer, catalogue,
                                                              signer, stripe_client, emulator, inbox):
    client = make_client(offers_path=every_offer, smtp_url=inbox.url)
    problems: list[str] = []
    lang = {"lang": PSEUDO}

    def page(where, response, status=200):
        assert response.status_code == status, (where, response.status_code, response.text[:500])
        assert '<html lang="en-XA">' in response.text, where
        check(where, read(response.text), DATA, problems)
        return response

    def flow(reason=None, **subscription):
        sub = catalogue.subscription(**subscription)
        url = f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}"
        shown = page("reason", client.get(url, params=lang))
        if reason:
            client.post(f"{url}/reason", data={"csrf_token": csrf_of(shown.text), "reason": reason})
        return sub, url

    sub, url = flow()
    reason = client.get(url)
    page("reason refused", client.post(f"{url}/reason", data={"csrf_token": csrf_of(reason.text)}), 400)
    page("comment too long", client.post(f"{url}/reason", data={"csrf_token": csrf_of(reason.text), "reason": "other",
                                                                 "comment": "é" * 2500}), 400)
    page("form expired", client.post(f"{url}/reason", data={"csrf_token": "no", "reason": "other"}), 400)
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(reason.text), "reason": "too_expensive"})
    offers = page("offers: discount and switch", client.get(url))
    page("change of reason", client.get(url, params={"change": "reason"}))
    page("an offer not shown", client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "nope"}),
         400)
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "half"})
    page("done: discount", client.get(f"{url}/done"))
    again = signer.cancel_token(sub.customer, sub.id)[0]
    page("already decided on another link", client.get(f"/cancel/{again}", params=lang))

    _, url = flow("too_expensive")
    offers = client.get(url)
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "lite"})
    page("done: switch", client.get(f"{url}/done"))

    _, url = flow("unused")
    offers = page("offers: pause and free time", client.get(url))
    page("pause too long", client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "pause",
                                                              "payments": "9"}), 400)
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "pause", "payments": "2"})
    page("done: pause", client.get(f"{url}/done"))

    _, url = flow("other")
    offers = client.get(url)
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "month-free"})
    page("done: free time", client.get(f"{url}/done"))

    _, url = flow("missing_features")
    offers = page("offers: a talk", client.get(url))
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "talk"})
    talk = page("done: the coach is told", client.get(f"{url}/done"))
    mail = urlsplit(html.unescape(re.search(r'href="(mailto:[^"]+)"', talk.text).group(1)))
    for name, value in parse_qsl(mail.query):
        check(f"the mail to the coach ({name})", value, DATA + ["Missing features"], problems)

    _, url = flow("switched_service")
    page("offers: none fit", client.get(url))
    portal = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(client.get(url).text)})
    assert portal.status_code == 303
    import httpx
    httpx.post(portal.headers["location"] + "/cancel", data={"reason": "unused"})
    page("done: canceled at the period's end", client.get(f"{url}/done"))

    _, url = flow(cancel_at_period_end=True)
    scheduled = client.get(url)
    client.post(f"{url}/keep", data={"csrf_token": csrf_of(scheduled.text)})
    page("done: kept", client.get(f"{url}/done"))

    fixed = catalogue.subscription()
    stripe_client.v1.subscriptions.update(fixed.id, params={"cancel_at": fixed["items"].data[0].current_period_end
                                                            + 60 * 86400})
    page("a fixed end date", client.get(f"/cancel/{signer.cancel_token(fixed.customer, fixed.id)[0]}", params=lang))
    gone = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(gone.id)
    page("already canceled", client.get(f"/cancel/{signer.cancel_token(gone.customer, gone.id)[0]}", params=lang))

    _, url = flow("too_expensive")
    offers = client.get(url)
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500, "count": 20})
    page("Stripe down", client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "half"}), 503)
    emulator.delete("/_emulator/faults")

    page("link not valid", client.get("/cancel/not-a-real-link", params=lang), 400)
    from freezegun import freeze_time
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=3)):
        old = signer.cancel_token(sub.customer, sub.id)[0]
    page("link expired", client.get(f"/cancel/{old}", params=lang), 410)
    page("page not found", client.get("/nowhere", params=lang), 404)
    page("billing link not valid", client.get("/billing/nope", params=lang), 400)

    shared = page("shared link", client.get("/", params=lang))
    page("shared link: not an email", client.post(f"/?lang={PSEUDO}", data={"csrf_token": csrf_of(shared.text),
                                                                             "email": "nope"}), 400)
    page("shared link: sent", client.post(f"/?lang={PSEUDO}", data={"csrf_token": csrf_of(shared.text),
                                                                     "email": "casey@example.com"}))
    page("shared link: email not set up", make_client().get("/", params=lang))

    from cancel_flow.emails.tokens import unsubscribe_token
    from tests.conftest import SECRET
    leave = f"/emails/unsubscribe/{unsubscribe_token(SECRET, sub.customer, 'renewal_reminder')}?lang={PSEUDO}"
    page("unsubscribe: ask", client.get(leave))
    page("unsubscribe: done", client.post(leave, data={"action": "unsubscribe"}))
    page("unsubscribe: back on the list", client.post(leave, data={"action": "resubscribe"}))
    page("unsubscribe: link not valid", client.get(f"/emails/unsubscribe/nope?lang={PSEUDO}"), 400)
    page("card updated", client.get(f"/billing/{signer.billing_token(sub.customer)[0]}/updated", params=lang))

    assert not problems, "\n".join(problems)


def test_the_card_update_page_words_every_outcome_through_the_catalogs(pseudo_language):
    declined = Failure(code="card_declined", decline_code="insufficient_funds", card_brand="visa", card_last4="4242")
    paid, confirm, refused = Payment(True, 4900, "usd"), Payment(False, 2900, "eur", confirm_url="x"), \
        Payment(False, 990, "usd", failure=declined)
    problems: list[str] = []
    for case in ([], [paid], [paid, confirm], [paid, refused], [refused, Payment(False, 100, "usd")]):
        title, lines = card_update_words([p for p in case if p.paid], [p for p in case if p.confirm_url],
                                         [p for p in case if not p.paid and not p.confirm_url], PSEUDO)
        check(f"card update {len(case)}", " ".join([title, *lines]), ["Visa"], problems)
    assert not problems, "\n".join(problems)


def test_every_email_and_its_text_part_show_only_words_from_the_catalogs(pseudo_language):
    from cancel_flow.billing import Line, Plan, discount_promise, schedule_lines

    brand = Brand(name="Peak Performance Coaching", support_email="coach@example.com")
    style = compose.Style(brand, "https://coach.example.com")
    now = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
    who = {"to": "casey@example.com", "name": "Casey Client", "language": PSEUDO}
    plan = Plan("usd", (Line(4900, 1),), "month", 1, now - timedelta(days=20), now + timedelta(days=10), taxed=True)
    promise = discount_promise(plan, 50, 3, now, PSEUDO)
    failure = Failure(code="card_declined", decline_code="expired_card", card_brand="visa", card_last4="4242")
    emails = [
        compose.payment_failed(style, **who, step=0, amount=4900, currency="usd", plan="Coaching Plan", failed_at=now,
                               card=failure.card_in(PSEUDO), reason=failure.words_in(PSEUDO), update_url="https://x.example",
                               next_attempt=now + timedelta(days=3)),
        compose.payment_failed(style, **who, step=3, amount=4900, currency="usd", plan="Coaching Plan", failed_at=now,
                               card=None, reason=Failure().words_in(PSEUDO), update_url="https://x.example",
                               confirm_url="https://pay.example"),
        compose.renewal_reminder(style, **who, plan="Coaching Plan", amount=49000, currency="usd", interval="year",
                                 interval_count=1, renews_at=now + timedelta(days=30), cancel_url="https://x.example",
                                 unsubscribe_url="https://u.example"),
        compose.discount_ending(style, **who, plan="Coaching Plan", discount=i18n.gettext(PSEUDO, "your discount"),
                                ends_at=now + timedelta(days=7), next_payment_at=now + timedelta(days=8), amount=4900,
                                currency="usd", interval="month", interval_count=3, cancel_url="https://x.example",
                                unsubscribe_url="https://u.example"),
        compose.offer_accepted(style, **who, plan="Coaching Plan", promise=promise.text,
                               payments=schedule_lines(promise.schedule(), "usd", PSEUDO),
                               billing_url="https://x.example", unsubscribe_url="https://u.example"),
        compose.cancellation_confirmed(style, **who, plan="Coaching Plan", access_until=now + timedelta(days=20),
                                       keep_url="https://x.example", unsubscribe_url="https://u.example"),
        compose.cancellation_confirmed(style, **{**who, "name": None}, plan="Coaching Plan", access_until=None,
                                       keep_url=None, unsubscribe_url=None),
    ]
    problems: list[str] = []
    for email in emails:
        rendered = compose.render(email, style)
        assert '<html lang="en-XA">' in rendered.html
        for part, text in (("subject", rendered.subject), ("text", rendered.text), ("html", read(rendered.html))):
            check(f"{email.kind} {part}", " ".join(text.split()), DATA + ["Visa"], problems)
    from cancel_flow.minting import MintedLinks
    from cancel_flow.web.shared_link_routes import links_message
    links = [MintedLinks("cus_1", f"sub_{n}", f"https://c.example/cancel/{n}", "https://c.example/billing/b", now, now)
             for n in (1, 2)]
    for count in (1, 2):
        message = links_message(brand, links[:count], "casey@example.com", "Casey Client", language=PSEUDO)
        for part, text in (("subject", message.subject), ("text", message.text), ("html", read(message.html))):
            check(f"links email {count} {part}", " ".join(text.split()), DATA, problems)
    assert not problems, "\n".join(problems)


def test_the_checker_finds_a_word_that_skipped_the_catalogs():
    assert unmarked("⟦Çáñçél⟧ Coaching Plan ⟦Ñéxt %(x)s⟧", ["Coaching Plan"]) == []
    assert unmarked("⟦Çáñçél⟧ Continue", []) == ["Continue"]
    assert unmarked("⟦Ýóúr %s plan⟧", []) == ["plan"]  # English inside a pseudo message: an unmarked value
    assert unmarked("⟦Ýóú páý⟧ January 7, 2027 $24.50 https://x.example/a", []) == []
