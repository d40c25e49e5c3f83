"""Every page at 360 px and 1280 px in headless Chromium: nothing wider than the screen, and axe-core
finds no violation of any impact (minor included). With SCREENSHOTS_DIR set (`make screenshots`), a
full-page PNG of each page goes to SCREENSHOTS_DIR/<width>/<subscriber|coach>-<nn>-<page>.png for review."""

import os
import re
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from freezegun import freeze_time

from tests.test_browser import AXE, COACH_EMAIL, COACH_PASSWORD, coach_signs_in, wait_for_charts
from tests.test_browser import browser, coach  # noqa: F401  (fixtures: the module's Chromium, the coach's account)

pytestmark = pytest.mark.browser
ROOT = Path(__file__).resolve().parents[1]
SHOTS = os.environ.get("SCREENSHOTS_DIR")
CONTACT_URL = "https://calendly.example.com/coach/15min"


class Review:
    """Checks the page in front of it and, when asked, keeps a screenshot; collects every problem."""

    def __init__(self, page, width: int, prefix: str):
        self.page, self.width, self.prefix, self.problems, self.count = page, width, prefix, [], 0

    def __call__(self, name: str) -> None:
        page = self.page
        page.wait_for_load_state("load")
        self.count += 1
        wide = page.evaluate("document.documentElement.scrollWidth")
        if wide > self.width:
            culprits = page.evaluate("""w => [...document.querySelectorAll('body *')]
                .filter(e => e.getBoundingClientRect().right > w + 1).slice(0, 3)
                .map(e => e.tagName + '.' + e.className)""", self.width)
            self.problems.append(f"{name}: {wide} px wide at {self.width} px ({culprits})")
        if page.evaluate("typeof axe") == "undefined":
            page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
        for violation in result["violations"]:
            targets = [node["target"] for node in violation["nodes"]][:3]
            self.problems.append(f"{name}: axe {violation['id']} ({violation['impact']}) at {targets}")
        if SHOTS:
            folder = Path(SHOTS) / str(self.width)
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"{self.prefix}{self.count:02d}-{name}.png"), full_page=True)

    def finish(self) -> None:
        """Close the browser and fail with every problem seen."""
        self.page.context.close()
        assert not self.problems, "\n".join(self.problems)


@pytest.fixture
def screens_offers(tmp_path, catalogue):
    """Every offer kind, two per reason, so each offers and done page can be seen."""
    lite = catalogue.price(amount=2900, name="Coaching Lite")
    path = tmp_path / "offers.toml"
    path.write_text(textwrap.dedent(f"""
        [brand]
        name = "Peak Performance Coaching"
        color = "#1f6feb"
        logo = "{ROOT / 'static' / 'logo.svg'}"
        support_email = "coach@example.com"

        [rules]
        max_offers = 2

        [[offer]]
        id = "half-off-3-payments"
        kind = "discount"
        percent_off = 50
        payments = 3
        reasons = ["too_expensive"]
        title = "Stay for half price"

        [[offer]]
        id = "lite"
        kind = "switch"
        price = "{lite.id}"
        reasons = ["too_expensive"]
        title = "Switch to Coaching Lite"
        description = "The same weekly plan, without the live calls."

        [[offer]]
        id = "pause"
        kind = "pause"
        max_payments = 3
        reasons = ["unused"]
        title = "Take a break instead"

        [[offer]]
        id = "month-free"
        kind = "free_period"
        months = 1
        reasons = ["unused", "other"]
        title = "Have a month on us"

        [[offer]]
        id = "talk"
        kind = "contact"
        url = "{CONTACT_URL}"
        reasons = ["missing_features"]
        title = "Talk to your coach first"
        description = "Tell me what isn't working: most things can be fixed in a short conversation."
    """))
    return path


