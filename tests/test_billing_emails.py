"""Billing emails end to end: the app and the Stripe emulator over HTTP, a real SMTP server (aiosmtpd),
our clock moved by freezegun and Stripe's by test clocks."""

import html
import json
import re
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import sqlalchemy as sa
import stripe
from freezegun import freeze_time

from cancel_flow.clock import add_months, from_unix
from cancel_flow.emails import records
from cancel_flow.config.live import LiveConfiguration
from cancel_flow.config.schema import EmailSchedule
from cancel_flow.config.validate import validate_emails
from cancel_flow.emails.run import run_pass
from cancel_flow.emails.sending import GuardedDispatcher
from cancel_flow.errors import SettingsError
from cancel_flow.models import BillingEmail, InvoiceRecord, OutboxDelivery
from cancel_flow.outbox.queue import claim
from cancel_flow.store import make_engine
from cancel_flow.store.billing_stats import billing_stats
from cancel_flow.store.stats import DateRange
from tests.conftest import TEST_KEY
from tests.helpers import csrf_of

HOUR, DAY = timedelta(hours=1), timedelta(days=1)
EVENTS = ["customer.subscription.updated", "customer.subscription.deleted", "invoice.payment_failed", "invoice.paid",
          "invoice.voided", "invoice.marked_uncollectible"]
emails_table = BillingEmail.__table__
invoices_table = InvoiceRecord.__table__



def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def html_of(message) -> str:
    return message.get_body(("html",)).get_content()


def wait_until(check, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return found


class Billing:
    """The served app with Stripe's webhooks reaching it, and passes of the email schedule at chosen times."""

    def __init__(self, settings, offers, server, engine, stripe_client, catalogue):
        self.settings, self.offers, self.server, self.engine = settings, offers, server, engine
        self.sdk, self.catalogue = stripe_client, catalogue

    def run(self, at: datetime | None = None, schedule: EmailSchedule | None = None, **options):
        offers = replace(self.offers, emails=schedule) if schedule else self.offers
        if at is None:
            return run_pass(self.engine, self.settings, LiveConfiguration.fixed(offers), scan=True, **options)[0]
        with freeze_time(at, real_asyncio=True):
            return run_pass(self.engine, self.settings, LiveConfiguration.fixed(offers), scan=True, **options)[0]

    def invoice_record(self, invoice_id: str):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(invoices_table).where(invoices_table.c.id == invoice_id)).first()

    def emails(self):
        with self.engine.connect() as connection:
            return connection.execute(sa.select(emails_table).order_by(emails_table.c.id)).all()

    def failing_renewal(self, before: datetime, card: str = "pm_card_chargeCustomerFail", own_card: bool = False,
                        **customer):
        return self.failing_renewals(before, [customer], card=card, own_card=own_card)[0]

    def failing_renewals(self, before: datetime, customers: list[dict], card: str = "pm_card_chargeCustomerFail",
                         own_card: bool = False):
        """Monthly subscribers whose renewal is declined a little before `before` (on a day of the month up to
        the 28th, so one month earlier is the same day); [(subscription, failed invoice id, first failure)]."""
        target = before - HOUR
        while target.day > 28:
            target -= DAY
        clock = self.catalogue.test_clock(int(add_months(target, -1).timestamp()))
        subs = []
        for fields in customers:
            customer = self.catalogue.customer(**{"email": "client@example.com", "name": "Casey Client", **fields},
                                               test_clock=clock.id)
            subs.append(self.catalogue.subscription(customer))
            if own_card:  # the subscription has a card of its own, as Checkout and Payment Links set it
                method = self.catalogue.attach(customer, card)
                self.sdk.v1.subscriptions.update(subs[-1].id, params={"default_payment_method": method.id})
            else:
                self.catalogue.set_default_card(customer, card)
        renewal = from_unix(subs[0]["items"].data[0].current_period_end)
        self.catalogue.advance(clock.id, int((renewal + HOUR + timedelta(minutes=1)).timestamp()))
        found = []
        for sub in subs:
            failed = self.sdk.v1.invoices.list(params={"subscription": sub.id, "status": "open"}).data[0]
            record = wait_until(lambda: (r := self.invoice_record(failed.id)) is not None and r.first_failed_at and r)
            found.append((sub, failed.id, record.first_failed_at.replace(tzinfo=timezone.utc)))
        return found


@pytest.fixture
def billing(live_server, settings, offers, inbox, stripe_client, catalogue):
    endpoint = stripe_client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/later", "enabled_events": EVENTS,
                                                                 "api_version": stripe.api_version})
    server = live_server(stripe_webhook_secret=endpoint.secret, smtp_url=inbox.url)
    stripe_client.v1.webhook_endpoints.update(endpoint.id, params={"url": f"{server.url}/webhooks/stripe"})
    served = replace(settings, base_url=server.url, smtp_url=inbox.url, stripe_webhook_secret=endpoint.secret)
    engine = make_engine(settings.database_url)
    yield Billing(served, offers, server, engine, stripe_client, catalogue)
    engine.dispose()


def follow_card_update(billing_url: str, card: str) -> httpx.Response:
    """What the subscriber does: the email's button, the portal's card form, back to our page."""
    with httpx.Client(timeout=10) as browser:
        portal = browser.get(billing_url)
        assert portal.status_code == 303, portal.text
        assert browser.get(portal.headers["location"]).status_code == 200
        saved = browser.post(portal.headers["location"] + "/payment_method", data={"payment_method": card})
        assert saved.status_code == 303, saved.text
        assert "/updated" in saved.headers["location"]
        return browser.get(saved.headers["location"])


def words(response) -> str:
    return html.unescape(response.text)


