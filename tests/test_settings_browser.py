"""Headless Chromium: the coach steers from the browser, with the keyboard alone where a keyboard can do
it, and the subscriber's page shows each change: the brand, an offer, a logo, a restored version."""

import pytest

from tests.test_browser import browser, coach, coach_signs_in  # noqa: F401  (fixtures: Chromium, the coach's account)
from tests.test_settings_pages import png

pytestmark = pytest.mark.browser


def tab_to(page, selector: str, limit: int = 120) -> None:
    """Press Tab until the focused element matches `selector`, as a keyboard user would."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
            return
    raise AssertionError(f"{selector} is not reachable with Tab")


def type_over(page, text: str) -> None:
    page.keyboard.press("Control+A")
    page.keyboard.type(text)


class Subscriber:
    """A client on a phone, opening a fresh cancel link each time."""

    def __init__(self, browser, server_url, catalogue, signer):  # noqa: F811
        self.context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
        self.page = self.context.new_page()
        self.url, self.catalogue, self.signer = server_url, catalogue, signer
        self.sub = catalogue.subscription()

    def offers_for(self, reason_label: str):
        token, _ = self.signer.cancel_token(self.sub.customer, self.sub.id)
        self.page.goto(f"{self.url}/cancel/{token}")
        self.page.get_by_label(reason_label).check()
        self.page.get_by_role("button", name="Next").click()
        self.page.wait_for_selector("h1")
        return self.page

    def header(self) -> str:
        return self.page.locator("header.brand").inner_text()

    def button_colour(self) -> str:
        return self.page.locator("button.primary").first.evaluate("b => getComputedStyle(b).backgroundColor")


def test_the_coach_steers_from_the_browser_and_the_subscriber_sees_each_change(browser, live_server, coach,  # noqa: F811
                                                                               catalogue, signer):
    server = live_server()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    coach_signs_in(page, server.url)
    client = Subscriber(browser, server.url, catalogue, signer)
    client.offers_for("It's too expensive")
    assert "Peak Performance Coaching" in client.header() and client.button_colour() == "rgb(31, 111, 235)"

    # the brand, by keyboard: Tab to each field, type over it, Enter saves
    page.goto(f"{server.url}/dashboard/settings")
    tab_to(page, "a[href='/dashboard/settings/brand']")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{server.url}/dashboard/settings/brand")
    tab_to(page, "#name")
    type_over(page, "Sunrise Coaching")
    tab_to(page, "#color")
    type_over(page, "#facc15")
    page.keyboard.press("Enter")
    page.wait_for_load_state()
    assert "too light for the white text on buttons" in page.locator("#color-error").inner_text()
    tab_to(page, "button[form=use-suggestion]")  # "Use #…", beside the colour
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/settings/brand?saved=2")
    assert "Saved as version 2" in page.locator("[role=status]").inner_text()
    offers = client.offers_for("It's too expensive")
    assert "Sunrise Coaching" in client.header()
    assert client.button_colour() != "rgb(31, 111, 235)"  # the suggested colour, darker than #facc15

    # an offer, by keyboard
    page.goto(f"{server.url}/dashboard/settings/offers")
    tab_to(page, "a[href='/dashboard/settings/offers/edit/half-off-3-payments']")
    page.keyboard.press("Enter")
    page.wait_for_url("**/offers/edit/half-off-3-payments")
    tab_to(page, "#title")
    type_over(page, "Stay for less")
    tab_to(page, "#percent_off")
    type_over(page, "30")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/settings/offers?saved=3#offer-half-off-3-payments")
    offers = client.offers_for("It's too expensive")
    card = offers.locator("section.offer", has_text="Stay for less")
    assert "$34.30/month for 3 payments, then $49.00/month" in card.inner_text()
    assert card.get_by_role("button", name="Accept 30% off").is_visible()

    # a logo (the file chooser is the browser's own)
    page.goto(f"{server.url}/dashboard/settings/brand")
    page.set_input_files("#logo", files=[{"name": "logo.png", "mimeType": "image/png", "buffer": png(48, 48)}])
    tab_to(page, "#logo-form button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/settings/brand?saved=4")
    client.offers_for("It's too expensive")
    logo = client.page.locator("header.brand img")
    assert "/brand/logo?v=" in logo.get_attribute("src")
    assert logo.evaluate("img => img.complete && img.naturalWidth") == 48

    # a preview of a yearly plan, by keyboard
    page.goto(f"{server.url}/dashboard/preview")
    tab_to(page, "#plan")
    page.keyboard.press("End")  # the last option: yearly
    tab_to(page, "#amount")
    type_over(page, "490.00")
    tab_to(page, "form[aria-labelledby=sample-title] button[type=submit]")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/preview?plan=yearly**")
    results = page.locator("#results").inner_text()
    assert "This is a preview." in results and "yearly plans are not paused" in results
    assert "$343.00/year for 3 payments, then $490.00/year" in results

    # restore version 1: the subscriber sees the first settings again
    page.goto(f"{server.url}/dashboard/settings/history")
    tab_to(page, "form[action='/dashboard/settings/history/1/restore'] button")
    page.keyboard.press("Enter")
    page.wait_for_url("**/dashboard/settings/history?restored=1&saved=5")
    assert "Version 1 is back: saved as version 5" in page.locator("[role=status]").inner_text()
    offers = client.offers_for("It's too expensive")
    assert "Peak Performance Coaching" in client.header() and client.button_colour() == "rgb(31, 111, 235)"
    assert "Stay for half price" in offers.locator("main").inner_text()
    assert client.page.locator("header.brand img").get_attribute("src") == "/brand/logo"
    context.close()
    client.context.close()
