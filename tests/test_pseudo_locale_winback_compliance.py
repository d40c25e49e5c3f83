"""Every word a client reads on the win-back and compliance pages and in their emails comes from the catalogs: the
same pseudo-language as tests/test_pseudo_locale.py (every catalog message accented and in ⟦…⟧), on "Changed your
mind?" (/keep), the comeback page and its welcome page, the withdrawal function (shared and from a cancel link), the
cancel button, "This wasn't me", their refusals and error pages, the win-back emails and every acknowledgement of a
declaration. Any unaccented word left that isn't a value (a name, an email, a plan, the coach's own offer titles, an
amount, a date, an address, what the client typed) is a word that skipped the catalogs."""

import re
from collections import Counter
from dataclasses import replace
from datetime import datetime, timezone

import httpx
from freezegun import freeze_time

from cancel_flow import billing
from cancel_flow.clock import add_months
from cancel_flow.config.schema import Brand
from cancel_flow.emails import compose, winback_emails
from cancel_flow.emails.winback_schedule import price_words
from tests.helpers import csrf_of
from tests.test_compliance import app, link, send_outbox, shared_declaration, subscriber  # noqa: F401  (app)
from tests.test_pseudo_locale import DATA, PSEUDO, check, pseudo, pseudo_language, read  # noqa: F401  (a fixture)
from tests.test_winback import DAY, HOUR, T0, inbox, link_in, text_of, wait_until, winback  # noqa: F401  (fixtures)

# Values of these scenarios: the clients' names, the coach's comeback offer, what clients typed into the forms.
VALUES = DATA + ["Uma Unsure", "Pat Pricey", "Ida Idle", "Come back for half price", "Lena Weber", "Ann Other",
                 "Max Member", "Mia Stranger", "the yoga plan", "I moved abroad."]
LANG = {"lang": PSEUDO}
ENTER_EMAIL = "Enter the email address you subscribed with, like name@example.com."


class Reader:
    """Checks each page and email it is given in the pseudo-language; collects every problem."""

    def __init__(self):
        self.problems: list[str] = []

    def page(self, where: str, response, expect: str, status: int = 200):
        """A page answered with `status`, showing the catalog message `expect` (the state it should be in)."""
        assert response.status_code == status, (where, response.status_code, response.text[:500])
        if '<html lang="en-XA">' not in response.text:
            self.problems.append(f"{where}: the page is not in the pseudo-language (<html lang>)")
        text = read(response.text)
        if pseudo(expect) not in text:
            self.problems.append(f"{where}: {pseudo(expect)!r} not shown in {text[:300]!r}")
        check(where, text, VALUES, self.problems)
        return response

    def email(self, where: str, subject: str, text: str, html: str) -> None:
        if '<html lang="en-XA">' not in html:
            self.problems.append(f"{where}: the HTML part does not say it is in the pseudo-language (<html lang>: "
                                 f"{re.search(r'<html[^>]*>', html).group(0)!r})")
        for part, words in (("subject", subject), ("text", text), ("html", read(html))):
            check(f"{where} ({part})", " ".join(words.split()), VALUES, self.problems)

    def message(self, where: str, message) -> None:
        self.email(where, message["Subject"], text_of(message), message.get_body(("html",)).get_content())

    def rendered(self, email: compose.Email, style: compose.Style) -> None:
        rendered = compose.render(email, style)
        self.email(f"{email.kind}: {email.subject[:40]}", rendered.subject, rendered.text, rendered.html)

    def finish(self) -> None:
        assert not self.problems, "\n".join(self.problems)


def tampered(url: str) -> str:
    """The link with the end of its token changed: its signature no longer holds."""
    address, _, query = url.partition("?")
    token = address.rsplit("/", 1)[1]
    changed = address[:-3] + ("abc" if not token.endswith("abc") else "xyz")
    return f"{changed}?{query}" if query else changed


def kind_of(message) -> str:
    """Which page an email's button opens: keep, comeback (or other)."""
    found = re.search(r"http://\S+/(keep|comeback)/", text_of(message))
    return found.group(1) if found else "other"


def with_language(url: str) -> str:
    return url if f"lang={PSEUDO}" in url else url + ("&" if "?" in url else "?") + f"lang={PSEUDO}"


# Win-back: the emails as the schedule writes them, and the pages their links open --------------------------

