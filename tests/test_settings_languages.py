"""The clients' languages in the configuration: `[brand] default_locale` and `[offer.text.<language>]`, through the
one validator, the TOML file both ways and the settings pages (which say which offers lack a translation)."""

import pytest

from cancel_flow.config.toml import read_toml, to_toml
from cancel_flow.config.validate import validate
from cancel_flow.errors import InvalidConfig
from tests.helpers import csrf_of, visible_text
from tests.test_settings_pages import coach_client, field_error, form_of, live_document, submit, versions  # noqa: F401

OFFER = {"id": "pause", "kind": "pause", "max_payments": 2, "title": "Take a break",
         "description": "Skip a payment or two."}


def configured(**offer) -> dict:
    return {"brand": {"name": "Coach", "default_locale": "en"}, "offer": [{**OFFER, **offer}]}


def test_an_offer_speaks_each_language_given_and_falls_back_to_its_own_words():
    offer = validate(configured(text={"es": {"title": "Tómate un descanso"},
                                      "de": {"title": "Machen Sie Pause", "description": "Setzen Sie aus."}})).offers[0]
    assert offer.title_in("es") == "Tómate un descanso" and offer.description_in("es") == "Skip a payment or two."
    assert (offer.title_in("de"), offer.description_in("de")) == ("Machen Sie Pause", "Setzen Sie aus.")
    assert offer.title_in("fr") == "Take a break" and offer.missing_languages(["es", "fr", "de", "pt_BR"]) == ["fr", "pt_BR"]


@pytest.mark.parametrize("document, field, words", [
    ({"brand": {"name": "Coach", "default_locale": "it"}}, "brand.default_locale", "one of the languages shipped"),
    (configured(text={"it": {"title": "Pausa"}}), "offer.pause.text", "'it', which is not shipped"),
    (configured(text={"es": {"title": "Pausa", "reasons": ["other"]}}), "offer.pause.text", "only title and description"),
    (configured(text={"es": "Pausa"}), "offer.pause.text", "a table per language"),
    (configured(text={"es": {"title": " "}}), "offer.pause.text.es.title", "non-empty string"),
    (configured(text=["es"]), "offer.pause.text", "a table of languages"),
])
def test_the_one_validator_refuses_a_language_not_shipped_or_a_field_not_translatable(document, field, words):
    with pytest.raises(InvalidConfig) as refused:
        validate(document)
    assert refused.value.field == field and words in refused.value.message


def test_a_refusal_about_a_translation_shows_beside_its_input():
    from cancel_flow.web.settings_forms import offer_input

    assert offer_input("offer.pause.text.es.title", "pause", 1) == "text_es_title"
    assert offer_input("offer.pause.text.pt_BR.description", "pause", 1) == "text_pt_BR_description"
    assert offer_input("offer.pause.text", "pause", 1) == "text"


def test_the_languages_go_through_toml_both_ways():
    document = configured(text={"es": {"title": "Tómate un descanso", "description": "Sáltate un pago."},
                                "pt_BR": {"title": "Faça uma pausa"}})
    document["brand"]["default_locale"] = "fr"
    written = to_toml(document)
    assert "[offer.text.es]\ntitle = \"Tómate un descanso\"" in written and "[offer.text]" not in written
    assert read_toml(written, "offers.toml") == document
    assert validate(read_toml(written, "offers.toml")).brand.default_locale == "fr"


def test_the_coach_picks_the_clients_language_on_the_brand_page(coach_client, versions):  # noqa: F811
    page = coach_client.get("/dashboard/settings/brand").text
    assert '<option value="pt_BR" >Portuguese (Brazil)</option>' in page and "Clients' language" in page
    unchanged = submit(coach_client, "/dashboard/settings/brand", note="same")
    assert unchanged.status_code == 303 and "default_locale" not in live_document(versions)["brand"]
    assert submit(coach_client, "/dashboard/settings/brand", default_locale="de").status_code == 303
    assert live_document(versions)["brand"]["default_locale"] == "de"
    refused = submit(coach_client, "/dashboard/settings/brand", default_locale="it")
    assert refused.status_code == 422 and "one of the languages shipped" in field_error(refused.text, "default_locale")


