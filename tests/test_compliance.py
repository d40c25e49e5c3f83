"""Lawful by default where the client lives: the EU withdrawal function, the cancel button without a login,
acknowledgements on a durable medium and the coach's record of them. Over HTTP against the real app, the
Stripe emulator and a real SMTP server."""

import re
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.clock import as_utc, from_unix
from cancel_flow.compliance import (EEA, Payment, WithdrawalRight, days_served, moment_words, refund_words,
                                    refunds_for, withdrawal_right)
from cancel_flow.config.schema import Compliance
from cancel_flow.config.toml import read_toml, to_toml
from cancel_flow.config.validate import validate
from cancel_flow.emails import compose
from cancel_flow.errors import InvalidConfig
from cancel_flow.models import CancelSession, Declaration, OutboxDelivery, OutboxEvent
from cancel_flow.outbox import Dispatcher
from tests.conftest import ROOT
from tests.helpers import csrf_of, run_cli

DAY = timedelta(days=1)
OFFER_TITLES = ("Stay for half price", "Take a break instead", "Talk to your coach first")
declarations = Declaration.__table__
SHIPPED = (ROOT / "offers.toml").read_text().replace('logo = "static/logo.svg"', f'logo = "{ROOT / "static" / "logo.svg"}"')


@pytest.fixture
def app(make_client, inbox):
    """A client of the app with real SMTP; `app('withdrawal_refund = "manual"')` saves that [compliance] as the live
    configuration first (the database holds the configuration: the offers file seeds only the first version)."""
    def make(compliance: str = "", **overrides):
        client = make_client(smtp_url=inbox.url, **overrides)
        live = client.app.state.config
        document = read_toml(SHIPPED + (f"\n[compliance]\n{compliance}\n" if compliance else ""), "test")
        if document.get("compliance") != live.document().document.get("compliance"):
            live.save(document, base_version=live.version, saved_by="test", origin="api")
        return client
    return make


def send_outbox(client) -> int:
    """What the outbox holds, sent now (the app's own background sender does this in `serve`)."""
    state = client.app.state
    dispatcher = Dispatcher.for_config(state.store.engine, state.settings, state.config)
    try:
        return dispatcher.run_due()
    finally:
        dispatcher.close()


def rows(client, table=declarations):
    with client.app.state.store.engine.connect() as connection:
        return connection.execute(sa.select(table).order_by(table.c.id)).all()


def text_of(message) -> str:
    return message.get_body(("plain",)).get_content()


def subscriber(catalogue, country: str = "DE", email: str = "lena@example.com", business: bool = False, **subscription):
    customer = catalogue.customer(email=email, name="Lena Weber", address={"country": country, "city": "Berlin"},
                                  **({"tax_id_data": [{"type": "eu_vat", "value": "DE123456789"}]} if business else {}))
    return catalogue.subscription(customer, **subscription)


def link(signer, sub) -> str:
    token, _ = signer.cancel_token(sub.customer, sub.id)
    return f"/cancel/{token}"


WITHDRAW = "Withdraw from contract here"


@pytest.fixture
def coach_login(store):
    """Signs a client in as the coach."""
    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore

    CoachStore(store.engine).add("coach@example.com", hash_password("a long coach password"))

    def sign_in(client):
        page = client.get("/dashboard/login")
        answer = client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": "coach@example.com",
                                                       "password": "a long coach password"})
        assert answer.status_code == 303
    return sign_in


# The configuration ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("section, field, words", [
    ({"withdrawal_days": 7}, "compliance.withdrawal_days", "from 14"),
    ({"withdrawal_days": -1}, "compliance.withdrawal_days", "0 (turns the withdrawal function off)"),
    ({"withdrawal_days": True}, "compliance.withdrawal_days", "whole number"),
    ({"withdrawal_refund": "half"}, "compliance.withdrawal_refund", "full, prorated, manual"),
    ({"cancel_button": "yes"}, "compliance.cancel_button", "true or false"),
    ({"records_keep_days": 5}, "compliance.records_keep_days", "from 30 to 3650"),
    ({"keep_days": 5}, "compliance.keep_days", "unknown field 'keep_days'"),
])
def test_a_compliance_mistake_names_its_field(section, field, words):
    with pytest.raises(InvalidConfig) as refused:
        validate({**read_toml(SHIPPED, "offers.toml"), "compliance": section}, ROOT)
    assert refused.value.field == field and words in refused.value.message