@pytest.mark.parametrize("width", [360, 1280])
def test_every_subscriber_page_fits_and_passes_axe(width, browser, live_server, screens_offers, catalogue, signer,  # noqa: F811
                                                    stripe_client, emulator):
    server = live_server(offers_path=screens_offers)
    context = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True, is_mobile=width < 600)
    context.route(CONTACT_URL, lambda route: route.fulfill(status=200, body="<title>Booking</title>Booking page",
                                                           content_type="text/html"))
    page = context.new_page()
    review = Review(page, width, "subscriber-")

    def link(reason: str | None = None, **subscription):
        sub = catalogue.subscription(**subscription)
        token, _ = signer.cancel_token(sub.customer, sub.id)
        url = f"{server.url}/cancel/{token}"
        page.goto(url)
        if reason:
            page.get_by_label(REASON_LABELS[reason]).check()
            page.get_by_role("button", name="Next").click()
            page.wait_for_url(url)
        return sub, url

    _, url = link()
    review("reason")
    page.get_by_role("button", name="Next").click()
    review("reason-missing")
    page.get_by_label(REASON_LABELS["too_expensive"]).check()
    page.get_by_role("button", name="Next").click()
    review("offers-discount-and-switch")
    page.get_by_role("button", name="Accept 50% off").click()
    page.wait_for_url(f"{url}/done")
    review("done-discount")
    discounted = signer.cancel_token(*_customer_and_subscription(url, signer))[0]
    page.goto(f"{server.url}/cancel/{discounted}")  # a second link after the save
    review("already-decided")

    link("too_expensive")
    page.get_by_role("button", name="Switch my plan").click()
    review("done-switch")

    link("unused")
    review("offers-pause-and-free-time")
    page.locator("input[name=payments]").first.check()
    page.get_by_role("button", name="Pause my payments").click()
    review("done-pause")

    link("unused")
    page.locator("section.offer", has_text="Have a month on us").get_by_role("button").click()
    review("done-free-time")

    _, url = link("missing_features")
    review("offers-contact")
    page.get_by_role("button", name="Talk to your coach first").click()
    page.wait_for_url(f"{url}/done")
    review("done-contact")
    page.get_by_role("link", name="Book a time to talk").click()
    page.wait_for_url(CONTACT_URL)

    link("switched_service")
    review("offers-none-fit")
    page.get_by_role("button", name="Continue to cancel").click()
    page.wait_for_url(re.compile(r".*/portal/.*|.*billing.*|.*/p/.*|.*session.*"))
    review("stripe-portal")
    page.get_by_role("button", name="Cancel subscription").click()
    page.wait_for_url(re.compile(r".*/done$"))
    review("done-canceled")

    link(cancel_at_period_end=True)
    review("scheduled")
    page.get_by_role("button", name="Keep my subscription").click()
    review("done-kept")

    sub = catalogue.subscription()  # a 12-week program: the coach fixed the end date
    stripe_client.v1.subscriptions.update(sub.id, params={"cancel_at": sub["items"].data[0].current_period_end + 60 * 86400})
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page.goto(f"{server.url}/cancel/{token}")
    review("fixed-end-date")

    sub = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(sub.id)
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page.goto(f"{server.url}/cancel/{token}")
    review("already-canceled")

    _, url = link("too_expensive")
    emulator.post("/_emulator/faults", json={"method": "POST", "path": "/v1/subscriptions/*", "status": 500, "count": 20})
    page.get_by_role("button", name="Accept 50% off").click()
    review("stripe-down")
    emulator.delete("/_emulator/faults")

    page.goto(f"{server.url}/cancel/not-a-real-link")
    review("link-not-valid")
    sub = catalogue.subscription()
    with freeze_time(datetime.now(timezone.utc) - timedelta(days=3)):
        token, _ = signer.cancel_token(sub.customer, sub.id)
    page.goto(f"{server.url}/cancel/{token}")
    review("link-expired")
    page.goto(f"{server.url}/nowhere")
    review("not-found")
    page.goto(f"{server.url}/")
    review("shared-link")
    from cancel_flow.emails.tokens import unsubscribe_token
    from tests.conftest import SECRET

    page.goto(f"{server.url}/emails/unsubscribe/{unsubscribe_token(SECRET, sub.customer, 'renewal_reminder')}")
    review("unsubscribe-ask")
    page.get_by_role("button", name="Stop renewal reminders").click()
    review("unsubscribed")
    review.finish()


