"""The emulator's hosted portal reads like a portal: the current card once, each test card once, and a
confirmation after a card update."""

import re

import httpx


def test_card_update_is_confirmed_and_each_card_is_listed_once(stripe_client, catalogue, emulator_url, emulator):
    sub = catalogue.subscription()
    session = stripe_client.v1.billing_portal.sessions.create(params={
        "customer": sub.customer, "return_url": "https://example.com/account",
        "configuration": emulator.billing_portal_configuration})
    with httpx.Client(follow_redirects=False, timeout=10) as browser:
        page = browser.get(session.url).text
        assert "Your account" in page and "<main>" in page and "Test mode" in page
        assert page.count("Visa ending 4242") == 2  # the current card, and once among the choices
        assert page.count("Visa ending 0002") == 1  # two test ids, one card
        assert "Your payment method has been updated" not in page
        saved = browser.post(session.url + "/payment_method", data={"payment_method": "pm_card_mastercard"})
        assert saved.status_code == 303
        after = browser.get(httpx.URL(session.url).join(saved.headers["location"])).text
    assert "Your payment method has been updated" in after
    current = re.search(r"<h2>Payment method</h2>(.*?)</div>", after, re.S).group(1)
    assert "Mastercard ending 4444" in current
