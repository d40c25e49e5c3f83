"""Headless Chromium clicks through the flow on a 360 px wide phone screen."""

import shutil

import pytest

pytestmark = pytest.mark.browser
AXE = __import__("pathlib").Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield launched
        launched.close()


@pytest.fixture
def phone(browser):
    context = browser.new_context(viewport={"width": 360, "height": 740}, is_mobile=True)
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def start(live_server, catalogue, signer):
    server = live_server()

    def open_link(**subscription):
        sub = catalogue.subscription(**subscription)
        token, _ = signer.cancel_token(sub.customer, sub.id)
        return sub, f"{server.url}/cancel/{token}"

    return open_link


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth") <= 360


def test_accept_discount_in_the_browser(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    assert fits_the_screen(phone)
    phone.get_by_label("It's too expensive").check()
    phone.get_by_role("button", name="Next").click()
    card = phone.locator("section.offer", has_text="Stay for half price")
    assert "$24.50/month for 3 payments, then $49.00/month" in card.inner_text()
    card.get_by_role("button", name="Accept 50% off").click()
    done = phone.locator("main").inner_text()
    assert "50% off your next 3 payments" in done and "What happens next" in done
    assert phone.get_by_role("button", name="Continue to cancel").is_visible()
    assert fits_the_screen(phone)
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_accept_pause_in_the_browser(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    phone.get_by_label("I don't use it enough").check()
    phone.get_by_role("button", name="Next").click()
    phone.get_by_label("Skip 2 payments").check()
    phone.get_by_role("button", name="Pause my payments").click()
    assert "Your break has started" in phone.locator("main").inner_text()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection.behavior == "void"


def test_continue_to_cancel_through_the_portal_in_the_browser(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    assert fits_the_screen(phone)
    phone.get_by_role("button", name="Continue to cancel").click()
    phone.get_by_role("button", name="Cancel subscription").click()
    phone.wait_for_url(f"{url}/done")
    assert "canceled" in phone.locator("h1").inner_text()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True


COACH_EMAIL, COACH_PASSWORD = "coach@example.com", "correct horse battery"


@pytest.fixture
def coach(store):
    """The coach's account, COACH_EMAIL with COACH_PASSWORD."""
    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore

    CoachStore(store.engine).add(COACH_EMAIL, hash_password(COACH_PASSWORD))


def coach_signs_in(page, server_url: str, first_page: str = "/dashboard/login") -> None:
    """Sign in on the form `first_page` leads to, and land on the dashboard."""
    page.goto(f"{server_url}{first_page}")
    page.get_by_label("Email").fill(COACH_EMAIL)
    page.get_by_label("Password").fill(COACH_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server_url}/dashboard")


def wait_for_charts(page) -> None:
    for image in page.locator("img.chart").element_handles():
        image.scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image)


def test_coach_signs_in_changes_range_sees_charts_and_downloads_csv(browser, live_server, store, coach, tmp_path):
    from datetime import datetime, timezone

    from cancel_flow.demo import history_rows

    store.bulk_insert_sessions(history_rows(datetime.now(timezone.utc), weeks=6, per_week=12))
    server = live_server()
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page = context.new_page()
    coach_signs_in(page, server.url, first_page="/dashboard")  # the dashboard asks for the sign-in first
    assert page.locator("img.chart").count() == 1  # the overview's trend
    wait_for_charts(page)
    tabs = page.get_by_role("navigation", name="Retention dashboard")
    tabs.get_by_role("link", name="Sessions").click()
    page.get_by_label("Reason").select_option("too_expensive")
    page.get_by_role("button", name="Filter").click()
    page.get_by_role("link", name="Last 90 days").click()
    page.wait_for_url("**/dashboard/sessions?range=90**")
    assert "reason=too_expensive" in page.url  # a preset keeps the filters and the tab
    assert page.get_by_role("link", name="Last 90 days").get_attribute("aria-current") == "true"
    tabs.get_by_role("link", name="Reasons").click()
    page.wait_for_url("**/dashboard/reasons?range=90&reason=too_expensive")  # so does another tab
    assert page.locator("img.chart").count() == 1
    wait_for_charts(page)
    tabs.get_by_role("link", name="Sessions").click()
    with page.expect_download() as download:
        page.get_by_role("link", name="Download these sessions as CSV").click()
    saved = tmp_path / "sessions.csv"
    download.value.save_as(saved)
    lines = saved.read_text(encoding="utf-8-sig").splitlines()
    assert lines[0].startswith("session_id,created_at") and len(lines) > 10
    assert all(",too_expensive," in line for line in lines[1:])
    context.close()


def test_the_shared_link_copied_from_the_integrations_page_works(browser, live_server, coach, catalogue, inbox):
    import re
    import time

    catalogue.subscription(catalogue.customer(email="casey@example.com"))
    server = live_server(smtp_url=inbox.url)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    coach_signs_in(page, server.url)
    page.get_by_role("link", name="Links and integrations").click()
    page.get_by_role("button", name="Copy the shared link").click()
    page.get_by_role("button", name="Copied").wait_for()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == f"{server.url}/"
    page.goto(copied)
    page.get_by_label("Email").fill("casey@example.com")
    page.get_by_role("button", name="Email me a link").click()
    assert "we've emailed it a link" in page.locator("main").inner_text()
    deadline = time.monotonic() + 20
    while not inbox.messages:
        assert time.monotonic() < deadline, "no email came"
        time.sleep(0.1)
    cancel_link = re.search(r"http://\S+/cancel/\S+", inbox.messages[0].get_body(("plain",)).get_content()).group(0)
    page.goto(cancel_link)
    assert page.get_by_role("button", name="Continue to cancel").is_visible()
    context.close()


def tab_to(page, name: str, limit: int = 40) -> None:
    """Press Tab until the focused element's text is `name` (by keyboard alone, as a person would)."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("(document.activeElement.innerText || document.activeElement.value || '').trim()") == name:
            return
    raise AssertionError(f"{name!r} is not reachable with Tab")


def press_by_keyboard(page, name: str, lands_on: str | None = None) -> None:
    """Tab to `name` and press Enter, then wait for the page it opens (`lands_on`: the URL it ends at after redirects)."""
    tab_to(page, name)
    if lands_on is None:
        with page.expect_navigation():
            page.keyboard.press("Enter")
    else:
        page.keyboard.press("Enter")
        page.wait_for_url(lands_on)


def test_the_whole_flow_works_with_the_keyboard_alone(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    phone.keyboard.press("Tab")  # the first stop is a reason
    for _ in range(20):
        if phone.evaluate("document.activeElement.name") == "reason":
            break
        phone.keyboard.press("Tab")
    phone.keyboard.press("Space")
    assert phone.evaluate("document.activeElement.value") == "too_expensive"
    press_by_keyboard(phone, "Next")
    press_by_keyboard(phone, "Accept 50% off", lands_on=f"{url}/done")
    assert "50% off your next 3 payments" in phone.locator("main").inner_text()
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_every_exit_works_with_the_keyboard_alone(phone, start, stripe_client):
    """Never mind (back to the account), Change my reason, and Continue to cancel, by Tab and Enter."""
    phone.context.route("http://testserver/account", lambda route: route.fulfill(
        status=200, body="<title>Account</title><h1>My account</h1>", content_type="text/html"))
    sub, url = start()
    phone.goto(url)
    press_by_keyboard(phone, "Never mind, keep my subscription")
    assert phone.url == "http://testserver/account"

    phone.goto(url)
    phone.get_by_label("It's too expensive").check()
    phone.get_by_role("button", name="Next").click()
    press_by_keyboard(phone, "Change my reason")
    assert phone.get_by_label("It's too expensive").is_checked()  # the reason given stays chosen
    phone.get_by_label("I don't use it enough").check()
    phone.get_by_role("button", name="Next").click()
    assert phone.get_by_role("button", name="Pause my payments").is_visible()

    press_by_keyboard(phone, "Continue to cancel")
    press_by_keyboard(phone, "Cancel subscription", lands_on=f"{url}/done")
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True


def test_try_again_after_stripe_failed_works_with_the_keyboard_alone(phone, start, stripe_client, emulator):
    """Stripe down: the page says nothing changed; Try again by keyboard resubmits the same offer and works."""
    sub, url = start()
    phone.goto(url)
    phone.get_by_label("It's too expensive").check()
    phone.get_by_role("button", name="Next").click()
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500, "count": 20})
    phone.get_by_role("button", name="Accept 50% off").click()
    assert "Nothing was changed" in phone.locator("main").inner_text()
    assert not stripe_client.v1.subscriptions.retrieve(sub.id).discounts
    emulator.delete("/_emulator/faults")
    press_by_keyboard(phone, "Try again", lands_on=f"{url}/done")
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_a_broken_link_offers_a_fresh_one_by_keyboard(phone, live_server):
    server = live_server(env="development")  # emails printed, so the shared page can send
    phone.goto(f"{server.url}/cancel/not-a-real-link")
    text = phone.locator("main").inner_text()
    assert "This link is not valid" in text and "coach@example.com" in text
    tab_to(phone, "Email me a fresh link")
    with phone.expect_navigation():
        phone.keyboard.press("Enter")
    assert phone.get_by_label("Email").is_visible()
