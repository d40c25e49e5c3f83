"""`cancel-flow stripe check` against the emulator: a set-up account passes, each broken part fails with its fix."""

import asyncio
import os
import re
import subprocess
import sys
from dataclasses import replace
from xml.etree import ElementTree

import httpx
import pytest

from cancel_flow.setup import run_stripe_setup
from cancel_flow.stripe_check import is_public_https, run_stripe_check
from cancel_flow.stripe_gateway import StripeSetup
from cancel_flow.web.app import create_app
from tests.conftest import ROOT, LiveServer, configure_stripe_test_mode, contract_target, stripe_test_mode_client

RESTRICTED = "rk_test_" + "c" * 24 + "4321"


def after_setup(settings):
    """The settings with the values `cancel-flow stripe setup` stored, as if they were set in the environment."""
    from cancel_flow.store import make_engine
    from cancel_flow.stripe_connection import effective_settings, read_connection

    asyncio.run(run_stripe_setup(settings))
    engine = make_engine(settings.database_url)
    try:
        return effective_settings(settings, read_connection(engine, settings))
    finally:
        engine.dispose()


@pytest.fixture
def deploy(settings):
    """The service on a real port, its account set up by `stripe setup` (then changed by `change`, which
    gets and returns the settings), and the settings it serves with."""
    servers = []

    def start(change=lambda s: s):
        made = {}

        def make_app(url):
            made["settings"] = change(after_setup(replace(settings, base_url=url, return_url=f"{url}/account")))
            return create_app(made["settings"])

        servers.append(LiveServer(make_app))
        return made["settings"]

    yield start
    for server in servers:
        server.stop()


def check(settings, **timeouts):
    lines, ok = run_stripe_check(settings, on_line=print, **{"events_timeout": 5, "delivery_timeout": 10, **timeouts})
    return {line.split(":", 1)[0][6:]: line for line in lines[:-1]}, lines[-1], ok


def assert_left_nothing(stripe_client):
    assert stripe_client.v1.customers.list().data == []
    assert stripe_client.v1.test_helpers.test_clocks.list().data == []
    assert stripe_client.v1.subscriptions.list(params={"status": "all"}).data == []
    assert not [c.id for c in stripe_client.v1.coupons.list(params={"limit": 100}).data if c.id.startswith("cancel-flow-check")]


def test_a_set_up_account_passes_every_check_and_the_check_leaves_nothing_behind(deploy, stripe_client, store):
    settings = deploy()
    results, last, ok = check(settings)
    assert ok is True and last.startswith("OK: ") and "0 failed" in last
    assert [line for line in results.values() if not line.startswith("PASS ")] == []
    assert set(results) >= {"API key", "base URL", "read customers", "read subscriptions", "read products and prices",
                            "read coupons", "portal configuration", "webhook endpoint", "webhook events",
                            "webhook API version", "webhook secret", "write coupons", "coupons of offer 'half-off-3-payments'",
                            "read a subscription", "discount", "pause", "portal session", "cancellation",
                            "keep subscription", "subscription ended", "events", "webhook delivery", "clean-up"}
    assert "found in its database" in results["webhook delivery"]
    assert "customer.subscription.deleted" in results["events"]
    assert_left_nothing(stripe_client)


def test_a_key_without_the_portal_permission_fails_and_names_the_permission(deploy, stripe_client, emulator):
    emulator.post("/_emulator/keys", json={"key": RESTRICTED, "deny": ["POST /v1/billing_portal/sessions"]}).raise_for_status()
    try:
        settings = deploy()
        results, last, ok = check(replace(settings, stripe_api_key=RESTRICTED))
    finally:
        emulator.delete("/_emulator/keys")
    assert ok is False and last.startswith("FAILED: ") and "1 failed" in last
    line = results["portal session"]
    assert line.startswith("FAIL ") and "403" in line and "'Customer portal: Write'" in line
    assert "To fix: edit the restricted key in Stripe's dashboard" in line
    assert results["discount"].startswith("PASS") and results["cancellation"].startswith("PASS")
    # the promise's billing model and Stripe's create_preview agree on the discounted next payment
    assert results["promise vs Stripe's preview"].startswith("PASS") and "900 USD" in results["promise vs Stripe's preview"]
    assert "restricted key" in results["API key"] and "…4321" in results["API key"] and RESTRICTED not in "".join(results.values())
    assert_left_nothing(stripe_client)