def test_failed_renewal_gets_day_0_3_7_emails_until_the_card_update_pays_it(billing, inbox, stripe_client, emulator):
    now = datetime.now(timezone.utc)
    sub, invoice_id, first = billing.failing_renewal(now - 8 * DAY)
    schedule = EmailSchedule(failed_payment_days=(0, 3, 7, 12))

    assert billing.run(first + timedelta(minutes=1), schedule) == {"payment_failed": 1}
    [notice] = inbox.messages
    assert notice["To"] == "client@example.com" and notice["From"] == "coach@example.com"
    assert notice["Subject"] == "Your payment of $49.00 for Coaching Plan didn't go through"
    text, body = text_of(notice), html_of(notice)
    assert "Hi Casey Client," in text and "Visa ending in 0341" in text and "$49.00" in text
    day = f"{first.day} {first:%B %Y}"
    assert f"on {day}" in text and "Peak Performance Coaching" in body and "#1f6feb" in body
    link = re.search(r'href="(http://[^"]+/billing/[^"?]+\?flow=payment_method_update)"', body).group(1)
    assert link in text and "unsubscribe" not in text.lower() and "/emails/unsubscribe/" not in body
    assert notice["List-Unsubscribe"] is None and notice["List-Unsubscribe-Post"] is None  # about the account

    # Every event again, and the pass again: nothing more.
    listed = emulator.get("/v1/events", params={"limit": 100}, headers={"Authorization": f"Bearer {TEST_KEY}"}).json()
    assert any(event["type"] == "invoice.payment_failed" for event in listed["data"])
    for event in listed["data"]:
        payload = json.dumps(event)
        header = stripe.WebhookSignature.generate_signature_header(payload, billing.settings.stripe_webhook_secret)
        answer = httpx.post(f"{billing.server.url}/webhooks/stripe", content=payload,
                            headers={"Stripe-Signature": header, "Content-Type": "application/json"})
        assert answer.status_code == 200
    for moment in (first + timedelta(minutes=2), first + DAY, first + 2 * DAY):
        assert billing.run(moment, schedule) == {}
    assert len(inbox.messages) == 1

    assert billing.run(first + 3 * DAY + HOUR, schedule) == {"payment_failed": 1}
    assert billing.run(first + 3 * DAY + 2 * HOUR, schedule) == {}
    assert billing.run(first + 5 * DAY, schedule) == {}
    assert billing.run(first + 7 * DAY + HOUR, schedule) == {"payment_failed": 1}
    assert inbox.subjects()[1:] == ["Reminder: your payment of $49.00 for Coaching Plan is still due"] * 2

    page = follow_card_update(link, "pm_card_visa")
    assert page.status_code == 200
    assert "Your card was updated and your payment of $49.00 went through" in words(page)
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "paid"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    wait_until(lambda: billing.invoice_record(invoice_id).paid_at is not None)

    assert billing.run(first + 12 * DAY + HOUR, schedule) == {}
    assert len(inbox.messages) == 3
    sent = billing.emails()
    assert [(row.kind, row.step, row.status, row.invoice_id) for row in sent] == [
        ("payment_failed", 0, "sent", invoice_id), ("payment_failed", 3, "sent", invoice_id),
        ("payment_failed", 7, "sent", invoice_id)]
    figures = billing_stats(billing.engine, DateRange(first - DAY, first + 30 * DAY))
    assert figures["failed_payments"] == 1 and figures["recovered"] == 1 and figures["recovery_rate"] == 1.0
    assert figures["recovered_amount"] == {"usd": 4900} and figures["still_open"] == 0
    assert figures["emails_sent"]["payment_failed"] == 3 and figures["emails_sent"]["renewal_reminder"] == 0


def test_a_declined_new_card_says_why_in_plain_words_and_another_card_pays(billing, inbox, stripe_client):
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY)
    billing.run(first + timedelta(minutes=1))
    link = re.search(r"(http://\S+\?flow=payment_method_update)", text_of(inbox.messages[0])).group(1)

    declined = follow_card_update(link, "pm_card_chargeCustomerFail")
    assert "Your card was updated, but the payment of $49.00 didn't go through" in words(declined)
    assert "your bank declined the payment without giving a reason" in words(declined)
    assert "Try another card" in words(declined)
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "open"

    paid = follow_card_update(link, "pm_card_mastercard")
    assert "your payment of $49.00 went through" in words(paid)
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "paid"
    again = httpx.get(paid.url)  # a reload charges nothing more
    assert again.status_code == 200 and "nothing to pay" in words(again)
    assert sum(1 for i in stripe_client.v1.invoices.list(params={"subscription": sub.id}).data if i.status == "paid") == 2


def test_two_workers_at_one_frozen_time_send_each_email_once(billing, inbox):
    failed = billing.failing_renewals(datetime.now(timezone.utc) - DAY,
                                      [{"email": f"member{n}@example.com"} for n in range(3)])
    first = max(f for _, _, f in failed)
    results, errors = [], []

    def worker(n: int):
        dispatcher = GuardedDispatcher(billing.engine, billing.settings, sender="coach@example.com", worker=f"worker-{n}")
        try:
            results.append(run_pass(billing.engine, billing.settings, LiveConfiguration.fixed(billing.offers), scan=True, dispatcher=dispatcher)[0])
        except Exception as error:
            errors.append(error)
        finally:
            dispatcher.close()

    with freeze_time(first + HOUR, real_asyncio=True):
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert billing.run(first + HOUR) == {}
    assert errors == []
    assert sum(r.get("payment_failed", 0) for r in results) == 3
    assert sorted(m["To"] for m in inbox.messages) == [f"member{n}@example.com" for n in range(3)]
    assert [row.status for row in billing.emails()] == ["sent"] * 3