def test_compliance_defaults_and_an_unset_cancel_button_follows_the_stripe_account():
    default = validate(read_toml(SHIPPED, "offers.toml"), ROOT).compliance
    assert default == Compliance(withdrawal_days=14, withdrawal_refund="full", cancel_button=None, records_keep_days=1095)
    assert default.cancel_button_on("DE") and not default.cancel_button_on("US") and not default.cancel_button_on(None)
    off = validate({**read_toml(SHIPPED, "offers.toml"), "compliance": {"withdrawal_days": 0, "cancel_button": False}}, ROOT)
    assert off.compliance.withdrawal_days == 0 and not off.compliance.cancel_button_on("DE")
    assert validate({**read_toml(SHIPPED, "offers.toml"), "compliance": {"cancel_button": True}}, ROOT).compliance.cancel_button_on("US")


def test_the_compliance_section_goes_through_export_and_import_unchanged(settings, monkeypatch, tmp_path, capsys):
    for name, value in {"DATABASE_URL": settings.database_url, "CANCEL_FLOW_OFFERS": str(settings.offers_path)}.items():
        monkeypatch.setenv(name, value)
    edited = tmp_path / "edited.toml"
    document = read_toml(SHIPPED, "offers.toml")
    document["compliance"] = {"withdrawal_days": 30, "withdrawal_refund": "prorated", "cancel_button": True,
                              "records_keep_days": 730}
    edited.write_text(to_toml(document))
    assert run_cli(["config", "import", str(edited)], monkeypatch) == 0
    exported = tmp_path / "exported.toml"
    assert run_cli(["config", "export", str(exported)], monkeypatch) == 0
    assert read_toml(exported.read_text(), "export")["compliance"] == document["compliance"]
    assert validate(read_toml(exported.read_text(), "export"), ROOT).compliance == Compliance(30, "prorated", True, 730)


# The rules ------------------------------------------------------------------------------------------------

def test_who_may_withdraw():
    from cancel_flow.flow import PriceLine, SubscriptionFacts

    now = datetime(2026, 12, 10, 12, tzinfo=timezone.utc)

    def facts(**changes):
        values = dict(subscription_id="sub_1", customer_id="cus_1", customer_email=None, status="active", plan_name="P",
                      currency="eur", lines=(PriceLine(4900, 1, "month", 1),), has_discount=False, paused=False,
                      cancel_at_period_end=False, period_end=None, started_at=now - 3 * DAY, country="FR",
                      customer_tax_ids=0)
        return SubscriptionFacts(**{**values, **changes})

    rules = Compliance()
    assert withdrawal_right(rules, facts(), now) == WithdrawalRight(True, None, now + 11 * DAY)
    assert withdrawal_right(rules, facts(started_at=now - 14 * DAY), now).reason == "period_over"
    assert withdrawal_right(rules, facts(country="US"), now).reason == "not_eea"
    assert withdrawal_right(rules, facts(customer_tax_ids=1), now).reason == "business"
    assert withdrawal_right(rules, facts(status="canceled"), now).reason == "ended"
    assert withdrawal_right(Compliance(withdrawal_days=0), facts(), now).reason == "off"
    assert withdrawal_right(Compliance(withdrawal_days=30), facts(started_at=now - 20 * DAY), now).open
    assert {"NO", "IS", "LI", "GR", "DE"} <= EEA and "GB" not in EEA and "CH" not in EEA


def test_what_a_withdrawal_refunds():
    start = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
    paid = [Payment("pi_1", 3100, "eur", start, start + 31 * DAY)]
    withdrawn = start + 4 * DAY + timedelta(hours=2)  # the fifth day of the period
    assert days_served(paid[0], withdrawn) == (5, 31)
    assert [r.amount for r in refunds_for("full", paid, withdrawn)] == [3100]
    assert [r.amount for r in refunds_for("prorated", paid, withdrawn)] == [3100 - 500]
    assert refunds_for("manual", paid, withdrawn) == []
    assert [r.amount for r in refunds_for("prorated", paid, start)] == [3000]  # the first day counts as served
    assert refund_words("full", 3100, "eur") == "Everything you paid, €31.00, is refunded to the card you paid with."
    assert refund_words("full", 0, "eur") == "Nothing was charged yet, so there is nothing to refund."
    assert "coach will contact you" in refund_words("manual", None, None)


