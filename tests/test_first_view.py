"""The first view's shortcuts tell the same truth as the long way: the session it opens reads like the
stored row, and the subscription snapshot it keeps reads back as the facts Stripe gave."""

import json
from dataclasses import fields, replace
from datetime import datetime, timezone

from cancel_flow.clock import as_utc
from cancel_flow.flow import PriceLine, SubscriptionFacts, facts_from_json, facts_to_json, snapshot_facts
from cancel_flow.store import sessions

FACTS = SubscriptionFacts(
    subscription_id="sub_1", customer_id="cus_1", customer_email="a@example.com", status="active",
    plan_name="Coaching + Meal plan", currency="eur",
    lines=(PriceLine(4900, 1, "month", 1), PriceLine(1500, 2, "month", 1)),
    has_discount=True, paused=False, cancel_at_period_end=True,
    period_end=datetime(2026, 12, 25, 10, 30, 5, tzinfo=timezone.utc),
    anchor=datetime(2026, 1, 25, 10, 30, 5, tzinfo=timezone.utc),
    next_payment=datetime(2026, 12, 25, 10, 30, 5, tzinfo=timezone.utc),
    price_ids=("price_1", "price_2"), product_ids=("prod_1",), item_ids=("si_1", "si_2"),
    started_at=datetime(2025, 1, 25, tzinfo=timezone.utc), country="DE",
    metadata=(("plan", "gold"), ("source", "ads")), on_schedule=True, taxed=True, customer_name="Zoë Ünal",
    discount_coupons=("half-off",), pause_resumes_at=None,
    cancel_at=datetime(2026, 12, 25, 10, 30, 5, tzinfo=timezone.utc), cancel_at_period_end_flag=False)


def test_a_snapshot_reads_back_as_the_same_facts():
    assert facts_from_json(facts_to_json(FACTS)) == FACTS


def test_a_snapshot_kept_on_writing_is_what_reading_it_gives():
    """A first view reads back the snapshot it has just written from the kept facts: they must be what reading
    the text gives (a process that didn't write it reads the text)."""
    discounted = replace(FACTS, discounts=((12.5, None, 1798191005, False, 1766655005), (None, 500, None, True, None)))
    assert discounted.plan.discounts and discounted.billed_amount  # the plan worked out (and kept) before writing
    assert set(json.loads(facts_to_json(discounted))) == {field.name for field in fields(SubscriptionFacts)}
    for facts in (FACTS, discounted, replace(FACTS, customer_name="Zo\ud800"), replace(FACTS, period_end=None)):
        text = facts_to_json(facts)
        assert facts_from_json(text) == facts
        assert snapshot_facts(text) == facts_from_json(text)
    # a moment with microseconds reads back rounded to what a float of Unix seconds holds: the text decides
    precise = replace(FACTS, period_end=datetime(2026, 12, 25, 10, 30, 5, 123457, tzinfo=timezone.utc))
    text = facts_to_json(precise)
    assert snapshot_facts(text) == facts_from_json(text)


def test_a_snapshot_written_before_unix_times_still_reads():
    # the earlier form: ISO dates and price lines as objects, as sessions opened before an upgrade keep them
    earlier = {**FACTS.__dict__, "lines": [line.__dict__ for line in FACTS.lines]}
    earlier.update({key: value.isoformat() for key, value in earlier.items() if isinstance(value, datetime)})
    assert facts_from_json(json.dumps(earlier)) == FACTS


def _comparable(value):
    return as_utc(value) if isinstance(value, datetime) else value


def test_the_opened_session_reads_like_the_stored_row(store):
    values = {"nonce": "n" * 32, "customer_id": "cus_1", "subscription_id": "sub_1", "customer_email": "a@example.com",
              "plan_name": "Coaching", "price_amount": 4900, "interval": "month", "interval_count": 1,
              "monthly_amount": 4900, "currency": "usd", "had_discount": False, "was_paused": False,
              "cancel_at_period_end": False, "period_end": FACTS.period_end, "stripe_snapshot": facts_to_json(FACTS)}
    opened = store.open_session(values)
    stored = store.find_session(values["nonce"])
    for column in sessions.c:
        assert _comparable(getattr(opened, column.name)) == _comparable(getattr(stored, column.name)), column.name
    # a second first view of the same link (two requests at once) gets the row the first one wrote
    again = store.open_session(values)
    assert again.id == opened.id


def test_a_first_view_inserts_only_the_columns_it_names(store):
    import pytest

    with pytest.raises(ValueError, match="reason"):
        store.open_session({"nonce": "m" * 32, "reason": "price"})
