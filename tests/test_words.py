"""The words a person reads: the plain-text part of every email, read whole, line by line, and the visible
words of pages."""

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from freezegun import freeze_time

from cancel_flow import billing
from cancel_flow.emails import compose
from cancel_flow.hooks import email_message, endpoint_disabled_message, sample_data
from cancel_flow.config.schema import Brand
from tests.helpers import visible_text

BRAND = Brand(name="Peak Performance Coaching", support_email="coach@example.com")
STYLE = compose.Style(BRAND, "https://cancel.example.com")
FOOTER = "-- \nPeak Performance Coaching\nQuestions? Reply or write to coach@example.com"


def day(month: int, number: int, year: int = 2026) -> datetime:
    return datetime(year, month, number, 9, tzinfo=timezone.utc)


def text(email: compose.Email) -> str:
    return compose.render(email, STYLE).text


def blocks(*parts: str) -> str:
    """What a text part must read: the blocks, one blank line between them."""
    return "\n\n".join(parts) + "\n"


def test_the_offer_confirmation_lists_one_payment_a_line_and_each_link_under_its_label():
    email = compose.offer_accepted(
        STYLE, to="maya@example.com", name="Maya Lopez", plan="Peak Coaching Membership",
        promise="50% off your next 3 payments: $24.50/month, then $49.00/month from 7 February 2027.",
        payments=billing.schedule_lines([[day(12, 7).isoformat(), 2450, 4900], [day(1, 7, 2027).isoformat(), 2450, 4900],
                                         [day(2, 7, 2027).isoformat(), 4900, 4900]], "usd"),
        billing_url="https://cancel.example.com/billing/b1",
        unsubscribe_url="https://cancel.example.com/emails/unsubscribe/u1")
    assert text(email) == blocks(
        "Peak Performance Coaching",
        "Thanks for staying",
        "Hi Maya Lopez,",
        "Here is what changes on your Peak Coaching Membership subscription:",
        "50% off your next 3 payments: $24.50/month, then $49.00/month from 7 February 2027.",
        "Payment dates:\n7 December 2026: $24.50 (instead of $49.00)\n7 January 2027: $24.50 (instead of $49.00)\n"
        "7 February 2027: $49.00",
        "Manage my billing:\nhttps://cancel.example.com/billing/b1",
        "You can keep this email: it is your record of what was agreed.",
        FOOTER,
        "Stop confirmation emails:\nhttps://cancel.example.com/emails/unsubscribe/u1")


def test_a_failed_payment_and_its_reminder_read_as_blocks_with_one_fact_a_line():
    first = compose.payment_failed(STYLE, to="riley@example.com", name=None, step=0, amount=4900, currency="usd",
                                   plan="Peak Coaching Membership", failed_at=day(11, 24), card="Visa ending in 0341",
                                   reason="the card was declined", update_url="https://cancel.example.com/billing/b2?flow=x")
    assert text(first) == blocks(
        "Peak Performance Coaching",
        "Your payment didn't go through",
        "Hello,",
        "We tried to charge $49.00 to your Visa ending in 0341 for Peak Coaching Membership on 24 November 2026, "
        "and the payment didn't go through: the card was declined.",
        "Update your card and we'll take the payment right away, so nothing is interrupted. It takes about a minute.",
        "Amount:   $49.00\nPlan:     Peak Coaching Membership\nTried on: 24 November 2026\nCard:     Visa ending in 0341",
        "Update my card:\nhttps://cancel.example.com/billing/b2?flow=x",
        "If you've already updated your card, you can ignore this email.",
        FOOTER)
    reminder = compose.payment_failed(STYLE, to="riley@example.com", name="Riley", step=3, amount=4900, currency="usd",
                                      plan="Peak Coaching Membership", failed_at=day(11, 24), card=None,
                                      reason="the card was declined", update_url="https://cancel.example.com/b")
    assert "\n\nYour payment is still due\n\nHi Riley,\n\n" in text(reminder)
    assert "\n\nAmount:   $49.00\nPlan:     Peak Coaching Membership\nTried on: 24 November 2026\n\n" in text(reminder)


