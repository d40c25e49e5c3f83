"""Win-back end to end: the app and the Stripe emulator over HTTP with Stripe's webhooks reaching the app, a real SMTP
server (aiosmtpd), Stripe's time moved by test clocks and ours by freezegun."""

import html
import re
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
import stripe
from freezegun import freeze_time

from bench.harness import free_port
from cancel_flow.clock import add_months, from_unix
from cancel_flow.config.live import LiveConfiguration
from cancel_flow.emails import records
from cancel_flow.emails.run import run_pass
from cancel_flow.models import (BillingEmail, CancelSession, EmailRefusal, OutboxDelivery, OutboxEvent, WinbackClient,
                                WinbackStep)
from cancel_flow.money import format_day, format_money
from cancel_flow.store import make_engine
from cancel_flow.store.stats import DateRange, StatsQueries
from cancel_flow.store.winback_stats import winback_stats
from tests.conftest import ROOT, Inbox
from tests.helpers import csrf_of, load_config

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
EVENTS = ["customer.subscription.updated", "customer.subscription.deleted", "invoice.payment_failed", "invoice.paid",
          "invoice.voided", "checkout.session.completed"]
T0 = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
WINBACK = """
[[offer]]
id = "comeback-half"
kind = "discount"
percent_off = 50
payments = 3
title = "Come back for half price"
comeback_only = true

[alerts]
email = "coach-alerts@example.com"
events = ["subscription.won_back"]

[winback]
changed_mind_days_before = 3
[[winback.step]]
reasons = ["too_expensive"]
days_after = 30
offer = "comeback-half"
[[winback.step]]
reasons = ["unused", "other"]
days_after = 45
[[winback.step]]
days_after = 60
"""


def table(name):
    return {"emails": BillingEmail, "sessions": CancelSession, "clients": WinbackClient, "steps": WinbackStep,
            "refusals": EmailRefusal, "deliveries": OutboxDelivery, "events": OutboxEvent}[name].__table__


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def wait_until(check, timeout: float = 15):
    import time

    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return found


def words(response) -> str:
    return html.unescape(response.text)


class RefusingInbox(Inbox):
    """A real SMTP server that refuses some recipients for good (550 at RCPT TO)."""

    def __init__(self):
        super().__init__()
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def inbox():
    from aiosmtpd.controller import Controller

    box = RefusingInbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}"
    yield box
    controller.stop()


class Winback:
    """The served app with Stripe's webhooks reaching it, and passes of the email schedule at chosen times."""

    def __init__(self, settings, config, server, engine, sdk, catalogue, signer):
        self.settings, self.config, self.server, self.engine = settings, config, server, engine
        self.sdk, self.catalogue, self.signer = sdk, catalogue, signer

    def run(self, at: datetime) -> dict:
        with freeze_time(at, real_asyncio=True):
            return dict(run_pass(self.engine, self.settings, LiveConfiguration.fixed(self.config), scan=True)[0])

    def rows(self, name, *where):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(table(name)).where(*where)).all()

    def clock(self, at: datetime = T0):
        return self.catalogue.test_clock(int(at.timestamp()))

    def subscriber(self, clock, email: str, name: str = "Casey Client", amount: int = 4900):
        customer = self.catalogue.customer(email=email, name=name, test_clock=clock.id)
        return self.catalogue.subscription(customer, amount=amount)

    def cancel_in_flow(self, sub, reason: str):
        """The subscriber's way: our page with the reason, then Stripe's portal confirms at the period's end."""
        token, _ = self.signer.cancel_token(sub.customer, sub.id)
        with httpx.Client(base_url=self.server.url, timeout=10) as browser:
            page = browser.get(f"/cancel/{token}")
            portal = browser.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf_of(page.text), "reason": reason})
            assert portal.status_code == 303, portal.text
            assert httpx.post(portal.headers["location"] + "/cancel", data={}).status_code == 303
        wait_until(lambda: any(r.outcome == "canceled" for r in self.rows("sessions", table("sessions").c.subscription_id == sub.id)))

    def cancel_outside(self, sub, feedback: str, now: bool = False):
        """The coach (or Stripe's own portal) cancels, with Stripe's feedback: no session of ours."""
        details = {"cancellation_details": {"feedback": feedback}}
        if now:
            self.sdk.v1.subscriptions.cancel(sub.id, params=details)
        else:
            self.sdk.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True, **details})

    def end(self, clock, subs, at: datetime):
        self.catalogue.advance(clock.id, int(at.timestamp()))
        for sub in subs:
            wait_until(lambda: self.rows("clients", table("clients").c.subscription_id == sub.id))

    def client(self, sub):
        [row] = self.rows("clients", table("clients").c.subscription_id == sub.id)
        return row


