"""The win-back and compliance settings pages over HTTP against the real app: each shows the live values, a save is
a new version by the coach that the next request sees (the configuration export, the shared page, `/withdraw`), the
history says what changed, a refusal shows the validator's message beside its field and saves nothing, a viewer
sees the page greyed out and can't save, and the forms need their CSRF token."""

import html
import re
import secrets

import pytest

from cancel_flow.passwords import hash_password
from cancel_flow.store.api_keys import ApiKeyStore
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of
from tests.test_settings_pages import COACH, field_error, form_of, live_document, submit
from tests.test_settings_pages import coach_client, versions  # noqa: F401  (fixtures)

WINBACK = "/dashboard/settings/winback"
COMPLIANCE = "/dashboard/settings/compliance"
COMEBACK_OFFER = {"id": "comeback-half", "kind": "discount", "percent_off": 50, "payments": 3,
                  "title": "Come back for half price", "comeback_only": True}


@pytest.fixture
def with_comeback_offer(coach_client, versions):  # noqa: F811
    """The live configuration with a comeback-only discount and one win-back step that offers it."""
    document = live_document(versions)
    document["offer"].append(COMEBACK_OFFER)
    document["winback"] = {"changed_mind_days_before": 3,
                           "step": [{"reasons": ["too_expensive"], "days_after": 30, "offer": "comeback-half"}]}
    live = coach_client.app.state.config
    live.save(document, base_version=live.version, saved_by="test", origin="api")
    return document


def history_lines(client, first: int, second: int) -> list[str]:
    page = client.get(f"/dashboard/settings/history?from={first}&to={second}").text
    part = page[page.index('id="changes"'):page.index('id="versions"')]
    return [html.unescape(line) for line in re.findall(r"<li>(.*?)</li>", part)]


def api_config(client, store) -> dict:
    key = "cfk_" + secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add(f"settings-{secrets.token_hex(3)}", key, scopes=("config",))
    answer = client.get("/api/config", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    return answer.json()["config"]


@pytest.fixture
def viewer(make_client, store):
    CoachStore(store.engine).add("viewer@example.com", hash_password("a long viewer password"), "viewer")
    client = make_client()
    page = client.get("/dashboard/login")
    signed = client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": "viewer@example.com",
                                                   "password": "a long viewer password"})
    assert signed.status_code == 303
    return client


# win-back ----------------------------------------------------------------------------------------

def test_the_winback_page_shows_the_live_steps_in_words_and_in_the_form(coach_client, with_comeback_offer):  # noqa: F811
    page = coach_client.get(WINBACK)
    assert page.status_code == 200 and 'aria-current="page">Win-back<' in page.text
    text = html.unescape(page.text)
    assert "“Changed your mind?” 3 days before a scheduled cancellation takes effect." in text
    assert ("Step 1: 30 days after the end, to clients who answered “It's too expensive”: “Come back for half price”, "
            "50% off the next 3 payments, whatever the billing period.") in text
    form = form_of(page.text, WINBACK)
    assert form["send_changed_mind"] == "on" and form["changed_mind_days_before"] == "3"
    assert form["step1_days_after"] == "30" and form["step1_offer"] == "comeback-half"
    assert form["step1_reason_too_expensive"] == "on" and "step1_reason_unused" not in form
    assert form["step2_days_after"] == "" and "step2_shown" not in form  # the blank row that adds a step
    # only discount offers can be chosen, and a comeback-only one says so
    options = re.findall(r'<option value="([^"]*)"', page.text[page.text.index('name="step1_offer"'):])
    assert options[:4] == ["", "half-off-3-payments", "yearly-25-off", "comeback-half"]
    assert "Come back for half price: 50% off the next 3 payments, whatever the billing period (comeback emails only)" in text