def test_two_dispatchers_on_many_written_emails_send_each_once(billing, inbox):
    with freeze_time("2027-03-01 10:00:00", real_asyncio=True):
        for n in range(12):
            planned = records.Planned(f"renewal_reminder:sub_{n}:2027-03-31", "renewal_reminder", f"cus_{n}",
                                      f"member{n}@example.com", subscription_id=f"sub_{n}", step=30)
            assert records.write(billing.engine, planned, f"Reminder {n}", "text", "<p>html</p>")
        dispatchers = [GuardedDispatcher(billing.engine, billing.settings, sender="coach@example.com", worker=f"w{n}",
                                         concurrency=2) for n in range(2)]
        threads = [threading.Thread(target=d.run_due) for d in dispatchers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for dispatcher in dispatchers:
            dispatcher.close()
    assert sorted(inbox.subjects()) == sorted(f"Reminder {n}" for n in range(12))
    assert {row.status for row in billing.emails()} == {"sent"}


def test_an_smtp_outage_delays_and_a_crash_never_doubles(billing, inbox):
    settings = billing.settings
    with freeze_time("2027-03-01 10:00:00", real_asyncio=True) as frozen:
        for n in range(3):
            records.write(billing.engine, records.Planned(f"renewal_reminder:sub_{n}:2027-03-31", "renewal_reminder",
                                                          f"cus_{n}", f"m{n}@example.com"), f"Reminder {n}", "t", "<p>h</p>")
        inbox.down = True
        sender = GuardedDispatcher(billing.engine, settings, sender="coach@example.com", worker="sender")
        assert sender.run_due() == 3
        assert inbox.messages == []
        rows = billing.emails()
        assert {row.status for row in rows} == {"pending"} and all("451" in row.last_error for row in rows)
        inbox.down = False
        assert sender.run_due() == 0  # back-off: not before 30 seconds
        frozen.tick(timedelta(seconds=31))

        # One worker claims the first email and stops after sending it, before recording it.
        [taken] = claim(billing.engine, "crashed", 1)
        crashed = GuardedDispatcher(billing.engine, settings, sender="coach@example.com", worker="crashed")
        assert crashed.deliver(taken).ok
        # Another claims the second and stops during the SMTP exchange (it recorded its intent first).
        [midway] = claim(billing.engine, "crashed", 1)
        assert records.begin_send(billing.engine, midway.key) == "send"
        assert sender.run_due() == 1  # the third; the two claims still hold
        frozen.tick(timedelta(minutes=3))
        assert sender.run_due() == 2  # the expired claims: recorded, neither sent again
        sender.close()
        crashed.close()
    assert sorted(inbox.subjects()) == ["Reminder 0", "Reminder 2"]
    statuses = {row.key: row.status for row in billing.emails()}
    assert statuses == {"renewal_reminder:sub_0:2027-03-31": "sent", "renewal_reminder:sub_1:2027-03-31": "unknown",
                        "renewal_reminder:sub_2:2027-03-31": "sent"}
    with billing.engine.connect() as connection:
        outbox = dict(connection.execute(sa.select(OutboxDelivery.__table__.c.key, OutboxDelivery.__table__.c.status)).all())
    assert outbox["renewal_reminder:sub_0:2027-03-31"] == "delivered"
    assert outbox["renewal_reminder:sub_1:2027-03-31"] == "failed"


def test_renewal_reminder_once_30_days_before_a_yearly_renewal_and_unsubscribe_stops_them(billing, inbox, catalogue,
                                                                                          stripe_client):
    start = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    customer = catalogue.customer(email="yearly@example.com", name="Yara Year", test_clock=clock.id)
    sub = catalogue.subscription(customer, interval="year", amount=49000)
    monthly = catalogue.subscription(customer)  # not yearly: no reminder
    renewal = datetime(2028, 1, 10, 12, tzinfo=timezone.utc)
    assert billing.run(renewal - 31 * DAY) == {}
    assert billing.run(renewal - 30 * DAY + HOUR) == {"renewal_reminder": 1}
    assert billing.run(renewal - 30 * DAY + 2 * HOUR) == {}
    assert billing.run(renewal - 10 * DAY) == {}
    [reminder] = inbox.messages
    assert reminder["To"] == "yearly@example.com" and reminder["Subject"] == "Your Coaching Plan subscription renews on 10 January 2028"
    text = text_of(reminder)
    assert "Hi Yara Year," in text and "$490.00" in text and "$490.00/year" in text
    cancel = re.search(r"(http://\S+/cancel/\S+)", text).group(1)
    with freeze_time(renewal - 30 * DAY + 3 * HOUR, real_asyncio=True):
        page = httpx.get(cancel)
        assert page.status_code == 200 and "Continue to cancel" in page.text
    unsubscribe = re.search(r"(http://\S+/emails/unsubscribe/\S+)", text).group(1)
    for _ in range(2):  # opening the link (a mail scanner does) changes nothing: one button asks
        asked = httpx.get(unsubscribe)
        assert asked.status_code == 200 and "Stop renewal reminders?" in words(asked)
        assert re.search(r'name="action" value="unsubscribe">\s*<button type="submit"[^>]*>Stop renewal reminders<', asked.text)
    assert not records.unsubscribed(billing.engine, customer.id, "renewal_reminder")
    # a mail client's one-click unsubscribe (RFC 8058): a POST, no page in between
    stopped = httpx.post(unsubscribe, content=b"List-Unsubscribe=One-Click",
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert stopped.status_code == 200 and "won't get renewal reminders" in words(stopped)
    assert records.unsubscribed(billing.engine, customer.id, "renewal_reminder")
    assert "You won't get these emails any more" in words(httpx.get(unsubscribe))  # and the link says so afterwards
    assert httpx.get(unsubscribe.replace("/unsubscribe/", "/unsubscribe/x")).status_code == 400
    # A second yearly subscription of this customer renews a day later: no reminder any more.
    catalogue.advance(clock.id, int((start + DAY).timestamp()))
    catalogue.subscription(customer, interval="year", amount=49000)
    assert billing.run(renewal - 29 * DAY + HOUR) == {}
    assert len(inbox.messages) == 1 and sub.id and monthly.id
    undo = httpx.post(unsubscribe, data={"action": "resubscribe"})
    assert "You'll get renewal reminders again" in words(undo)
    assert not records.unsubscribed(billing.engine, customer.id, "renewal_reminder")


def assert_one_click_unsubscribe(message, label: str) -> str:
    """The message's List-Unsubscribe (RFC 2369) is its own unsubscribe link and a mailto to the coach, and says the
    link takes the one-click POST (RFC 8058); the link."""
    link = re.search(r"(http://\S+/emails/unsubscribe/[^\s<>\"]+)", text_of(message)).group(1)
    assert message["List-Unsubscribe"] == f"<{link}>, <mailto:coach@example.com?subject={label}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    return link


def test_a_reminder_carries_list_unsubscribe_and_the_mail_clients_one_click_post_stops_them(billing, inbox,
                                                                                            catalogue):
    start = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    customer = catalogue.customer(email="yearly@example.com", name="Yara Year", test_clock=clock.id)
    catalogue.subscription(customer, interval="year", amount=49000)
    renewal = datetime(2028, 1, 10, 12, tzinfo=timezone.utc)
    assert billing.run(renewal - 30 * DAY + HOUR) == {"renewal_reminder": 1}
    [reminder] = inbox.messages
    link = assert_one_click_unsubscribe(reminder, "Stop%20renewal%20reminders")
    # link checkers and mail clients look at the link first: nothing changes
    looked = httpx.head(link)
    assert looked.status_code == 200 and looked.headers["cache-control"] == "no-store"
    assert not records.unsubscribed(billing.engine, customer.id, "renewal_reminder")
    # the mail client's "Unsubscribe" button (RFC 8058): one POST, no page, no cookie, no form token
    one_click = b'--cf\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\nOne-Click\r\n--cf--\r\n'
    answer = httpx.post(link, content=one_click, headers={"Content-Type": "multipart/form-data; boundary=cf"})
    assert answer.status_code == 200
    assert records.unsubscribed(billing.engine, customer.id, "renewal_reminder")
    catalogue.advance(clock.id, int((start + DAY).timestamp()))
    catalogue.subscription(customer, interval="year", amount=49000)  # renews a day later: no reminder any more
    assert billing.run(renewal - 29 * DAY + HOUR) == {}
    assert len(inbox.messages) == 1
    # the same POST sent as a URL-encoded form (RFC 8058 allows both) is answered the same way
    again = httpx.post(link, content=b"List-Unsubscribe=One-Click",
                       headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert again.status_code == 200 and records.unsubscribed(billing.engine, customer.id, "renewal_reminder")


def test_list_unsubscribe_has_the_link_alone_without_a_support_email_and_only_where_one_can_unsubscribe():
    from cancel_flow.emails.compose import Email, Style, render
    from cancel_flow.config.schema import Brand

    style = Style(Brand(name="Peak Performance Coaching"), "https://coach.example")
    email = Email(kind="renewal_reminder", to="a@example.com", subject="Renews", heading="Renews", name=None,
                  paragraphs=("Soon.",), unsubscribe_url="https://coach.example/emails/unsubscribe/t0ken")
    assert render(email, style).headers == (("List-Unsubscribe", "<https://coach.example/emails/unsubscribe/t0ken>"),
                                            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    assert render(replace(email, kind="payment_failed", unsubscribe_url=None), style).headers == ()


def test_discount_ending_notice_once_7_days_before_for_discounts_longer_than_a_month(billing, inbox, catalogue,
                                                                                    stripe_client):
    start = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    long = stripe_client.v1.coupons.create(params={"percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    short = stripe_client.v1.coupons.create(params={"percent_off": 20, "duration": "repeating", "duration_in_months": 1})
    three = catalogue.subscription(catalogue.customer(email="three@example.com", name="Tri Months", test_clock=clock.id),
                                   discounts=[{"coupon": long.id}])
    catalogue.subscription(catalogue.customer(email="one@example.com", test_clock=clock.id), discounts=[{"coupon": short.id}])
    ends = datetime(2027, 4, 10, 12, tzinfo=timezone.utc)
    assert billing.run(ends - 8 * DAY) == {}
    assert billing.run(ends - 7 * DAY + HOUR) == {"discount_ending": 1}
    assert billing.run(ends - 6 * DAY) == {}
    assert billing.run(datetime(2027, 2, 5, 12, tzinfo=timezone.utc)) == {}  # the 1-month discount: no notice
    [notice] = inbox.messages
    assert notice["To"] == "three@example.com" and notice["Subject"] == "Your discount on Coaching Plan ends on 10 April 2027"
    text = text_of(notice)
    assert "(50% off) ends on 10 April 2027" in text and "From your payment on 10 April 2027 you pay $49.00/month" in text
    assert "/cancel/" in text and "/emails/unsubscribe/" in text and three.id
    assert_one_click_unsubscribe(notice, "Stop%20discount%20reminders")


def test_confirmations_after_an_accepted_offer_and_a_cancellation_confirmed_by_stripe(billing, inbox, catalogue, signer,
                                                                                     stripe_client):
    base = billing.server.url
    saved = catalogue.subscription(catalogue.customer(email="stays@example.com", name="Stella Stays"))
    token, _ = signer.cancel_token(saved.customer, saved.id)
    with httpx.Client(base_url=base) as browser:
        page = browser.get(f"/cancel/{token}")
        browser.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
        page = browser.get(f"/cancel/{token}")
        assert browser.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(page.text),
                                                             "offer": "half-off-3-payments"}).status_code == 303
        done = browser.get(f"/cancel/{token}/done").text

        leaving = catalogue.subscription(catalogue.customer(email="leaves@example.com", name="Leo Leaves"))
        other, _ = signer.cancel_token(leaving.customer, leaving.id)
        page = browser.get(f"/cancel/{other}")
        portal = browser.post(f"/cancel/{other}/cancel", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
        httpx.post(portal.headers["location"] + "/cancel", data={"reason": "unused"})
    wait_until(lambda: any(row.outcome == "canceled" for row in _sessions(billing.engine)))
    assert billing.run() == {"offer_accepted": 1, "cancellation_confirmed": 1}
    assert billing.run() == {}
    by_to = {m["To"]: m for m in inbox.messages}
    for message in (by_to["stays@example.com"], by_to["leaves@example.com"]):
        assert_one_click_unsubscribe(message, "Stop%20confirmation%20emails")
    confirmation = text_of(by_to["stays@example.com"])
    promise = re.search(r"50% off your next 3 payments[^<\n]*", done).group(0)
    assert "Hi Stella Stays," in confirmation and promise in confirmation
    assert confirmation.count("$24.50 (instead of $49.00)") == 3 and "$49.00" in confirmation
    canceled = by_to["leaves@example.com"]
    period_end = from_unix(stripe_client.v1.subscriptions.retrieve(leaving.id)["items"].data[0].current_period_end)
    assert canceled["Subject"] == "Your Coaching Plan subscription is canceled"
    assert f"You keep access until {period_end.day} {period_end:%B %Y}" in text_of(canceled)
    # what was canceled, when it was received (to the second), when it takes effect, what they keep until then
    assert re.search(r"Received:\s+\d{1,2} \w+ \d{4}, \d{2}:\d{2}:\d{2} \(UTC\+00:00\)", text_of(canceled))
    assert re.search(rf"Takes effect:\s+{period_end.day} {period_end:%B %Y}", text_of(canceled))
    assert "Full access, no further payments" in text_of(canceled)
    keep = re.search(r'href="(http://[^"]+/cancel/[^"]+)"', html_of(canceled)).group(1)
    kept = httpx.get(keep)
    assert kept.status_code == 200 and "Keep my subscription" in kept.text


def test_a_customer_with_line_breaks_in_name_and_email_gets_the_confirmation_with_clean_headers(
        billing, inbox, catalogue, signer):
    base = billing.server.url
    customer = catalogue.customer(email="stays@example.com\r\nBcc: intruder@example.com",
                                  name="Stella\r\nBcc: intruder@example.com")
    sub = billing.sdk.v1.subscriptions.create(params={"customer": customer.id, "items": [
        {"price": catalogue.price(name="Coaching\r\nX-Injected: yes").id}]})
    token, _ = signer.cancel_token(sub.customer, sub.id)
    with httpx.Client(base_url=base) as browser:
        page = browser.get(f"/cancel/{token}")
        browser.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
        page = browser.get(f"/cancel/{token}")
        assert browser.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(page.text),
                                                             "offer": "half-off-3-payments"}).status_code == 303
    assert billing.run() == {"offer_accepted": 1}
    [mail] = inbox.messages
    assert inbox.recipients == [["stays@example.com"]]
    assert mail["To"] == "stays@example.com" and mail["Bcc"] is None and mail["X-Injected"] is None
    assert mail["Subject"] == "Confirmed: your Coaching X-Injected: yes subscription continues"
    assert "Stella" in text_of(mail)
    assert [row.status for row in billing.emails()] == ["sent"]


def _sessions(engine):
    from cancel_flow.models import CancelSession

    with engine.connect() as connection:
        return connection.execute(sa.select(CancelSession.__table__)).all()


def test_each_kind_can_be_turned_off(billing, inbox):
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY)
    off = validate_emails({"failed_payment_days": [], "renewal_reminder_days_before": 0, "discount_ending_days_before": 0,
                           "confirmations": False})
    assert not any(off.sends(kind) for kind in ("payment_failed", "renewal_reminder", "discount_ending", "offer_accepted"))
    assert billing.run(first + HOUR, off) == {}
    assert inbox.messages == [] and billing.emails() == []


def test_the_emails_section_is_checked_with_clear_messages():
    assert validate_emails({}) == EmailSchedule((0, 3, 7), 30, ("year",), 7, True)
    assert validate_emails({"failed_payment_days": [7, 0, 3], "renewal_reminder_intervals": ["year", "month"]}) \
        == EmailSchedule((0, 3, 7), 30, ("year", "month"), 7, True)
    for raw, words in [({"failed_payment_days": [0, -1]}, "failed_payment_days"), ({"failed_payment_days": "0,3"}, "[0, 3, 7]"),
                       ({"failed_payment_days": [3, 3]}, "each day once"), ({"renewal_reminder_days_before": 400}, "0 to 365"),
                       ({"renewal_reminder_intervals": ["fortnight"]}, "day, week, month, year"),
                       ({"confirmations": "yes"}, "true or false"), ({"reminders": 3}, "unknown field 'reminders'"),
                       ({"discount_ending_days_before": True}, "whole number")]:
        with pytest.raises(SettingsError, match=re.escape(words)):
            validate_emails(raw)


def test_card_update_and_unsubscribe_pages_refuse_bad_links(billing):
    assert httpx.get(f"{billing.server.url}/billing/not-a-token/updated").status_code == 400
    assert httpx.get(f"{billing.server.url}/emails/unsubscribe/not-a-token").status_code == 400
    assert httpx.post(f"{billing.server.url}/emails/unsubscribe/not-a-token").status_code == 400


def test_send_due_emails_command(billing, inbox, monkeypatch, capsys):
    from cancel_flow.cli import main
    from tests.conftest import ROOT, TEST_KEY

    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY)
    for name, value in {"DATABASE_URL": billing.settings.database_url, "STRIPE_API_KEY": TEST_KEY,
                        "STRIPE_API_BASE": billing.settings.stripe_api_base, "SMTP_URL": inbox.url,
                        "CANCEL_FLOW_BASE_URL": billing.server.url, "CANCEL_FLOW_OFFERS": str(ROOT / "offers.toml"),
                        "CANCEL_FLOW_SECRET_KEY": billing.settings.secret_key}.items():
        monkeypatch.setenv(name, value)
    with freeze_time(first + HOUR, real_asyncio=True), pytest.raises(SystemExit) as done:
        main(["send-due-emails"])
    assert done.value.code == 0
    assert "Emails written: 1 payment failed. Deliveries attempted: 1." in capsys.readouterr().out
    assert len(inbox.messages) == 1


@pytest.mark.browser
def test_each_email_renders_at_360_px_with_its_button_and_brand(billing, inbox, catalogue, stripe_client, tmp_path):
    from tests.test_browser import ARGS, CHROMIUM
    from playwright.sync_api import sync_playwright

    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY)
    billing.run(first + HOUR)
    start = datetime(2027, 1, 10, 12, tzinfo=timezone.utc)
    clock = catalogue.test_clock(int(start.timestamp()))
    coupon = stripe_client.v1.coupons.create(params={"percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    customer = catalogue.customer(email="yearly@example.com", test_clock=clock.id)
    catalogue.subscription(customer, interval="year", amount=49000)
    catalogue.subscription(catalogue.customer(email="three@example.com", test_clock=clock.id), discounts=[{"coupon": coupon.id}])
    billing.run(datetime(2027, 12, 11, 13, tzinfo=timezone.utc))
    billing.run(datetime(2027, 4, 3, 13, tzinfo=timezone.utc))
    assert len(inbox.messages) == 3
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True).new_page()
        for index, message in enumerate(inbox.messages):
            page.set_content(html_of(message))
            button = page.locator("a.button")
            assert button.is_visible() and button.inner_text() in ("Update my card", "Cancel or change my plan")
            box = button.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 360
            assert page.locator(".brand-name").inner_text() == "Peak Performance Coaching"
            assert page.evaluate("document.documentElement.scrollWidth") <= 360
            shot = tmp_path / f"email-{index}.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 5000
        browser.close()


def test_the_demo_declines_a_renewal_and_the_email_goes_out(billing, inbox):
    import io

    from cancel_flow.emails.run import demo_failed_payment

    out = io.StringIO()
    customer = demo_failed_payment(billing.settings, LiveConfiguration.fixed(billing.offers), out=out)
    assert customer and "the card declines" in out.getvalue() and "Update my card" in out.getvalue()
    assert re.search(r"past the renewal of [1-9]\d? [A-Z][a-z]+ \d{4} \(the card declines\)", out.getvalue())  # as emails write days
    [notice] = inbox.messages
    assert notice["To"] == "riley@example.com" and "Hi Riley Brooks," in text_of(notice)
    assert "Peak Coaching Membership" in notice["Subject"]


def test_the_card_update_pays_with_the_new_card_when_the_subscription_has_its_own(billing, inbox, stripe_client):
    """Checkout and Payment Links give the subscription a default card: the portal changes only the customer's, so
    the payment is made with the new card explicitly, and the new card becomes the subscription's too."""
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY, own_card=True)
    billing.run(first + timedelta(minutes=1))
    link = re.search(r"(http://\S+\?flow=payment_method_update)", text_of(inbox.messages[0])).group(1)
    paid = follow_card_update(link, "pm_card_mastercard")
    assert "Your card was updated and your payment of $49.00 went through" in words(paid)
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "paid"
    after = stripe_client.v1.subscriptions.retrieve(sub.id, params={"expand": ["default_payment_method"]})
    assert after.default_payment_method.card.last4 == "4444" and after.status == "active"


