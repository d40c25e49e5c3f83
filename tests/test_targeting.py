"""Offer targeting: each `when` condition, their combination, and `cancel-flow offers explain`."""

from datetime import datetime, timedelta, timezone

import pytest

from cancel_flow.cli import main
from cancel_flow.errors import SettingsError
from tests.helpers import load_config
from cancel_flow.targeting import Conditions, Subject, first_failed, parse_conditions

NOW = datetime(2026, 11, 24, 12, tzinfo=timezone.utc)
SUBJECT = Subject(interval="month", price_ids=("price_a",), product_ids=("prod_a",),
                  started_at=NOW - timedelta(days=100), monthly_amount=4900, currency="usd", country="US",
                  metadata={"tier": "gold", "coach": "sam"})


def conditions(**raw) -> Conditions:
    def fail(where, message):
        raise SettingsError(f"{where}: {message}")
    return parse_conditions(raw, "[offer.when]", fail)


@pytest.mark.parametrize("raw, holds", [
    ({}, True),
    ({"interval": ["month"]}, True), ({"interval": ["year"]}, False),
    ({"prices": ["price_a", "price_b"]}, True), ({"prices": ["price_b"]}, False),
    ({"products": ["prod_a"]}, True), ({"products": ["prod_z"]}, False),
    ({"tenure_days_min": 100}, True), ({"tenure_days_min": 101}, False),
    ({"tenure_days_max": 100}, True), ({"tenure_days_max": 99}, False),
    ({"monthly_amount_min": 4900}, True), ({"monthly_amount_min": 4901}, False),
    ({"monthly_amount_max": 4900}, True), ({"monthly_amount_max": 4899}, False),
    ({"currency": ["USD"]}, True), ({"currency": "eur"}, False),
    ({"country": ["us", "ca"]}, True), ({"country": ["DE"]}, False),
    ({"metadata": {"tier": "gold"}}, True), ({"metadata": {"tier": "silver"}}, False),
    ({"metadata": {"missing": "x"}}, False),
])
def test_each_condition(raw, holds):
    assert (first_failed(conditions(**raw), SUBJECT, NOW) is None) == holds


def test_all_conditions_must_hold_and_the_first_failing_one_is_named():
    every = conditions(interval=["month"], prices=["price_a"], tenure_days_min=30, monthly_amount_max=10000,
                       currency=["usd"], country=["US"], metadata={"tier": "gold", "coach": "sam"})
    assert first_failed(every, SUBJECT, NOW) is None
    two_wrong = conditions(interval=["month"], tenure_days_min=365, country=["DE"])
    assert first_failed(two_wrong, SUBJECT, NOW) == "subscribed 100 days ago, fewer than 365"
    unknown_country = Subject(**{**SUBJECT.__dict__, "country": None})
    assert first_failed(conditions(country=["US"]), unknown_country, NOW) == "country unknown is not US"


@pytest.mark.parametrize("raw, message", [
    ({"interval": ["fortnight"]}, "interval"), ({"prices": ["cheap"]}, "prices"), ({"products": [3]}, "products"),
    ({"tenure_days_min": -1}, "tenure_days_min"), ({"monthly_amount_max": 49.0}, "monthly_amount_max"),
    ({"currency": ["dollars"]}, "currency"), ({"country": ["USA"]}, "country"), ({"metadata": {"a": 1}}, "metadata"),
    ({"tenure_days_min": 10, "tenure_days_max": 5}, "tenure_days_min"), ({"colour": "red"}, "colour"),
])
def test_bad_conditions_are_named(raw, message):
    with pytest.raises(SettingsError, match=message):
        conditions(**raw)


def test_offers_explain_prints_what_a_customer_sees_and_why_not(tmp_path, monkeypatch, capsys, catalogue, stripe_client,
                                                               settings, emulator_url):
    offers = tmp_path / "offers.toml"
    offers.write_text("""
[brand]
name = "Coach"
[[offer]]
id = "gold-only"
kind = "discount"
percent_off = 30
payments = 2
title = "For gold members"
[offer.when]
metadata = {tier = "gold"}
country = ["US"]
[[offer]]
id = "old-timers"
kind = "discount"
percent_off = 20
payments = 1
title = "Loyalty"
[offer.when]
tenure_days_min = 365
[[offer]]
id = "pause"
kind = "pause"
max_payments = 2
reasons = ["unused"]
title = "A break"
[[offer]]
id = "winter"
kind = "free_period"
months = 1
title = "A winter month on us"
enabled = false
""")
    customer = catalogue.customer(address={"country": "US"}, metadata={"tier": "gold"})
    sub = catalogue.subscription(customer)
    for name, value in {"DATABASE_URL": settings.database_url, "CANCEL_FLOW_SECRET_KEY": settings.secret_key,
                        "STRIPE_API_KEY": settings.stripe_api_key, "STRIPE_API_BASE": emulator_url,
                        "CANCEL_FLOW_OFFERS": str(offers)}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit:
        main(["offers", "explain", "--customer", customer.id, "--reason", "too_expensive"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    assert sub.id in out
    assert "SHOWN  gold-only (discount)" in out
    assert "not shown  old-timers (discount): condition not met: subscribed 0 days ago, fewer than 365" in out
    assert "not shown  pause (pause): shown for other reasons (unused)" in out
    assert "not shown  winter (free_period): turned off in the settings" in out
    assert load_config(offers).max_offers == 2
