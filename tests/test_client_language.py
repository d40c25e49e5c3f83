"""The client's own language over HTTP: pages, error pages, the switch, emails and the Stripe portal that
follows, with the real app, the real SDK and the Stripe emulator."""

import re
from pathlib import Path
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from cancel_flow.clock import from_unix
from cancel_flow.money import format_day, format_money
from tests.helpers import csrf_of, visible_text

DAY_AGO = timedelta(days=1)


EXAMPLE_OFFERS = Path(__file__).resolve().parents[1] / "cancel_flow" / "examples" / "offers.toml"


@pytest.fixture
def client(make_client):
    """The app with the example offers, which the coach also wrote in Spanish ([offer.text.es])."""
    return make_client(offers_path=EXAMPLE_OFFERS)


@pytest.fixture
def link(signer):
    def mint(subscription) -> str:
        token, _ = signer.cancel_token(subscription.customer, subscription.id)
        return f"/cancel/{token}"
    return mint


def spanish_subscription(catalogue, **subscription):
    return catalogue.subscription(catalogue.customer(email="lucia@example.com", name="Lucía", preferred_locales=["es"]),
                                  **subscription)


def spaced(text: str) -> str:
    """`text` as `visible_text` gives it: any run of spaces (no-break ones too) as one space."""
    return " ".join(text.split())


def html_lang(page) -> str:
    return re.search(r'<html lang="([^"]+)"', page.text).group(1)


def portal_language(location: str) -> str:
    """The language the emulator's hosted portal page is in: the session's `locale`, as Stripe shows it."""
    return re.search(r'<html lang="([^"]+)"', httpx.get(location).text).group(1)


def test_a_customer_who_prefers_spanish_gets_spanish_pages_and_a_spanish_portal(client, catalogue, link, stripe_client):
    sub = spanish_subscription(catalogue)
    url = link(sub)
    page = client.get(url, headers={"Accept-Language": "en-US,en;q=0.9"})  # Stripe's preference comes first
    assert page.status_code == 200 and html_lang(page) == "es"
    text = visible_text(page.text)
    assert "Cancelar tu suscripción" in text and "¿Por qué te vas?" in text and "Es demasiado caro" in text
    assert spaced("49,00\xa0US$ al mes") in text  # money the Spanish way, the currency's own
    assert "Continuar con la cancelación" in text and "Cancel your subscription" not in text
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    offers = client.get(url)
    words = visible_text(offers.text)
    assert "Antes de irte" in words and "Quédate a mitad de precio" in words  # the coach's own Spanish title
    assert spaced("Aceptar 50\xa0% de descuento") in words
    assert spaced("50\xa0% de descuento en tus próximos 3 pagos") in words and spaced("24,50\xa0US$/mes") in words
    portal = client.post(f"{url}/cancel", data={"csrf_token": csrf_of(offers.text)})
    assert portal.status_code == 303 and portal_language(portal.headers["location"]) == "es"


def test_the_done_page_states_the_promise_in_spanish_with_the_dates_and_amounts_stripe_bills(
        client, catalogue, link, stripe_client, store, signer):
    sub = spanish_subscription(catalogue)
    url = link(sub)
    page = client.get(url)
    client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    page = client.get(url)
    assert client.post(f"{url}/accept", data={"csrf_token": csrf_of(page.text), "offer": "half-off-3-payments"}
                       ).status_code == 303
    done = client.get(f"{url}/done")
    text = visible_text(done.text)
    assert html_lang(done) == "es" and "¡Gracias por quedarte!" in text
    first = from_unix(stripe_client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end)
    assert format_day(first, "es") in text and spaced("24,50\xa0US$ (en lugar de 49,00\xa0US$)") in text
    assert "Fecha de pago" in text and "Pagas" in text
    # the coach's record (dashboard, webhooks) stays in English; the client's words are kept in each language
    session = store.find_session(signer.read_cancel(url.removeprefix("/cancel/")).nonce)
    assert session.promise.startswith("50% off your next 3 payments")
    assert session.promise_texts["es"].startswith("50\xa0% de descuento en tus próximos 3 pagos")
    assert spaced(session.promise_texts["es"]) in text


