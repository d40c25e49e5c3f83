"""Who needs the coach (/dashboard/attention and GET /api/attention), read on a seeded history: each row that
belongs is there with what the coach needs, and none that doesn't."""

import re
import secrets
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.models import BillingEmail, InvoiceRecord
from cancel_flow.store.api_keys import ApiKeyStore
from tests.helpers import csrf_of, visible_text
from tests.test_dashboard import coach, sign_in  # noqa: F401  (the coach's login)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
DAY = timedelta(days=1)


@pytest.fixture
def seeded(history, store):
    """One client of each kind that belongs on the list, and one that looks alike and doesn't."""
    def saved(email, outcome, ends, **extra):
        return history(NOW - 40 * DAY, outcome, email=email, reason="unused", decided=NOW - 40 * DAY,
                       chosen="pause" if outcome == "saved_pause" else "half", percent=50 if outcome == "saved_discount" else None,
                       months=3 if outcome == "saved_discount" else None,
                       offer_ends_at=ends, **extra)

    saved("pause.soon@example.com", "saved_pause", NOW + 5 * DAY, comment="Travelling until December",
          promise="Skip your payment of 5 November 2026; your next payment is $49.00 on 5 December 2026")
    saved("pause.later@example.com", "saved_pause", NOW + 20 * DAY)
    saved("pause.over@example.com", "saved_pause", NOW - DAY)
    saved("pause.gone@example.com", "saved_pause", NOW + 3 * DAY, canceled=NOW - 2 * DAY)
    saved("discount.soon@example.com", "saved_discount", NOW + 10 * DAY,
          promise="50% off your next 3 payments: $24.50/month, then $49.00/month from 10 December 2026")
    saved("discount.later@example.com", "saved_discount", NOW + 30 * DAY)
    scheduled = 10 * 1_790_000_000 + 1  # a Stripe state: set to cancel at the period's end
    history(NOW - 10 * DAY, "canceled", email="leaving.soon@example.com", reason="too_expensive",
            comment="Money is tight this month", decided=NOW - 10 * DAY, canceled=NOW - 10 * DAY,
            period_end=NOW + 7 * DAY, stripe_state_at=scheduled)
    history(NOW - 10 * DAY, "canceled", email="leaving.later@example.com", reason="unused", decided=NOW - 10 * DAY,
            canceled=NOW - 10 * DAY, period_end=NOW + 20 * DAY, stripe_state_at=scheduled)
    history(NOW - 3 * DAY, "canceled", email="left.already@example.com", reason="unused", decided=NOW - 3 * DAY,
            canceled=NOW - 3 * DAY, period_end=NOW + 5 * DAY, stripe_state_at=10 * 1_790_000_000 + 2)
    history(NOW - 3 * DAY, "deflected", email="cleaned.up@example.com", canceled=NOW - 3 * DAY, period_end=NOW + 5 * DAY,
            stripe_state_at=scheduled, canceled_outside_flow=True, stripe_cancellation_reason="canceled_by_retention_policy")
    talk = dict(chosen="talk", offer_kind="contact")
    history(NOW - 2 * DAY, "contact_requested", email="talk.waiting@example.com", reason="missing_features",
            comment="I need vegetarian meal plans", decided=NOW - 2 * DAY, **talk)
    history(NOW - 5 * DAY, "deflected", email="talk.handled@example.com", reason="too_complex", decided=NOW - 5 * DAY,
            contact_handled_at=NOW - 4 * DAY, contact_handled_by="coach@example.com", **talk)
    history(NOW - 120 * DAY, "deflected", email="talk.old@example.com", reason="too_complex", decided=NOW - 120 * DAY, **talk)

    def invoice(number, failed, **extra):
        return {**dict(id=f"in_{number}", customer_id=f"cus_inv{number}", subscription_id=f"sub_inv{number}", status="open",
                       billing_reason="subscription_cycle", currency="usd", subtotal=4900, total_discount=0, amount_due=4900,
                       amount_paid=0, attempt_count=2, created=failed, first_failed_at=failed, paid_at=None, voided_at=None,
                       event_created=0, updated_at=NOW, failure_message="Your card has insufficient funds.",
                       card_brand="visa", card_last4="4242"), **extra}
    with store.engine.begin() as connection:
        connection.execute(sa.insert(InvoiceRecord.__table__), [
            invoice(1, NOW - 4 * DAY),
            invoice(2, NOW - 6 * DAY, status="paid", paid_at=NOW - 5 * DAY, amount_paid=4900),  # recovered
            invoice(3, NOW - 6 * DAY, status="void", voided_at=NOW - 5 * DAY),  # voided
            invoice(4, NOW - 100 * DAY),  # long past
        ])
        connection.execute(sa.insert(BillingEmail.__table__), [
            dict(key=f"payment_failed:in_1:{step}", kind="payment_failed", customer_id="cus_inv1", email="card.failed@example.com",
                 invoice_id="in_1", subscription_id="sub_inv1", step=step, status="sent", attempts=1, created_at=NOW - 4 * DAY,
                 sent_at=NOW - 4 * DAY + step * DAY) for step in (0, 3)])
    return store