def test_a_portal_configuration_with_cancellation_off_fails(deploy, stripe_client):
    def cancellation_off(settings):
        stripe_client.v1.billing_portal.configurations.update(settings.stripe_portal_configuration, params={
            "features": {"subscription_cancel": {"enabled": False}}})
        return settings

    settings = deploy(cancellation_off)
    results, _, ok = check(settings)
    assert ok is False
    line = results["portal configuration"]
    assert line.startswith("FAIL ") and "cancellation is turned off" in line and settings.stripe_portal_configuration in line
    assert "To fix: run `cancel-flow stripe setup`" in line
    portal = results["portal session"]
    assert portal.startswith("FAIL ") and "To fix: run `cancel-flow stripe setup`" in portal
    assert_left_nothing(stripe_client)


def test_a_webhook_endpoint_without_api_version_fails_with_the_way_to_replace_it(deploy, stripe_client):
    def endpoint_without_version(settings):
        url = f"{settings.base_url}/webhooks/stripe"
        for endpoint in stripe_client.v1.webhook_endpoints.list().data:
            stripe_client.v1.webhook_endpoints.delete(endpoint.id)
        created = stripe_client.v1.webhook_endpoints.create(params={
            "url": url, "enabled_events": StripeSetup.WEBHOOK_EVENTS})
        return replace(settings, stripe_webhook_secret=created.secret)

    settings = deploy(endpoint_without_version)
    results, _, ok = check(settings)
    assert ok is False
    line = results["webhook API version"]
    assert line.startswith("FAIL ") and "account's default version" in line
    assert "`cancel-flow stripe setup --recreate-webhook`" in line and "roll the signing secret on /dashboard/stripe" in line
    assert results["webhook endpoint"].startswith("PASS") and results["webhook delivery"].startswith("PASS")
    assert [name for name, line in results.items() if line.startswith("FAIL")] == ["webhook API version"]


def test_a_missing_webhook_endpoint_fails_and_delivery_is_not_claimed(deploy, stripe_client):
    def no_endpoint(settings):
        for endpoint in stripe_client.v1.webhook_endpoints.list().data:
            stripe_client.v1.webhook_endpoints.delete(endpoint.id)
        return settings

    settings = deploy(no_endpoint)
    results, _, ok = check(settings)
    assert ok is False
    line = results["webhook endpoint"]
    assert line.startswith("FAIL ") and f"no webhook endpoint sends events to {settings.base_url}/webhooks/stripe" in line
    assert "To fix: run `cancel-flow stripe setup`" in line
    assert results["webhook delivery"].startswith("WARN") and "not checked" in results["webhook delivery"]
    assert_left_nothing(stripe_client)


def test_a_service_that_does_not_receive_the_webhooks_fails_delivery(deploy, stripe_client):
    settings = deploy(lambda s: replace(s, stripe_webhook_secret="whsec_" + "x" * 32))  # not the endpoint's secret
    results, _, ok = check(settings, delivery_timeout=2)
    assert ok is False
    line = results["webhook delivery"]
    assert line.startswith("FAIL ") and "0 of" in line and "STRIPE_WEBHOOK_SECRET is this endpoint's signing secret" in line


@pytest.mark.parametrize("url, public", [
    ("https://cancel.example.com", True), ("https://203.0.113.9", False), ("https://8.8.8.8", True),
    ("http://cancel.example.com", False), ("https://localhost:8000", False), ("https://127.0.0.1", False),
    ("https://10.0.0.5", False), ("https://cancel.internal", False), ("https://intranet", False),
])
def test_public_https_addresses(url, public):
    assert is_public_https(url) is public


# `make test-stripe`: the contract tests' switch to Stripe test mode, checked without reaching Stripe.

CONTRACT = ["tests/test_emulator.py", "tests/test_emulator_billing.py", "tests/test_emulator_rules.py",
            "tests/test_emulator_money.py"]
FAKE_KEY = "sk_test_" + "f" * 20 + "9999"


def pytest_in_a_child(*args: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "STRIPE_TEST_SECRET_KEY": FAKE_KEY}
    # a dead proxy: should anything try to reach Stripe, it fails instead
    environment.update(HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="")
    return subprocess.run([sys.executable, "-m", "pytest", *args, "-p", "no:cacheprovider"], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=300)


