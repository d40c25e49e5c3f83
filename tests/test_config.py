"""The live configuration: one validator naming the field, numbered versions in the database, the JSON API,
TOML export and import, and a save that reaches every worker without a restart."""

import hashlib
import secrets
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from cancel_flow.config.live import LiveConfiguration
from cancel_flow.config.toml import read_toml, read_toml_file, to_toml
from cancel_flow.config.validate import AA_CONTRAST, contrast_with_white, nearest_passing_color, validate
from cancel_flow.errors import InvalidConfig, SettingsError
from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.config_versions import ConfigVersions
from tests.conftest import ROOT
from tests.helpers import csrf_of, run_cli

SHIPPED = read_toml_file(ROOT / "offers.toml")
NEW_OFFER = {"id": "free-month", "kind": "free_period", "months": 1, "title": "A month on us"}


def document(**changes) -> dict:
    return {**SHIPPED, **changes}


def refusal(data) -> InvalidConfig:
    with pytest.raises(InvalidConfig) as refused:
        validate(data, ROOT)
    return refused.value


@pytest.mark.parametrize("change, field, words", [
    ({"brand": {"name": "C", "color": "blue"}}, "brand.color", "must look like #1f6feb"),
    ({"brand": {"color": "#1f6feb"}}, "brand.name", "non-empty string"),
    ({"rules": {"max_offers": 0}}, "rules.max_offers", "from 1 to 10"),
    ({"offer": [{"id": "pause", "kind": "pause", "max_payments": 30, "title": "Break"}]},
     "offer.pause.max_payments", "from 1 to 12"),
    ({"offer": [{"id": "Bad Id", "kind": "pause", "max_payments": 1, "title": "Break"}]}, "offer.1.id", "lowercase"),
    ({"offer": [{"id": "p", "kind": "pause", "max_payments": 1, "title": "B", "when": {"interval": ["fortnight"]}}]},
     "offer.p.when.interval", "interval"),
    ({"emails": {"failed_payment_days": "0,3"}}, "emails.failed_payment_days", "[0, 3, 7]"),
    ({"alerts": {"email": "nope"}}, "alerts.email", "email address"),
    ({"colour": {}}, "colour", "unknown field 'colour'"),
])
def test_a_mistake_names_its_field(change, field, words):
    refused = refusal(document(**change))
    assert refused.field == field
    assert words in refused.message


def test_a_brand_colour_white_text_cant_be_read_on_is_refused_with_the_nearest_that_passes():
    assert contrast_with_white("#facc15") < 1.6
    refused = refusal(document(brand={"name": "Coach", "color": "#facc15"}))
    suggestion = nearest_passing_color("#facc15")
    assert refused.field == "brand.color"
    assert "1.53:1" in refused.message and suggestion in refused.message and "WCAG AA" in refused.message
    assert contrast_with_white(suggestion) >= AA_CONTRAST
    assert validate(document(brand={"name": "Coach", "color": suggestion}), ROOT).brand.color == suggestion


def test_toml_written_back_reads_as_the_same_document():
    tricky = document(brand={"name": 'Coach "Q" \\ Ünïcode\nline', "color": "#1f6feb"},
                      offer=[{**NEW_OFFER, "when": {"metadata": {"plan tier": "gold"}, "interval": ["month"]}}])
    assert read_toml(to_toml(tricky), "export") == tricky


