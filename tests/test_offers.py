from datetime import datetime, timezone
from pathlib import Path

import pytest

from cancel_flow.errors import SettingsError
from tests.helpers import load_config
from tests.helpers import HALF_PRICE_OFFER

GOOD = """
[brand]
name = "Coach"
""" + HALF_PRICE_OFFER


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "offers.toml"
    path.write_text(text)
    return path


def test_the_shipped_offers_file_loads():
    book = load_config(Path(__file__).resolve().parents[1] / "offers.toml")
    assert [o.id for o in book.offers] == ["half-off-3-payments", "yearly-25-off", "pause", "talk"]
    assert book.offer_cooldown_days == 365 and book.brand.logo.is_file()


@pytest.mark.parametrize("path", ["offers.toml", "cancel_flow/examples/offers.toml"])
def test_the_shipped_offers_read_sensibly_for_monthly_and_yearly_plans(path):
    """Three months at half price for a monthly plan; a yearly subscriber is not given three years at half
    price but a quarter off the next renewal, and no pause."""
    from tests.test_flow_rules import NOW, facts
    from cancel_flow.flow import eligible_offers

    book = load_config(Path(__file__).resolve().parents[1] / path)

    def shown(interval: str, reason: str) -> list:
        anchor = {"year": datetime(2025, 11, 25, 10, tzinfo=timezone.utc)}.get(interval)
        plan = facts(interval=interval, **({"anchor": anchor} if anchor else {}))
        return [(o.id, o.percent_off, o.payments) for o in eligible_offers(book, reason, plan, NOW, accepted_offer_recently=False)
                if o.kind != "contact"]

    assert shown("month", "too_expensive") == [("half-off-3-payments", 50, 3)]
    assert shown("year", "too_expensive") == [("yearly-25-off", 25, 1)]
    assert [offer for offer, *_ in shown("month", "unused")] == ["half-off-3-payments", "pause"]
    assert shown("year", "unused") == [("yearly-25-off", 25, 1)]


def test_offer_without_reasons_fits_every_reason(tmp_path):
    offer = load_config(write(tmp_path, GOOD)).offers[0]
    assert offer.fits("too_complex") and offer.fits("other")


@pytest.mark.parametrize("change, names", [
    (("percent_off = 50", "percent_off = 150"), ["offer 'half'", "percent_off"]),
    (("payments = 3", "payments = 0"), ["offer 'half'", "payments"]),
    (("payments = 3", "months = 3"), ["offer 'half'", "'months' is no longer used", "'payments'"]),
    (('kind = "discount"\npercent_off = 50\npayments = 3', 'kind = "pause"\nmax_months = 2'),
     ["offer 'half'", "'max_months' is no longer used", "'max_payments'"]),
    (('payments = 3', 'payments = 3\n[offer.when]\ninterval = ["fortnight"]'), ["[offer.when]", "interval"]),
    (('payments = 3', 'payments = 3\n[offer.when]\nmonthly_amount_min = 5000\nmonthly_amount_max = 100'),
     ["[offer.when]", "monthly_amount_min"]),
    (('payments = 3', 'payments = 3\n[offer.when]\ncolour = "red"'), ["[offer.when]", "colour"]),
    (('kind = "discount"\npercent_off = 50\npayments = 3', 'kind = "switch"\nprice = "cheap"'), ["offer 'half'", "price"]),
    (('kind = "discount"\npercent_off = 50\npayments = 3', 'kind = "free_period"\nmonths = 40'), ["offer 'half'", "months"]),
    (('kind = "discount"\npercent_off = 50\npayments = 3', 'kind = "contact"\nurl = "javascript:alert(1)"'), ["offer 'half'", "url"]),
    (('kind = "discount"', 'kind = "gift"'), ["offer 'half'", "kind"]),
    (('title = "Stay for half price"', 'title = "Half"\nreasons = ["bored"]'), ["offer 'half'", "reasons"]),
    (('title = "Stay for half price"', 'title = "Half"\npercent = 3'), ["offer 'half'", "percent"]),
    (('id = "half"', 'id = "Half Off!"'), ["offer #1", "id"]),
    (('name = "Coach"', 'name = "Coach"\ncolor = "blue"'), ["[brand]", "color"]),
    (('name = "Coach"', 'name = "Coach"\nlogo = "missing.svg"'), ["[brand]", "logo"]),
])
def test_mistakes_name_the_file_the_offer_and_the_field(tmp_path, change, names):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(SettingsError) as error:
        load_config(path)
    for name in [str(path), *names]:
        assert name in str(error.value)


def test_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(SettingsError, match="unique"):
        load_config(write(tmp_path, GOOD + GOOD.split("[brand]\nname = \"Coach\"")[1]))


def test_missing_file_and_bad_toml_are_named(tmp_path):
    with pytest.raises(SettingsError, match="CANCEL_FLOW_OFFERS"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_config(write(tmp_path, "[brand\n"))
