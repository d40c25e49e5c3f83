"""Win-back's pure rules: the reason a client left for, which step is due, the "changed your mind?" window, the
price a comeback is offered at, and the promises the one wording function writes for keeping and coming back."""

from datetime import datetime, timedelta, timezone

from cancel_flow import billing, winback
from cancel_flow.config.schema import Winback, WinbackStep

DAY = timedelta(days=1)
ENDED = datetime(2027, 2, 10, 12, tzinfo=timezone.utc)
STEPS = Winback(3, (WinbackStep(1, 30, ("too_expensive",), "comeback-half"), WinbackStep(2, 45, ("unused", "other")),
                    WinbackStep(3, 60)))


def test_the_reason_is_the_flows_else_stripes_feedback_else_unknown():
    assert winback.recorded_reason("too_expensive", "unused") == ("too_expensive", "flow")
    assert winback.recorded_reason(None, "unused") == ("unused", "stripe")
    assert winback.recorded_reason(None, "not-a-reason") == (None, None)


def test_stripes_clean_up_and_disputes_are_not_clients_leaving():
    assert winback.left("cancellation_requested") and winback.left("payment_failed") and winback.left(None)
    assert not winback.left("canceled_by_retention_policy") and not winback.left("payment_disputed")


def test_the_due_step_is_the_latest_come_not_late_and_not_planned():
    due = lambda at, planned=None, reason="too_expensive": winback.due_step(STEPS, reason, ENDED, at, planned or {})  # noqa: E731
    assert due(ENDED + 29 * DAY) is None
    assert due(ENDED + 30 * DAY).number == 1
    assert due(ENDED + 31 * DAY, {1: 30}) is None  # once
    assert due(ENDED + 32 * DAY) is None  # two days late: it gives way
    assert due(ENDED + 60 * DAY, {1: 30}).number == 3
    assert due(ENDED + 60 * DAY, {3: 60}) is None
    assert due(ENDED + 45 * DAY, reason="other").number == 2
    assert due(ENDED + 45 * DAY, reason="low_quality") is None
    assert due(ENDED + 60 * DAY, reason=None).number == 3
    assert due(ENDED + 30 * DAY, {5: 90}) is None  # a later step (of an older list) came already: in order


def test_changed_mind_is_due_in_its_window_and_never_when_off():
    ends = ENDED
    assert not winback.changed_mind_due(3, ends, ends - 3 * DAY - timedelta(seconds=1))
    assert winback.changed_mind_due(3, ends, ends - 3 * DAY)
    assert winback.changed_mind_due(3, ends, ends - timedelta(seconds=1))
    assert not winback.changed_mind_due(3, ends, ends)
    assert not winback.changed_mind_due(0, ends, ends - DAY)
    assert not winback.changed_mind_due(3, None, ends - DAY)


def test_an_archived_price_gives_way_to_the_products_default_of_the_same_interval_and_currency():
    old = {"id": "price_old", "active": True, "unit_amount": 4900}
    assert winback.comeback_price(old, None, "month", 1, "usd") == winback.ComebackPrice("price_old", 4900)
    archived = {**old, "active": False}
    default = {"id": "price_new", "active": True, "unit_amount": 5900, "currency": "usd",
               "recurring": {"interval": "month", "interval_count": 1}}
    assert winback.comeback_price(archived, default, "month", 1, "usd") == winback.ComebackPrice("price_new", 5900, True)
    assert winback.comeback_price(archived, {**default, "recurring": {"interval": "year"}}, "month", 1, "usd") is None
    assert winback.comeback_price(archived, {**default, "currency": "eur"}, "month", 1, "usd") is None
    assert winback.comeback_price(archived, {**default, "active": False}, "month", 1, "usd") is None
    assert winback.comeback_price(None, None, "month", 1, "usd") is None


def plan(amount=4900, interval="month", anchor=datetime(2026, 11, 25, tzinfo=timezone.utc),
         next_payment=datetime(2026, 12, 25, tzinfo=timezone.utc)):
    return billing.Plan("usd", (billing.Line(amount, 1),), interval, 1, anchor, next_payment)