@pytest.fixture
def config_key(store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("settings-app", key, ("config",))
    return key


@pytest.fixture
def config_api(client, config_key):
    client.headers["Authorization"] = f"Bearer {config_key}"
    return client


def test_first_start_seeds_version_1_from_the_offers_file(config_api):
    answer = config_api.get("/api/config").json()
    assert answer == {"version": 1, "config": SHIPPED}
    [first] = config_api.get("/api/config/versions").json()
    assert first["version"] == 1 and first["saved_by"] == "cancel-flow" and "offers.toml" in first["note"]


def test_a_save_is_live_at_once_and_names_its_author(config_api, client):
    saved = config_api.put("/api/config", json={"base_version": 1, "config": document(offer=[*SHIPPED["offer"], NEW_OFFER]),
                                                "note": "a month free"})
    assert saved.status_code == 200 and saved.json() == {"version": 2}
    assert client.app.state.config.current().find("free-month").title == "A month on us"
    versions = config_api.get("/api/config/versions").json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[0]["saved_by"] == "API key 'settings-app'" and versions[0]["note"] == "a month free"


def test_an_invalid_save_is_a_422_naming_the_field_and_changes_nothing(config_api):
    bad = document(offer=[{**NEW_OFFER, "months": 99}])
    answer = config_api.put("/api/config", json={"base_version": 1, "config": bad})
    assert answer.status_code == 422
    error = answer.json()["error"]
    assert error["code"] == "invalid_config" and error["field"] == "offer.free-month.months"
    assert "from 1 to 12" in error["message"]
    assert config_api.get("/api/config").json() == {"version": 1, "config": SHIPPED}


def test_a_save_from_an_old_version_is_a_409_and_overwrites_nothing(config_api):
    assert config_api.put("/api/config", json={"base_version": 1, "config": document(rules={"max_offers": 1})}).status_code == 200
    late = config_api.put("/api/config", json={"base_version": 1, "config": document(rules={"max_offers": 3})})
    assert late.status_code == 409 and late.json()["error"]["code"] == "stale_version"
    assert "base_version 2" in late.json()["error"]["message"]
    assert config_api.get("/api/config").json()["config"]["rules"] == {"max_offers": 1}


def test_restore_saves_an_old_version_as_the_new_one(config_api):
    config_api.put("/api/config", json={"base_version": 1, "config": document(rules={"max_offers": 1})})
    restored = config_api.post("/api/config/versions/1/restore")
    assert restored.status_code == 200 and restored.json() == {"version": 3}
    assert config_api.get("/api/config").json() == {"version": 3, "config": SHIPPED}
    assert config_api.get("/api/config/versions").json()[0]["note"] == "restored version 1"
    assert config_api.post("/api/config/versions/9/restore").status_code == 404


def test_the_config_routes_need_the_config_scope(client, store):
    ordinary = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("app", ordinary)  # links, stats, hooks: as keys made before scopes
    headers = {"Authorization": f"Bearer {ordinary}"}
    for method, path in (("GET", "/api/config"), ("PUT", "/api/config"), ("GET", "/api/config/versions"),
                         ("POST", "/api/config/versions/1/restore")):
        answer = client.request(method, path, headers=headers, json={"base_version": 1, "config": SHIPPED})
        assert answer.status_code == 403, path
        assert "--scope config" in answer.json()["error"]["message"]
    assert client.get("/api/config").status_code == 401
    assert client.get("/api/stats", headers=headers).status_code == 200


def test_a_config_only_key_cant_mint_links(config_api):
    assert config_api.post("/api/links", json={"customer": "cus_x"}).status_code == 403


def test_a_bad_offers_file_at_first_start_stops_start_up_naming_the_field(make_client, tmp_path):
    broken = tmp_path / "offers.toml"
    broken.write_text(to_toml(document(brand={"name": "Coach"}, offer=[{**NEW_OFFER, "months": 0}])))
    with pytest.raises(SettingsError) as stopped:
        make_client(offers_path=broken)
    assert str(broken) in str(stopped.value) and "field 'months'" in str(stopped.value)


def test_once_a_version_exists_the_file_is_never_read_again(make_client, tmp_path):
    make_client()  # seeds version 1 from the shipped file
    typo = tmp_path / "offers.toml"
    typo.write_text("[brand\nname = ")
    client = make_client(offers_path=typo)
    assert client.get("/readyz").json()["config"] == "loaded"
    assert client.app.state.config.version == 1


def test_a_stored_version_that_no_longer_loads_gives_way_to_the_newest_that_does(settings, store, tmp_path):
    versions = ConfigVersions(store.engine)
    versions.save(SHIPPED, base_version=None, saved_by="t", origin="api")
    # saved by a release with other rules: a colour this one refuses
    versions.save(document(brand={**SHIPPED["brand"], "color": "#facc15"}), base_version=1, saved_by="t", origin="api")
    live = LiveConfiguration.start(versions, settings.offers_path)
    assert live.version == 1 and live.current().brand.color == "#1f6feb"


def test_a_logo_file_missing_on_this_machine_means_no_logo_not_a_failure(settings, store, tmp_path):
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG")
    live = LiveConfiguration.start(ConfigVersions(store.engine), settings.offers_path)
    live.save(document(brand={**SHIPPED["brand"], "logo": str(logo)}), base_version=1, saved_by="t", origin="api")
    logo.unlink()  # another replica, without the file
    other = LiveConfiguration.start(ConfigVersions(store.engine), settings.offers_path)
    assert other.version == 2 and other.current().brand.logo is None


def test_export_then_import_then_export_is_identical(settings, monkeypatch, tmp_path, capsys):
    for name, value in {"DATABASE_URL": settings.database_url, "CANCEL_FLOW_OFFERS": str(settings.offers_path),
                        "STRIPE_API_KEY": settings.stripe_api_key}.items():
        monkeypatch.setenv(name, value)
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    assert run_cli(["config", "export", str(first)], monkeypatch) == 0
    assert run_cli(["config", "import", str(first), "--note", "round trip"], monkeypatch) == 0
    assert "Saved as version 2" in capsys.readouterr().out
    assert run_cli(["config", "export", str(second)], monkeypatch) == 0
    assert first.read_text().replace("version 1", "version 2") == second.read_text()
    assert read_toml_file(second) == SHIPPED


def test_import_refuses_a_mistake_naming_the_file_and_field_and_saves_nothing(settings, monkeypatch, tmp_path, capsys):
    for name, value in {"DATABASE_URL": settings.database_url, "CANCEL_FLOW_OFFERS": str(settings.offers_path)}.items():
        monkeypatch.setenv(name, value)
    bad = tmp_path / "bad.toml"
    bad.write_text(to_toml(document(brand={"name": "Coach", "color": "#facc15"})))
    assert run_cli(["config", "import", str(bad)], monkeypatch) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "field 'color'" in err and "nearest colour that passes" in err
    assert run_cli(["config", "export"], monkeypatch) == 0
    out = capsys.readouterr().out
    assert "version 1" in out and "#1f6feb" in out


def test_a_removed_offer_still_reads_right_on_the_done_page(config_api, catalogue, signer):
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    url = f"/cancel/{token}"
    page = config_api.get(url)
    config_api.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    page = config_api.get(url)
    assert config_api.post(f"{url}/accept", data={"csrf_token": csrf_of(page.text),
                                                  "offer": "half-off-3-payments"}).status_code == 303
    before = config_api.get(f"{url}/done").text
    remaining = [offer for offer in SHIPPED["offer"] if offer["id"] != "half-off-3-payments"]
    assert config_api.put("/api/config", json={"base_version": 1, "config": document(offer=remaining)}).status_code == 200
    after = config_api.get(f"{url}/done")
    assert after.status_code == 200 and "50% off your next 3 payments" in after.text
    assert after.text == before
    assert config_api.app.state.config.offer("half-off-3-payments").title == "Stay for half price"


def test_a_save_reaches_another_replica_within_two_seconds(serve, catalogue, signer, database_url, store):
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("settings", key, ("config",))
    first, second = serve(), serve()
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)

    def offers_shown() -> str:
        with httpx.Client(base_url=second.url, timeout=10) as browser:
            page = browser.get(f"/cancel/{token}")
            browser.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "switched_service"})
            return browser.get(f"/cancel/{token}").text

    # a reason no shipped offer answers: the new offer answers every reason
    assert "A month on us" not in offers_shown()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    saved = httpx.put(f"{first.url}/api/config", headers={"Authorization": f"Bearer {key}"},
                      json={"base_version": 1, "config": document(offer=[NEW_OFFER, *SHIPPED["offer"]])})
    assert saved.status_code == 200
    saved_at = time.monotonic()
    while "A month on us" not in offers_shown():
        assert time.monotonic() - saved_at < 2.0, "the second replica still shows the old offers"
        token, _ = signer.cancel_token(sub.customer, sub.id)
        time.sleep(0.1)