def test_a_coach_adds_changes_and_removes_steps_and_the_export_and_history_show_it(
        coach_client, versions, with_comeback_offer, store):  # noqa: F811
    before = versions.latest_number()
    saved = submit(coach_client, WINBACK, changed_mind_days_before="5", step1_days_after="45", step1_reason_unused="on",
                   step2_days_after="90", step2_offer="yearly-25-off", note="later and longer")
    assert saved.status_code == 303 and saved.headers["location"] == f"{WINBACK}?saved={before + 1}"
    version = versions.get()
    assert (version.saved_by, version.origin, version.note) == (COACH, "dashboard", "later and longer")
    assert version.document["winback"] == {"changed_mind_days_before": 5, "step": [
        {"reasons": ["too_expensive", "unused"], "days_after": 45, "offer": "comeback-half"},
        {"days_after": 90, "offer": "yearly-25-off"}]}
    # live at once: the configuration the app runs on, and the export through the API
    winback = coach_client.app.state.config.current().winback
    assert winback.changed_mind_days_before == 5 and [s.days_after for s in winback.steps] == [45, 90]
    assert api_config(coach_client, store)["winback"] == version.document["winback"]
    assert "Saved as version" in coach_client.get(saved.headers["location"]).text
    assert history_lines(coach_client, before, before + 1) == [
        "winback: changed_mind_days_before 3 → 5",
        "winback step 1: reasons too_expensive → too_expensive, unused",
        "winback step 1: days_after 30 → 45",
        "winback step 2 added (90 days after, for every reason, offer yearly-25-off)"]
    # remove the first step (the second moves up) and turn "Changed your mind?" off
    removed = submit(coach_client, WINBACK, step1_remove="on", send_changed_mind=None)
    assert removed.status_code == 303
    assert live_document(versions)["winback"] == {"changed_mind_days_before": 0,
                                                  "step": [{"days_after": 90, "offer": "yearly-25-off"}]}
    assert coach_client.app.state.config.current().winback.changed_mind_days_before == 0
    form = form_of(coach_client.get(WINBACK).text, WINBACK)
    assert "send_changed_mind" not in form and form["changed_mind_days_before"] == "3"  # ready to turn on again
    # removing the last step leaves no step list behind
    assert submit(coach_client, WINBACK, step1_remove="on").status_code == 303
    assert live_document(versions)["winback"] == {"changed_mind_days_before": 0}


def test_a_first_step_is_added_where_there_was_no_winback_section(coach_client, versions):  # noqa: F811
    assert "winback" not in live_document(versions)
    form = form_of(coach_client.get(WINBACK).text, WINBACK)
    assert form["send_changed_mind"] == "on" and form["changed_mind_days_before"] == "3"
    assert submit(coach_client, WINBACK, step1_days_after="30").status_code == 303
    assert live_document(versions)["winback"] == {"changed_mind_days_before": 3, "step": [{"days_after": 30}]}
    assert history_lines(coach_client, 1, 2) == ["winback: changed_mind_days_before (not set) → 3",
                                                 "winback step 1 added (30 days after, for every reason, no offer)"]


@pytest.mark.parametrize("changes, name, words", [
    ({"changed_mind_days_before": "-1"}, "changed_mind_days_before", "whole number from 0 to 60"),
    ({"changed_mind_days_before": "three"}, "changed_mind_days_before", "whole number from 0 to 60"),
    ({"step1_days_after": "-5"}, "step1_days_after", "whole number from 1 to 730 after the subscription ended"),
    ({"step1_days_after": "soon"}, "step1_days_after", "whole number from 1 to 730"),
    ({"step1_days_after": ""}, "step1_days_after", "whole number from 1 to 730"),
    ({"step2_reason_unused": "on"}, "step2_days_after", "winback step #2: field 'days_after'"),
    ({"step1_offer": "no-such-offer"}, "step1_offer", "must be the id of an [[offer]] of kind discount, not 'no-such-offer'"),
    ({"step1_offer": "pause"}, "step1_offer", "'pause' is a pause"),
    ({"step2_days_after": "10", "step2_reason_bored": "on", "step2_offer": "talk"}, "step2_offer", "'talk' is a contact"),
])
def test_bad_winback_input_is_refused_beside_its_field_and_saves_nothing(coach_client, versions, with_comeback_offer,  # noqa: F811
                                                                          changes, name, words):
    before = versions.latest_number()
    refused = submit(coach_client, WINBACK, **changes)
    assert refused.status_code == 422
    assert words in field_error(refused.text, name)
    assert "Nothing was saved" in refused.text and f'href="#{name}"' in refused.text
    for field, value in changes.items():
        if value and "reason" not in field:
            assert f'value="{value}"' in refused.text  # what the coach typed is kept
    assert versions.latest_number() == before and live_document(versions)["winback"] == with_comeback_offer["winback"]


