"""Which language a client is served in, and money and dates written the way that language writes them."""

from datetime import date

import pytest

from cancel_flow.i18n import choose, from_accept_language, shipped
from cancel_flow.money import format_day, format_money


@pytest.mark.parametrize("tag, language", [("es", "es"), ("es-MX", "es"), ("pt-BR", "pt_BR"), ("pt_PT", "pt_BR"),
                                           ("DE-at", "de"), ("en-GB", "en"), ("fr", "fr"), ("it", None), ("", None),
                                           ("x" * 80, None)])
def test_a_language_tag_maps_to_the_language_shipped_for_it(tag, language):
    assert shipped(tag) == language


def test_accept_language_follows_quality_then_order_and_skips_what_we_dont_ship():
    assert from_accept_language("it-IT,it;q=0.9,de;q=0.5,fr;q=0.8,en;q=0") == ["fr", "de"]
    assert from_accept_language("es-ES, es;q=bad, pt-BR;q=1") == ["es", "pt_BR"]
    assert from_accept_language(None) == [] and from_accept_language("*") == []


def test_the_choice_is_the_switch_then_stripe_then_the_browser_then_the_brand():
    assert choose(picked="de", preferred_locales=["es"], accept_language="fr", default="en") == "de"
    assert choose(preferred_locales=["it", "es"], accept_language="fr", default="en") == "es"
    assert choose(preferred_locales=["it"], accept_language="fr-CA,en;q=0.5", default="en") == "fr"
    assert choose(accept_language="it", default="pt_BR") == "pt_BR"
    assert choose(picked="xx", default="nope") == "en"


@pytest.mark.parametrize("language, euros, yen, day", [
    ("en", "€24.50", "¥4,900", "25 January 2027"),
    ("es", "24,50\xa0€", "4.900\xa0JPY", "25 de enero de 2027"),
    ("fr", "24,50\xa0€", "4\u202f900\xa0JPY", "25 janvier 2027"),
    ("de", "24,50\xa0€", "4.900\xa0¥", "25. Januar 2027"),
    ("pt_BR", "€\xa024,50", "JP¥\xa04.900", "25 de janeiro de 2027"),
])
def test_money_and_dates_are_written_the_way_each_language_writes_them(language, euros, yen, day):
    assert format_money(2450, "eur", language) == euros
    assert format_money(4900, "jpy", language) == yen  # zero-decimal: 4900 is ¥4,900, never ¥49.00
    assert format_day(date(2027, 1, 25), language) == day