# The withdrawal function in the cancel flow --------------------------------------------------------------

def test_an_eu_consumer_within_14_days_sees_the_withdrawal_function_on_every_page(app, catalogue, signer, emulator):
    client = app()
    url = link(signer, subscriber(catalogue))
    reason = client.get(url)
    assert reason.status_code == 200
    withdraw = f'<a class="button secondary" href="{url}/withdraw">{WITHDRAW}</a>'
    assert withdraw in reason.text and 'class="button secondary" formaction="' in reason.text
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(reason.text), "reason": "too_expensive"})
    offers = client.get(url)
    assert "Stay for half price" in offers.text and withdraw in offers.text and "Continue to cancel" in offers.text
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500, "count": 4})
    failed = client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "half-off-3-payments"})
    assert failed.status_code == 503 and "Continue to cancel" in failed.text and withdraw in failed.text
    emulator.delete("/_emulator/faults")
    offers = client.get(url)
    client.post(f"{url}/accept", data={"csrf_token": csrf_of(offers.text), "offer": "half-off-3-payments"})
    done = client.get(f"{url}/done")
    assert "Thanks for staying" in done.text and withdraw in done.text
    scheduled_url = link(signer, subscriber(catalogue, email="s@example.com", cancel_at_period_end=True))
    scheduled = client.get(scheduled_url)
    assert "Keep my subscription" in scheduled.text and f'href="{scheduled_url}/withdraw">{WITHDRAW}' in scheduled.text


def test_no_withdrawal_function_after_14_days_for_a_us_customer_or_a_business(app, catalogue, signer):
    client = app()
    clock = catalogue.test_clock(int((datetime.now(timezone.utc) - 15 * DAY).timestamp()))
    late = catalogue.subscription(catalogue.customer(email="late@example.com", address={"country": "FR"}, test_clock=clock.id))
    for sub in (late, subscriber(catalogue, country="US", email="us@example.com"),
                subscriber(catalogue, email="firm@example.com", business=True)):
        url = link(signer, sub)
        page = client.get(url)
        assert page.status_code == 200 and "Continue to cancel" in page.text and WITHDRAW not in page.text
        refused = client.get(f"{url}/withdraw")
        assert refused.status_code == 409 and "Continue to cancel" in refused.text
    assert "withdrawal period of your Coaching Plan subscription ended on" in client.get(f"{link(signer, late)}/withdraw").text
    assert WITHDRAW not in app("withdrawal_days = 0").get(link(signer, subscriber(catalogue, email="off@example.com"))).text


def withdraw_in_flow(client, signer, sub, email: str = "lena@example.com"):
    """The two steps, the way a subscriber clicks: the button, then "Confirm withdrawal"; the pages seen."""
    url = link(signer, sub)
    first = client.get(url)
    form_url = re.search(r'href="([^"]+/withdraw)">' + WITHDRAW, first.text).group(1)
    form = client.get(form_url)
    assert form.status_code == 200 and "Confirm withdrawal" in form.text
    confirmed = client.post(form_url, data={"csrf_token": csrf_of(form.text), "name": "Lena Weber", "email": email,
                                            "contract": "anything: the link says which"})
    assert confirmed.status_code == 303 and confirmed.headers["location"] == f"{url}/done"
    done = client.get(confirmed.headers["location"])
    return [form, done], done