def test_a_card_that_needs_the_bank_goes_to_the_invoice_page_to_confirm(billing, inbox, stripe_client):
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY)
    billing.run(first + timedelta(minutes=1))
    link = re.search(r"(http://\S+\?flow=payment_method_update)", text_of(inbox.messages[0])).group(1)
    page = follow_card_update(link, "pm_card_authenticationRequired")
    assert "Confirm the payment with your bank" in words(page)
    assert "Your bank asks you to confirm the payment of $49.00" in words(page)
    hosted = stripe_client.v1.invoices.retrieve(invoice_id).hosted_invoice_url
    assert f'href="{hosted}"' in page.text and "Confirm with my bank" in words(page)
    assert httpx.post(hosted + "/pay", data={"confirm": "1"}).status_code == 303
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "paid"
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_the_email_of_a_payment_waiting_for_the_bank_links_to_the_invoice_page(billing, inbox, stripe_client):
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - DAY, card="pm_card_authenticationRequired")
    billing.run(first + timedelta(minutes=1))
    [notice] = inbox.messages
    hosted = stripe_client.v1.invoices.retrieve(invoice_id).hosted_invoice_url
    body, text = html_of(notice), text_of(notice)
    assert f'href="{hosted}"' in body and "Confirm the payment with my bank" in text
    assert "your bank wants you to confirm the payment" in text and "?flow=payment_method_update" not in body