def test_winback_pages_and_emails_show_only_words_from_the_catalogs(pseudo_language, winback, inbox):
    # The clients' language when Stripe doesn't say: every email of the schedule is written in the pseudo-language,
    # and its links open the pages in it.
    winback.config = replace(winback.config, brand=replace(winback.config.brand, default_locale=PSEUDO))
    reader = Reader()
    clients = {"unsure@example.com", "pricey@example.com", "idle@example.com"}
    clock = winback.clock()
    keeper = winback.subscriber(clock, "unsure@example.com", "Uma Unsure")
    pricey = winback.subscriber(clock, "pricey@example.com", "Pat Pricey")
    idle = winback.subscriber(clock, "idle@example.com", "Ida Idle")
    for sub, feedback in ((keeper, "unused"), (pricey, "too_expensive"), (idle, "unused")):
        winback.cancel_outside(sub, feedback)
    ends = add_months(T0, 1)
    assert winback.run(ends - 3 * DAY + HOUR).get("changed_mind") == 3

    def mine(address: str) -> list:
        return [message for message in inbox.messages if message["To"] == address]

    keep = link_in(mine("unsure@example.com")[0], "keep")
    assert keep.endswith(f"?lang={PSEUDO}")
    with freeze_time(ends - 2 * DAY, real_asyncio=True), httpx.Client(timeout=10) as browser:
        shown = reader.page("keep: set to end", browser.get(keep), "Changed your mind?")
        assert browser.post(keep, data={"csrf_token": csrf_of(shown.text)}).status_code == 303
        reader.page("keep: kept", browser.get(keep), "Your subscription continues")
        reader.page("keep: link not valid", browser.get(tampered(keep)), "This link is not valid", 400)
    with freeze_time(ends + 2 * DAY, real_asyncio=True):
        reader.page("keep: link expired", httpx.get(keep), "This link has expired", 410)

    winback.end(clock, [pricey, idle], ends + HOUR)
    with freeze_time(ends + 2 * HOUR, real_asyncio=True):
        reader.page("keep: already ended", httpx.get(link_in(mine("pricey@example.com")[0], "keep")),
                    "Your subscription has ended")

    day30 = ends + 30 * DAY + HOUR
    assert winback.run(day30).get("winback") == 1
    comeback = link_in(mine("pricey@example.com")[-1], "comeback")
    assert comeback.endswith(f"?lang={PSEUDO}")
    now = day30 + HOUR
    winback.catalogue.advance(clock.id, int(now.timestamp()))
    welcome = comeback.split("?")[0] + "/welcome"
    with freeze_time(now, real_asyncio=True), httpx.Client(timeout=10) as browser:
        shown = reader.page("comeback: with an offer", browser.get(comeback), "Your first payments")
        checkout = browser.post(comeback, data={"csrf_token": csrf_of(shown.text)})
        assert checkout.status_code == 303, checkout.text
        session_id = checkout.headers["location"].rsplit("/", 1)[1]
        reader.page("welcome: payment not confirmed yet",
                    browser.get(welcome, params={"session_id": session_id, **LANG}), "Almost there")
        reader.page("welcome: no such payment", browser.get(welcome, params={"session_id": "cs_test_none", **LANG}),
                    "We couldn't use that", 400)
        paid = browser.post(checkout.headers["location"], data={"payment_method": "pm_card_visa"})
        assert paid.status_code == 303 and "/welcome?session_id=" in paid.headers["location"]
        reader.page("welcome back", browser.get(with_language(paid.headers["location"])), "Welcome back!")
    with freeze_time(now + DAY, real_asyncio=True):
        reader.page("comeback: link used", httpx.get(comeback), "This link has already been used", 410)

    # The price idle had is archived: their comeback step offers the product's current price, and says so.
    old = winback.client(idle).price_id
    product = winback.sdk.v1.prices.retrieve(old).product
    newer = winback.sdk.v1.prices.create(params={"product": product, "unit_amount": 5900, "currency": "usd",
                                                 "recurring": {"interval": "month"}})
    winback.sdk.v1.products.update(product, params={"default_price": newer.id})
    winback.sdk.v1.prices.update(old, params={"active": False})
    day45 = ends + 45 * DAY + HOUR
    assert winback.run(day45).get("winback") == 1
    usual = link_in(mine("idle@example.com")[-1], "comeback")
    with freeze_time(day45 + HOUR, real_asyncio=True), httpx.Client(timeout=10) as browser:
        shown = reader.page("comeback: the usual price, a new one", browser.get(usual),
                            "The price you had is no longer offered: this is the plan's price now.")
        reader.page("comeback: link not valid", browser.get(tampered(usual)), "This link is not valid", 400)
    # A fresh comeback link from the shared page, asked for in the pseudo-language.
    before = len(mine("idle@example.com"))
    with httpx.Client(base_url=winback.server.url, timeout=10) as browser:
        form = browser.get("/", params=LANG)
        assert browser.post(f"/?lang={PSEUDO}", data={"csrf_token": csrf_of(form.text),
                                                      "email": "idle@example.com"}).status_code == 200
    wait_until(lambda: len(mine("idle@example.com")) > before)
    winback.sdk.v1.subscriptions.create(params={"customer": idle.customer, "items": [{"price": newer.id}]})
    with freeze_time(day45 + HOUR, real_asyncio=True), httpx.Client(timeout=10) as browser:
        reader.page("comeback: already back", browser.post(usual, data={"csrf_token": csrf_of(shown.text)}),
                    "You're already back", 409)
    with freeze_time(day45 + 31 * DAY, real_asyncio=True):
        reader.page("comeback: link expired", httpx.get(usual), "This link has expired", 410)

    sent = [message for message in inbox.messages if message["To"] in clients]
    kinds = Counter((message["To"], kind_of(message)) for message in sent)
    expected = Counter({("unsure@example.com", "keep"): 1, ("pricey@example.com", "keep"): 1,
                        ("idle@example.com", "keep"): 1, ("pricey@example.com", "comeback"): 1,
                        ("idle@example.com", "comeback"): 2})
    assert kinds >= expected, kinds
    for message in sent:
        reader.message(f"email to {message['To']} ({kind_of(message)}: {message['Subject'][:40]})", message)
    # Fails while cancel_flow/emails/winback_emails.py builds its Email without the client's `language` (greeting,
    # footer, unsubscribe label and <html lang> in English), and while the fresh comeback link email says
    # <html lang="en"> whatever its language (cancel_flow/web/templates/mail_comeback.html).
    reader.finish()