def test_the_coach_writes_an_offer_in_other_languages_and_the_list_says_which_are_missing(coach_client, versions,  # noqa: F811
                                                                                          catalogue, signer):
    offers = visible_text(coach_client.get("/dashboard/settings/offers").text)
    assert "No translation yet for Spanish, French, German, Portuguese (Brazil): those clients see it in English." \
        in offers
    form = coach_client.get("/dashboard/settings/offers/edit/pause").text
    assert 'name="text_es_title"' in form and 'name="text_en_title"' not in form  # English is the offer's own words
    saved = submit(coach_client, "/dashboard/settings/offers/edit/pause", text_es_title="Mejor tómate un descanso",
                   text_de_title="Lieber eine Pause", text_de_description="Setzen Sie ein, zwei Zahlungen aus.")
    assert saved.status_code == 303
    pause = next(o for o in live_document(versions)["offer"] if o["id"] == "pause")
    assert pause["text"] == {"es": {"title": "Mejor tómate un descanso"},
                             "de": {"title": "Lieber eine Pause", "description": "Setzen Sie ein, zwei Zahlungen aus."}}
    offers = visible_text(coach_client.get("/dashboard/settings/offers").text)
    assert "No translation yet for French, Portuguese (Brazil): those clients see it in English." in offers
    form = coach_client.get("/dashboard/settings/offers/edit/pause").text
    assert 'value="Lieber eine Pause"' in form
    assert submit(coach_client, "/dashboard/settings/offers/edit/pause", text_fr_description="Une pause.").status_code == 303
    assert next(o for o in live_document(versions)["offer"] if o["id"] == "pause")["text"]["fr"] == \
        {"description": "Une pause."}  # a description alone: the title stays the offer's own
    cleared = submit(coach_client, "/dashboard/settings/offers/edit/pause", text_es_title="")
    assert cleared.status_code == 303 and "es" not in next(o for o in live_document(versions)["offer"]
                                                           if o["id"] == "pause")["text"]

    sub = catalogue.subscription(catalogue.customer(email="jonas@example.com", preferred_locales=["de"]))
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = coach_client.get(f"/cancel/{token}")
    coach_client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
    assert "Lieber eine Pause" in visible_text(coach_client.get(f"/cancel/{token}").text)


@pytest.fixture
def env(monkeypatch, tmp_path):
    import os

    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CANCEL_FLOW_", "STRIPE_", "DATABASE_", "SMTP_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    return monkeypatch


@pytest.mark.parametrize("value, locale", [(None, "en"), ("en_GB", "en_GB"), ("fr-CA", "fr_CA"), ("de", "de")])
def test_the_coachs_locale_is_any_locale_babel_knows(env, value, locale):
    from cancel_flow.settings import load_settings

    if value:
        env.setenv("CANCEL_FLOW_LOCALE", value)
    assert load_settings().locale == locale


def test_a_locale_babel_doesnt_know_stops_start_up_naming_the_setting(env):
    from cancel_flow.errors import SettingsError
    from cancel_flow.settings import load_settings

    env.setenv("CANCEL_FLOW_LOCALE", "klingon")
    with pytest.raises(SettingsError, match="CANCEL_FLOW_LOCALE must be a locale such as en, en_GB"):
        load_settings()


def test_the_coach_sees_each_email_as_a_client_reading_another_language_gets_it(coach_client):  # noqa: F811
    page = coach_client.get("/dashboard/settings/emails").text
    assert 'href="/dashboard/settings/emails/preview/offer_accepted?language=de"' in page
    german = coach_client.get("/dashboard/settings/emails/preview/offer_accepted?language=de")
    assert german.status_code == 200 and '<html lang="de">' in german.text and "Danke, dass Sie bleiben" in german.text
    failed = coach_client.get("/dashboard/settings/emails/preview/payment_failed?language=pt_BR").text
    assert "Visa com final 4242" in failed and "seu banco recusou o pagamento sem informar o motivo" in failed
    assert coach_client.get("/dashboard/settings/emails/preview/offer_accepted?language=it").status_code == 404