@pytest.fixture
def winback(live_server, settings, inbox, stripe_client, catalogue, signer, tmp_path):
    text = (ROOT / "offers.toml").read_text().replace('logo = "static/logo.svg"', f'logo = "{ROOT / "static/logo.svg"}"')
    offers = tmp_path / "offers.toml"
    offers.write_text(text + WINBACK)
    config = load_config(offers)
    endpoint = stripe_client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/later", "enabled_events": EVENTS,
                                                                 "api_version": stripe.api_version})
    server = live_server(stripe_webhook_secret=endpoint.secret, smtp_url=inbox.url, offers_path=offers)
    stripe_client.v1.webhook_endpoints.update(endpoint.id, params={"url": f"{server.url}/webhooks/stripe"})
    served = replace(settings, base_url=server.url, smtp_url=inbox.url, stripe_webhook_secret=endpoint.secret,
                     offers_path=offers)
    engine = make_engine(settings.database_url)
    yield Winback(served, config, server, engine, stripe_client, catalogue, signer)
    engine.dispose()


def link_in(message, path: str) -> str:
    return re.search(rf"(http://\S+/{path}/[^\s<>\"]+)", text_of(message)).group(1)


def by_recipient(inbox) -> dict:
    found = {}
    for message in inbox.messages:
        found.setdefault(message["To"], []).append(message)
    return found


def assert_one_click_unsubscribe(message, label: str) -> str:
    link = re.search(r"(http://\S+/emails/unsubscribe/[^\s<>\"]+)", text_of(message)).group(1)
    assert message["List-Unsubscribe"] == f"<{link}>, <mailto:coach@example.com?subject={label}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return link


# Reason-timed comeback steps ----------------------------------------------------------------------------

def test_each_reasons_step_comes_on_its_day_once_and_in_order(winback, inbox):
    clock = winback.clock()
    pricey = winback.subscriber(clock, "pricey@example.com", "Pat Pricey")
    idle = winback.subscriber(clock, "idle@example.com", "Ida Idle")
    picky = winback.subscriber(clock, "picky@example.com", "Pia Picky")
    winback.cancel_in_flow(pricey, "too_expensive")
    winback.cancel_outside(idle, "unused")
    winback.cancel_outside(picky, "low_quality")
    ended = add_months(T0, 1)
    winback.end(clock, [pricey, idle, picky], ended + HOUR)
    assert winback.client(pricey).reason == "too_expensive" and winback.client(pricey).reason_source == "flow"
    assert winback.client(idle).reason == "unused" and winback.client(idle).reason_source == "stripe"
    assert winback.client(pricey).session_id is not None and winback.client(idle).session_id is None

    assert winback.run(ended + 30 * DAY - HOUR) == {}
    assert winback.run(ended + 30 * DAY + HOUR) == {"winback": 1}
    assert winback.run(ended + 30 * DAY + 2 * HOUR) == {}
    assert winback.run(ended + 44 * DAY) == {}
    assert winback.run(ended + 45 * DAY + HOUR) == {"winback": 1}
    assert winback.run(ended + 46 * DAY) == {}
    assert winback.run(ended + 60 * DAY + HOUR) == {"winback": 3}  # the every-reason step, to all three
    assert winback.run(ended + 60 * DAY + 2 * HOUR) == {}
    got = {to: [m["Subject"] for m in messages] for to, messages in by_recipient(inbox).items()}
    assert got == {
        "pricey@example.com": ["Come back to Coaching Plan: Come back for half price",
                               "Your place at Peak Performance Coaching is still here"],
        "idle@example.com": ["Your place at Peak Performance Coaching is still here"] * 2,
        "picky@example.com": ["Your place at Peak Performance Coaching is still here"],
    }
    steps = sorted((row.customer_id, row.step) for row in winback.rows("steps"))
    assert steps == sorted([(pricey.customer, 1), (pricey.customer, 3), (idle.customer, 2), (idle.customer, 3),
                            (picky.customer, 3)])
    first = by_recipient(inbox)["pricey@example.com"][0]
    text = text_of(first)
    assert "Hi Pat Pricey," in text and "Coaching Plan is $49.00/month, as before." in text
    assert "50% off your first 3 payments (today, then" in text and "$24.50/month, then $49.00/month from" in text
    assert_one_click_unsubscribe(first, "Stop%20emails%20about%20coming%20back")
    assert {row.status for row in winback.rows("emails")} == {"sent"}