def test_dunning_emails_name_the_next_automatic_try_and_stop_when_the_retries_end_the_subscription(
        billing, inbox, stripe_client, emulator):
    emulator.post("/_emulator/retries", json={"days": [2, 3], "then": "cancel"}).raise_for_status()
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - 8 * DAY)
    schedule = EmailSchedule(failed_payment_days=(0, 3, 7))
    billing.run(first + timedelta(minutes=1), schedule)
    retry = from_unix(stripe_client.v1.invoices.retrieve(invoice_id).next_payment_attempt)
    assert retry == first + 2 * DAY
    assert f"We'll try the card on file again automatically on {retry.day} {retry:%B %Y}" in text_of(inbox.messages[0])
    # Stripe's retries run out on the test clock: the subscription ends, the next reminder is not sent
    clock = stripe_client.v1.subscriptions.retrieve(sub.id).test_clock
    billing.catalogue.advance(clock, int((first + 5 * DAY + HOUR).timestamp()))
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert stripe_client.v1.invoices.retrieve(invoice_id).status == "uncollectible"
    assert billing.run(first + 7 * DAY + HOUR, schedule) == {}
    assert len(inbox.messages) == 1


def test_recovery_figures_count_only_payments_recovered_however_they_were(billing, inbox, stripe_client, emulator):
    emulator.post("/_emulator/retries", json={"days": [1], "then": "cancel"}).raise_for_status()
    before = datetime.now(timezone.utc) - 3 * DAY
    (retried, retried_invoice, first), (lost, lost_invoice, _) = billing.failing_renewals(
        before, [{"email": "a@example.com"}, {"email": "b@example.com"}])
    customer = stripe_client.v1.subscriptions.retrieve(retried.id).customer
    billing.catalogue.set_default_card(stripe_client.v1.customers.retrieve(customer), "pm_card_visa")
    clock = stripe_client.v1.subscriptions.retrieve(retried.id).test_clock
    billing.catalogue.advance(clock, int((first + DAY + HOUR).timestamp()))  # Stripe's retry: one paid, one lost
    assert stripe_client.v1.invoices.retrieve(retried_invoice).status == "paid"
    assert stripe_client.v1.invoices.retrieve(lost_invoice).status == "uncollectible"
    wait_until(lambda: billing.invoice_record(retried_invoice).paid_at is not None)
    wait_until(lambda: billing.invoice_record(lost_invoice).status == "uncollectible")
    figures = billing_stats(billing.engine, DateRange(first - DAY, first + DAY))
    assert figures["failed_payments"] == 2 and figures["recovered"] == 1
    assert figures["recovered_amount"] == {"usd": 4900} and figures["still_open"] == 0


