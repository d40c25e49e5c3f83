"""Every shipped language's catalog holds every message the sources mark, translated and up to date: Babel's
own extraction (`pybabel extract -F cancel_flow/locales/babel.cfg`) runs here and is compared with each .po."""

import re
from functools import lru_cache
from pathlib import Path

import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from cancel_flow.i18n import DEFAULT, LANGUAGES, LOCALES_DIR

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"%\((\w+)\)s")
TRANSLATED = [language for language in LANGUAGES if language != DEFAULT]


@lru_cache(maxsize=1)
def extracted() -> Catalog:
    """The messages the sources mark, as `pybabel extract -F cancel_flow/locales/babel.cfg .` finds them."""
    with (LOCALES_DIR / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)
    catalog = Catalog()
    for filename, lineno, message, comments, context in extract_from_dir(ROOT, method_map, options_map):
        catalog.add(message, None, [(filename, lineno)], auto_comments=comments, context=context)
    return catalog


def shipped(language: str) -> Catalog:
    with (LOCALES_DIR / language / "LC_MESSAGES" / "messages.po").open("rb") as file:
        return read_po(file, locale=language)


def test_the_sources_mark_the_clients_words():
    ids = {message.id for message in extracted() if message.id}
    assert "Continue to cancel" in ids and ("Skip %(count)s payment", "Skip %(count)s payments") in ids
    assert "%(amount)s/month" in ids and "Your payment didn't go through" in ids and "It's too expensive" in ids
    assert len(ids) > 300


@pytest.mark.parametrize("language", TRANSLATED)
def test_a_shipped_catalog_has_every_message_translated_and_nothing_left_over(language):
    wanted = {message.id: message for message in extracted() if message.id}
    catalog = shipped(language)
    have = {message.id: message for message in catalog if message.id}
    assert not [m for m in wanted if m not in have], f"{language}: missing (run pybabel update, then translate)"
    assert not [m for m in have if m not in wanted], f"{language}: out of date (run pybabel update)"
    for message_id, message in have.items():
        assert not message.fuzzy, f"{language}: fuzzy translation of {message_id!r}"
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        assert all(forms) and len(forms) == (catalog.num_plurals if isinstance(message_id, tuple) else 1), \
            f"{language}: no translation of {message_id!r}"
        names = set(PLACEHOLDER.findall(message_id[-1] if isinstance(message_id, tuple) else message_id))
        for form in forms:
            assert set(PLACEHOLDER.findall(form)) <= names, f"{language}: {form!r} names a value {message_id!r} doesn't"
        assert set(PLACEHOLDER.findall(forms[-1])) == names, f"{language}: {forms[-1]!r} leaves out a value"
    assert not list(catalog.check())