def _customer_and_subscription(url: str, signer) -> tuple[str, str]:
    link = signer.read_cancel(url.rsplit("/cancel/", 1)[1].split("/")[0])
    return link.customer, link.subscription


from cancel_flow.reasons import REASONS as REASON_LABELS  # noqa: E402


@pytest.mark.parametrize("width", [360, 1280])
def test_every_coach_page_fits_and_passes_axe(width, browser, live_server, store, coach, screens_offers):  # noqa: F811
    from cancel_flow.demo import history_rows

    server = live_server(offers_path=screens_offers, timezone="Europe/Paris", allow_private_urls=True)
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True, is_mobile=width < 600)
    page = context.new_page()
    review = Review(page, width, "coach-")
    page.goto(f"{server.url}/dashboard/login")
    review("login")
    page.get_by_label("Email").fill(COACH_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    review("login-refused")
    page.get_by_label("Password").fill(COACH_PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{server.url}/dashboard")
    review("dashboard-empty")
    store.bulk_insert_sessions(history_rows(datetime.now(timezone.utc), weeks=20, per_week=14))
    _a_failed_payment(store)
    page.goto(f"{server.url}/dashboard?range=90")
    wait_for_charts(page)
    review("dashboard")
    for tab in ("Sessions", "Offers", "Reasons", "Payments and emails"):
        page.get_by_role("navigation", name="Retention dashboard").get_by_role("link", name=tab).click()
        wait_for_charts(page)
        review(f"dashboard-{tab.split()[0].lower()}")
    page.goto(f"{server.url}/dashboard/sessions?from=2025-01-01&to={datetime.now(timezone.utc).date()}&outcome=canceled&page=2")
    review("dashboard-sessions-custom-range-filtered")
    page.goto(f"{server.url}/dashboard?from=2026-13-01")
    review("dashboard-bad-dates")
    page.goto(f"{server.url}/dashboard/attention")
    review("attention")
    if page.get_by_role("button", name=re.compile("Mark handled")).count():
        page.get_by_role("button", name=re.compile("Mark handled")).first.click()
        review("attention-handled")
    page.goto(f"{server.url}/dashboard/experiments")
    review("experiments")
    page.goto(f"{server.url}/dashboard/deliveries")
    review("deliveries-empty")
    import sqlalchemy as sa

    from cancel_flow.models import OutboxDelivery
    with store.engine.begin() as connection:
        connection.execute(sa.insert(OutboxDelivery.__table__).values(
            kind="webhook", target="https://hooks.example.com/a/rather/long/path/for/the/coach/automation?token=abc",
            event_id="evt_0123456789abcdef0123456789", event_type="session.canceled", payload="{}", status="failed",
            attempts=3, last_status_code=500, last_error="500 Internal Server Error from the receiving end"))
    page.goto(f"{server.url}/dashboard/deliveries")
    review("deliveries")
    coach_pages_of_the_account(page, review, server, store, context.browser, width)
    review.finish()


def coach_pages_of_the_account(page, review, server, store, browser, width):  # noqa: F811
    """Integrations, team, Stripe, audit, and the pages of invitations, resets and refusals."""
    import re

    from cancel_flow.passwords import hash_password
    from cancel_flow.store.coaches import CoachStore

    page.goto(f"{server.url}/dashboard/integrations")
    review("integrations")
    page.get_by_label("Name (the app or automation that uses it)").fill("Member app")
    page.get_by_role("button", name="Make the key").click()
    review("integrations-key-made")
    page.get_by_label("Address (https://…)").fill("http://127.0.0.1:9/a/rather/long/path/for/the/coach/automation")
    page.get_by_role("button", name="Add the webhook").click()
    review("integrations-webhook-added")
    page.get_by_role("button", name=re.compile("Send a test event")).click()
    page.wait_for_url("**done=tested**")
    review("integrations-test-sent")
    page.get_by_label("Client's email").fill("nobody@example.com")
    page.get_by_role("button", name="Find their links").click()
    review("integrations-client-links")

    page.goto(f"{server.url}/dashboard/team")
    review("team")
    page.get_by_label("Their email").fill("new.editor@example.com")
    page.get_by_role("button", name="Send the invitation").click()
    review("team-invited")
    invitation = page.locator("#invite-link").input_value()

    page.goto(f"{server.url}/dashboard/stripe")
    review("stripe")
    page.get_by_role("button", name="Set up Stripe").click()
    review("stripe-set-up")
    server.server.config.app.state.stripe_check_timeouts = {"events_timeout": 5, "delivery_timeout": 5}
    page.get_by_role("button", name="Check now").click()
    page.get_by_text("Last run").wait_for(timeout=60000)
    review("stripe-checked")
    page.get_by_role("button", name="Roll the signing secret").click()
    review("stripe-rolled")

    page.goto(f"{server.url}/dashboard/audit")
    review("audit")

    CoachStore(store.engine).add("viewer@example.com", hash_password(COACH_PASSWORD), "viewer")
    other = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True, is_mobile=width < 600)
    visitor = other.new_page()
    visitors_review = Review(visitor, width, "coach-visitor-")
    visitor.goto(invitation)
    visitors_review("invitation")
    visitor.goto(f"{server.url}/dashboard/invite/not-a-real-token")
    visitors_review("invitation-gone")
    visitor.goto(f"{server.url}/dashboard/password-reset")
    visitors_review("password-reset")
    visitor.goto(f"{server.url}/dashboard/login")
    visitor.get_by_label("Email").fill("viewer@example.com")
    visitor.get_by_label("Password").fill(COACH_PASSWORD)
    visitor.get_by_role("button", name="Sign in").click()
    visitor.wait_for_url(f"{server.url}/dashboard")
    visitor.goto(f"{server.url}/dashboard/team")
    visitors_review("not-for-your-role")
    visitor.goto(f"{server.url}/dashboard/integrations")
    visitors_review("integrations-as-viewer")
    review.problems.extend(visitors_review.problems)
    other.close()


def _a_failed_payment(store) -> None:
    """A payment that failed two days ago and is still unpaid, with its first email sent: the attention list's first row."""
    import sqlalchemy as sa

    from cancel_flow.models import BillingEmail, InvoiceRecord
    failed = datetime.now(timezone.utc) - timedelta(days=2)
    with store.engine.begin() as connection:
        connection.execute(sa.insert(InvoiceRecord.__table__).values(
            id="in_screens", customer_id="cus_demo00001", subscription_id="sub_demo00001", status="open",
            billing_reason="subscription_cycle", currency="usd", subtotal=4900, total_discount=0, amount_due=4900,
            amount_paid=0, attempt_count=1, created=failed, first_failed_at=failed, event_created=0, updated_at=failed,
            failure_message="Your card has insufficient funds.", card_brand="visa", card_last4="4242"))
        connection.execute(sa.insert(BillingEmail.__table__).values(
            key="payment_failed:in_screens:0", kind="payment_failed", customer_id="cus_demo00001",
            email="client1@example.com", invoice_id="in_screens", subscription_id="sub_demo00001", step=0, status="sent",
            attempts=1, created_at=failed, sent_at=failed))


@pytest.mark.parametrize("width", [360, 1280])
def test_chart_text_is_at_least_11_px_as_shown(width, browser, live_server, store, coach, screens_offers):  # noqa: F811
    """The charts' smallest text, scaled as the page shows the image, is at least 11 px."""
    from cancel_flow.demo import history_rows

    store.bulk_insert_sessions(history_rows(datetime.now(timezone.utc), weeks=10, per_week=10))
    server = live_server(offers_path=screens_offers)
    context = browser.new_context(viewport={"width": width, "height": 900}, is_mobile=width < 600)
    page = context.new_page()
    coach_signs_in(page, server.url)
    wait_for_charts(page)
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    for image in page.locator("img.chart").element_handles():
        source, shown = image.evaluate("img => [img.currentSrc, img.getBoundingClientRect().width]")
        svg = httpx.get(source, cookies=cookies).text
        drawn = float(re.search(r'viewBox="0 0 ([\d.]+) ', svg).group(1))
        smallest = min(float(size) for size in re.findall(r'font-size="([\d.]+)"', svg))
        assert smallest * shown / drawn >= 11, (source, smallest, shown, drawn)
        if width == 360:
            assert "size=narrow" in source
    context.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_every_settings_page_and_the_preview_fit_and_pass_axe(width, browser, live_server, store, coach,  # noqa: F811
                                                              screens_offers, catalogue, history):
    from tests.test_settings_pages import png

    now = datetime.now(timezone.utc)
    for days_ago in range(1, 30, 3):
        history(now - timedelta(days=days_ago), "canceled", offers=["half-off-3-payments", "lite"])
    history(now - timedelta(days=2), "saved_discount", offers=["half-off-3-payments"], chosen="half-off-3-payments",
            percent=50, months=3, decided=now - timedelta(days=2))
    catalogue.subscription(catalogue.customer(email="maya@example.com", name="Maya Lopez"))
    server = live_server(offers_path=screens_offers, timezone="Europe/Paris")
    context = browser.new_context(viewport={"width": width, "height": 900}, bypass_csp=True, is_mobile=width < 600)
    page = context.new_page()
    review = Review(page, width, "settings-")
    coach_signs_in(page, server.url)
    page.goto(f"{server.url}/dashboard/settings")
    review("overview")
    page.goto(f"{server.url}/dashboard/settings/brand")
    review("brand")
    page.get_by_role("textbox", name="Colour").fill("#facc15")
    page.get_by_role("button", name="Save brand").click()
    review("brand-colour-refused")
    page.goto(f"{server.url}/dashboard/settings/brand")
    page.set_input_files("#logo", files=[{"name": "logo.png", "mimeType": "image/png", "buffer": png(48, 48)}])
    page.get_by_role("button", name="Upload logo").click()
    review("brand-logo-uploaded")
    page.goto(f"{server.url}/dashboard/settings/brand")
    page.set_input_files("#logo", files=[{"name": "logo.png", "mimeType": "image/svg+xml",
                                          "buffer": b'<svg xmlns="http://www.w3.org/2000/svg"/>'}])
    page.get_by_role("button", name="Upload logo").click()
    review("brand-logo-refused")
    page.goto(f"{server.url}/dashboard/settings/offers")
    review("offers")
    page.locator("#offer-pause").get_by_role("button", name="Turn off").click()
    review("offers-one-turned-off")
    page.goto(f"{server.url}/dashboard/settings/offers/edit/half-off-3-payments")
    review("offer-edit")
    page.get_by_role("textbox", name="Payments discounted").fill("40")
    page.get_by_role("button", name="Save offer").click()
    review("offer-refused")
    page.get_by_role("textbox", name="Payments discounted").fill("2")
    page.get_by_role("button", name="Preview", exact=True).click()
    review("offer-draft-preview")
    page.goto(f"{server.url}/dashboard/settings/offers/new?kind=contact")
    review("offer-new-contact")
    page.goto(f"{server.url}/dashboard/settings/experiments")
    review("experiments-none")
    page.get_by_role("textbox", name="Name", exact=True).fill("pause-vs-discount")
    page.locator("input[name=arm1_offer_half-off-3-payments]").check()
    page.get_by_role("button", name="Start the experiment").click()
    review("experiments-one")
    page.get_by_role("textbox", name="Name", exact=True).fill("Second One")
    page.get_by_role("button", name="Start the experiment").click()
    review("experiments-refused")
    page.goto(f"{server.url}/dashboard/settings/emails")
    review("emails")
    page.goto(f"{server.url}/dashboard/settings/alerts")
    page.get_by_role("textbox", name="Slack incoming webhook URL").fill("https://hooks.slack.com/services/T000/B000/XXXX")
    page.get_by_role("button", name="Save alerts").click()
    page.get_by_role("button", name="Send a test alert").click()
    review("alerts-tested")
    page.get_by_role("textbox", name="Email", exact=True).fill("not an email")
    page.get_by_role("button", name="Save alerts").click()
    review("alerts-refused")
    page.goto(f"{server.url}/dashboard/settings/history?from=1&to=5")
    review("history")
    page.goto(f"{server.url}/dashboard/settings/winback")
    review("winback-none")
    page.locator("#step1_days_after").fill("-5")
    page.get_by_role("button", name="Save win-back").click()
    review("winback-refused")
    page.locator("#step1_days_after").fill("30")
    page.locator("#step1_offer").select_option("half-off-3-payments")
    page.get_by_role("button", name="Save win-back").click()
    review("winback-one-step")
    page.goto(f"{server.url}/dashboard/settings/compliance")
    review("compliance")
    page.get_by_role("textbox", name="Days after the subscription starts").fill("7")
    page.get_by_role("button", name="Save compliance").click()
    review("compliance-refused")
    page.goto(f"{server.url}/dashboard/preview")
    review("preview")
    page.goto(f"{server.url}/dashboard/preview?plan=yearly&amount=490.00&currency=usd")
    review("preview-sample-yearly")
    page.goto(f"{server.url}/dashboard/preview?email=maya@example.com&reason=too_expensive")
    review("preview-client")
    context.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_every_winback_page_fits_and_passes_axe(width, browser, live_server, screens_offers, catalogue, signer,  # noqa: F811
                                                 stripe_client, store):
    """"Keep my plan" (scheduled, then kept), the comeback page with an offer, Stripe's test Checkout page, the
    welcome page, and a used comeback link."""
    from cancel_flow.clock import utc_now
    from cancel_flow.config.schema import WinbackStep
    from cancel_flow.store import winback as records

    screens_offers.write_text(screens_offers.read_text() + textwrap.dedent("""
        [[offer]]
        id = "comeback-half"
        kind = "discount"
        percent_off = 50
        payments = 3
        title = "Come back for half price"
        comeback_only = true
    """))
    server = live_server(offers_path=screens_offers)
    context = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True, is_mobile=width < 600)
    page = context.new_page()
    review = Review(page, width, "winback-")

    sub = catalogue.subscription(cancel_at_period_end=True)
    page.goto(f"{server.url}/keep/{signer.keep_token(sub.customer, sub.id, 86400 * 40)}")
    review("keep")
    page.get_by_role("button", name="Keep my plan").click()
    page.wait_for_load_state("load")
    review("keep-kept")

    price = catalogue.price()
    customer = catalogue.customer(email="gone@example.com")
    ended = {"subscription_id": "sub_ScreensEnded", "customer_id": customer.id, "plan_name": "Coaching Plan",
             "price_id": price.id, "product_id": price.product, "unit_amount": 4900, "quantity": 1, "currency": "usd",
             "interval": "month", "interval_count": 1, "monthly_amount": 4900, "ended_at": utc_now(),
             "stripe_feedback": "too_expensive", "stripe_reason": "cancellation_requested"}
    records.record_ended(store.engine, ended)
    client = records.ended(store.engine, "sub_ScreensEnded")
    with store.engine.begin() as connection:
        records.write_step(connection, records.step_row(client, WinbackStep(1, 30, (), "comeback-half"), "winback:screens:1",
                                                        offer_id="comeback-half", percent_off=50.0, payments=3,
                                                        price_id=price.id, unit_amount=4900))
    url = f"{server.url}/comeback/{signer.comeback_token(customer.id, 1)}"
    page.goto(url)
    review("comeback")
    page.get_by_role("button", name="Come back").click()
    page.wait_for_url(re.compile(r".*/c/pay/cs_test_.*"))
    review("stripe-checkout")
    page.get_by_role("button", name="Subscribe").click()
    page.wait_for_url(re.compile(r".*/welcome\?session_id=.*"))
    review("welcome")
    page.goto(url)
    review("comeback-used")
    context.close()