# Receipts for cancellations made without our flow ------------------------------------------------------------------

def cancel_in_stripes_portal(stripe_client, emulator, sub) -> None:
    """What a client does from Stripe's own emails: the customer portal's "Cancel subscription", no cancel link of ours."""
    session = stripe_client.v1.billing_portal.sessions.create(params={
        "customer": sub.customer, "configuration": emulator.portal_configuration})
    with httpx.Client(timeout=10) as browser:
        page = browser.get(session.url)
        assert page.status_code == 200 and sub.id in page.text
        action = re.search(r'<form method="post" action="([^"]+/cancel)"', page.text).group(1)
        done = browser.post(httpx.URL(session.url).join(action), data={"subscription": sub.id})
        assert done.status_code == 303, done.text


def outside_rows(engine):
    from cancel_flow.models import OutsideCancellation

    table = OutsideCancellation.__table__
    with engine.connect() as connection:
        return {row.subscription_id: row for row in connection.execute(sa.select(table))}


def test_a_cancellation_in_stripes_portal_without_our_flow_gets_one_receipt_with_its_dates(
        billing, inbox, catalogue, stripe_client, emulator):
    clock = catalogue.test_clock(int(time.time()))
    portal = catalogue.subscription(catalogue.customer(email="pat@example.com", name="Pat Portal", test_clock=clock.id))
    by_coach = catalogue.subscription(catalogue.customer(email="cole@example.com", name="Cole Coach"))
    taken_back = catalogue.subscription(catalogue.customer(email="tia@example.com", name="Tia Back"))
    for sub in (portal, taken_back):
        cancel_in_stripes_portal(stripe_client, emulator, sub)
    stripe_client.v1.subscriptions.cancel(by_coach.id)  # the coach, in Stripe's Dashboard: ends at once
    wait_until(lambda: len(outside_rows(billing.engine)) == 3)
    stripe_client.v1.subscriptions.update(taken_back.id, params={"cancel_at_period_end": False})
    wait_until(lambda: taken_back.id not in outside_rows(billing.engine))
    assert {row.reason for row in outside_rows(billing.engine).values()} == {"cancellation_requested"}

    # two workers' passes at once write each receipt once
    results, errors = [], []

    def worker():
        try:
            results.append(run_pass(billing.engine, billing.settings, LiveConfiguration.fixed(billing.offers))[0])
        except Exception as error:
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sum(r.get("cancellation_confirmed", 0) for r in results) == 2
    assert billing.run() == {}
    assert sorted(m["To"] for m in inbox.messages) == ["cole@example.com", "pat@example.com"]
    by_to = {m["To"]: m for m in inbox.messages}

    receipt, scheduled = by_to["pat@example.com"], stripe_client.v1.subscriptions.retrieve(portal.id)
    period_end = from_unix(scheduled["items"].data[0].current_period_end)
    received = from_unix(scheduled.canceled_at)
    text = text_of(receipt)
    assert receipt["Subject"] == "Your Coaching Plan subscription is canceled" and "Hi Pat Portal," in text
    assert re.search(rf"Received:\s+{received.day} {received:%B %Y}, {received:%H:%M:%S} \(UTC\+00:00\)", text)
    assert re.search(rf"Takes effect:\s+{period_end.day} {period_end:%B %Y}", text)
    assert f"You keep access until {period_end.day} {period_end:%B %Y}" in text
    assert "Full access, no further payments" in text
    assert_one_click_unsubscribe(receipt, "Stop%20confirmation%20emails")
    keep = re.search(r'href="(http://[^"]+/cancel/[^"]+)"', html_of(receipt)).group(1)
    kept = httpx.get(keep)
    assert kept.status_code == 200 and "Keep my subscription" in kept.text

    ended = by_to["cole@example.com"]
    received = from_unix(stripe_client.v1.subscriptions.retrieve(by_coach.id).canceled_at)
    assert ended["Subject"] == "Your Coaching Plan subscription has ended"
    assert re.search(rf"Received:\s+{received.day} {received:%B %Y}, {received:%H:%M:%S}", text_of(ended))
    assert re.search(r"Takes effect:\s+At once", text_of(ended))
    rows = billing.emails()
    assert [(row.kind, row.status, row.session_id) for row in rows] == [("cancellation_confirmed", "sent", None)] * 2
    assert {row.subscription_id for row in rows} == {portal.id, by_coach.id}

    # the portal's period-end cancellation runs out: the same cancellation, no second receipt
    billing.catalogue.advance(clock.id, int((period_end + HOUR).timestamp()))
    assert stripe_client.v1.subscriptions.retrieve(portal.id).status == "canceled"
    wait_until(lambda: outside_rows(billing.engine)[portal.id].ended)
    assert billing.run() == {}
    assert len(inbox.messages) == 2