def test_a_refusal_after_removing_a_step_names_the_row_the_coach_typed_in(coach_client, versions, with_comeback_offer):  # noqa: F811
    submit(coach_client, WINBACK, step2_days_after="60")
    refused = submit(coach_client, WINBACK, step1_remove="on", step2_days_after="0")
    assert refused.status_code == 422 and "winback step #1" in field_error(refused.text, "step2_days_after")
    form = form_of(refused.text, WINBACK)
    assert form["step1_remove"] == "on" and form["step1_shown"] == "1"  # the form comes back as it was sent
    assert len(live_document(versions)["winback"]["step"]) == 2


# comeback-only offers on the offer form -------------------------------------------------------------

def test_a_discount_is_kept_for_comeback_emails_with_a_checkbox(coach_client, versions, catalogue, signer):  # noqa: F811
    edit = "/dashboard/settings/offers/edit/half-off-3-payments"
    form = form_of(coach_client.get(edit).text, edit)
    assert "comeback_only" not in form
    assert "comeback_only" not in form_of(coach_client.get("/dashboard/settings/offers/edit/pause").text,
                                          "/dashboard/settings/offers/edit/pause")  # discounts only
    assert submit(coach_client, edit, comeback_only="on").status_code == 303
    offer = next(o for o in live_document(versions)["offer"] if o["id"] == "half-off-3-payments")
    assert offer["comeback_only"] is True
    assert "Comeback emails only" in coach_client.get("/dashboard/settings/offers").text
    assert history_lines(coach_client, 1, 2) == ["offer 'half-off-3-payments': comeback_only (not set) → on"]
    # never shown in the cancel flow now
    sub = catalogue.subscription()
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page = coach_client.get(f"/cancel/{token}")
    coach_client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    assert "Stay for half price" not in coach_client.get(f"/cancel/{token}").text
    # unticked: offered in the flow again
    assert submit(coach_client, edit, comeback_only=None).status_code == 303
    offer = next(o for o in live_document(versions)["offer"] if o["id"] == "half-off-3-payments")
    assert offer["comeback_only"] is False
    assert form_of(coach_client.get(edit).text, edit).get("comeback_only") is None


def test_a_new_discount_can_be_comeback_only_from_the_start(coach_client, versions):  # noqa: F811
    saved = submit(coach_client, "/dashboard/settings/offers/new?kind=discount", "/dashboard/settings/offers/new",
                   id="comeback-half", title="Come back for half price", percent_off="50", payments="3",
                   comeback_only="on")
    assert saved.status_code == 303
    assert live_document(versions)["offer"][-1] == {**COMEBACK_OFFER, "kind": "discount"}
    assert 'value="comeback-half"' in coach_client.get(WINBACK).text


# compliance --------------------------------------------------------------------------------------

def test_the_compliance_page_shows_the_live_values_and_says_it_is_not_legal_advice(coach_client):  # noqa: F811
    page = coach_client.get(COMPLIANCE)
    assert page.status_code == 200 and 'aria-current="page">Compliance<' in page.text
    assert "This is help with the rules, not legal advice." in page.text
    form = form_of(page.text, COMPLIANCE)
    assert form == {"csrf_token": form["csrf_token"], "base_version": "1", "withdrawal_on": "on", "withdrawal_days": "14",
                    "withdrawal_refund": "full", "cancel_button": "auto", "records_keep_days": "1095", "note": ""}
    text = html.unescape(page.text)
    assert "What they paid, less the time already used" in text and "expressly asked" in text