def test_the_browser_decides_when_stripe_has_no_preference_then_the_brand(catalogue, link, tmp_path, make_client):
    offers = tmp_path / "offers.toml"
    offers.write_text('[brand]\nname = "Coach"\ndefault_locale = "pt_BR"\n')
    client = make_client(offers_path=offers)
    url = link(catalogue.subscription())
    assert html_lang(client.get(url, headers={"Accept-Language": "de-AT,de;q=0.9,en;q=0.5"})) == "de"
    assert html_lang(client.get(url, headers={"Accept-Language": "it-IT,en;q=0"})) == "pt-BR"
    page = client.get(url, headers={"Accept-Language": "it-IT"})
    assert html_lang(page) == "pt-BR" and "Cancelar sua assinatura" in page.text


def test_the_switch_names_each_language_in_itself_and_keeps_the_choice_for_that_link_only(client, catalogue, link):
    first, second = link(catalogue.subscription()), link(catalogue.subscription())
    page = client.get(first)
    switch = re.search(r'<nav class="languages" aria-label="Language">(.*?)</nav>', page.text, re.S).group(1)
    assert re.findall(r'lang="([^"]+)"[^>]*>([^<]+)<', switch) == [
        ("en", "English"), ("es", "Español"), ("fr", "Français"), ("de", "Deutsch"), ("pt-BR", "Português (Brasil)")]
    assert re.search(r'aria-current="true">English<', switch) and switch.count("aria-current") == 1
    french = client.get(f"{first}?lang=fr")
    assert html_lang(french) == "fr" and 'aria-current="true">Français<' in french.text
    assert f"Path={first}" in french.headers["set-cookie"]
    page = client.get(first)  # the choice is kept for this link ...
    assert html_lang(page) == "fr"
    client.post(f"{first}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
    assert "Avant de partir" in client.get(first).text  # ... on every step of it
    assert html_lang(client.get(second)) == "en"  # ... and for no other link


def test_a_form_refused_answers_in_the_clients_language(client, catalogue, link):
    url = link(spanish_subscription(catalogue))
    page = client.get(url)
    refused = client.post(f"{url}/reason", data={"csrf_token": csrf_of(page.text)})
    assert refused.status_code == 400 and "Elige uno de los motivos de la lista." in refused.text
    expired = client.post(f"{url}/reason", data={"csrf_token": "forged", "reason": "other"})
    assert expired.status_code == 400 and html_lang(expired) == "es"
    assert "Inténtalo de nuevo" in expired.text and "Vuelve atrás, recarga la página" in expired.text


def test_error_pages_for_links_speak_the_browsers_language_and_the_api_stays_english(client):
    page = client.get("/cancel/not-a-real-link", headers={"Accept-Language": "de-DE"})
    assert page.status_code == 400 and html_lang(page) == "de"
    assert "Dieser Link ist ungültig" in page.text and "Einen neuen Link anfordern" in page.text
    missing = client.get("/nowhere", headers={"Accept-Language": "pt-BR"})
    assert missing.status_code == 404 and "Página não encontrada" in missing.text
    api = client.get("/api/stats", headers={"Accept-Language": "es", "Authorization": "Bearer nope"})
    assert "application/json" in api.headers["content-type"] and "Este" not in api.text


def test_the_coachs_pages_stay_english_with_money_and_dates_in_the_coachs_locale(make_client, history, store):
    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore
    from tests.test_browser import COACH_EMAIL, COACH_PASSWORD

    CoachStore(store.engine).add(COACH_EMAIL, hash_password(COACH_PASSWORD))
    now = datetime.now(timezone.utc)
    history(now, "saved_discount", reason="too_expensive", price=4900, chosen="half-off-3-payments", percent=50, months=3,
            decided=now, currency="eur")
    for locale, money in (("en", "€49.00"), ("de", "49,00\xa0€")):
        coach = make_client(locale=locale)
        login = coach.get("/dashboard/login")
        coach.post("/dashboard/login", data={"csrf_token": csrf_of(login.text), "email": COACH_EMAIL,
                                             "password": COACH_PASSWORD})
        page = coach.get("/dashboard/sessions", headers={"Accept-Language": "fr"})
        assert html_lang(page) == "en" and "Sessions" in page.text and "Langue" not in page.text
        assert money in page.text


def test_the_portal_of_a_billing_link_opens_in_the_language_asked_for(client, catalogue, signer):
    sub = catalogue.subscription()
    token, _ = signer.billing_token(sub.customer)
    assert portal_language(client.get(f"/billing/{token}?lang=fr").headers["location"]) == "fr"
    assert portal_language(client.get(f"/billing/{token}", headers={"Accept-Language": "pt-BR"}).headers["location"]) \
        == "pt-BR"


def test_the_plan_line_writes_money_the_clients_way_zero_decimal_currencies_included(client, catalogue, link):
    german = catalogue.customer(email="jonas@example.com", preferred_locales=["de-AT", "en"])
    text = visible_text(client.get(link(catalogue.subscription(german, currency="jpy", amount=4900))).text)
    assert spaced(f"{format_money(4900, 'jpy', 'de')} pro Monat") == "4.900 ¥ pro Monat" and "4.900 ¥ pro Monat" in text


from tests.test_billing_emails import billing, html_of, text_of, wait_until  # noqa: E402,F401  (the billing fixture)


def test_a_customer_who_prefers_spanish_gets_the_billing_and_confirmation_emails_in_spanish(
        billing, inbox, catalogue, signer, stripe_client):  # noqa: F811
    now = datetime.now(timezone.utc)
    sub, invoice_id, first = billing.failing_renewal(now - DAY_AGO, name="Lucía", preferred_locales=["es"])
    assert billing.run(first + timedelta(minutes=1)) == {"payment_failed": 1}
    [notice] = inbox.messages
    assert spaced(notice["Subject"]) == spaced("Tu pago de 49,00\xa0US$ por Coaching Plan no se ha podido completar")
    text, body = text_of(notice), html_of(notice)
    assert '<html lang="es">' in body and "Hola, Lucía:" in text and "Visa terminada en 0341" in text
    assert f"el {format_day(first, 'es')}" in text and "Actualizar mi tarjeta" in text and "Importe" in text
    update = re.search(r'href="(http://[^"]+/billing/[^"?]+\?flow=payment_method_update&amp;lang=es)"', body).group(1)
    assert portal_language(httpx.get(update.replace("&amp;", "&"), follow_redirects=False).headers["location"]) == "es"

    saved = spanish_subscription(catalogue)
    token, _ = signer.cancel_token(saved.customer, saved.id)
    with httpx.Client(base_url=billing.server.url) as browser:
        page = browser.get(f"/cancel/{token}")
        browser.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(page.text), "reason": "too_expensive"})
        page = browser.get(f"/cancel/{token}")
        browser.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(page.text), "offer": "half-off-3-payments"})
        done = visible_text(browser.get(f"/cancel/{token}/done").text)
    assert billing.run() == {"offer_accepted": 1}
    confirmation = inbox.messages[-1]
    assert confirmation["Subject"] == "Confirmado: tu suscripción a Coaching Plan continúa"
    text = text_of(confirmation)
    promise = spaced(re.search(r"50\xa0% de descuento en tus próximos 3 pagos[^\n]*", text).group(0))
    assert promise in done  # the email promises what the done page said, word for word
    assert "Fechas de pago:" in text and text.count("24,50\xa0US$ (en lugar de 49,00\xa0US$)") == 3
    assert "Dejar de recibir correos de confirmación" in text and "/emails/unsubscribe/" in text
    unsubscribe = re.search(r"(http://\S+/emails/unsubscribe/\S+)", text).group(1)
    assert unsubscribe.endswith("?lang=es") and "Dejar de recibir" in httpx.get(unsubscribe).text