def test_a_cancellation_taken_back_after_its_receipt_was_written_is_not_sent(billing, inbox, catalogue, stripe_client,
                                                                              emulator):
    sub = catalogue.subscription(catalogue.customer(email="pat@example.com"))
    cancel_in_stripes_portal(stripe_client, emulator, sub)
    wait_until(lambda: sub.id in outside_rows(billing.engine))
    assert billing.run(send=False) == {"cancellation_confirmed": 1}
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    wait_until(lambda: sub.id not in outside_rows(billing.engine))
    assert billing.run() == {}
    assert inbox.messages == []
    [row] = billing.emails()
    assert row.status == "skipped" and row.last_error == "Not sent: the cancellation was taken back."


def test_no_receipt_when_stripe_ends_a_subscription_after_failed_payments(billing, inbox, stripe_client, emulator):
    emulator.post("/_emulator/retries", json={"days": [1], "then": "cancel"}).raise_for_status()
    sub, invoice_id, first = billing.failing_renewal(datetime.now(timezone.utc) - 3 * DAY)
    clock = stripe_client.v1.subscriptions.retrieve(sub.id).test_clock
    billing.catalogue.advance(clock, int((first + DAY + HOUR).timestamp()))
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    row = wait_until(lambda: outside_rows(billing.engine).get(sub.id))
    assert row.reason == "payment_failed" and row.ended
    assert billing.run(first + DAY + 2 * HOUR) == {}
    assert inbox.messages == []
    assert not any(row.kind == "cancellation_confirmed" for row in billing.emails())