@pytest.mark.parametrize("mode", ["full", "prorated", "manual"])
def test_the_two_steps_end_the_subscription_at_stripe_and_refund_as_configured(mode, app, catalogue, signer, stripe_client,
                                                                               inbox):
    client = app(f'withdrawal_refund = "{mode}"')
    sub = subscriber(catalogue)
    pages, done = withdraw_in_flow(client, signer, sub)
    assert "You have withdrawn from your contract" in done.text and WITHDRAW not in done.text
    for page in pages:  # no offer between the button and the confirmation
        assert not any(title in page.text for title in OFFER_TITLES) and "/accept" not in page.text
    ended = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and "Withdrawal from the contract" in ended.cancellation_details.comment
    [invoice] = stripe_client.v1.invoices.list(params={"subscription": sub.id, "expand": ["data.payments"]}).data
    intent = invoice.payments.data[0].payment.payment_intent
    refunds = stripe_client.v1.refunds.list(params={"payment_intent": intent}).data
    [row] = rows(client)
    period = invoice.lines.data[0].period
    served, total = days_served(Payment(intent, 4900, "usd", from_unix(period.start), from_unix(period.end)),
                                as_utc(row.received_at))
    expected = {"full": [4900], "prorated": [4900 - round(4900 * served / total)], "manual": []}[mode]
    assert [refund.amount for refund in refunds] == expected
    assert (row.kind, row.source, row.status, row.refund_mode) == ("withdrawal", "flow", "accepted", mode)
    assert row.applied_at is not None and row.refund_amount == (expected[0] if expected else None)
    [session] = rows(client, CancelSession.__table__)
    assert session.outcome == "withdrawn"
    [event] = [e for e in rows(client, OutboxEvent.__table__) if e.type == "subscription.withdrawn"]
    assert f'"mode":"{mode}"' in event.body.replace(" ", "")
    send_outbox(client)
    alert = next(m for m in inbox.messages if m["To"] == "coach@example.com")
    assert "withdrew from Coaching Plan" in alert["Subject"]
    if mode == "manual":
        assert "Yours to decide" in text_of(alert)
    ack = next(m for m in inbox.messages if m["To"] == "lena@example.com")
    assert ack["Subject"] == "Your withdrawal from Coaching Plan is confirmed"


def test_the_acknowledgement_says_what_was_stored_to_the_second_and_is_sent_once(app, catalogue, signer, inbox):
    client = app()
    sub = subscriber(catalogue)
    inbox.down = True
    withdraw_in_flow(client, signer, sub, email="lena.private@example.com")
    [row] = rows(client)
    assert row.received_at.microsecond == 0 and sub.id in row.contract
    assert row.content == f"I, Lena Weber (lena.private@example.com), withdraw from my contract: {row.contract}."
    send_outbox(client)
    assert inbox.messages == []
    [ack] = [d for d in rows(client, OutboxDelivery.__table__) if d.key == f"declaration-ack:{row.id}"]
    assert ack.status == "pending" and ack.attempts == 1  # retried with back-off until delivered
    inbox.down = False
    with client.app.state.store.engine.begin() as connection:
        connection.execute(sa.update(OutboxDelivery.__table__).values(next_attempt_at=datetime.now(timezone.utc)))
    send_outbox(client)
    send_outbox(client)
    [message] = [m for m in inbox.messages if m["To"] == "lena.private@example.com"]
    text = text_of(message)
    assert f"“{row.content}”" in text
    assert moment_words(as_utc(row.received_at), "UTC") in text
    assert re.search(r"\d{2}:\d{2}:\d{2} \(UTC\+00:00\)", text)
    assert sub.id in text and "Everything you paid, $49.00, is refunded" in text
    assert "Unsubscribe" not in message.as_string() and message["List-Unsubscribe"] is None


def test_a_second_submit_of_the_same_link_finds_the_first_withdrawal(app, catalogue, signer, stripe_client):
    client = app()
    sub = subscriber(catalogue)
    url = link(signer, sub)
    form = client.get(f"{url}/withdraw")
    fields = {"csrf_token": csrf_of(form.text), "name": "Lena", "email": "lena@example.com"}
    assert client.post(f"{url}/withdraw", data=fields).status_code == 303
    assert client.post(f"{url}/withdraw", data=fields).status_code == 303
    assert len(rows(client)) == 1
    invoice = stripe_client.v1.invoices.list(params={"subscription": sub.id, "expand": ["data.payments"]}).data[0]
    assert len(stripe_client.v1.refunds.list(params={"payment_intent": invoice.payments.data[0].payment.payment_intent}).data) == 1


def test_a_withdrawal_form_without_a_name_or_a_real_email_is_a_400_and_stores_nothing(app, catalogue, signer):
    client = app()
    url = link(signer, subscriber(catalogue))
    form = client.get(f"{url}/withdraw")
    for fields in ({"name": "", "email": "lena@example.com"}, {"name": "Lena", "email": "nope"},
                   {"name": "L" * 300, "email": "lena@example.com"}):
        answer = client.post(f"{url}/withdraw", data={"csrf_token": csrf_of(form.text), **fields})
        assert answer.status_code == 400 and 'role="alert"' in answer.text
    assert client.post(f"{url}/withdraw", data={"name": "Lena", "email": "lena@example.com"}).status_code == 400
    assert rows(client) == []


