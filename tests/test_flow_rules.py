from datetime import datetime, timezone

from cancel_flow.flow import PriceLine, describe_discount, describe_pause, eligible_offers, monthly_amount, pause_until


def test_monthly_amount_brings_every_interval_to_a_month():
    assert monthly_amount([PriceLine(4900, 1, "month", 1)]) == 4900
    assert monthly_amount([PriceLine(48000, 1, "year", 1)]) == 4000
    assert monthly_amount([PriceLine(1000, 1, "week", 1)]) == 4333
    assert monthly_amount([PriceLine(9000, 1, "month", 3)]) == 3000
    assert monthly_amount([PriceLine(2000, 2, "month", 1), PriceLine(500, 1, "month", 1)]) == 4500


def test_discount_and_pause_are_described_exactly():
    assert describe_discount(50, 3, 4900, "usd") == "50% off for the next 3 months: $24.50 instead of $49.00"
    assert describe_discount(25, 1, 1000, "eur") == "25% off for the next month: €7.50 instead of €10.00"
    assert describe_pause(datetime(2027, 2, 24, tzinfo=timezone.utc)) == "Payments paused until 24 February 2027"


def test_pause_until_keeps_the_day_or_the_month_end():
    assert pause_until(datetime(2026, 11, 24, tzinfo=timezone.utc), 3) == datetime(2027, 2, 24, tzinfo=timezone.utc)
    assert pause_until(datetime(2026, 11, 30, tzinfo=timezone.utc), 3) == datetime(2027, 2, 28, tzinfo=timezone.utc)


def test_eligibility(offers):
    def ids(**kw):
        base = dict(has_discount=False, paused=False, interval="month", interval_count=1, accepted_offer_recently=False)
        return [o.id for o in eligible_offers(offers, "unused", **{**base, **kw})]

    assert ids() == ["half-off-3-months", "pause"]
    assert ids(has_discount=True) == ["pause"]
    assert ids(paused=True) == ["half-off-3-months"]
    assert ids(interval="year") == ["half-off-3-months"]
    assert ids(interval="month", interval_count=12) == ["half-off-3-months"]
    assert ids(accepted_offer_recently=True) == []