def test_winback_emails_in_every_variant_show_only_words_from_the_catalogs(pseudo_language):
    style = compose.Style(Brand(name="Peak Performance Coaching", support_email="coach@example.com"),
                          "https://coach.example.com")
    now = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
    who = {"to": "casey@example.com", "name": "Casey Client", "language": PSEUDO}
    links = {"unsubscribe_url": "https://u.example"}
    reader = Reader()
    plan = billing.Plan("usd", (billing.Line(4900, 1),), "month", 1, now - 20 * DAY, now + 10 * DAY)
    for discounts in ((), ((50.0, None, now + 90 * DAY),)):  # as it is, and with a discount still running
        promise = billing.keep_promise(plan, now, discounts, PSEUDO)
        reader.rendered(winback_emails.changed_mind(style, **who, **links, plan="Coaching Plan", ends_at=now + 10 * DAY,
                                                    promise=promise.text, keep_url="https://x.example/keep/t"), style)
    offer = "Come back for half price"
    for percent, payments, title, amount, name in ((50, 3, offer, 5900, None), (50, 1, offer, 4900, "Casey Client"),
                                                   (None, None, None, 4900, "Casey Client")):
        plan = billing.Plan("usd", (billing.Line(amount, 1),), "month", 1, now, now)
        promise = billing.comeback_promise(plan, now, percent, payments, PSEUDO)
        reader.rendered(winback_emails.comeback(
            style, **{**who, "name": name}, **links, plan="Coaching Plan", ended_at=now - 30 * DAY,
            promise=promise.text, offer_title=title, price_words=price_words(amount, 1, "usd", "month", 1, PSEUDO),
            price_replaced=amount != 4900, comeback_url="https://x.example/comeback/t", link_until=now + 30 * DAY),
            style)
    # Fails while cancel_flow/emails/winback_emails.py builds its Email without the client's `language`: the
    # greeting, the footer, the unsubscribe label and <html lang> are English whatever the language.
    reader.finish()


# Compliance: the withdrawal function, the cancel button, "This wasn't me", and their acknowledgements ---------