def test_when_stripe_fails_the_withdrawal_is_still_acknowledged_and_carried_out_later(app, catalogue, signer, emulator,
                                                                                     stripe_client, inbox):
    client = app()
    sub = subscriber(catalogue)
    emulator.post("/_emulator/faults", json={"method": "DELETE", "path": "/v1/subscriptions/*", "status": 500, "count": 10})
    withdraw_in_flow(client, signer, sub)
    [row] = rows(client)
    assert row.status == "accepted" and row.applied_at is None and row.apply_error
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "active"
    send_outbox(client)
    assert any(m["Subject"] == "Your withdrawal from Coaching Plan is confirmed" for m in inbox.messages)
    emulator.delete("/_emulator/faults")
    with freeze_time(datetime.now(timezone.utc) + timedelta(minutes=3), real_asyncio=True):
        client.portal.call(client.app.state.compliance.process_due)
    assert stripe_client.v1.subscriptions.retrieve(sub.id).status == "canceled"
    assert rows(client)[0].applied_at is not None


# The withdrawal function on the shared page ------------------------------------------------------------

def shared_declaration(client, path: str, **fields):
    form = client.get(path)
    assert form.status_code == 200
    return client.post(path, data={"csrf_token": client.cookies.get("cf_form_csrf"), **fields})


def same_page(text: str, email: str) -> str:
    text = text.replace(email, "EMAIL")
    return re.sub(r"Received on [^<]+\.", "Received on MOMENT.", text)


def test_the_shared_page_offers_withdrawal_to_everyone_and_answers_by_email(app, catalogue, stripe_client, inbox):
    client = app()
    shared = client.get("/")
    assert f'href="/withdraw">{WITHDRAW}' in shared.text and "Cancel contract here" not in shared.text
    eu = subscriber(catalogue, email="eu@example.com")
    us = subscriber(catalogue, country="US", email="us@example.com")
    answers = [shared_declaration(client, "/withdraw", name="Ann", email=email, contract="")
               for email in ("eu@example.com", "us@example.com", "nobody@example.com")]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert len({same_page(a.text, e) for a, e in zip(answers, ("eu@example.com", "us@example.com", "nobody@example.com"))}) == 1
    assert "We received your withdrawal" in answers[0].text
    assert stripe_client.v1.subscriptions.retrieve(eu.id).status == "canceled"
    assert stripe_client.v1.subscriptions.retrieve(us.id).status == "active"
    by_email = {row.email: row for row in rows(client)}
    assert by_email["eu@example.com"].status == "accepted" and by_email["eu@example.com"].subscription_id == eu.id
    assert by_email["us@example.com"].status == "not_eligible"
    assert by_email["nobody@example.com"].status == "needs_coach"
    send_outbox(client)
    to = {m["To"]: text_of(m) for m in inbox.messages if m["To"] != "coach@example.com"}
    assert "Your Coaching Plan subscription ended at once" in to["eu@example.com"]
    assert "for consumers in the EU and the EEA" in to["us@example.com"] and "/cancel/" in to["us@example.com"]
    assert "Your coach will confirm" in to["nobody@example.com"]
    coach = [text_of(m) for m in inbox.messages if m["To"] == "coach@example.com"]
    assert any("nobody@example.com" in text and "No live subscription" in text for text in coach)


def test_a_withdrawal_after_the_period_gets_the_ordinary_way_to_cancel(app, catalogue, inbox):
    client = app()
    clock = catalogue.test_clock(int((datetime.now(timezone.utc) - 20 * DAY).timestamp()))
    catalogue.subscription(catalogue.customer(email="old@example.com", address={"country": "AT"}, test_clock=clock.id))
    shared_declaration(client, "/withdraw", name="Olga", email="old@example.com", contract="")
    send_outbox(client)
    [ack] = [m for m in inbox.messages if m["To"] == "old@example.com"]
    text = text_of(ack)
    assert "14-day withdrawal period" in text and "Cancel my subscription" in text
    cancel = re.search(r"http://testserver(/cancel/\S+)", text).group(1)
    assert "Continue to cancel" in client.get(cancel).text


# The cancel button ---------------------------------------------------------------------------------------

