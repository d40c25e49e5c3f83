from datetime import datetime, timezone

from cancel_flow.flow import PriceLine, SubscriptionFacts, TargetPrice, eligible_offers, monthly_amount, why_not

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)


def test_monthly_amount_brings_every_interval_to_a_month():
    assert monthly_amount([PriceLine(4900, 1, "month", 1)]) == 4900
    assert monthly_amount([PriceLine(48000, 1, "year", 1)]) == 4000
    assert monthly_amount([PriceLine(1000, 1, "week", 1)]) == 4333
    assert monthly_amount([PriceLine(9000, 1, "month", 3)]) == 3000
    assert monthly_amount([PriceLine(2000, 2, "month", 1), PriceLine(500, 1, "month", 1)]) == 4500


def facts(interval="month", count=1, amount=4900, **changes) -> SubscriptionFacts:
    base = dict(subscription_id="sub_1", customer_id="cus_1", customer_email="a@example.com", status="active",
                plan_name="Coaching", currency="usd", lines=(PriceLine(amount, 1, interval, count),),
                has_discount=False, paused=False, cancel_at_period_end=False,
                period_end=datetime(2026, 11, 25, 10, tzinfo=timezone.utc),
                anchor=datetime(2026, 10, 25, 10, tzinfo=timezone.utc),
                next_payment=datetime(2026, 11, 25, 10, tzinfo=timezone.utc),
                price_ids=("price_1",), product_ids=("prod_1",), item_ids=("si_1",),
                started_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    if interval == "week":
        base.update(anchor=datetime(2026, 11, 18, 10, tzinfo=timezone.utc))
    return SubscriptionFacts(**{**base, **changes})


def test_eligibility(offers):
    def ids(reason="unused", recent=False, **kw):
        return [o.id for o in eligible_offers(offers, reason, facts(**kw), NOW, accepted_offer_recently=recent)]

    assert ids() == ["half-off-3-payments", "pause"]
    assert ids(has_discount=True) == ["pause"]
    assert ids(paused=True) == []
    assert ids(interval="year", anchor=datetime(2025, 11, 25, 10, tzinfo=timezone.utc)) == ["yearly-25-off"]
    assert ids(interval="week") == ["pause"]  # coupons last whole months: no honest discount on a weekly plan
    assert ids(recent=True) == []
    assert ids(reason="too_complex", recent=True) == ["talk"]  # a conversation is never cooled down
    assert ids(status="past_due") == []


def test_why_not_names_the_first_condition_that_failed(offers):
    switch = [o for o in offers.offers if o.kind == "discount"][0]
    assert why_not(switch, facts(has_discount=True), NOW, reason="unused", accepted_offer_recently=False) == "already has a discount"
    assert "other reasons" in why_not(switch, facts(), NOW, reason="switched_service", accepted_offer_recently=False)


def test_switch_needs_a_cheaper_price_of_the_same_period(tmp_path):
    from tests.helpers import load_config

    path = tmp_path / "offers.toml"
    path.write_text('[brand]\nname = "C"\n[[offer]]\nid = "lite"\nkind = "switch"\nprice = "price_lite"\ntitle = "Lite"\n')
    offer = load_config(path).offers[0]
    cheap = {"price_lite": TargetPrice("price_lite", 2900, "usd", "month", 1)}
    dear = {"price_lite": TargetPrice("price_lite", 5900, "usd", "month", 1)}
    yearly = {"price_lite": TargetPrice("price_lite", 2900, "usd", "year", 1)}
    ok = dict(reason="other", accepted_offer_recently=False)
    assert why_not(offer, facts(), NOW, prices=cheap, **ok) is None
    assert why_not(offer, facts(), NOW, prices=dear, **ok) == "that price is not cheaper"
    assert "billing interval" in why_not(offer, facts(), NOW, prices=yearly, **ok)
    two = facts(lines=(PriceLine(4900, 1, "month", 1), PriceLine(1000, 1, "month", 1)))
    assert why_not(offer, two, NOW, prices=cheap, **ok) == "the subscription has several items"
    assert why_not(offer, facts(on_schedule=True), NOW, prices=cheap, **ok) == "the subscription is on a schedule"


def test_a_turned_off_offer_is_never_shown_nor_offered_in_an_experiment_arm(offers):
    from dataclasses import replace

    from cancel_flow.experiments import Arm
    from cancel_flow.flow import arm_offers, explain

    book = replace(offers, offers=tuple(replace(o, enabled=False) if o.id == "half-off-3-payments" else o
                                        for o in offers.offers))
    half = book.find("half-off-3-payments")
    assert why_not(half, facts(), NOW, reason="unused", accepted_offer_recently=False) == "turned off in the settings"
    assert [o.id for o in eligible_offers(book, "unused", facts(), NOW, accepted_offer_recently=False)] == ["pause"]
    arm = Arm(name="discount", offers=("half-off-3-payments",), weight=1)
    assert arm_offers(book, arm, facts(), NOW, accepted_offer_recently=False) == []
    assert dict((o.id, why) for o, why in explain(book, "unused", facts(), NOW, accepted_offer_recently=False)) == {
        "half-off-3-payments": "turned off in the settings", "yearly-25-off": "condition not met: billed every month, not year",
        "pause": None,
        "talk": "shown for other reasons (missing_features, customer_service, too_complex, low_quality)"}