def test_stripe_test_mode_runs_the_contract_tests_at_stripe_and_skips_the_emulator_only_ones_saying_why(tmp_path):
    report = tmp_path / "report.xml"
    run = pytest_in_a_child(*CONTRACT, "--stripe-test-mode", "--setup-only", f"--junitxml={report}")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    header = "Stripe contract tests: against Stripe test mode at https://api.stripe.com (STRIPE_TEST_SECRET_KEY sk_test_…9999)"
    assert run.stdout.count(header) == 2  # the header and the summary
    assert FAKE_KEY not in run.stdout
    assert "emulator_url" not in run.stdout  # no emulator is started
    skipped, at_stripe = {}, set()
    for case in ElementTree.parse(report).iter("testcase"):
        name = f"{case.get('classname').rsplit('.', 1)[-1]}::{case.get('name')}"
        skip = case.find("skipped")
        if skip is None:
            at_stripe.add(name)
        else:
            skipped[name] = skip.get("message").removeprefix("emulator only: ")
    assert skipped["test_emulator::test_pause_collection_sets_clears_and_resumes_with_the_clock"] == \
        "uses the emulator's controls (/_emulator/…)"
    assert skipped["test_emulator::test_signed_webhooks_verify_with_construct_event_and_carry_previous_attributes"] == \
        "has webhooks delivered to a loopback receiver, which Stripe can't reach"
    assert skipped["test_emulator_rules::test_a_restricted_key_without_a_permission_is_refused_with_403"] == \
        "marks a key's permissions with /_emulator/keys"
    assert skipped["test_emulator_billing::test_the_default_portal_configuration_is_the_dashboards_not_the_first_made_through_the_api"] == \
        "needs an account without a saved portal configuration"
    assert skipped["test_emulator_money::test_the_retries_control_refuses_nonsense"] == "uses the emulator's controls (/_emulator/…)"
    assert skipped["test_emulator::test_portal_payment_method_update_flow_changes_the_default_card"] == \
        "drives the emulator's hosted portal page"
    assert {"test_emulator_billing::test_void_pause_skips_exactly_the_renewals_before_resumes_at",
            "test_emulator_rules::test_list_expand_of_five_levels_is_refused_and_four_are_served",
            "test_emulator_billing::test_creation_and_each_renewal_make_a_paid_invoice_on_month_end_dates",
            "test_emulator_money::test_pay_charges_the_payment_method_it_is_given",
            "test_emulator_money::test_a_card_is_attached_then_made_the_default_and_an_unattached_one_is_refused"} <= at_stripe
    print(f"{len(at_stripe)} contract tests at Stripe, {len(skipped)} emulator only")


class PytestOptions:
    """pytest's config as `configure_stripe_test_mode` reads it."""

    def __init__(self, stripe_test_mode: bool):
        self.stripe_test_mode = stripe_test_mode

    def getoption(self, name, default=None):
        return self.stripe_test_mode if name == "--stripe-test-mode" else default


def test_without_the_flag_the_contract_tests_say_they_run_against_the_emulator_and_the_flag_needs_a_test_key(monkeypatch):
    monkeypatch.setenv("STRIPE_TEST_SECRET_KEY", FAKE_KEY)
    config = PytestOptions(False)
    configure_stripe_test_mode(config)
    assert config.stripe_test_key is None
    assert contract_target(config) == ("Stripe contract tests: against the local emulator only "
                                       "(`make test-stripe` runs them against Stripe test mode)")
    monkeypatch.delenv("STRIPE_TEST_SECRET_KEY")
    assert "set STRIPE_TEST_SECRET_KEY and run `make test-stripe`" in contract_target(config)
    with pytest.raises(pytest.UsageError, match="--stripe-test-mode needs STRIPE_TEST_SECRET_KEY"):
        configure_stripe_test_mode(PytestOptions(True))
    monkeypatch.setenv("STRIPE_TEST_SECRET_KEY", "sk_live_" + "x" * 24)
    with pytest.raises(pytest.UsageError, match="must be a test-mode key"):
        configure_stripe_test_mode(PytestOptions(True))


def test_the_stripe_test_mode_client_talks_to_stripe_with_run_unique_idempotency_keys_and_notes_what_it_creates():
    seen = []

    def stripe_api(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "cus_made", "object": "customer"})

    making = stripe_test_mode_client(FAKE_KEY)
    client = next(making)
    http = client._requestor._client
    http._client = httpx.Client(transport=httpx.MockTransport(stripe_api))  # the transport seam: nothing leaves
    client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": "fixed"})
    client.v1.customers.retrieve("cus_made")
    assert [(r.method, r.url.host, r.url.path) for r in seen] == [
        ("POST", "api.stripe.com", "/v1/customers"), ("GET", "api.stripe.com", "/v1/customers/cus_made")]
    assert seen[0].headers["Idempotency-Key"] == f"{http.run_id}-fixed" and http.run_id.startswith("contract-")
    assert http.created == [("/v1/customers", "cus_made")]
    http.created.clear()  # nothing to delete: closing makes no call
    making.close()
    assert len(seen) == 2