def test_keeping_says_the_next_payment_with_a_discount_that_still_runs_then():
    now = datetime(2026, 12, 22, tzinfo=timezone.utc)
    plain = billing.keep_promise(plan(), now)
    assert plain.text == ("Your subscription continues as it is: your next payment is $49.00 on 25 December 2026, "
                          "then $49.00/month from 25 January 2027.")
    assert (plain.next_regular.at, plain.next_regular.amount) == (datetime(2026, 12, 25, tzinfo=timezone.utc), 4900)
    running = billing.keep_promise(plan(), now, ((50.0, None, datetime(2027, 2, 1, tzinfo=timezone.utc)),))
    assert running.next_regular.amount == 2450 and "$24.50 on 25 December 2026 (with your discount)" in running.text
    ended = billing.keep_promise(plan(), now, ((50.0, None, datetime(2026, 12, 25, tzinfo=timezone.utc)),))
    assert ended.next_regular.amount == 4900  # a discount ending at the renewal doesn't discount it
    amount_off = billing.keep_promise(plan(), now, ((None, 1000, None),))
    assert amount_off.next_regular.amount == 3900
    assert billing.keep_promise(plan(), datetime(2026, 12, 26, tzinfo=timezone.utc)) is None


def test_coming_back_counts_the_first_payment_today_and_the_coupon_covers_exactly_the_promised_payments():
    now = datetime(2027, 3, 31, 9, tzinfo=timezone.utc)  # month ends: 30 April, 31 May
    promise = billing.comeback_promise(plan(), now, 50, 3)
    assert promise.coupon_months == 3 and promise.cost == 3 * 2450
    assert [(p.at.date().isoformat(), p.amount) for p in (*promise.changed, promise.next_regular)] == [
        ("2027-03-31", 2450), ("2027-04-30", 2450), ("2027-05-31", 2450), ("2027-06-30", 4900)]
    assert promise.text == ("50% off your first 3 payments (today, then 30 April and 31 May 2027): $24.50/month, "
                            "then $49.00/month from 30 June 2027.")
    yearly = billing.comeback_promise(plan(49000, "year"), now, 50, 1)
    assert yearly.coupon_months == 12 and yearly.text.startswith("50% off your first payment: $245.00 today instead")
    assert billing.comeback_promise(plan(900, "week"), now, 50, 2) is None  # no whole months cover 2 weeks
    usual = billing.comeback_promise(plan(), now)
    assert usual.changed == () and usual.text == "$49.00/month: your first payment today, the next on 30 April 2027."


def test_an_ended_subscription_is_read_from_its_event_and_an_odd_one_is_ignored():
    from cancel_flow.winback_service import ended_values

    sub = {"object": "subscription", "id": "sub_1", "status": "canceled", "customer": "cus_1", "ended_at": 1802260800,
           "cancellation_details": {"feedback": "too_expensive", "reason": "cancellation_requested"},
           "items": {"data": [{"quantity": 2, "price": {"id": "price_1", "product": "prod_1", "unit_amount": 4900,
                                                         "currency": "usd", "recurring": {"interval": "year",
                                                                                          "interval_count": 1}}}]}}
    values = ended_values(sub, 0)
    assert values["customer_id"] == "cus_1" and values["stripe_feedback"] == "too_expensive"
    assert (values["unit_amount"], values["quantity"], values["monthly_amount"]) == (4900, 2, 817)
    assert values["ended_at"] == datetime.fromtimestamp(1802260800, timezone.utc) and values["plan_name"] == ""
    assert ended_values({**sub, "status": "incomplete_expired"}, 0) is None  # never started: nobody left
    assert ended_values({**sub, "items": {"data": []}}, 0) is None
    assert ended_values({**sub, "items": "not a list"}, 0) is None
    assert ended_values({**sub, "customer": 7}, 0) is None