def test_compliance_pages_and_acknowledgements_show_only_words_from_the_catalogs(pseudo_language, app, catalogue,
                                                                                signer, inbox):
    client = app("cancel_button = true")
    reader = Reader()
    page = reader.page
    page("shared link: withdrawal and cancel button", client.get("/", params=LANG), "Cancel contract here")

    # The shared withdrawal form: refusals, then one declaration per outcome (accepted, not eligible, unknown).
    shown = page("withdraw: form", client.get("/withdraw", params=LANG), "Confirm withdrawal")
    for problem, fields in (("Enter your name.", {"name": "", "email": "ann@example.com"}),
                            (ENTER_EMAIL, {"name": "Ann Other", "email": "nope"}),
                            ("Please keep each field shorter.",
                             {"name": "Ann Other " * 40, "email": "ann@example.com"})):
        page(f"withdraw: {problem}", client.post(f"/withdraw?lang={PSEUDO}", data={
            "csrf_token": csrf_of(shown.text), "contract": "", **fields}), problem, 400)
    subscriber(catalogue, email="eu@example.com")
    subscriber(catalogue, country="US", email="us@example.com")
    for email in ("eu@example.com", "us@example.com", "nobody@example.com"):
        answer = shared_declaration(client, f"/withdraw?lang={PSEUDO}", name="Ann Other", email=email, contract="")
        page(f"withdraw: received ({email})", answer, "We received your withdrawal")

    # The cancel button: refusals, then an ordinary cancellation of a known plan and an extraordinary one of an unknown.
    shown = page("cancel contract: form", client.get("/cancel-contract", params=LANG), "Cancel now")
    form = {"csrf_token": csrf_of(shown.text), "name": "Max Member", "email": "max@example.com", "contract": ""}
    for problem, fields in (("Enter your name.", {"name": ""}), (ENTER_EMAIL, {"email": "nope"}),
                            ("Give the reason for an extraordinary cancellation.",
                             {"cancellation": "extraordinary", "reason": ""}),
                            ("Please keep your reason under 2,000 characters.",
                             {"cancellation": "extraordinary", "reason": "x" * 2100}),
                            ("Choose an ordinary or an extraordinary cancellation.", {"cancellation": "sideways"})):
        page(f"cancel contract: {problem}", client.post(f"/cancel-contract?lang={PSEUDO}", data={**form, **fields}),
             problem, 400)
    subscriber(catalogue, email="max@example.com")
    page("cancel contract: received (ordinary)", shared_declaration(
        client, f"/cancel-contract?lang={PSEUDO}", name="Max Member", email="max@example.com", contract="",
        cancellation="ordinary"), "We received your cancellation")
    answer = shared_declaration(client, f"/cancel-contract?lang={PSEUDO}", name="Mia Stranger", email="mia@example.com",
                                contract="the yoga plan", cancellation="extraordinary", reason="I moved abroad.")
    page("cancel contract: received (extraordinary)", answer, "We received your cancellation")

    # The withdrawal from a cancel link: the button on the flow's page, the form (in the link's language cookie), a
    # refusal, the withdrawal, and the refusals when the subscription can't be withdrawn from.
    url = link(signer, subscriber(catalogue, email="lena@example.com"))
    page("cancel link: reason, with the withdrawal button", client.get(url, params=LANG), "Withdraw from contract here")
    shown = page("cancel link: withdraw form", client.get(f"{url}/withdraw"), "Confirm withdrawal")
    page("cancel link: withdraw, not an email", client.post(f"{url}/withdraw", data={
        "csrf_token": csrf_of(shown.text), "name": "Lena Weber", "email": "nope"}), ENTER_EMAIL, 400)
    done = client.post(f"{url}/withdraw", data={"csrf_token": csrf_of(shown.text), "name": "Lena Weber",
                                                "email": "lena@example.com"})
    assert done.status_code == 303, done.text
    page("cancel link: withdrawn", client.get(done.headers["location"]), "You have withdrawn from your contract")
    clock = catalogue.test_clock(int((datetime.now(timezone.utc) - 15 * DAY).timestamp()))
    late = catalogue.subscription(catalogue.customer(email="late@example.com", name="Lena Weber",
                                                     address={"country": "FR"}, test_clock=clock.id))
    for where, sub in (("outside the EEA", subscriber(catalogue, country="US", email="far@example.com")),
                       ("a business", subscriber(catalogue, email="firm@example.com", business=True)),
                       ("the period is over", late)):
        page(f"withdrawal not available: {where}", client.get(f"{link(signer, sub)}/withdraw", params=LANG),
             "Withdrawal not available", 409)

    # Every acknowledgement, as the outbox sends it; then "This wasn't me" from the cancel button's.
    send_outbox(client)
    clients = ("eu@example.com", "us@example.com", "nobody@example.com", "max@example.com", "mia@example.com",
               "lena@example.com")
    acknowledgements = {message["To"]: message for message in inbox.messages if message["To"] in clients}
    assert sorted(acknowledgements) == sorted(clients), [m["To"] for m in inbox.messages]
    for to, message in acknowledgements.items():
        reader.message(f"acknowledgement to {to}", message)
    undo = re.search(r"http://testserver(/declarations/\S+/undo)",
                     text_of(acknowledgements["max@example.com"])).group(1)
    page("this wasn't me: ask", client.get(undo, params=LANG), "Keep your plan?")
    csrf = {"csrf_token": client.cookies.get("cf_form_csrf")}
    page("this wasn't me: plan kept", client.post(f"{undo}?lang={PSEUDO}", data=csrf), "Your plan continues")
    page("this wasn't me: nothing to undo", client.post(f"{undo}?lang={PSEUDO}", data=csrf), "Nothing to undo", 410)
    page("this wasn't me: link not valid", client.get("/declarations/not-a-real-link/undo", params=LANG),
         "This link is not valid", 400)
    # Fails while the done page after a withdrawal is worded in English whatever the client's language
    # (CancelService.outcome, session.outcome == "withdrawn", in cancel_flow/cancel_service.py).
    reader.finish()