BELONG = ["card.failed@example.com", "pause.soon@example.com", "discount.soon@example.com", "leaving.soon@example.com",
          "talk.waiting@example.com"]
DONT = ["cus_inv2", "cus_inv3", "cus_inv4", "pause.later@", "pause.over@", "pause.gone@", "discount.later@",
        "leaving.later@", "left.already@", "cleaned.up@", "talk.handled@", "talk.old@"]


def section(words: str, title: str, following: str | None) -> str:
    start = words.index(title)
    return words[start:words.index(following, start) if following else None]


def test_the_attention_list_shows_each_client_who_belongs_and_no_one_else(client, coach, seeded):  # noqa: F811
    with freeze_time(NOW, real_asyncio=True):
        sign_in(client)
        page = client.get("/dashboard/attention")
        overview = client.get("/dashboard")
    assert page.status_code == 200
    words = visible_text(page.text).split("Sign out ", 1)[1]  # after the dashboard's navigation
    assert words.startswith("Needs attention 5 clients to look at: payments still failing, and what ends from today "
                            "to 14 December 2026.")
    failed = section(words, "Failed payments not recovered (1)", "Pauses ending")
    assert "card.failed@example.com $49.00 26 Nov 2026 Your card has insufficient funds. (Visa ending in 4242) " \
           "Stripe has tried 2 times; email 2 of 3 sent (day 3) Cancel link Card update link" in failed
    pauses = section(words, "Pauses ending in the next 14 days (1)", "Discounts ending")
    assert "pause.soon@example.com Coaching · $49.00/month 05 Dec 2026 I don't use it enough “Travelling until December”" in pauses
    discounts = section(words, "Discounts ending in the next 14 days (1)", "Cancellations taking effect")
    assert "discount.soon@example.com Coaching · $49.00/month 10 Dec 2026 50% off your next 3 payments" in discounts
    leaving = section(words, "Cancellations taking effect in the next 14 days (1)", "Asked to talk to you")
    assert "leaving.soon@example.com Coaching · $49.00/month 07 Dec 2026 It's too expensive Money is tight this month" in leaving
    talks = section(words, "Asked to talk to you (1)", None)
    assert "talk.waiting@example.com Coaching · $49.00/month 28 Nov 2026 Some features are missing I need vegetarian " \
           "meal plans Waiting for you Mark handled" in talks
    for email in BELONG:
        assert email in words
    for other in DONT:
        assert other not in words, other
    # each row: the client in Stripe (test mode), and links to send: cancel and billing (card update for a failure)
    assert page.text.count('href="https://dashboard.stripe.com/test/customers/cus_') == 5
    assert len(re.findall(r'href="http://testserver/cancel/[^"]+"[^>]*>Cancel link<', page.text)) == 5
    assert len(re.findall(r'href="http://testserver/billing/[^"?]+"[^>]*>Billing link<', page.text)) == 4
    assert len(re.findall(r'href="http://testserver/billing/[^"]+\?flow=payment_method_update"[^>]*>Card update link<',
                          page.text)) == 1
    # the overview counts them, below the top reasons
    summary = visible_text(overview.text)
    assert "Needs attention 5 clients to look at this week: 1 failed payment, 1 pause ending, 1 discount ending, " \
           "1 cancellation taking effect, 1 asking to talk." in summary
    assert summary.index("Top reasons for leaving") < summary.index("Needs attention 5 clients")