def test_the_cancel_button_is_on_when_the_stripe_account_is_in_germany_or_when_set(app, emulator):
    assert "Cancel contract here" not in app().get("/").text
    assert app().get("/cancel-contract").status_code == 404
    assert "Cancel contract here" in app("cancel_button = true").get("/").text
    emulator.post("/_emulator/account", json={"country": "DE"})
    german = app()
    assert 'href="/cancel-contract">Cancel contract here' in german.get("/").text
    assert german.get("/cancel-contract").status_code == 200
    assert app("cancel_button = false").get("/cancel-contract").status_code == 404


def test_the_cancel_button_cancels_at_period_end_and_this_wasnt_me_keeps_the_plan(app, catalogue, stripe_client, inbox):
    client = app("cancel_button = true")
    sub = subscriber(catalogue, email="member@example.com")
    form = client.get("/cancel-contract")
    assert "Cancel now" in form.text and "Extraordinary cancellation" in form.text
    answer = shared_declaration(client, "/cancel-contract", name="Max", email="member@example.com", contract="Coaching",
                                cancellation="ordinary")
    assert answer.status_code == 200 and "We received your cancellation" in answer.text
    scheduled = stripe_client.v1.subscriptions.retrieve(sub.id)
    assert scheduled.cancel_at_period_end and scheduled.status == "active"
    [row] = rows(client)
    period_end = from_unix(scheduled["items"].data[0].current_period_end)
    assert row.status == "accepted" and as_utc(row.effective_at) == period_end
    send_outbox(client)
    [ack] = [m for m in inbox.messages if m["To"] == "member@example.com"]
    text = text_of(ack)
    assert f"ends on {period_end.day} {period_end:%B %Y}" in text and moment_words(as_utc(row.received_at), "UTC") in text
    assert f"“{row.content}”" in text and "at the earliest possible date" in row.content
    undo = re.search(r"This wasn't me — keep my plan:\s+(\S+)", text).group(1).replace("http://testserver", "")
    page = client.get(undo)
    assert page.status_code == 200 and "keep my plan" in page.text
    kept = client.post(undo, data={"csrf_token": client.cookies.get("cf_form_csrf")})
    assert kept.status_code == 200 and "Your plan continues" in kept.text
    assert not stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end
    assert rows(client)[0].status == "undone"
    assert client.post(undo, data={"csrf_token": client.cookies.get("cf_form_csrf")}).status_code == 410
    send_outbox(client)
    assert any("wasn't theirs" in m["Subject"] for m in inbox.messages if m["To"] == "coach@example.com")


def test_the_cancel_button_with_an_unknown_email_stores_it_alerts_the_coach_and_answers_the_same(app, catalogue, inbox):
    client = app("cancel_button = true")
    catalogue.subscription(catalogue.customer(email="member@example.com"))
    known = shared_declaration(client, "/cancel-contract", name="Max", email="member@example.com", contract="",
                               cancellation="ordinary")
    unknown = shared_declaration(client, "/cancel-contract", name="Mia", email="stranger@example.com",
                                 contract="the yoga plan", cancellation="extraordinary", reason="I moved abroad.")
    assert same_page(known.text, "member@example.com") == same_page(unknown.text, "stranger@example.com")
    stranger = next(row for row in rows(client) if row.email == "stranger@example.com")
    assert stranger.status == "needs_coach" and stranger.cancellation == "extraordinary"
    assert stranger.reason == "I moved abroad." and "I moved abroad." in stranger.content
    send_outbox(client)
    [ack] = [m for m in inbox.messages if m["To"] == "stranger@example.com"]
    assert ack["Subject"] == "We received your cancellation" and "Your coach will confirm" in text_of(ack)
    coach = [text_of(m) for m in inbox.messages if m["To"] == "coach@example.com"]
    assert any("stranger@example.com" in text and "act on it" in text for text in coach)


def test_an_extraordinary_cancellation_needs_its_reason(app):
    client = app("cancel_button = true")
    answer = shared_declaration(client, "/cancel-contract", name="Max", email="m@example.com", contract="",
                                cancellation="extraordinary", reason="")
    assert answer.status_code == 400 and "Give the reason" in answer.text
    assert rows(client) == []


# Receipts, the coach's record, retention ---------------------------------------------------------------