@pytest.mark.parametrize("width", [360, 1280])
def test_every_compliance_page_fits_and_passes_axe(width, browser, live_server, catalogue, signer, emulator, store,  # noqa: F811
                                                   coach):  # noqa: F811
    import sqlalchemy as sa

    from cancel_flow.models import Declaration

    emulator.post("/_emulator/account", json={"country": "DE"})  # the cancel button's default: on in Germany
    server = live_server()
    context = browser.new_context(viewport={"width": width, "height": 800}, bypass_csp=True, is_mobile=width < 600)
    page = context.new_page()
    review = Review(page, width, "compliance-")
    customer = catalogue.customer(email="lena@example.com", name="Lena Weber", address={"country": "DE"})
    sub = catalogue.subscription(customer)
    token, _ = signer.cancel_token(sub.customer, sub.id)
    page.goto(f"{server.url}/cancel/{token}")
    review("reason-with-withdrawal")
    page.get_by_role("link", name="Withdraw from contract here").click()
    review("withdraw-form")
    page.get_by_role("button", name="Confirm withdrawal").click()
    page.wait_for_url(f"{server.url}/cancel/{token}/done")
    review("withdrawn")
    page.goto(f"{server.url}/")
    review("shared-link-with-withdrawal-and-cancel-button")
    page.get_by_role("link", name="Withdraw from contract here").click()
    review("shared-withdraw-form")
    page.get_by_label("Your name").fill("Ann")
    page.get_by_label("Email you subscribed with").fill("ann@example.com")
    page.get_by_role("button", name="Confirm withdrawal").click()
    review("withdrawal-received")
    page.goto(f"{server.url}/cancel-contract")
    review("cancel-contract-form")
    page.get_by_role("radio", name="Extraordinary cancellation").check()
    page.get_by_role("button", name="Cancel now").click()
    review("cancel-contract-missing")
    catalogue.subscription(catalogue.customer(email="max@example.com", name="Max"))
    page.get_by_label("Your name").fill("Max")
    page.get_by_label("Email you subscribed with").fill("max@example.com")
    page.locator("input[value=ordinary]").check()
    page.get_by_role("button", name="Cancel now").click()
    review("cancellation-received")
    import time

    table = Declaration.__table__
    deadline = time.monotonic() + 15
    while True:  # decided after the page answered, as on the shared page it always is
        with store.engine.connect() as connection:
            declaration = connection.execute(sa.select(table.c.id).where(table.c.email == "max@example.com",
                                                                         table.c.status == "accepted")).scalar()
        if declaration or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    page.goto(f"{server.url}/declarations/{signer.declaration_token(declaration, 86400)}/undo")
    review("this-wasnt-me")
    page.get_by_role("button", name="This wasn't me — keep my plan").click()
    review("plan-kept")
    coach_signs_in(page, server.url)
    page.goto(f"{server.url}/dashboard/compliance")
    review("dashboard-compliance")
    review.finish()