def test_declaration_acknowledgements_and_receipts_in_every_variant_show_only_words_from_the_catalogs(pseudo_language):
    from cancel_flow.compliance import cancellation_content, refund_words, withdrawal_content

    style = compose.Style(Brand(name="Peak Performance Coaching", support_email="coach@example.com"),
                          "https://coach.example.com", "Europe/Berlin")
    received = datetime(2026, 12, 9, 13, 3, 27, tzinfo=timezone.utc)
    until = datetime(2027, 1, 9, tzinfo=timezone.utc)
    contract = "Coaching Plan"
    withdrawn = withdrawal_content("Lena Weber", "lena@example.com", contract, PSEUDO)
    canceled = cancellation_content("Lena Weber", "lena@example.com", contract, "ordinary", None, PSEUDO)
    extraordinary = cancellation_content("Mia Stranger", "mia@example.com", "the yoga plan", "extraordinary",
                                         "I moved abroad.", PSEUDO)
    refunds = [refund_words(mode, amount, "eur", PSEUDO) for mode, amount in
               (("full", 4900), ("full", None), ("full", 0), ("prorated", 4100), ("prorated", None), ("manual", None))]
    declarations = [
        *(compose.Declaration("withdrawal", withdrawn, "accepted", contract, refund=refund) for refund in refunds),
        compose.Declaration("withdrawal", withdrawn, "accepted", contract),
        compose.Declaration("withdrawal", withdrawn, "not_eligible", contract, cancel_url="https://x.example/cancel/t"),
        compose.Declaration("withdrawal", withdrawn, "not_eligible", contract),
        compose.Declaration("withdrawal", withdrawn, "needs_coach", contract),
        compose.Declaration("cancellation", canceled, "accepted", contract,
                            undo_url="https://x.example/declarations/t/undo"),
        compose.Declaration("cancellation", canceled, "accepted", contract),
        compose.Declaration("cancellation", extraordinary, "needs_coach", "the yoga plan"),
    ]
    who = {"to": "lena@example.com", "name": "Lena Weber", "plan": "Coaching Plan", "keep_url": None,
           "unsubscribe_url": None, "received_at": received, "language": PSEUDO}
    reader = Reader()
    for declaration in declarations:
        for access_until in ((until, None) if declaration.kind == "cancellation" else (None,)):
            reader.rendered(compose.cancellation_confirmed(style, **who, access_until=access_until,
                                                           declaration=declaration), style)
    # The receipt of a cancellation made outside the flow (Stripe's portal, the coach): received, takes effect.
    for access_until, keep_url in ((until, "https://x.example/cancel/t"), (None, None)):
        reader.rendered(compose.cancellation_confirmed(style, **{**who, "keep_url": keep_url},
                                                       access_until=access_until), style)
    reader.finish()