def test_an_uploaded_logo_is_named_by_its_hash_and_must_be_stored_to_be_saved():
    sha = hashlib.sha256(b"logo").hexdigest()
    named = document(brand={**SHIPPED["brand"], "logo": f"upload:{sha}"})
    refused = refusal(named)  # nothing says it is stored
    assert refused.field == "brand.logo" and "uploaded logo that is not in the database" in refused.message
    brand = validate(named, ROOT, logos=lambda found: found == sha).brand
    assert (brand.logo, brand.logo_upload, brand.has_logo, brand.logo_url) == (None, sha, True, f"/brand/logo?v={sha[:16]}")
    # loading a saved version whose upload is gone: no logo, the pages keep working
    assert validate(named, ROOT, check_files=False, logos=lambda found: False).brand.has_logo is False
    malformed = refusal(document(brand={**SHIPPED["brand"], "logo": "upload:1234"}))
    assert malformed.field == "brand.logo" and "64 hexadecimal digits" in malformed.message


def test_an_offer_is_turned_off_with_enabled_false_and_nothing_else():
    pause = next(offer for offer in SHIPPED["offer"] if offer["id"] == "pause")
    offers = [{**pause, "enabled": False}]
    assert validate(document(offer=offers), ROOT).offers[0].enabled is False
    assert validate(SHIPPED, ROOT).offers[0].enabled is True
    refused = refusal(document(offer=[{**pause, "enabled": "no"}]))
    assert refused.field == "offer.pause.enabled" and "true or false" in refused.message