def test_the_shared_link_email_speaks_the_customers_language(make_client, inbox, catalogue):
    catalogue.subscription(catalogue.customer(email="amelie@example.com", preferred_locales=["fr-FR"]))
    client = make_client(smtp_url=inbox.url)
    page = client.get("/", headers={"Accept-Language": "en"})
    client.post("/", data={"csrf_token": csrf_of(page.text), "email": "amelie@example.com"})
    [message] = inbox.messages
    assert message["Subject"] == "Vos liens pour votre abonnement Peak Performance Coaching"
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert text.startswith("Bonjour,\n\nVoici vos liens pour Peak Performance Coaching.\n\n")
    assert "Gérer la facturation (carte, factures):\nhttp://testserver/billing/" in text
    assert '<html lang="fr">' in message.get_body(("html",)).get_content()


def test_the_emulators_portal_page_speaks_the_sessions_locale_else_the_customers(stripe_client, catalogue, emulator):
    from tests.conftest import portal_configuration

    customer = catalogue.customer(preferred_locales=["fr-CA"])
    configuration = portal_configuration(stripe_client)
    for locale, shown in (("de", "de"), ("auto", "fr-CA"), (None, "fr-CA")):
        params = {"customer": customer.id, "configuration": configuration, **({"locale": locale} if locale else {})}
        session = stripe_client.v1.billing_portal.sessions.create(params=params)
        assert portal_language(session.url) == shown