def test_reminders_and_cancellation_emails_end_with_the_stop_link_on_its_own_lines():
    renewal = compose.renewal_reminder(STYLE, to="yusuf@example.com", name="Yusuf", plan="Peak Coaching Membership",
                                       amount=49000, currency="usd", interval="year", interval_count=1,
                                       renews_at=day(12, 7, 2027), cancel_url="https://cancel.example.com/cancel/c1",
                                       unsubscribe_url="https://cancel.example.com/emails/unsubscribe/u2")
    assert text(renewal) == blocks(
        "Peak Performance Coaching",
        "Your subscription renews on 7 December 2027",
        "Hi Yusuf,",
        "Your Peak Coaching Membership subscription renews automatically on 7 December 2027, and $490.00 will be "
        "charged to the card on file.",
        "Nothing to do if you'd like to continue. If you'd rather not renew, cancel before that date with the button "
        "below: you keep access until the end of the period you paid for.",
        "Plan:      Peak Coaching Membership\nRenews on: 7 December 2027\nAmount:    $490.00/year",
        "Cancel or change my plan:\nhttps://cancel.example.com/cancel/c1",
        FOOTER,
        "Stop renewal reminders:\nhttps://cancel.example.com/emails/unsubscribe/u2")
    ending = compose.discount_ending(STYLE, to="dana@example.com", name=None, plan="Peak Coaching Membership",
                                     discount="50% off", ends_at=day(2, 7, 2027), next_payment_at=day(2, 7, 2027),
                                     amount=4900, currency="usd", interval="month", interval_count=1,
                                     cancel_url="https://cancel.example.com/cancel/c2",
                                     unsubscribe_url="https://cancel.example.com/emails/unsubscribe/u3")
    assert text(ending).endswith(blocks(
        "Plan:            Peak Coaching Membership\nDiscount ends:   7 February 2027\nPrice from then: $49.00/month",
        "Cancel or change my plan:\nhttps://cancel.example.com/cancel/c2",
        FOOTER,
        "Stop discount reminders:\nhttps://cancel.example.com/emails/unsubscribe/u3"))
    canceled = compose.cancellation_confirmed(STYLE, to="sam@example.com", name="Sam", plan="Peak Coaching Membership",
                                              access_until=day(12, 7), keep_url="https://cancel.example.com/cancel/c3",
                                              unsubscribe_url=None)
    assert text(canceled).endswith(blocks(
        "Plan:         Peak Coaching Membership\nTakes effect: 7 December 2026\nUntil then:   Full access, no further payments",
        "Keep my subscription:\nhttps://cancel.example.com/cancel/c3",
        FOOTER))
    ended = compose.cancellation_confirmed(STYLE, to="sam@example.com", name="Sam", plan="Peak Coaching Membership",
                                           access_until=None, keep_url=None, unsubscribe_url=None)
    assert text(ended) == blocks(
        "Peak Performance Coaching", "Your subscription has ended", "Hi Sam,",
        "Your Peak Coaching Membership subscription has ended, and you won't be charged again.",
        "Thank you for the time you spent with us.", "Plan:         Peak Coaching Membership\nTakes effect: At once", FOOTER)


def test_the_shared_links_email_reads_one_link_a_block():
    from cancel_flow.web.shared_link_routes import links_message

    links = [SimpleNamespace(billing_url="https://cancel.example.com/billing/b", cancel_url=f"https://cancel.example.com/cancel/c{n}",
                             expires_at=day(12, 1)) for n in (1, 2)]
    message = links_message(BRAND, links, "maya@example.com")
    assert message.text == blocks(
        "Hello,",
        "Here are your links for Peak Performance Coaching.",
        "Manage billing (card, invoices):\nhttps://cancel.example.com/billing/b",
        "Cancel subscription 1:\nhttps://cancel.example.com/cancel/c1",
        "Cancel subscription 2:\nhttps://cancel.example.com/cancel/c2",
        "The cancel link works until 1 December 2026. If you didn't ask for this email, you can ignore it.",
        "Questions? Write to coach@example.com.")


def test_the_coaches_alert_and_notice_emails_read_one_item_a_line():
    alert = email_message("contact.requested", sample_data("contact.requested"))
    assert alert["text"] == blocks(
        "Casey Client (casey@example.com) wants to talk before canceling Coaching Plan",
        "Plan: Coaching Plan, $49.00 a month\nReason: It's too expensive\nComment: “Money is tight this quarter.”\n"
        "Chose: Asked to talk to you",
        "Open the customer in Stripe:\nhttps://dashboard.stripe.com/test/customers/cus_SampleCustomer")
    notice = endpoint_disabled_message("https://hooks.example.com/a", day(11, 20))
    paragraphs = notice["text"].strip().split("\n\n")
    assert len(paragraphs) == 2 and all("\n" not in paragraph for paragraph in paragraphs)


@pytest.mark.parametrize("path, heading, then", [
    ("/cancel/not-a-real-link", "This link is not valid", "Ask for a new one. Get a fresh link"),
    ("/emails/unsubscribe/not-a-real-link", "This link is not valid", "Check that the whole link was copied from the email."),
    ("/nowhere", "Page not found", "There is nothing here."),
])
def test_error_pages_say_their_heading_once(client, path, heading, then):
    page = client.get(path)
    words = visible_text(page.text)
    assert words.startswith(f"{heading} {then}") and words.count(heading) == 1, words


def test_an_expired_link_says_so_once_and_why(client, catalogue, signer):
    sub = catalogue.subscription()
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=3)):
        token, _ = signer.cancel_token(sub.customer, sub.id)
    words = visible_text(client.get(f"/cancel/{token}").text)
    assert words.startswith("This link has expired Links stay valid for a limited time, so that nobody else can use them.")
    assert words.count("expired") == 1