def test_a_step_that_passed_while_nothing_ran_is_not_sent_late(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "late@example.com")
    winback.cancel_outside(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    assert winback.run(ended + 33 * DAY) == {}  # day 30's step is 3 days overdue: it gives way
    assert winback.run(ended + 60 * DAY + HOUR) == {"winback": 1}
    assert [row.step for row in winback.rows("steps")] == [3]


def test_a_client_who_resubscribes_on_their_own_gets_nothing_more(winback, inbox, catalogue):
    clock = winback.clock()
    sub = winback.subscriber(clock, "back@example.com")
    winback.cancel_in_flow(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    assert winback.run(ended + 30 * DAY + HOUR) == {"winback": 1}
    winback.catalogue.advance(clock.id, int((ended + 40 * DAY).timestamp()))
    again = winback.sdk.v1.subscriptions.create(params={"customer": sub.customer, "items": [{"price": catalogue.price().id}]})
    assert winback.run(ended + 60 * DAY + HOUR) == {}
    assert len(inbox.messages) == 1
    client = winback.client(sub)
    assert client.returned_at is not None and client.returned_subscription_id == again.id
    [skipped] = [row for row in winback.rows("steps") if row.step == 3]
    assert skipped.skipped == "Not sent: the client subscribed again."
    assert winback.run(ended + 61 * DAY) == {}


def test_unsubscribing_stops_the_next_steps(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "enough@example.com")
    winback.cancel_outside(sub, "other")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    assert winback.run(ended + 45 * DAY + HOUR) == {"winback": 1}
    one_click = b"List-Unsubscribe=One-Click"
    link = assert_one_click_unsubscribe(inbox.messages[0], "Stop%20emails%20about%20coming%20back")
    assert httpx.post(link, content=one_click, headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 200
    assert records.unsubscribed(winback.engine, sub.customer, "winback")
    assert winback.run(ended + 60 * DAY + HOUR) == {}
    assert len(inbox.messages) == 1
    assert [row.skipped for row in winback.rows("steps") if row.step == 3] == ["Not sent: the client turned these emails off."]


# The comeback checkout -----------------------------------------------------------------------------------

def payments_on(page_text: str) -> list[tuple[str, str]]:
    """The comeback page's schedule: (date, amount) per payment, as the promise words it."""
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+?)(?: <s>[^<]+</s>)?</td></tr>", page_text)
    return [(html.unescape(day), html.unescape(amount)) for day, amount in rows]


def test_the_comeback_checkout_bills_the_promised_discount_payment_by_payment(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "pricey@example.com", "Pat Pricey")
    winback.cancel_in_flow(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    day30 = ended + 30 * DAY + HOUR
    assert winback.run(day30) == {"winback": 1}
    comeback = link_in(inbox.messages[0], "comeback")
    now = day30 + HOUR
    winback.catalogue.advance(clock.id, int(now.timestamp()))  # Stripe's time is ours: the new subscription starts now
    with freeze_time(now, real_asyncio=True), httpx.Client(timeout=10) as browser:
        page = browser.get(comeback)
        assert page.status_code == 200
        assert "Come back to Coaching Plan" in words(page) and "$49.00/month" in words(page)
        assert "50% off your first 3 payments (today, then" in words(page)
        promised = payments_on(page.text)
        assert promised == [(format_day(now), "$24.50"), (format_day(add_months(now, 1)), "$24.50"),
                            (format_day(add_months(now, 2)), "$24.50"), (format_day(add_months(now, 3)), "$49.00")]
        checkout = browser.post(comeback, data={"csrf_token": csrf_of(page.text)})
        assert checkout.status_code == 303 and "/c/pay/cs_test_" in checkout.headers["location"]
        paid = browser.post(checkout.headers["location"], data={"payment_method": "pm_card_visa"})
        assert paid.status_code == 303 and "/welcome?session_id=cs_test_" in paid.headers["location"]
        welcome = browser.get(paid.headers["location"])
        assert welcome.status_code == 200 and "Welcome back!" in words(welcome)
    session_id = checkout.headers["location"].rsplit("/", 1)[1]
    session = winback.sdk.v1.checkout.sessions.retrieve(session_id, params={"expand": ["line_items"]})
    assert session.locale == "en" and session.customer == sub.customer and session.mode == "subscription"
    assert session.line_items.data[0].price.id == winback.client(sub).price_id
    new = winback.sdk.v1.subscriptions.retrieve(session.subscription, params={"expand": ["discounts"]})
    [discount] = new.discounts
    assert discount.source.coupon == "cancel-flow_comeback-half_50pct_3m"

    for month in (1, 2, 3):
        winback.catalogue.advance(clock.id, int((add_months(now, month) + 2 * HOUR).timestamp()))
    invoices = sorted(winback.sdk.v1.invoices.list(params={"subscription": new.id}).data, key=lambda i: i.created)
    billed = [(format_day(from_unix(i.created)), format_money(i.amount_paid, i.currency)) for i in invoices]
    assert [i.status for i in invoices] == ["paid"] * 4
    assert billed == promised

    client = winback.client(sub)
    assert client.won_back_step == 1 and client.won_back_subscription_id == new.id and client.mrr_won_back == 4900
    [session_row] = winback.rows("sessions", table("sessions").c.subscription_id == sub.id)
    assert session_row.outcome == "won_back" and session_row.won_back_subscription_id == new.id
    wait_until(lambda: winback.rows("events", table("events").c.type == "subscription.won_back"))
    assert len(winback.rows("events", table("events").c.type == "subscription.won_back")) == 1
    winback.run(now + 4 * 31 * DAY)  # the pass sends the coach's alert; no more steps for a client who is back
    alert = [m for m in inbox.messages if m["To"] == "coach-alerts@example.com"]
    assert [m["Subject"] for m in alert] == ["Pat Pricey (pricey@example.com) came back to Coaching Plan"]
    assert "Came back with “Come back for half price”" in text_of(alert[0])
    assert [m["To"] for m in inbox.messages].count("pricey@example.com") == 1

    # The link is used now: a clear page with the way to a fresh link.
    with freeze_time(now + DAY, real_asyncio=True):
        used = httpx.get(comeback)
        assert used.status_code == 410 and "This link has already been used" in words(used)
        assert "Get a fresh link by email" in words(used)
        assert httpx.post(comeback, data={"csrf_token": csrf_of(page.text)}).status_code == 410


def test_a_comeback_link_tampered_or_older_than_30_days_gets_a_clear_page(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "idle@example.com")
    winback.cancel_outside(sub, "unused")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    assert winback.run(ended + 45 * DAY + HOUR) == {"winback": 1}
    comeback = link_in(inbox.messages[0], "comeback")
    with freeze_time(ended + 45 * DAY + 2 * HOUR, real_asyncio=True):
        page = httpx.get(comeback)
        assert page.status_code == 200 and "$49.00/month: your first payment today" in words(page)
        tampered = httpx.get(comeback[:-3] + ("abc" if not comeback.endswith("abc") else "xyz"))
        assert tampered.status_code == 400 and "This link is not valid" in words(tampered)
        assert "Email me a fresh link" in words(tampered)
        forged = winback.signer.comeback_token(sub.customer, 7)  # a step this client never got
        assert httpx.get(f"{winback.server.url}/comeback/{forged}").status_code == 400
    with freeze_time(ended + 45 * DAY + 31 * DAY, real_asyncio=True):
        expired = httpx.get(comeback)
        assert expired.status_code == 410 and "Get a fresh link by email" in words(expired)
    # The shared link emails a client who left a fresh comeback link.
    with httpx.Client(base_url=winback.server.url) as browser:
        form = browser.get("/")
        assert browser.post("/", data={"csrf_token": csrf_of(form.text), "email": "idle@example.com"}).status_code == 200
    fresh = wait_until(lambda: [m for m in inbox.messages if m["Subject"] == "Your link to come back to Peak Performance Coaching"])
    assert httpx.get(link_in(fresh[0], "comeback")).status_code == 200


def test_a_comeback_when_already_subscribed_again_opens_no_checkout(winback, inbox, catalogue):
    clock = winback.clock()
    sub = winback.subscriber(clock, "twice@example.com")
    winback.cancel_outside(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    assert winback.run(ended + 30 * DAY + HOUR) == {"winback": 1}
    winback.sdk.v1.subscriptions.create(params={"customer": sub.customer, "items": [{"price": catalogue.price().id}]})
    comeback = link_in(inbox.messages[0], "comeback")
    with freeze_time(ended + 30 * DAY + 2 * HOUR, real_asyncio=True), httpx.Client() as browser:
        page = browser.get(comeback)
        refused = browser.post(comeback, data={"csrf_token": csrf_of(page.text)})
        assert refused.status_code == 409 and "already subscribed again" in words(refused)
        assert browser.post(comeback, data={"csrf_token": "forged"}).status_code == 400
    assert winback.sdk.v1.checkout.sessions.list(params={"customer": sub.customer}).data == []


def test_an_archived_price_comes_back_at_the_products_current_price_and_says_so(winback, inbox, catalogue):
    clock = winback.clock()
    sub = winback.subscriber(clock, "pricey@example.com")
    winback.cancel_outside(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    old = winback.client(sub).price_id
    product = winback.sdk.v1.prices.retrieve(old).product
    newer = winback.sdk.v1.prices.create(params={"product": product, "unit_amount": 5900, "currency": "usd",
                                                 "recurring": {"interval": "month"}})
    winback.sdk.v1.products.update(product, params={"default_price": newer.id})
    winback.sdk.v1.prices.update(old, params={"active": False})
    assert winback.run(ended + 30 * DAY + HOUR) == {"winback": 1}
    text = text_of(inbox.messages[0])
    assert "The price you had is no longer offered; Coaching Plan is now $59.00/month." in text
    assert "$29.50/month, then $59.00/month" in text
    [step] = winback.rows("steps")
    assert (step.price_id, step.unit_amount, step.price_replaced) == (newer.id, 5900, True)
    comeback = link_in(inbox.messages[0], "comeback")
    with freeze_time(ended + 30 * DAY + 2 * HOUR, real_asyncio=True), httpx.Client() as browser:
        page = browser.get(comeback)
        assert "no longer offered" in words(page) and "$59.00/month" in words(page)
        checkout = browser.post(comeback, data={"csrf_token": csrf_of(page.text)})
    session = winback.sdk.v1.checkout.sessions.retrieve(checkout.headers["location"].rsplit("/", 1)[1],
                                                        params={"expand": ["line_items"]})
    assert session.line_items.data[0].price.id == newer.id and session.amount_total == 2950


def test_an_archived_price_without_a_stand_in_skips_the_step_and_alerts_the_coach(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "stranded@example.com")
    winback.cancel_outside(sub, "too_expensive")
    ended = add_months(T0, 1)
    winback.end(clock, [sub], ended + HOUR)
    old = winback.client(sub).price_id
    product = winback.sdk.v1.prices.retrieve(old).product
    yearly = winback.sdk.v1.prices.create(params={"product": product, "unit_amount": 49000, "currency": "usd",
                                                  "recurring": {"interval": "year"}})
    winback.sdk.v1.products.update(product, params={"default_price": yearly.id})
    winback.sdk.v1.prices.update(old, params={"active": False})
    assert winback.run(ended + 30 * DAY + HOUR) == {}
    assert winback.run(ended + 30 * DAY + 2 * HOUR) == {}
    [step] = winback.rows("steps")
    assert "price was archived" in step.skipped
    assert [m["To"] for m in inbox.messages] == ["coach-alerts@example.com"]
    assert "was not sent" in inbox.messages[0]["Subject"] and old in text_of(inbox.messages[0])


# "Changed your mind?" -------------------------------------------------------------------------------------

def test_keep_my_plan_undoes_the_scheduled_cancellation_and_counts_as_a_save(winback, inbox, client, store):
    clock = winback.clock()
    sub = winback.subscriber(clock, "unsure@example.com", "Uma Unsure")
    winback.cancel_in_flow(sub, "unused")
    ends = add_months(T0, 1)
    assert winback.run(ends - 4 * DAY) == {}
    assert winback.run(ends - 3 * DAY + HOUR) == {"changed_mind": 1}
    assert winback.run(ends - 3 * DAY + 2 * HOUR) == {}
    assert winback.run(ends - DAY) == {}
    [email] = inbox.messages
    day = format_day(ends)
    assert email["Subject"] == f"Your Coaching Plan subscription ends on {day}"
    text = text_of(email)
    assert "Hi Uma Unsure," in text and f"set to end on {day}" in text
    assert f"your next payment is $49.00 on {day}, then $49.00/month from {format_day(add_months(ends, 1))}" in text
    assert_one_click_unsubscribe(email, "Stop%20reminders%20before%20my%20subscription%20ends")
    keep = link_in(email, "keep")
    with freeze_time(ends - 2 * DAY, real_asyncio=True), httpx.Client() as browser:
        page = browser.get(keep)
        assert page.status_code == 200 and f"Set to end on <strong>{day}</strong>" in words(page)
        assert f"your next payment is $49.00 on {day}" in words(page) and "Continue to cancel" not in page.text
        assert browser.post(keep, data={"csrf_token": "forged"}).status_code == 400
        assert winback.sdk.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True
        kept = browser.post(keep, data={"csrf_token": csrf_of(page.text)})
        assert kept.status_code == 303 and keep.endswith(kept.headers["location"])
        after = browser.get(keep)
        assert "Your subscription continues" in words(after) and "no longer set to end" in words(after)
    stripe_sub = winback.sdk.v1.subscriptions.retrieve(sub.id)
    assert stripe_sub.cancel_at_period_end is False and stripe_sub.cancel_at is None
    [session] = winback.rows("sessions", table("sessions").c.subscription_id == sub.id)
    assert session.outcome == "saved_keep" and session.kept_at is not None
    # A save like any other: in the save rate, and in win-back's "changed your mind?" figures.
    with freeze_time(ends - 2 * DAY, real_asyncio=True):
        period = DateRange(T0 - 60 * DAY, ends + DAY)
        numbers = StatsQueries(winback.engine).stats(DateRange(datetime(2020, 1, 1, tzinfo=timezone.utc), ends + DAY))
        assert numbers.outcomes.get("saved_keep") == 1 and numbers.saved == 1 and numbers.canceled == 0
        assert winback_stats(winback.engine, period)["changed_mind"] == {"emails_sent": 1, "kept": 1}
    winback.catalogue.advance(clock.id, int((ends + 2 * HOUR).timestamp()))
    assert winback.sdk.v1.subscriptions.retrieve(sub.id).status == "active"  # it renewed instead of ending


def test_keep_for_a_subscription_canceled_in_the_portal_without_the_flow_opens_a_session(winback, inbox):
    clock = winback.clock()
    sub = winback.subscriber(clock, "portal@example.com")
    winback.cancel_outside(sub, "too_complex")
    ends = add_months(T0, 1)
    assert winback.run(ends - 3 * DAY + HOUR) == {"changed_mind": 1}
    keep = link_in(inbox.messages[0], "keep")
    with freeze_time(ends - 2 * DAY, real_asyncio=True), httpx.Client() as browser:
        page = browser.get(keep)
        assert browser.post(keep, data={"csrf_token": csrf_of(page.text)}).status_code == 303
    [session] = winback.rows("sessions", table("sessions").c.subscription_id == sub.id)
    assert session.outcome == "saved_keep"
    assert winback.sdk.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is False


def test_no_winback_email_goes_to_an_address_the_mail_server_refused(winback, inbox):
    inbox.refuse.add("gone@example.com")
    clock = winback.clock()
    sub = winback.subscriber(clock, "gone@example.com")
    winback.cancel_outside(sub, "too_expensive")
    ends = add_months(T0, 1)
    assert winback.run(ends - 3 * DAY + HOUR) == {"changed_mind": 1}
    [refusal] = winback.rows("refusals")
    assert (refusal.email, refusal.code, refusal.customer_id) == ("gone@example.com", 550, sub.customer)
    [email] = winback.rows("emails")
    assert email.status == "failed" and "550" in email.last_error
    winback.end(clock, [sub], ends + HOUR)
    assert winback.run(ends + 30 * DAY + HOUR) == {}
    [step] = winback.rows("steps")
    assert step.skipped == "Not sent: the mail server refused this address before."
    assert inbox.messages == []


def test_winback_emails_are_written_once_across_workers(winback, inbox):
    clock = winback.clock()
    subs = [winback.subscriber(clock, f"member{n}@example.com") for n in range(3)]
    for sub in subs:
        winback.cancel_outside(sub, "unused")
    ended = add_months(T0, 1)
    winback.end(clock, subs, ended + HOUR)
    results, errors = [], []

    def worker():
        try:
            results.append(run_pass(winback.engine, winback.settings, LiveConfiguration.fixed(winback.config), scan=True)[0])
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    with freeze_time(ended + 45 * DAY + HOUR, real_asyncio=True):
        threads = [threading.Thread(target=worker) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    assert sum(r.get("winback", 0) for r in results) == 3
    assert sorted(m["To"] for m in inbox.messages) == [f"member{n}@example.com" for n in range(3)]


# Measured ---------------------------------------------------------------------------------------------

def test_the_dashboard_and_api_figures_reconcile_with_the_rows(winback, inbox, make_client):
    from cancel_flow.store.api_keys import ApiKeyStore
    from cancel_flow.store.coaches import CoachStore
    from cancel_flow.passwords import hash_password

    clock = winback.clock()
    back = winback.subscriber(clock, "back@example.com", "Bo Back")
    idle = winback.subscriber(clock, "idle@example.com", "Ida Idle")
    winback.cancel_in_flow(back, "too_expensive")
    winback.cancel_outside(idle, "unused")
    ended = add_months(T0, 1)
    winback.end(clock, [back, idle], ended + HOUR)
    assert winback.run(ended + 30 * DAY + HOUR) == {"winback": 1}
    assert winback.run(ended + 45 * DAY + HOUR) == {"winback": 1}
    now = ended + 45 * DAY + 2 * HOUR
    winback.catalogue.advance(clock.id, int(now.timestamp()))
    links = {m["To"]: link_in(m, "comeback") for m in inbox.messages}
    with freeze_time(now, real_asyncio=True), httpx.Client() as browser:
        assert browser.get(links["idle@example.com"]).status_code == 200
        assert browser.get(links["idle@example.com"]).status_code == 200  # opened twice: one page opened
        page = browser.get(links["back@example.com"])
        checkout = browser.post(links["back@example.com"], data={"csrf_token": csrf_of(page.text)})
        browser.post(checkout.headers["location"], data={"payment_method": "pm_card_visa"})
    wait_until(lambda: winback.client(back).won_back_at is not None)

    key = "cfk_" + "w" * 40
    ApiKeyStore(winback.engine).add("stats", key, ("stats",))
    with freeze_time(now + HOUR, real_asyncio=True):
        everything = httpx.get(f"{winback.server.url}/api/stats", params={"from": "2026-01-01", "to": "2027-12-31"},
                               headers={"Authorization": f"Bearer {key}"}).json()
    figures = everything["winback"]
    # The client back canceled first: still a cancellation in the save rate.
    assert everything["outcomes"]["won_back"] == 1 and everything["canceled"] == 1 and everything["save_rate"] == 0
    sent = [row for row in winback.rows("emails") if row.kind == "winback" and row.status == "sent"]
    opened = [row for row in winback.rows("steps") if row.opened_at is not None]
    returned = [row for row in winback.rows("clients") if row.won_back_at is not None]
    assert figures["emails_sent"] == len(sent) == 2
    assert figures["pages_opened"] == len(opened) == 2
    assert figures["won_back"] == len(returned) == 1
    assert figures["mrr_won_back"] == [{"currency": "usd", "amount": sum(r.mrr_won_back for r in returned)}] \
        == [{"currency": "usd", "amount": 4900}]
    by_reason = {row["reason"]: row for row in figures["by_reason"]}
    assert (by_reason["too_expensive"]["emails_sent"], by_reason["too_expensive"]["won_back"]) == (1, 1)
    assert (by_reason["unused"]["emails_sent"], by_reason["unused"]["pages_opened"], by_reason["unused"]["won_back"]) == (1, 1, 0)
    by_step = {row["step"]: row for row in figures["by_step"]}
    assert by_step[1]["won_back"] == 1 and by_step[2]["emails_sent"] == 1 and by_step[1]["mrr_won_back"][0]["amount"] == 4900

    CoachStore(winback.engine).add("coach@example.com", hash_password("correct horse battery"))
    dashboard = make_client(base_url=winback.server.url)
    with freeze_time(now + HOUR, real_asyncio=True):
        login = dashboard.get("/dashboard/login")
        dashboard.post("/dashboard/login", data={"csrf_token": csrf_of(login.text), "email": "coach@example.com",
                                                 "password": "correct horse battery"})
        page = dashboard.get("/dashboard/payments", params={"from": "2026-01-01", "to": "2027-12-31"})
        sessions = dashboard.get("/dashboard/sessions", params={"from": "2026-01-01", "to": "2027-12-31"})
        csv = dashboard.get("/dashboard/export.csv", params={"from": "2026-01-01", "to": "2027-12-31"})
    shown = words(page)
    for element, value in (("stat-winback-sent", "2"), ("stat-winback-opened", "2"), ("stat-winback-back", "1"),
                           ("stat-winback-mrr", "$49.00")):
        assert re.search(rf'id="{element}">{re.escape(value)}</p>', shown), element
    assert "Won back" in words(sessions)
    header, *lines = csv.text.lstrip("\ufeff").splitlines()
    columns = header.split(",")
    row = dict(zip(columns, next(line for line in lines if back.id in line).split(",")))
    assert row["outcome"] == "won_back" and row["won_back_step"] == "1" and row["winback_emails_sent"] == "1"
    assert row["mrr_won_back"] == "49.00" and row["won_back_subscription"] == winback.client(back).won_back_subscription_id


def test_stripe_setup_adds_checkout_session_completed_to_an_existing_endpoint(settings, stripe_client):
    import asyncio

    from cancel_flow.setup import run_stripe_setup

    old = ["customer.subscription.updated", "customer.subscription.deleted", "invoice.payment_failed", "invoice.paid",
           "invoice.voided"]
    stripe_client.v1.webhook_endpoints.create(params={"url": f"{settings.base_url}/webhooks/stripe",
                                                      "enabled_events": old, "api_version": stripe.api_version})
    for _ in range(2):
        asyncio.run(run_stripe_setup(settings))
        [endpoint] = stripe_client.v1.webhook_endpoints.list().data
        assert "checkout.session.completed" in endpoint.enabled_events and set(old) <= set(endpoint.enabled_events)