def test_every_client_page_in_every_language_fits_360_px_and_passes_axe(browser, live_server, screens_offers,  # noqa: F811
                                                                        catalogue, signer, stripe_client, store):
    """German runs long: each language shipped besides English (which the tests above see) on each kind of client
    page, in one browser, at 360 px: the cancel flow, the shared link, win-back's keep and comeback pages, the
    withdrawal form and the cancel button's form."""
    import httpx

    from cancel_flow.emails.tokens import unsubscribe_token
    from cancel_flow.i18n import LANGUAGES
    from tests.conftest import SECRET
    from tests.helpers import csrf_of

    screens_offers.write_text(screens_offers.read_text() + textwrap.dedent("""
        [[offer]]
        id = "comeback-half"
        kind = "discount"
        percent_off = 50
        payments = 3
        title = "Come back for half price"
        comeback_only = true

        [compliance]
        cancel_button = true
    """))
    server = live_server(offers_path=screens_offers)
    http = httpx.Client(base_url=server.url, timeout=10)

    def link(reason: str | None = None, accept: dict | None = None, **subscription) -> str:
        sub = catalogue.subscription(**subscription)
        url = f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}"
        if reason:
            http.post(f"{url}/reason", data={"csrf_token": csrf_of(http.get(url).text), "reason": reason})
        if accept:
            http.post(f"{url}/accept", data={"csrf_token": csrf_of(http.get(url).text), **accept})
            return f"{url}/done"
        return url

    canceled = link("switched_service")
    portal = http.post(f"{canceled}/cancel", data={"csrf_token": csrf_of(http.get(canceled).text)})
    httpx.post(portal.headers["location"] + "/cancel", data={"reason": "unused"})
    discounted = catalogue.subscription()
    token = signer.cancel_token(discounted.customer, discounted.id)[0]
    http.post(f"/cancel/{token}/reason", data={"csrf_token": csrf_of(http.get(f"/cancel/{token}").text),
                                               "reason": "too_expensive"})
    http.post(f"/cancel/{token}/accept", data={"csrf_token": csrf_of(http.get(f"/cancel/{token}").text),
                                               "offer": "half-off-3-payments"})
    fixed = catalogue.subscription()
    stripe_client.v1.subscriptions.update(fixed.id, params={"cancel_at": fixed["items"].data[0].current_period_end
                                                            + 60 * 86400})
    ended = catalogue.subscription()
    stripe_client.v1.subscriptions.cancel(ended.id)
    scheduled = catalogue.subscription(cancel_at_period_end=True)
    pages = {
        "reason": link(),
        "offers-discount-and-switch": link("too_expensive"),
        "offers-pause-and-free-time": link("unused"),
        "offers-contact": link("missing_features"),
        "offers-none-fit": link("switched_service"),
        "done-discount": f"/cancel/{token}/done",
        "done-switch": link("too_expensive", {"offer": "lite"}),
        "done-pause": link("unused", {"offer": "pause", "payments": "3"}),
        "done-free-time": link("other", {"offer": "month-free"}),
        "done-contact": link("missing_features", {"offer": "talk"}),
        "done-canceled": f"{canceled}/done",
        "already-decided": f"/cancel/{signer.cancel_token(discounted.customer, discounted.id)[0]}",
        "scheduled": link(cancel_at_period_end=True),
        "fixed-end-date": f"/cancel/{signer.cancel_token(fixed.customer, fixed.id)[0]}",
        "already-canceled": f"/cancel/{signer.cancel_token(ended.customer, ended.id)[0]}",
        "link-not-valid": "/cancel/not-a-real-link",
        "not-found": "/nowhere",
        "shared-link": "/",
        "unsubscribe": f"/emails/unsubscribe/{unsubscribe_token(SECRET, fixed.customer, 'discount_ending')}",
        "card-updated": f"/billing/{signer.billing_token(fixed.customer)[0]}/updated",
        "keep": f"/keep/{signer.keep_token(scheduled.customer, scheduled.id, 86400 * 40)}",
        "comeback": _comeback_path(catalogue, signer, store),
        "withdraw": "/withdraw",
        "cancel-contract": "/cancel-contract",
    }
    http.close()
    context = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True, is_mobile=True)
    page = context.new_page()
    review = Review(page, 360, "languages-")
    errors = {"link-not-valid": 400, "not-found": 404}  # every other page is the one it names, not an error page
    for language in [code for code in LANGUAGES if code != "en"]:
        for name, path in pages.items():
            answer = page.goto(f"{server.url}{path}{'&' if '?' in path else '?'}lang={language}")
            assert answer.status == errors.get(name, 200), (language, name, answer.status)
            assert page.locator("html").get_attribute("lang") == language.replace("_", "-"), (language, name)
            review(f"{language}-{name}")
    review.finish()


def _comeback_path(catalogue, signer, store) -> str:
    """A client who left with a comeback step sent (the coach's comeback offer): their comeback page."""
    from cancel_flow.clock import utc_now
    from cancel_flow.config.schema import WinbackStep
    from cancel_flow.store import winback as records

    price = catalogue.price()
    customer = catalogue.customer(email="gone@example.com")
    records.record_ended(store.engine, {
        "subscription_id": "sub_LanguagesEnded", "customer_id": customer.id, "plan_name": "Coaching Plan",
        "price_id": price.id, "product_id": price.product, "unit_amount": 4900, "quantity": 1, "currency": "usd",
        "interval": "month", "interval_count": 1, "monthly_amount": 4900, "ended_at": utc_now(),
        "stripe_feedback": "too_expensive", "stripe_reason": "cancellation_requested"})
    client = records.ended(store.engine, "sub_LanguagesEnded")
    with store.engine.begin() as connection:
        records.write_step(connection, records.step_row(client, WinbackStep(1, 30, (), "comeback-half"),
                                                        "winback:languages:1", offer_id="comeback-half",
                                                        percent_off=50.0, payments=3, price_id=price.id,
                                                        unit_amount=4900))
    return f"/comeback/{signer.comeback_token(customer.id, 1)}"