def test_no_receipt_when_confirmations_are_off_or_the_client_unsubscribed(billing, inbox, catalogue, stripe_client,
                                                                           emulator):
    off = validate_emails({"confirmations": False})
    first = catalogue.subscription(catalogue.customer(email="first@example.com"))
    second = catalogue.subscription(catalogue.customer(email="second@example.com"))
    records.unsubscribe(billing.engine, second.customer, "cancellation_confirmed")
    for sub in (first, second):
        cancel_in_stripes_portal(stripe_client, emulator, sub)
    wait_until(lambda: len(outside_rows(billing.engine)) == 2)
    assert billing.run(schedule=off) == {}
    assert billing.emails() == []
    assert billing.run() == {"cancellation_confirmed": 1}
    assert [m["To"] for m in inbox.messages] == ["first@example.com"]
    skipped = next(row for row in billing.emails() if row.customer_id == second.customer)
    assert skipped.status == "skipped" and "turned these emails off" in skipped.last_error


def test_a_withdrawal_gets_its_acknowledgement_and_no_second_receipt(billing, inbox, catalogue, signer, stripe_client):
    customer = catalogue.customer(email="lena@example.com", name="Lena Weber", address={"country": "DE"})
    sub = catalogue.subscription(customer)
    token, _ = signer.cancel_token(sub.customer, sub.id)
    with httpx.Client(base_url=billing.server.url) as browser:
        form = browser.get(f"/cancel/{token}/withdraw")
        assert form.status_code == 200 and "Confirm withdrawal" in form.text
        confirmed = browser.post(f"/cancel/{token}/withdraw", data={
            "csrf_token": csrf_of(form.text), "name": "Lena Weber", "email": "lena@example.com"})
        assert confirmed.status_code == 303
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    row = wait_until(lambda: outside_rows(billing.engine).get(sub.id))
    assert row.reason == "cancellation_requested" and "declaration" in row.comment
    assert billing.run() == {}
    [ack] = [m for m in inbox.messages if m["To"] == "lena@example.com"]
    assert ack["Subject"] == "Your withdrawal from Coaching Plan is confirmed"
    [skipped] = [row for row in billing.emails() if row.kind == "cancellation_confirmed"]
    assert skipped.status == "skipped" and "acknowledgement of declaration" in skipped.last_error
