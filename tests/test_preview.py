"""`/dashboard/preview`: what a client would be offered right now, with the exact promise of each card, and
why each other offer is not shown; it records nothing and sends Stripe nothing but reads."""

import html
import re

import sqlalchemy as sa

from cancel_flow.models import CancelSession, SessionOffer
from cancel_flow.store.config_versions import ConfigVersions
from tests.helpers import csrf_of
from tests.test_settings_pages import coach_client, form_of, submit  # noqa: F401  (the signed-in coach)


def section(page: str, reason_words: str) -> str:
    """The preview's part for one reason (its text unescaped)."""
    page = html.unescape(page)
    start = page.index(f"<h4>“{reason_words}”</h4>")
    end = page.find("<h4>", start + 1)
    return page[start:end if end > 0 else len(page)]


def promises(fragment: str) -> list[tuple[str, str]]:
    """(card line, full promise) of each card in an HTML fragment, as the offer cards print them."""
    return [(html.unescape(card), html.unescape(" ".join(text.split()))) for card, text in re.findall(
        r'<p class="terms"><strong>(.*?)</strong></p>\s*<p class="fine">(.*?)</p>', fragment, re.S)]


def rows(store, table) -> int:
    with store.engine.connect() as connection:
        return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()


def test_a_client_preview_shows_the_cards_promise_records_nothing_and_only_reads_stripe(
        coach_client, catalogue, signer, emulator, store):  # noqa: F811
    customer = catalogue.customer(email="maya@example.com", name="Maya Lopez")
    sub = catalogue.subscription(customer)
    before = len(emulator.get("/_emulator/requests").json())
    page = coach_client.get("/dashboard/preview?email=maya@example.com")
    assert page.status_code == 200
    text = page.text
    assert "This is a preview." in text and "Nothing is recorded and nothing changes in Stripe" in text
    sent = emulator.get("/_emulator/requests").json()[before:]
    assert sent and {request["method"] for request in sent} == {"GET"}, sent
    assert rows(store, CancelSession.__table__) == 0 and rows(store, SessionOffer.__table__) == 0
    expensive = section(text, "It's too expensive")
    assert "Stay for half price" in expensive
    shown_in_preview = promises(expensive)
    assert shown_in_preview[0][0] == "$24.50/month for 3 payments, then $49.00/month"
    assert "Take a break instead" in expensive and "shown for other reasons (unused, other)" in expensive
    # the subscriber's own offers page makes the same promise, word for word
    token, _ = signer.cancel_token(sub.customer, sub.id)
    reason_page = coach_client.get(f"/cancel/{token}")
    coach_client.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(reason_page.text), "reason": "too_expensive"})
    offers_page = coach_client.get(f"/cancel/{token}").text
    assert promises(offers_page) == shown_in_preview
    unused = section(text, "I don't use it enough")
    assert "Skip 2 payments</strong>: Skip your payments of" in unused


def test_a_preview_by_customer_and_reason_and_the_reasons_an_offer_is_not_shown(coach_client, catalogue, stripe_client):  # noqa: F811
    customer = catalogue.customer()
    sub = catalogue.subscription(customer)
    stripe_client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    page = html.unescape(coach_client.get(f"/dashboard/preview?customer={customer.id}&reason=unused").text)
    assert page.count("<h4>") == 1 and "“I don't use it enough”" in page
    assert "Stay for half price</strong> <code>half-off-3-payments</code>: payments are paused" in page
    assert "Take a break instead</strong> <code>pause</code>: payments are paused" in page
    assert "No offer: the client goes straight on to cancel." in page


def test_a_sample_yearly_plan_is_never_offered_a_pause(coach_client):  # noqa: F811
    page = coach_client.get("/dashboard/preview?plan=yearly&amount=490.00&currency=usd&reason=unused")
    text = html.unescape(page.text)
    assert page.status_code == 200 and "A sample client on the Yearly plan, $490.00" in text
    assert "Take a break instead</strong> <code>pause</code>: yearly plans are not paused" in text
    (card, promise), = promises(page.text)
    assert card == "$367.50 for your next payment, then $490.00/year"  # the yearly offer; half price is monthly only
    assert promise.startswith("25% off your renewal on ")


def test_a_turned_off_offer_shows_as_turned_off_in_the_preview(coach_client):  # noqa: F811
    page = coach_client.get("/dashboard/settings/offers").text
    coach_client.post("/dashboard/settings/offers/turn-off/pause",
                      data=form_of(page, "/dashboard/settings/offers/turn-off/pause"))
    text = html.unescape(coach_client.get("/dashboard/preview?plan=monthly&amount=49&currency=usd&reason=unused").text)
    assert "Take a break instead</strong> <code>pause</code>: turned off in the settings" in text


def test_unknown_clients_and_bad_samples_get_a_clear_answer(coach_client, catalogue):  # noqa: F811
    unknown = coach_client.get("/dashboard/preview?email=nobody@example.com")
    assert unknown.status_code == 200
    assert "No client with the email nobody@example.com has an active subscription in Stripe." in unknown.text
    for query, words in (("plan=weekly&amount=10&currency=usd", "monthly, quarterly or yearly"),
                         ("plan=monthly&amount=ten&currency=usd", "a price such as 49.00"),
                         ("plan=monthly&amount=10&currency=dollars", "three letters"),
                         ("email=not-an-email", "is not an email address"),
                         ("customer=sub_123", "starts with cus_"),
                         ("plan=monthly&reason=bored", "Choose a reason"),
                         ("email=&customer=&reason=", "Type the client's email")):
        answer = coach_client.get(f"/dashboard/preview?{query}")
        assert answer.status_code == 422 and words in html.unescape(answer.text), query


def test_unsaved_offer_edits_are_previewed_without_saving(coach_client, store):  # noqa: F811
    previewed = submit(coach_client, "/dashboard/settings/offers/edit/half-off-3-payments", percent_off="30",
                       title="Stay for less", action="preview", preview_plan="quarterly", preview_amount="120.00",
                       preview_currency="eur")
    assert previewed.status_code == 200
    text = html.unescape(previewed.text)
    assert "Preview of your unsaved changes" in text and "This is a preview." in text
    assert "A sample client on the Quarterly plan, €120.00" in text
    expensive = section(previewed.text, "It's too expensive")
    assert "Stay for less" in expensive
    assert promises(expensive)[0][0] == "€84.00 every 3 months for 3 payments, then €120.00 every 3 months"
    assert 'value="30"' in previewed.text  # the form keeps the draft, ready to save
    assert ConfigVersions(store.engine).latest_number() == 1
    refused = submit(coach_client, "/dashboard/settings/offers/edit/half-off-3-payments", percent_off="300",
                     action="preview")
    assert refused.status_code == 422 and "percent_off" in html.unescape(refused.text)
    assert "Preview of your unsaved changes" not in refused.text