def test_turning_the_withdrawal_function_off_and_the_cancel_button_on_is_live_at_once(coach_client, versions,  # noqa: F811
                                                                                       make_client, store):
    assert coach_client.get("/withdraw").status_code == 200
    shared = coach_client.get("/").text
    assert 'href="/withdraw"' in shared and "Cancel contract here" not in shared
    saved = submit(coach_client, COMPLIANCE, withdrawal_on=None, cancel_button="on", withdrawal_refund="manual",
                   records_keep_days="730", note="no EU clients")
    assert saved.status_code == 303 and saved.headers["location"] == f"{COMPLIANCE}?saved=2"
    version = versions.get()
    assert (version.version, version.saved_by, version.origin, version.note) == (2, COACH, "dashboard", "no EU clients")
    assert version.document["compliance"] == {"withdrawal_days": 0, "withdrawal_refund": "manual",
                                              "cancel_button": True, "records_keep_days": 730}
    assert coach_client.get("/withdraw").status_code == 404
    shared = coach_client.get("/").text
    assert 'href="/withdraw"' not in shared and "Cancel contract here" in shared
    assert coach_client.get("/cancel-contract").status_code == 200
    other_worker = make_client()  # another process on the same database reads the new version
    assert other_worker.get("/withdraw").status_code == 404
    assert api_config(coach_client, store)["compliance"] == version.document["compliance"]
    assert history_lines(coach_client, 1, 2) == [
        "compliance: withdrawal_days (not set) → 0", "compliance: withdrawal_refund (not set) → manual",
        "compliance: cancel_button (not set) → on", "compliance: records_keep_days (not set) → 730"]
    # and back: 21 days, the button automatic again (the emulator's account is not in Germany)
    assert submit(coach_client, COMPLIANCE, withdrawal_on="on", withdrawal_days="21",
                  cancel_button="auto").status_code == 303
    assert live_document(versions)["compliance"] == {"withdrawal_days": 21, "withdrawal_refund": "manual",
                                                     "records_keep_days": 730}
    assert coach_client.get("/withdraw").status_code == 200 and coach_client.get("/cancel-contract").status_code == 404
    assert "21 days" in coach_client.get("/withdraw").text
    form = form_of(coach_client.get(COMPLIANCE).text, COMPLIANCE)
    assert form["withdrawal_days"] == "21" and form["cancel_button"] == "auto" and form["withdrawal_refund"] == "manual"


def test_the_cancel_button_can_be_turned_off_where_it_would_be_on_by_default(coach_client, versions, emulator):  # noqa: F811
    emulator.post("/_emulator/account", json={"country": "DE"})
    page = html.unescape(coach_client.get(COMPLIANCE).text)
    assert "(it is in DE, so it is on now)" in page
    assert coach_client.get("/cancel-contract").status_code == 200
    assert submit(coach_client, COMPLIANCE, cancel_button="off").status_code == 303
    assert live_document(versions)["compliance"]["cancel_button"] is False
    assert coach_client.get("/cancel-contract").status_code == 404


@pytest.mark.parametrize("changes, name, words", [
    ({"withdrawal_days": "7"}, "withdrawal_days", "from 14 (the period EU law gives) to 365"),
    ({"withdrawal_days": "-14"}, "withdrawal_days", "must be 0 (turns the withdrawal function off)"),
    ({"withdrawal_days": "two weeks"}, "withdrawal_days", "whole number of days"),
    ({"withdrawal_days": ""}, "withdrawal_days", "whole number of days"),
    ({"withdrawal_refund": "half"}, "withdrawal_refund", "must be one of: full, prorated, manual"),
    ({"withdrawal_refund": None}, "withdrawal_refund", "must be one of: full, prorated, manual"),
    ({"cancel_button": "maybe"}, "cancel_button", "must be true or false"),
    ({"records_keep_days": "-1"}, "records_keep_days", "whole number from 30 to 3650"),
    ({"records_keep_days": "10 years"}, "records_keep_days", "whole number from 30 to 3650"),
])
def test_bad_compliance_input_is_refused_beside_its_field_and_saves_nothing(coach_client, versions, changes, name,  # noqa: F811
                                                                             words):
    refused = submit(coach_client, COMPLIANCE, **changes)
    assert refused.status_code == 422
    assert words in field_error(refused.text, name)
    assert "Nothing was saved" in refused.text and f'href="#{name}"' in refused.text
    for field, value in changes.items():
        if value and field not in ("cancel_button", "withdrawal_refund"):  # radio buttons have only their choices
            assert f'value="{value}"' in refused.text  # what the coach typed is kept
    assert versions.latest_number() == 1 and "compliance" not in live_document(versions)
    assert coach_client.get("/withdraw").status_code == 200


