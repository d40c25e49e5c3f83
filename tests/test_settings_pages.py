"""The settings pages over HTTP against the real app: every form saves a new version through the one
validator, a refusal shows the validator's message beside its field and changes nothing, every form needs
its CSRF token, a save made meanwhile is a 409, and the history compares and restores versions."""

import hashlib
import html
import json
import re
import struct
import zlib

import pytest
import sqlalchemy as sa

from cancel_flow.config.validate import nearest_passing_color
from cancel_flow.models import OutboxDelivery
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from cancel_flow.store.config_versions import ConfigVersions
from tests.helpers import csrf_of

PASSWORD = "correct horse battery"
COACH = "coach@example.com"
PAGES = ["/dashboard/settings", "/dashboard/settings/brand", "/dashboard/settings/offers",
         "/dashboard/settings/offers/new?kind=discount", "/dashboard/settings/offers/edit/pause",
         "/dashboard/settings/experiments", "/dashboard/settings/emails", "/dashboard/settings/alerts",
         "/dashboard/settings/winback", "/dashboard/settings/compliance",
         "/dashboard/settings/history", "/dashboard/preview", "/dashboard/settings/emails/preview/payment_failed"]


def png(width: int = 2, height: int = 2, padding: int = 0) -> bytes:
    """A real PNG (solid blue), with `padding` bytes of an ancillary text chunk to make it bigger."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    raw = b"".join(b"\x00" + b"\x1f\x6f\xeb" * width for _ in range(height))
    extra = chunk(b"tEXt", b"pad\x00" + b"x" * padding) if padding else b""
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + extra
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.fixture
def coach_client(client, store):
    CoachStore(store.engine).add(COACH, hash_password(PASSWORD))
    page = client.get("/dashboard/login")
    signed = client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": COACH, "password": PASSWORD})
    assert signed.status_code == 303
    return client


@pytest.fixture
def versions(store):
    return ConfigVersions(store.engine)


def form_of(page_html: str, action: str) -> dict:
    """The fields a browser would send from the form posting to `action` (text inputs, checked boxes and
    radio buttons, selected options, textareas), as the page shows them."""
    match = re.search(r'<form[^>]*action="' + re.escape(action) + r'"[^>]*>(.*?)</form>', page_html, re.S)
    assert match, f"no form posting to {action}"
    body, fields = match.group(1), {}
    for tag in re.finditer(r"<input([^>]*)>", body):
        attrs = dict(re.findall(r'(\w[\w-]*)="([^"]*)"', tag.group(1)))
        if "name" not in attrs or attrs.get("type") in ("file", "submit"):
            continue
        if attrs.get("type") in ("checkbox", "radio") and " checked" not in tag.group(1):
            continue
        fields[attrs["name"]] = html.unescape(attrs.get("value", ""))
    for area in re.finditer(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', body, re.S):
        fields[area.group(1)] = html.unescape(area.group(2))
    for select in re.finditer(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', body, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', select.group(2)) or \
            re.search(r'<option value="([^"]*)"', select.group(2))
        fields[select.group(1)] = chosen.group(1) if chosen else ""
    return fields


def field_error(page_html: str, name: str) -> str:
    """The message shown beside the input `name`."""
    match = re.search(rf'<p class="field-error" id="{re.escape(name)}-error">(.*?)</p>', page_html, re.S)
    assert match, f"no message beside {name}"
    return html.unescape(match.group(1))


def submit(client, path: str, to: str | None = None, **changes):
    """Open `path`, change the fields of its form posting to `to` (`path` by default) as a coach would, and send it."""
    to = to or path
    page = client.get(path)
    fields = form_of(page.text, to)
    for name, value in changes.items():
        if value is None:
            fields.pop(name, None)
        else:
            fields[name] = value
    return client.post(to, data=fields)


def live_document(versions) -> dict:
    return versions.get().document


# signing in and CSRF -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", PAGES)
def test_every_settings_page_opens_for_a_coach_and_sends_others_to_sign_in(make_client, coach_client, path):
    page = coach_client.get(path)
    assert page.status_code == 200, page.text
    if "/emails/preview/" not in path:
        assert 'aria-current="page">Settings<' in page.text or 'aria-current="page">Preview<' in page.text
    stranger = make_client()
    assert stranger.get(path).status_code == 303 and stranger.get(path).headers["location"] == "/dashboard/login"


POSTS = ["/dashboard/settings/brand", "/dashboard/settings/brand/logo", "/dashboard/settings/offers/rules",
         "/dashboard/settings/offers/new", "/dashboard/settings/offers/edit/pause",
         "/dashboard/settings/offers/move-up/pause", "/dashboard/settings/offers/move-down/pause",
         "/dashboard/settings/offers/duplicate/pause", "/dashboard/settings/offers/turn-off/pause",
         "/dashboard/settings/offers/turn-on/pause", "/dashboard/settings/offers/delete/pause",
         "/dashboard/settings/experiments", "/dashboard/settings/experiments/trial/end", "/dashboard/settings/emails",
         "/dashboard/settings/alerts", "/dashboard/settings/alerts/test", "/dashboard/settings/winback",
         "/dashboard/settings/compliance", "/dashboard/settings/history/1/restore"]


@pytest.mark.parametrize("path", POSTS)
def test_every_settings_form_refuses_a_missing_or_wrong_csrf_token(coach_client, versions, store, path):
    sent = {"base_version": "1", "name": "Forged", "kind": "pause", "id": "forged", "title": "Forged",
            "max_payments": "2", "slack_webhook_url": "https://hooks.slack.com/services/forged"}
    for token in (None, "0" * 40):
        data = dict(sent, **({"csrf_token": token} if token else {}))
        answer = coach_client.post(path, data=data)
        assert answer.status_code == 400 and "expired or was not sent from this page" in html.unescape(answer.text)
    assert versions.latest_number() == 1
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(OutboxDelivery.__table__)).scalar() == 0


def test_a_signed_out_post_changes_nothing(make_client, versions):
    stranger = make_client()
    answer = stranger.post("/dashboard/settings/brand", data={"base_version": "1", "name": "Forged"})
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    assert versions.latest_number() == 1


def test_the_overview_says_where_the_live_configuration_came_from(coach_client):
    page = coach_client.get("/dashboard/settings").text
    assert "Version <strong>1</strong> is live: read from the offers file at first start" in page
    assert "first start: from" in page and "offers.toml" in page
    submit(coach_client, "/dashboard/settings/brand", name="Peak Coaching", note="shorter name")
    page = coach_client.get("/dashboard/settings").text
    assert "Version <strong>2</strong> is live: saved on these settings pages by coach@example.com" in page
    assert "shorter name" in page


# brand -------------------------------------------------------------------------------------------

def test_the_brand_is_saved_as_a_new_version_by_the_coach_and_shows_at_once(coach_client, versions):
    saved = submit(coach_client, "/dashboard/settings/brand", name="Peak Coaching", color="#0b5cd5",
                   support_email="hello@example.com", note="new colour")
    assert saved.status_code == 303 and saved.headers["location"] == "/dashboard/settings/brand?saved=2"
    version = versions.get()
    assert (version.version, version.saved_by, version.origin, version.note) == (2, COACH, "dashboard", "new colour")
    assert version.document["brand"] == {"name": "Peak Coaching", "color": "#0b5cd5", "logo": "static/logo.svg",
                                         "support_email": "hello@example.com"}
    assert version.document["offer"] == versions.get(1).document["offer"]  # nothing else changed
    assert coach_client.get("/brand.css").text == ":root { --brand: #0b5cd5; }\n"
    page = coach_client.get(saved.headers["location"]).text
    assert "Saved as version 2" in page and "Peak Coaching" in page


def test_a_colour_white_text_cant_be_read_on_is_refused_beside_the_field_with_the_nearest_that_passes(
        coach_client, versions):
    refused = submit(coach_client, "/dashboard/settings/brand", name="Sunny Coaching", color="#facc15")
    assert refused.status_code == 422
    message = field_error(refused.text, "color")
    suggestion = nearest_passing_color("#facc15")
    assert "1.53:1" in message and suggestion in message
    assert 'id="color" name="color" type="text" value="#facc15"' in refused.text
    assert 'value="Sunny Coaching"' in refused.text  # the coach's input is kept
    assert 'aria-invalid="true"' in refused.text and 'href="#color"' in refused.text
    assert versions.latest_number() == 1 and live_document(versions)["brand"]["color"] == "#1f6feb"
    # "Use #…" sends the form again with the suggested colour
    use = form_of(refused.text, "/dashboard/settings/brand")  # the main form's values
    suggested = re.search(r'<form method="post" action="/dashboard/settings/brand" id="use-suggestion">(.*?)</form>',
                          refused.text, re.S).group(1)
    fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', suggested))
    assert fields["use_color"] == suggestion and fields["name"] == "Sunny Coaching" and use["color"] == "#facc15"
    assert coach_client.post("/dashboard/settings/brand", data=fields).status_code == 303
    assert live_document(versions)["brand"] == {"name": "Sunny Coaching", "color": suggestion, "logo": "static/logo.svg",
                                                "support_email": "coach@example.com"}


def test_an_empty_name_and_a_bad_email_are_refused_beside_their_fields(coach_client, versions):
    refused = submit(coach_client, "/dashboard/settings/brand", name="  ")
    assert refused.status_code == 422 and "field 'name' must be a non-empty string" in field_error(refused.text, "name")
    refused = submit(coach_client, "/dashboard/settings/brand", support_email="not-an-email")
    assert refused.status_code == 422 and "email address" in field_error(refused.text, "support_email")
    assert versions.latest_number() == 1


def test_a_save_made_from_an_older_version_is_a_409_and_keeps_the_form(coach_client, versions):
    page = coach_client.get("/dashboard/settings/brand").text
    mine = form_of(page, "/dashboard/settings/brand")
    assert submit(coach_client, "/dashboard/settings/brand", name="Someone Else's Name").status_code == 303
    mine["color"] = "#0b5cd5"
    stale = coach_client.post("/dashboard/settings/brand", data=mine)
    assert stale.status_code == 409
    assert "Someone saved the settings meanwhile (version 2 is live now)" in html.unescape(stale.text)
    assert 'value="#0b5cd5"' in stale.text
    assert versions.latest_number() == 2 and live_document(versions)["brand"]["color"] == "#1f6feb"
    # saving the kept form again applies it on top of version 2
    again = coach_client.post("/dashboard/settings/brand", data=form_of(stale.text, "/dashboard/settings/brand"))
    assert again.status_code == 303
    assert live_document(versions)["brand"]["color"] == "#0b5cd5"
    assert live_document(versions)["brand"]["name"] == "Peak Performance Coaching"  # mine, from my form


def upload(client, data: bytes, name: str = "logo.png", content_type: str = "image/png"):
    page = client.get("/dashboard/settings/brand").text
    return client.post("/dashboard/settings/brand/logo", data={"csrf_token": csrf_of(page), "base_version":
                       re.search(r'name="base_version" value="(\d+)"', page).group(1)},
                       files={"logo": (name, data, content_type)})


def test_an_uploaded_logo_is_kept_in_the_database_named_by_its_hash_and_served(coach_client, versions, make_client):
    image = png(64, 64, padding=100_000)  # larger than the 64 KB every other form is held to
    saved = upload(coach_client, image)
    assert saved.status_code == 303
    sha = hashlib.sha256(image).hexdigest()
    assert live_document(versions)["brand"]["logo"] == f"upload:{sha}"
    served = coach_client.get("/brand/logo")
    assert served.status_code == 200 and served.content == image
    assert served.headers["content-type"] == "image/png" and served.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in served.headers["content-security-policy"]
    page = make_client().get("/dashboard/login").text  # any page: the logo's address changes with the logo
    assert f'src="/brand/logo?v={sha[:16]}"' in page
    # another worker (a new app on the same database) serves it too
    assert make_client().get("/brand/logo").content == image
    removed = coach_client.post("/dashboard/settings/brand/logo", data={
        "csrf_token": csrf_of(coach_client.get("/dashboard/settings/brand").text), "base_version": "2", "remove": "1"},
        files={"logo": ("", b"", "application/octet-stream")})
    assert removed.status_code == 303 and "logo" not in live_document(versions)["brand"]
    assert coach_client.get("/brand/logo").status_code == 404


@pytest.mark.parametrize("data, name, words", [
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "logo.svg", "SVG logos are not accepted"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "logo.png", "SVG logos are not accepted"),
    (b"GIF89a\x01\x00\x01\x00", "logo.png", "not a PNG, JPEG or WebP image"),
    (b"", "logo.png", "empty"),
    (png(padding=2 * 1024 * 1024), "photo.png", "at most 512 KB"),
])
def test_a_logo_is_judged_by_its_content_not_its_name(coach_client, versions, data, name, words):
    refused = upload(coach_client, data, name)
    assert refused.status_code == 422
    assert words in field_error(refused.text, "logo")
    assert versions.latest_number() == 1


def test_only_the_logo_upload_takes_a_body_over_64_kb(coach_client, versions):
    page = coach_client.get("/dashboard/settings/brand").text
    too_big = coach_client.post("/dashboard/settings/brand", data={"csrf_token": csrf_of(page), "base_version": "1",
                                                                   "name": "x" * 70_000})
    assert too_big.status_code == 413
    way_too_big = upload(coach_client, png(padding=5 * 1024 * 1024))
    assert way_too_big.status_code == 413
    assert versions.latest_number() == 1


def test_a_webp_and_a_jpeg_are_accepted_with_their_content_type(coach_client):
    webp = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 24
    assert upload(coach_client, webp, "logo.bin", "application/octet-stream").status_code == 303
    assert coach_client.get("/brand/logo").headers["content-type"] == "image/webp"
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 40 + b"\xff\xd9"
    assert upload(coach_client, jpeg, "logo.webp", "image/webp").status_code == 303
    assert coach_client.get("/brand/logo").headers["content-type"] == "image/jpeg"


# offers ------------------------------------------------------------------------------------------

def test_an_offer_is_edited_and_the_history_says_what_changed(coach_client, versions):
    saved = submit(coach_client, "/dashboard/settings/offers/edit/pause", max_payments="2", note="shorter pauses")
    assert saved.status_code == 303 and saved.headers["location"] == "/dashboard/settings/offers?saved=2#offer-pause"
    pause = next(o for o in live_document(versions)["offer"] if o["id"] == "pause")
    assert pause == {"id": "pause", "kind": "pause", "title": "Take a break instead", "max_payments": 2,
                     "reasons": ["unused", "other"]}
    history = coach_client.get("/dashboard/settings/history").text
    assert "offer &#39;pause&#39;: max_payments 3 → 2" in history
    assert "shorter pauses" in history


def test_a_refused_offer_shows_the_message_beside_the_field_keeps_the_input_and_saves_nothing(coach_client, versions):
    refused = submit(coach_client, "/dashboard/settings/offers/edit/pause", max_payments="20", title="A long break",
                     when_currency="usd, dollars")
    assert refused.status_code == 422
    assert field_error(refused.text, "max_payments") == (
        "offer 'pause': field 'max_payments' must be a whole number from 1 to 12")
    assert 'value="20"' in refused.text and 'value="A long break"' in refused.text and "usd, dollars" in refused.text
    assert versions.latest_number() == 1
    refused = submit(coach_client, "/dashboard/settings/offers/edit/pause", when_currency="usd, dollars")
    assert "three-letter currency codes" in field_error(refused.text, "when_currency")
    refused = submit(coach_client, "/dashboard/settings/offers/edit/pause", max_payments="three")
    assert "whole number from 1 to 12" in field_error(refused.text, "max_payments")
    assert versions.latest_number() == 1


def test_every_targeting_condition_is_saved_from_the_form(coach_client, versions):
    saved = submit(coach_client, "/dashboard/settings/offers/edit/half-off-3-payments", when_interval_month="on",
                   when_interval_year="on", when_prices="price_A, price_B", when_products="prod_A",
                   when_tenure_days_min="30", when_tenure_days_max="900", when_monthly_amount_min="1000",
                   when_monthly_amount_max="99000", when_currency="usd eur", when_country="US, de",
                   when_metadata="plan = gold\nteam: coaches", percent_off="25.5", payments="6",
                   description="For a while", reason_unused=None, reason_too_expensive="on")
    assert saved.status_code == 303
    offer = next(o for o in live_document(versions)["offer"] if o["id"] == "half-off-3-payments")
    assert offer == {"id": "half-off-3-payments", "kind": "discount", "title": "Stay for half price",
                     "description": "For a while", "payments": 6, "percent_off": 25.5, "reasons": ["too_expensive"],
                     "when": {"interval": ["month", "year"], "prices": ["price_A", "price_B"], "products": ["prod_A"],
                              "currency": ["usd", "eur"], "country": ["US", "de"], "tenure_days_min": 30,
                              "tenure_days_max": 900, "monthly_amount_min": 1000, "monthly_amount_max": 99000,
                              "metadata": {"plan": "gold", "team": "coaches"}}}
    form = form_of(coach_client.get("/dashboard/settings/offers/edit/half-off-3-payments").text,
                   "/dashboard/settings/offers/edit/half-off-3-payments")
    assert form["when_prices"] == "price_A, price_B" and form["when_metadata"] == "plan = gold\nteam = coaches"
    assert form["percent_off"] == "25.5" and "when_interval_week" not in form and form["when_interval_year"] == "on"


def test_a_new_offer_is_added_at_the_end_and_a_bad_id_is_named_beside_its_field(coach_client, versions):
    refused = submit(coach_client, "/dashboard/settings/offers/new?kind=free_period", "/dashboard/settings/offers/new",
                     id="Month Free", title="A month on us", months="1")
    assert refused.status_code == 422 and "lowercase" in field_error(refused.text, "id")
    assert 'value="Month Free"' in refused.text and versions.latest_number() == 1
    saved = submit(coach_client, "/dashboard/settings/offers/new?kind=free_period", "/dashboard/settings/offers/new",
                   id="month-free", title="A month on us", months="1", reason_unused="on")
    assert saved.status_code == 303
    document = live_document(versions)
    assert document["offer"][-1] == {"id": "month-free", "kind": "free_period", "title": "A month on us", "months": 1,
                                     "reasons": ["unused"]}
    assert versions.get().note == "added offer 'month-free'"
    taken = submit(coach_client, "/dashboard/settings/offers/new?kind=pause", "/dashboard/settings/offers/new",
                   id="pause", title="Another pause", max_payments="1")
    assert taken.status_code == 422 and "ids must be unique" in field_error(taken.text, "id")


def post_action(client, action: str, offer_id: str):
    page = client.get("/dashboard/settings/offers").text
    return client.post(f"/dashboard/settings/offers/{action}/{offer_id}",
                       data=form_of(page, f"/dashboard/settings/offers/{action}/{offer_id}"))


def ids(versions) -> list[str]:
    return [offer["id"] for offer in live_document(versions)["offer"]]


def test_offers_move_duplicate_turn_off_and_delete_each_as_a_version(coach_client, versions):
    assert ids(versions) == ["half-off-3-payments", "yearly-25-off", "pause", "talk"]
    assert post_action(coach_client, "move-up", "pause").status_code == 303
    assert ids(versions) == ["half-off-3-payments", "pause", "yearly-25-off", "talk"]
    assert post_action(coach_client, "move-down", "pause").status_code == 303
    assert ids(versions) == ["half-off-3-payments", "yearly-25-off", "pause", "talk"]
    copied = post_action(coach_client, "duplicate", "pause")
    assert copied.status_code == 303 and copied.headers["location"].startswith("/dashboard/settings/offers/edit/pause-copy")
    copy = live_document(versions)["offer"][3]
    assert copy["id"] == "pause-copy" and copy["enabled"] is False and copy["title"] == "Take a break instead (copy)"
    assert post_action(coach_client, "turn-off", "pause").status_code == 303
    assert live_document(versions)["offer"][2]["enabled"] is False
    listing = coach_client.get("/dashboard/settings/offers").text
    assert listing.count("Turned off") == 2
    assert post_action(coach_client, "turn-on", "pause").status_code == 303
    assert "enabled" not in live_document(versions)["offer"][2]
    assert post_action(coach_client, "delete", "pause-copy").status_code == 303
    assert ids(versions) == ["half-off-3-payments", "yearly-25-off", "pause", "talk"]
    assert [v.note for v in versions.all()][:6] == [
        "deleted offer 'pause-copy'", "turned offer 'pause' on", "turned offer 'pause' off",
        "copied offer 'pause' as 'pause-copy' (turned off)", "moved offer 'pause' down", "moved offer 'pause' up"]


def test_an_offer_an_experiment_uses_cant_be_deleted_and_the_page_says_why(coach_client, versions):
    create_experiment(coach_client, arm1_offer_pause="on")
    before = versions.latest_number()
    refused = post_action(coach_client, "delete", "pause")
    assert refused.status_code == 422
    assert "names 'pause', which is not an [[offer]] id" in html.unescape(refused.text)
    assert versions.latest_number() == before


def test_a_turned_off_offer_is_never_shown_to_a_subscriber(coach_client, catalogue, signer):
    assert post_action(coach_client, "turn-off", "half-off-3-payments").status_code == 303
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = coach_client.get(f"/cancel/{token}")
    shown = coach_client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "unused"})
    offers = coach_client.get(f"/cancel/{token}").text
    assert shown.status_code == 303 and "Take a break instead" in offers and "Stay for half price" not in offers


def test_the_rules_form_saves_and_refuses_beside_its_field(coach_client, versions):
    assert submit(coach_client, "/dashboard/settings/offers", "/dashboard/settings/offers/rules",
                  max_offers="3").status_code == 303
    assert live_document(versions)["rules"] == {"offer_cooldown_days": 365, "max_offers": 3}
    refused = submit(coach_client, "/dashboard/settings/offers", "/dashboard/settings/offers/rules", max_offers="0")
    assert refused.status_code == 422 and "from 1 to 10" in field_error(refused.text, "max_offers")


def test_the_offer_list_shows_how_often_each_was_shown_and_accepted_in_90_days(coach_client, history):
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    for days_ago in (1, 5, 40):
        history(now - timedelta(days=days_ago), "canceled", offers=["pause", "talk"])
    history(now - timedelta(days=3), "saved_pause", offers=["pause"], chosen="pause", decided=now - timedelta(days=3))
    history(now - timedelta(days=120), "saved_pause", offers=["pause"], chosen="pause", decided=now - timedelta(days=120))
    page = coach_client.get("/dashboard/settings/offers").text
    pause = page[page.index('id="offer-pause"'):page.index('id="offer-talk"')]
    assert "shown <strong>4</strong> times, accepted <strong>1</strong> (25%)" in pause
    talk = page[page.index('id="offer-talk"'):]
    assert "shown <strong>3</strong> times, accepted <strong>0</strong>" in talk


# experiments -------------------------------------------------------------------------------------

def create_experiment(client, **changes):
    fields = {"id": "trial", "arm1_name": "pause", "arm1_weight": "50", "arm2_name": "holdout", "arm2_weight": "50",
              "reason_unused": "on", **changes}
    return submit(client, "/dashboard/settings/experiments", **fields)


def test_an_experiment_is_created_from_the_offers_seen_and_ended(coach_client, versions):
    from cancel_flow.clock import utc_now

    created = create_experiment(coach_client, arm1_offer_pause="on", optimise="save_rate")
    assert created.status_code == 303
    today = utc_now().date().isoformat()
    assert live_document(versions)["experiment"] == [{
        "id": "trial", "start": today, "optimise": "save_rate", "reasons": ["unused"],
        "arms": [{"name": "pause", "offers": ["pause"], "weight": 50}, {"name": "holdout", "offers": [], "weight": 50}]}]
    page = coach_client.get("/dashboard/settings/experiments").text
    assert 'href="/dashboard/experiments/trial"' in page and "Running" in page
    assert coach_client.get("/dashboard/experiments/trial").status_code == 200
    ended = coach_client.post("/dashboard/settings/experiments/trial/end",
                              data=form_of(page, "/dashboard/settings/experiments/trial/end"))
    assert ended.status_code == 303
    assert live_document(versions)["experiment"][0]["end"] == today
    assert versions.get().note == f"ended experiment 'trial' on {today}"


def test_a_refused_experiment_names_the_arm_field_and_saves_nothing(coach_client, versions):
    refused = create_experiment(coach_client, arm2_weight="-3")
    assert refused.status_code == 422
    assert "field 'weight' must be a number above 0" in field_error(refused.text, "arm2_weight")
    assert 'value="-3"' in refused.text and versions.latest_number() == 1
    refused = create_experiment(coach_client, id="Bad Name")
    assert refused.status_code == 422 and "lowercase" in field_error(refused.text, "id")


# emails ------------------------------------------------------------------------------------------

def test_emails_are_turned_off_and_on_with_their_days(coach_client, versions):
    saved = submit(coach_client, "/dashboard/settings/emails", send_payment_failed=None, discount_ending_days_before="10",
                   renewal_reminder_intervals_month="on")
    assert saved.status_code == 303
    assert live_document(versions)["emails"] == {
        "failed_payment_days": [], "renewal_reminder_days_before": 30, "renewal_reminder_intervals": ["month", "year"],
        "discount_ending_days_before": 10, "confirmations": True}
    assert coach_client.app.state.config.current().emails.sends("payment_failed") is False
    form = form_of(coach_client.get("/dashboard/settings/emails").text, "/dashboard/settings/emails")
    assert "send_payment_failed" not in form and form["send_discount_ending"] == "on"
    assert form["failed_payment_days"] == "0, 3, 7"  # ready for when it is turned on again
    refused = submit(coach_client, "/dashboard/settings/emails", send_payment_failed="on", failed_payment_days="0, 3, soon")
    assert refused.status_code == 422 and "whole days from 0 to 60" in field_error(refused.text, "failed_payment_days")
    assert "0, 3, soon" in refused.text and versions.latest_number() == 2


def test_each_email_is_previewed_with_the_brand_in_html_and_plain_text(coach_client):
    submit(coach_client, "/dashboard/settings/brand", name="Sunrise Coaching", color="#0b5cd5")
    page = html.unescape(coach_client.get("/dashboard/settings/emails").text)
    for subject in ("Your payment of $49.00 for Coaching Plan didn't go through",
                    "Confirmed: your Coaching Plan subscription continues", "Your Coaching Plan subscription is canceled"):
        assert subject in page
    assert "50% off your next 3 payments" in page  # the first discount offer's promise, from the one wording function
    assert page.count('<pre class="email-text">') == 5 and "Sunrise Coaching" in page
    email = coach_client.get("/dashboard/settings/emails/preview/renewal_reminder")
    assert email.status_code == 200 and "Sunrise Coaching" in email.text and "#0b5cd5" in email.text
    assert "script-src" not in email.headers["content-security-policy"]
    assert "default-src 'none'" in email.headers["content-security-policy"]
    assert coach_client.get("/dashboard/settings/emails/preview/nothing").status_code == 404


# alerts ------------------------------------------------------------------------------------------

def deliveries(store) -> list:
    with store.engine.connect() as connection:
        return connection.execute(sa.select(OutboxDelivery.__table__).order_by(OutboxDelivery.__table__.c.id)).all()


def test_alerts_are_saved_and_a_test_alert_goes_through_the_outbox_to_slack_and_email_only(coach_client, versions,
                                                                                          store):
    from cancel_flow.outbox.endpoints import add_endpoint

    add_endpoint(store.engine, "https://hooks.example.com/zap", [], source="cli", allow_private=False)
    nowhere = coach_client.post("/dashboard/settings/alerts/test",
                                data={"csrf_token": csrf_of(coach_client.get("/dashboard/settings/alerts").text)})
    assert nowhere.status_code == 422 and "nowhere to send a test alert" in nowhere.text and deliveries(store) == []
    saved = submit(coach_client, "/dashboard/settings/alerts", slack_webhook_url="https://hooks.slack.com/services/T/B/X",
                   email="alerts@example.com", **{"event_payment.failed": None, "event_session.saved": "on"})
    assert saved.status_code == 303
    assert live_document(versions)["alerts"] == {"slack_webhook_url": "https://hooks.slack.com/services/T/B/X",
                                                 "email": "alerts@example.com",
                                                 "events": ["session.saved", "session.canceled", "contact.requested"]}
    tested = coach_client.post("/dashboard/settings/alerts/test",
                               data={"csrf_token": csrf_of(coach_client.get("/dashboard/settings/alerts").text)})
    assert tested.status_code == 303 and tested.headers["location"] == "/dashboard/settings/alerts?tested=1"
    sent = deliveries(store)
    assert [(d.kind, d.target, d.event_type, d.status) for d in sent] == [
        ("slack", "https://hooks.slack.com/services/T/B/X", "alert.test", "pending"),
        ("email", "alerts@example.com", "alert.test", "pending")]
    assert json.loads(sent[0].payload)["text"].startswith("Test alert: ")
    assert json.loads(sent[1].payload)["subject"].startswith("Test alert: ")
    refused = submit(coach_client, "/dashboard/settings/alerts", slack_webhook_url="ftp://hooks.slack.com/x")
    assert refused.status_code == 422 and "https://" in field_error(refused.text, "slack_webhook_url")


# history -----------------------------------------------------------------------------------------

def test_the_history_compares_two_versions_in_words_and_restores_one(coach_client, versions, catalogue, signer):
    submit(coach_client, "/dashboard/settings/brand", color="#0b5cd5")
    submit(coach_client, "/dashboard/settings/offers/edit/half-off-3-payments", title="Stay for less")
    submit(coach_client, "/dashboard/settings/offers/new?kind=free_period", "/dashboard/settings/offers/new",
           id="free-month", title="A month on us", months="1")
    page = coach_client.get("/dashboard/settings/history?from=1&to=4").text
    changes = re.findall(r"<li>(.*?)</li>", page[page.index('id="changes"'):page.index('id="versions"')])
    assert [html.unescape(line) for line in changes] == [
        "brand: color #1f6feb → #0b5cd5", "offer 'half-off-3-payments': title Stay for half price → Stay for less",
        "offer 'free-month' added (free_period: A month on us)"]
    assert "No difference." in coach_client.get("/dashboard/settings/history?from=2&to=2").text
    restored = coach_client.post("/dashboard/settings/history/1/restore", data={"csrf_token": csrf_of(page)})
    assert restored.status_code == 303 and restored.headers["location"] == "/dashboard/settings/history?restored=1&saved=5"
    assert live_document(versions) == versions.get(1).document
    assert versions.get().note == "restored version 1" and versions.get().saved_by == COACH
    assert "Version 1 is back: saved as version 5" in coach_client.get(restored.headers["location"]).text
    assert coach_client.post("/dashboard/settings/history/99/restore", data={"csrf_token": csrf_of(page)}).status_code == 404
    assert coach_client.get("/brand.css").text == ":root { --brand: #1f6feb; }\n"


def test_a_version_naming_a_logo_no_longer_stored_is_refused_on_restore_with_the_reason(coach_client, versions, store):
    assert upload(coach_client, png()).status_code == 303
    with store.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM brand_logo"))
    page = coach_client.get("/dashboard/settings/history").text
    restored = coach_client.post("/dashboard/settings/history/2/restore", data={"csrf_token": csrf_of(page)})
    assert restored.status_code == 422
    assert "uploaded logo that is not in the database" in html.unescape(restored.text)
    assert versions.latest_number() == 2


# who may change settings -------------------------------------------------------------------------

def test_without_the_right_to_edit_no_save_control_is_shown_and_a_post_is_a_403(coach_client, versions, monkeypatch):
    """Coach roles will decide `can_edit`; a coach it refuses sees the settings without a single control
    that changes them, and a change sent anyway is refused."""
    from cancel_flow.web import settings_routes

    page = coach_client.get("/dashboard/settings/brand").text
    form = form_of(page, "/dashboard/settings/brand")
    monkeypatch.setattr(settings_routes, "can_edit", lambda coach: False)
    for path in [page for page in PAGES if "/emails/preview/" not in page]:
        shown = coach_client.get(path)
        assert shown.status_code == 200
        forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', shown.text, re.S)
        buttons = [action for action, body in forms if "<button" in body]
        assert buttons == ["/dashboard/logout"], (path, buttons)  # nothing but "Sign out" can be sent
        assert all("<fieldset disabled>" in body for action, body in forms if 'name="base_version"' in body and
                   "<input id=" in body), path  # the settings are shown, greyed out
        assert "can see these settings but not change them" in shown.text or path == "/dashboard/preview"
    refused = coach_client.post("/dashboard/settings/brand", data=dict(form, name="Viewer's Name"))
    assert refused.status_code == 403 and versions.latest_number() == 1
