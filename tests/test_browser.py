"""Headless Chromium clicks through the flow on a 360 px wide phone screen."""

import shutil

import pytest

pytestmark = pytest.mark.browser

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
    phone.get_by_role("button", name="Accept 50% off").click()
    assert "50% off for the next 3 months: $24.50 instead of $49.00" in phone.locator("main").inner_text()
    assert phone.get_by_role("button", name="Continue to cancel").is_visible()
    assert fits_the_screen(phone)
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1


def test_accept_pause_in_the_browser(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    phone.get_by_label("I don't use it enough").check()
    phone.get_by_role("button", name="Next").click()
    phone.get_by_label("Pause payments for").select_option("2")
    phone.get_by_role("button", name="Pause my payments").click()
    assert "Payments paused until" in phone.locator("main").inner_text()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).pause_collection.behavior == "void"


def test_continue_to_cancel_through_the_portal_in_the_browser(phone, start, stripe_client):
    sub, url = start()
    phone.goto(url)
    assert fits_the_screen(phone)
    phone.get_by_role("button", name="Continue to cancel").click()
    phone.get_by_label("It's too expensive").check()
    phone.get_by_role("button", name="Cancel subscription").click()
    phone.wait_for_url(f"{url}/done")
    assert "Your subscription is canceled" in phone.locator("main").inner_text()
    assert stripe_client.v1.subscriptions.retrieve(sub.id).cancel_at_period_end is True


def test_coach_signs_in_changes_range_sees_charts_and_downloads_csv(browser, live_server, store, tmp_path):
    from datetime import datetime, timezone

    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore
    from cancel_flow.demo import history_rows

    CoachStore(store.engine).add("coach@example.com", hash_password("correct horse battery"))
    store.bulk_insert_sessions(history_rows(datetime.now(timezone.utc), weeks=6, per_week=12))
    server = live_server()
    context = browser.new_context(viewport={"width": 1200, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.goto(f"{server.url}/dashboard")
    page.get_by_label("Email").fill("coach@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/dashboard")
    page.get_by_role("link", name="Last 90 days").click()
    page.wait_for_url("**range=90")
    charts = page.locator("img.chart")
    assert charts.count() == 2
    for index in range(2):
        charts.nth(index).scroll_into_view_if_needed()
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=charts.nth(index).element_handle())
    with page.expect_download() as download:
        page.get_by_role("link", name="Download these sessions as CSV").click()
    saved = tmp_path / "sessions.csv"
    download.value.save_as(saved)
    lines = saved.read_text().splitlines()
    assert lines[0].startswith("session_id,created_at") and len(lines) > 50
    context.close()


AXE = __import__("pathlib").Path(__file__).resolve().parents[1] / "node_modules" / "axe-core" / "axe.min.js"


def serious_violations(page) -> list:
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in result["violations"]
            if v["impact"] in ("serious", "critical")]


@pytest.fixture
def checked(browser):
    # axe is injected as a script; the pages' CSP would rightly refuse it, so the check bypasses CSP
    context = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True)
    page = context.new_page()
    yield page
    context.close()


def test_subscriber_pages_have_no_serious_accessibility_violations(checked, start, live_server, signer, catalogue):
    sub, url = start()
    visited = {}
    checked.goto(url)
    visited["reason"] = serious_violations(checked)
    checked.get_by_role("button", name="Next").click()
    visited["reason with error"] = serious_violations(checked)
    checked.get_by_label("I don't use it enough").check()
    checked.get_by_role("button", name="Next").click()
    visited["offers"] = serious_violations(checked)
    checked.get_by_role("button", name="Accept 50% off").click()
    visited["done"] = serious_violations(checked)
    scheduled, scheduled_url = start(cancel_at_period_end=True)
    checked.goto(scheduled_url)
    visited["scheduled"] = serious_violations(checked)
    base = url.split("/cancel/")[0]
    for name, path in (("invalid link", "/cancel/nonsense"), ("shared link", "/"), ("not found", "/nowhere")):
        checked.goto(base + path)
        visited[name] = serious_violations(checked)
    assert visited == {name: [] for name in visited}


def test_dashboard_pages_have_no_serious_accessibility_violations(browser, live_server, store):
    from datetime import datetime, timezone

    from cancel_flow.demo import history_rows
    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore

    CoachStore(store.engine).add("coach@example.com", hash_password("correct horse battery"))
    server = live_server()
    context = browser.new_context(viewport={"width": 1200, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{server.url}/dashboard/login")
    visited = {"login": serious_violations(page)}
    page.get_by_label("Email").fill("coach@example.com")
    page.get_by_label("Password").fill("correct horse battery")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/dashboard")
    visited["empty dashboard"] = serious_violations(page)
    store.bulk_insert_sessions(history_rows(datetime.now(timezone.utc), weeks=4, per_week=10))
    page.goto(f"{server.url}/dashboard")
    visited["dashboard"] = serious_violations(page)
    context.close()
    assert visited == {name: [] for name in visited}


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
    while phone.evaluate("document.activeElement.textContent.trim()") != "Next":
        phone.keyboard.press("Tab")
    with phone.expect_navigation():
        phone.keyboard.press("Enter")
    while phone.evaluate("document.activeElement.textContent.trim()") != "Accept 50% off":
        phone.keyboard.press("Tab")
    phone.keyboard.press("Enter")
    phone.wait_for_url(f"{url}/done")
    assert "50% off for the next 3 months" in phone.locator("main").inner_text()
    assert len(stripe_client.v1.subscriptions.retrieve(sub.id).discounts) == 1