# who may change them, and the form token ---------------------------------------------------------

@pytest.mark.parametrize("path, button", [(WINBACK, "Save win-back"), (COMPLIANCE, "Save compliance")])
def test_a_viewer_sees_the_page_greyed_out_and_cannot_save(viewer, coach_client, versions, path, button):  # noqa: F811
    page = viewer.get(path)
    assert page.status_code == 200
    assert "<fieldset disabled>" in page.text and button not in page.text
    assert "can see these settings but not change them" in page.text
    forms = re.findall(r'<form method="post" action="([^"]+)"[^>]*>(.*?)</form>', page.text, re.S)
    assert [action for action, body in forms if "<button" in body] == ["/dashboard/logout"]
    # the form an editor would send, sent by the viewer with the viewer's own token
    sent = dict(form_of(coach_client.get(path).text, path), csrf_token=csrf_of(page.text), withdrawal_on="",
                changed_mind_days_before="9")
    refused = viewer.post(path, data=sent)
    assert refused.status_code == 403 and "needs an <strong>editor" in refused.text
    assert versions.latest_number() == 1


@pytest.mark.parametrize("path", [WINBACK, COMPLIANCE])
def test_each_form_refuses_a_missing_or_wrong_csrf_token(coach_client, versions, path):  # noqa: F811
    sent = form_of(coach_client.get(path).text, path)
    for token in (None, "0" * 40):
        data = {k: v for k, v in sent.items() if k != "csrf_token"}
        if token:
            data["csrf_token"] = token
        data.update(withdrawal_on="", step1_days_after="30")
        answer = coach_client.post(path, data=data)
        assert answer.status_code == 400 and "expired or was not sent from this page" in html.unescape(answer.text)
    assert versions.latest_number() == 1


@pytest.mark.parametrize("path", [WINBACK, COMPLIANCE])
def test_a_signed_out_visitor_is_sent_to_sign_in(make_client, versions, path):  # noqa: F811
    stranger = make_client()
    assert stranger.get(path).headers["location"] == "/dashboard/login"
    answer = stranger.post(path, data={"base_version": "1", "withdrawal_on": ""})
    assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    assert versions.latest_number() == 1


def test_a_save_from_an_older_version_is_a_409_and_keeps_the_form(coach_client, versions):  # noqa: F811
    mine = form_of(coach_client.get(COMPLIANCE).text, COMPLIANCE)
    assert submit(coach_client, WINBACK, step1_days_after="30").status_code == 303
    mine["records_keep_days"] = "400"
    stale = coach_client.post(COMPLIANCE, data=mine)
    assert stale.status_code == 409 and 'value="400"' in stale.text
    assert versions.latest_number() == 2 and "compliance" not in live_document(versions)
    again = coach_client.post(COMPLIANCE, data=form_of(stale.text, COMPLIANCE))
    assert again.status_code == 303 and live_document(versions)["compliance"]["records_keep_days"] == 400
    assert live_document(versions)["winback"]["step"] == [{"days_after": 30}]


def test_the_overview_links_both_pages_with_a_summary(coach_client, with_comeback_offer):  # noqa: F811
    page = html.unescape(coach_client.get("/dashboard/settings").text)
    assert 'href="/dashboard/settings/winback">Win-back</a>' in page
    assert "“Changed your mind?” 3 days before the end; 1 comeback email." in page
    assert 'href="/dashboard/settings/compliance">Compliance</a>' in page
    assert "Withdrawal for 14 days, refund: full; cancel button automatic." in page