def test_a_talk_request_is_marked_handled_with_the_form_token_and_leaves_the_list(client, coach, seeded):  # noqa: F811
    with freeze_time(NOW, real_asyncio=True):
        sign_in(client)
        page = client.get("/dashboard/attention")
        session = re.search(r'name="session" value="(\d+)"', page.text).group(1)
        assert client.post("/dashboard/attention/handled", data={"session": session}).status_code == 400
        assert "talk.waiting@example.com" in client.get("/dashboard/attention").text
        done = client.post("/dashboard/attention/handled", data={"session": session, "csrf_token": csrf_of(page.text)})
        assert done.status_code == 303
        after = client.get(done.headers["location"])
        again = client.post("/dashboard/attention/handled", data={"session": session, "csrf_token": csrf_of(page.text)})
        repeated = client.get(again.headers["location"])
        bad = client.post("/dashboard/attention/handled", data={"session": "²", "csrf_token": csrf_of(page.text)})
    words = visible_text(after.text)
    assert "Marked as handled." in words and "talk.waiting@example.com" not in words
    assert "Asked to talk to you (0) Client" in words and "Nobody is waiting to talk to you." in words
    assert "That request was already handled." in visible_text(repeated.text)
    assert bad.status_code == 400
    with seeded.engine.connect() as connection:
        by = connection.execute(sa.text("SELECT contact_handled_by FROM cancel_session WHERE id = :id"), {"id": int(session)}).scalar()
    assert by == "coach@example.com"


def test_the_api_answers_the_same_list_as_json(client, seeded):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(seeded.engine).add("monday", key)
    with freeze_time(NOW, real_asyncio=True):
        refused = client.get("/api/attention")
        body = client.get("/api/attention", headers={"Authorization": f"Bearer {key}"}).json()
        document = client.get("/api/openapi.json", headers={"Authorization": f"Bearer {key}"}).json()
    assert refused.status_code == 401
    assert body["count"] == 5 and body["days"] == 14 and body["generated_at"] == "2026-11-30T12:00:00+00:00"
    [failed] = body["failed_payments"]
    assert failed["client"] == {"id": "cus_inv1", "email": "card.failed@example.com",
                                "stripe_url": "https://dashboard.stripe.com/test/customers/cus_inv1"}
    assert (failed["amount"], failed["failure_message"], failed["attempts"], failed["emails_sent"]) == (
        4900, "Your card has insufficient funds.", 2, [0, 3])
    assert failed["dunning_step"] == "Stripe has tried 2 times; email 2 of 3 sent (day 3)"
    assert failed["billing_url"].endswith("?flow=payment_method_update") and "/cancel/" in failed["cancel_url"]
    [leaving] = body["cancellations"]
    assert (leaving["client"]["email"], leaving["reason"], leaving["reason_text"], leaving["comment"], leaving["at"]) == (
        "leaving.soon@example.com", "too_expensive", "It's too expensive", "Money is tight this month", "2026-12-07T12:00:00+00:00")
    assert [row["client"]["email"] for row in body["pauses_ending"]] == ["pause.soon@example.com"]
    assert [row["client"]["email"] for row in body["discounts_ending"]] == ["discount.soon@example.com"]
    [talk] = body["talk_requests"]
    assert talk["client"]["email"] == "talk.waiting@example.com" and isinstance(talk["session"], int)
    assert "/api/attention" in document["paths"]
    assert document["paths"]["/api/attention"]["get"]["operationId"] == "getAttention"


def test_an_accepted_offer_records_when_it_ends(client, catalogue, signer, store):
    """The flow writes when a pause or discount ends, so the list finds it by an index."""
    from tests.test_cancel_flow import accept, give_reason

    sub = catalogue.subscription()
    url = f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}"
    give_reason(client, url, "unused")
    assert accept(client, url, "pause", payments="1").status_code == 303
    with store.engine.connect() as connection:
        row = connection.execute(sa.text("SELECT pause_resumes_at, offer_ends_at FROM cancel_session")).first()
    assert row.offer_ends_at is not None and row.offer_ends_at == row.pause_resumes_at


@pytest.mark.parametrize("path", ["/dashboard/attention"])
def test_the_attention_page_needs_a_signed_in_coach(client, path):
    assert client.get(path).status_code == 303
    assert client.post("/dashboard/attention/handled", data={"session": "1"}).status_code == 303