def test_a_cancellation_confirmation_says_when_it_was_received_and_when_it_takes_effect():
    from cancel_flow.config.schema import Brand

    style = compose.Style(Brand(name="Coach"), "https://c.example", "Europe/Berlin")
    received = datetime(2026, 12, 9, 13, 3, 27, tzinfo=timezone.utc)
    email = compose.cancellation_confirmed(style, to="a@example.com", name="A", plan="Plan",
                                           access_until=datetime(2027, 1, 9, tzinfo=timezone.utc), keep_url=None,
                                           unsubscribe_url=None, received_at=received)
    facts = dict(email.facts)
    assert facts["Received"] == "9 December 2026, 14:03:27 (UTC+01:00)"
    assert facts["Takes effect"] == "9 January 2027" and facts["Until then"] == "Full access, no further payments"


def test_the_dashboard_lists_declarations_with_their_acknowledgements_and_exports_them(app, catalogue, signer, coach_login):
    client = app()
    withdraw_in_flow(client, signer, subscriber(catalogue))
    send_outbox(client)
    for path in ("/dashboard/compliance", "/dashboard/compliance.csv"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
    coach_login(client)
    page = client.get("/dashboard/compliance")
    assert page.status_code == 200 and "Lena Weber" in page.text and "Sent " in page.text
    assert "/withdraw" in page.text and "/cancel-contract" in page.text and "not legal advice" in page.text
    exported = client.get("/dashboard/compliance.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    lines = exported.content.decode("utf-8-sig").splitlines()
    assert lines[0].startswith("declaration_id,kind,received_at") and "lena@example.com" in lines[1]
    assert ",4900," in lines[1]


def test_records_are_deleted_after_records_keep_days_by_the_sweep(app, catalogue, signer, monkeypatch, settings, capsys):
    client = app("records_keep_days = 30")
    withdraw_in_flow(client, signer, subscriber(catalogue))
    for name, value in {"DATABASE_URL": settings.database_url, "CANCEL_FLOW_OFFERS": str(settings.offers_path),
                        "STRIPE_API_KEY": settings.stripe_api_key}.items():
        monkeypatch.setenv(name, value)
    with freeze_time(datetime.now(timezone.utc) + 29 * DAY):
        assert run_cli(["sweep"], monkeypatch) == 0
    assert len(rows(client)) == 1
    with freeze_time(datetime.now(timezone.utc) + 31 * DAY):
        assert run_cli(["sweep"], monkeypatch) == 0
    assert "1 declaration(s) older than 30 days deleted." in capsys.readouterr().out
    assert rows(client) == []
    assert not [d for d in rows(client, OutboxDelivery.__table__) if (d.key or "").startswith("declaration-")]


@pytest.mark.parametrize("language", ["en", "de"])
def test_a_cancellation_confirmed_without_an_end_date_or_undo_link_promises_neither(language):
    from cancel_flow.config.schema import Brand

    style = compose.Style(Brand(name="Peak Coaching", support_email="coach@example.com"), "https://coach.example.com")
    received = datetime(2026, 12, 7, 12, tzinfo=timezone.utc)
    declaration = compose.Declaration("cancellation", "I cancel.", "accepted", "Coaching Plan (subscription sub_1)")
    ended = compose.render(compose.cancellation_confirmed(
        style, to="ann@example.com", name="Ann", plan="Coaching Plan", access_until=None, keep_url=None,
        unsubscribe_url=None, received_at=received, declaration=declaration, language=language), style)
    english = language == "en"
    assert ("has ended, and you won't be charged again" if english else "ist beendet") in ended.text
    assert ("Press the button below" if english else "Schaltfläche") not in ended.text
    assert ("Full access" if english else "Voller Zugang") not in ended.text
    assert ("Nothing: the subscription has ended" if english else "beendet") in ended.text

    undo = compose.Declaration("cancellation", "I cancel.", "accepted", "Coaching Plan", undo_url="https://x.example/undo")
    later = compose.render(compose.cancellation_confirmed(
        style, to="ann@example.com", name="Ann", plan="Coaching Plan", access_until=received + timedelta(days=20),
        keep_url=None, unsubscribe_url=None, received_at=received, declaration=undo, language="en"), style)
    assert "Press the button below" in later.text and "Full access, no further payments" in later.text
    assert "https://x.example/undo" in later.text
