import inspect
import json
import os
import signal
import threading
import secrets
from datetime import datetime, timezone
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa
import stripe
from starlette.testclient import TestClient

from bench.harness import free_port, wait_for
from cancel_flow.links import LinkSigner
from cancel_flow.models import CancelSession, SessionOffer, SQLModel
from tests.helpers import load_config
from cancel_flow.settings import Settings
from cancel_flow.store import Store, make_engine, migrate
from tests.helpers import stopped_afterwards

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk_test_cancelflow"
WHSEC = "whsec_ops_" + "b" * 32
SECRET = "test-secret-key-0123456789abcdef"


@pytest.fixture(scope="session")
def emulator_url():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cancel_flow", "stripe-emulator", "--port", str(port)],
                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_emulator/clock", timeout=20)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def pytest_configure(config):
    config.addinivalue_line("markers", "no_portal_configuration: the emulator's account starts without a saved portal configuration")
    config.addinivalue_line("markers", "emulator_only(reason): a Stripe contract test that `make test-stripe` runs against the emulator only")
    configure_stripe_test_mode(config)


# What `cancel-flow stripe setup` saves (cancel_flow/stripe_gateway.py): in test mode Stripe refuses portal
# sessions until a configuration is saved, so each test's account starts as if setup had run.
PORTAL_CONFIGURATION = {
    "business_profile[headline]": "Manage your subscription",
    "features[invoice_history][enabled]": "true", "features[payment_method_update][enabled]": "true",
    "features[subscription_cancel][enabled]": "true", "features[subscription_cancel][mode]": "at_period_end",
    "features[subscription_cancel][proration_behavior]": "none",
    "features[subscription_cancel][cancellation_reason][enabled]": "false",
    "features[subscription_cancel][cancellation_reason][options]": "", "metadata[cancel_flow]": "1",
}


# ... and the one it saves for billing links: card and invoices, no cancellation.
BILLING_PORTAL_CONFIGURATION = {
    "business_profile[headline]": "Your billing",
    "features[invoice_history][enabled]": "true", "features[payment_method_update][enabled]": "true",
    "features[subscription_cancel][enabled]": "false", "metadata[cancel_flow]": "billing",
}


@pytest.fixture
def emulator(emulator_url, request):
    """The emulator, emptied before each test (with the portal configurations `stripe setup` saves, named in the
    settings, unless the test is marked `no_portal_configuration`); a small client for its controls, with
    `portal_configuration` and `billing_portal_configuration` (their ids, or None)."""
    control = httpx.Client(base_url=emulator_url, timeout=10)
    control.delete("/_emulator/data").raise_for_status()
    control.portal_configuration = control.billing_portal_configuration = None
    if request.node.get_closest_marker("no_portal_configuration") is None:
        headers = {"Authorization": f"Bearer {TEST_KEY}"}
        made = control.post("/v1/billing_portal/configurations", data=PORTAL_CONFIGURATION, headers=headers)
        control.portal_configuration = made.raise_for_status().json()["id"]
        made = control.post("/v1/billing_portal/configurations", data=BILLING_PORTAL_CONFIGURATION, headers=headers)
        control.billing_portal_configuration = made.raise_for_status().json()["id"]
    yield control
    control.delete("/_emulator/faults")
    control.close()


@pytest.fixture
def stripe_client(request):
    """The real SDK, pointed at the emulator; in a `make test-stripe` run, a contract test's client is
    pointed at Stripe test mode instead (see the end of this file)."""
    key = request.config.stripe_test_key
    if key and is_contract_test(request.node):
        yield from stripe_test_mode_client(key)
        return
    request.getfixturevalue("emulator")
    yield stripe.StripeClient(TEST_KEY, base_addresses={"api": request.getfixturevalue("emulator_url")},
                              max_network_retries=0, http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=10))


POSTGRES_URL = os.environ.get("TEST_DATABASE_URL")
on_postgres = pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL (set TEST_DATABASE_URL)")


@pytest.fixture(scope="session")
def migrated_template(tmp_path_factory):
    """SQLite: a migrated file copied per test. PostgreSQL: one database for the run, built by Alembic."""
    if POSTGRES_URL:
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        name = f"cancel_flow_test_{secrets.token_hex(4)}"
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        return
    path = tmp_path_factory.mktemp("db") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    yield path


@pytest.fixture
def database_url(migrated_template, tmp_path):
    """A fresh database per test, built by Alembic: a copy of the migrated SQLite file, or the run's
    PostgreSQL database with every table emptied."""
    if POSTGRES_URL:
        engine = make_engine(migrated_template)
        with engine.begin() as connection:
            tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
            connection.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return migrated_template
    path = tmp_path / "cancel_flow.db"
    shutil.copy(migrated_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def settings(database_url, emulator_url, emulator):
    return Settings(
        database_url=database_url, secret_key=SECRET, env="production", base_url="http://testserver",
        return_url="http://testserver/account", offers_path=ROOT / "offers.toml",
        stripe_api_key=TEST_KEY, stripe_api_base=emulator_url, stripe_timeout=3, stripe_max_network_retries=1,
        stripe_portal_configuration=emulator.portal_configuration,
        stripe_billing_portal_configuration=emulator.billing_portal_configuration,
    )


@pytest.fixture
def store(settings):
    engine = make_engine(settings.database_url)
    yield Store(engine)
    engine.dispose()


@pytest.fixture
def signer(settings):
    return LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)


@pytest.fixture
def make_client(settings):
    """A client of its own app (settings overridden as asked), all on the one database; `client_address` is
    where its requests come from."""
    from cancel_flow.web.app import create_app

    def open_client(client_address: str = "testclient", raise_server_exceptions: bool | None = None, **overrides):
        if raise_server_exceptions is None:
            raise_server_exceptions = bool(os.environ.get("RAISE_SERVER_EXCEPTIONS"))
        client = TestClient(create_app(replace(settings, **overrides)), client=(client_address, 50000),
                            follow_redirects=False, raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        return client

    with stopped_afterwards(open_client, stop=lambda client: client.__exit__(None, None, None)) as make:
        yield make


@pytest.fixture
def client(make_client):
    return make_client()


class Catalogue:
    """Small factories for Stripe test data, created through the SDK."""

    def __init__(self, sdk: stripe.StripeClient):
        self.sdk = sdk
        self._prices = {}

    def price(self, interval: str = "month", amount: int = 4900, currency: str = "usd", name: str = "Coaching Plan"):
        key = (interval, amount, currency, name)
        if key not in self._prices:
            product = self.sdk.v1.products.create(params={"name": name})
            self._prices[key] = self.sdk.v1.prices.create(params={
                "product": product.id, "unit_amount": amount, "currency": currency,
                "recurring": {"interval": interval}})
        return self._prices[key]

    def customer(self, email: str = "client@example.com", name: str = "Casey Client", card: str = "pm_card_visa", **extra):
        return self.sdk.v1.customers.create(params={"email": email, "name": name, "payment_method": card,
                                                    "invoice_settings": {"default_payment_method": card}, **extra})

    def attach(self, customer, card: str):
        """A card attached to the customer, as Stripe's docs set cards up (POST /v1/payment_methods/{pm}/attach)."""
        return self.sdk.v1.payment_methods.attach(card, params={"customer": customer.id})

    def set_default_card(self, customer, card: str):
        """Attach `card` and make it the customer's default for invoices; the new payment method."""
        method = self.attach(customer, card)
        self.sdk.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": method.id}})
        return method

    def test_clock(self, frozen_time: int, name: str = "cancel-flow test"):
        """A Stripe test clock; customers made with `customer(test_clock=clock.id)` live on it."""
        return self.sdk.v1.test_helpers.test_clocks.create(params={"frozen_time": frozen_time, "name": name})

    def advance(self, clock_id: str, frozen_time: int, timeout: float = 30):
        """Advance a test clock and wait until it is `ready`, as against Stripe test mode."""
        self.sdk.v1.test_helpers.test_clocks.advance(clock_id, params={"frozen_time": frozen_time})
        deadline = time.monotonic() + timeout
        while (clock := self.sdk.v1.test_helpers.test_clocks.retrieve(clock_id)).status != "ready":
            assert clock.status == "advancing" and time.monotonic() < deadline, f"test clock {clock_id}: {clock.status}"
            time.sleep(0.5)
        return clock

    def settled_subscription(self, email: str = "client@example.com", **extra):
        """A monthly subscription that began a day ago, on a test clock standing at the present second: an offer
        accepted now is not in the second the subscription renewed or began (where Stripe's whole-second timestamps
        decide whether a coupon's last month covers a renewal)."""
        now = int(time.time())
        clock = self.test_clock(now - 86400)
        sub = self.subscription(self.customer(email=email, test_clock=clock.id), **extra)
        self.advance(clock.id, now)
        return self.sdk.v1.subscriptions.retrieve(sub.id)

    def subscription(self, customer=None, interval: str = "month", amount: int = 4900, currency: str = "usd", **extra):
        customer = customer or self.customer()
        price = self.price(interval, amount, currency)
        return self.sdk.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}], **extra})


def portal_configuration(stripe_client) -> str:
    """A portal configuration that cancels at period end, made through the API (never the account's default:
    that one is saved in Stripe's Dashboard), for tests that open portal sessions themselves."""
    return stripe_client.v1.billing_portal.configurations.create(params={
        "business_profile": {"headline": "Manage your subscription"},
        "features": {"invoice_history": {"enabled": True}, "payment_method_update": {"enabled": True},
                     "subscription_cancel": {"enabled": True, "mode": "at_period_end", "proration_behavior": "none"}}}).id


@pytest.fixture
def catalogue(stripe_client):
    return Catalogue(stripe_client)


@pytest.fixture
def offers():
    return load_config(ROOT / "offers.toml")


os.environ.setdefault("CANCEL_FLOW_ENV", "development")
os.environ.setdefault("CANCEL_FLOW_CHECK_PAGE_CACHE", "1")  # every client page found in the page cache is checked against a fresh render


class LiveServer:
    """The real app on a real port, served by uvicorn in a thread (for concurrency and the browser)."""

    def __init__(self, make_app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = make_app(self.url)
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        import threading

        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_server(settings):
    from cancel_flow.web.app import create_app

    def start(**overrides):
        return LiveServer(lambda url: create_app(replace(settings, base_url=url, **overrides)))

    with stopped_afterwards(start) as starting:
        yield starting


@pytest.fixture
def history(store):
    """Insert sessions as they would be after the flow and webhooks ran."""
    def add(created: datetime, outcome: str = "open", *, reason=None, currency="usd", price=4900, interval="month",
            offers=(), chosen=None, percent=None, months=None, decided=None, canceled=None, comment=None,
            email="client@example.com", **columns):
        monthly = price // 12 if interval == "year" else price
        row = dict(nonce=secrets.token_hex(8), customer_id="cus_" + secrets.token_hex(4), subscription_id="sub_" + secrets.token_hex(4),
                   customer_email=email, plan_name="Coaching", price_amount=price, interval=interval, interval_count=1,
                   monthly_amount=monthly, currency=currency, reason=reason, comment=comment, offers_shown=list(offers),
                   chosen_offer=chosen, offer_kind=("discount" if percent else "pause") if chosen else None,
                   discount_percent=percent, discount_months=months, outcome=outcome, created_at=created,
                   updated_at=datetime.now(timezone.utc), decided_at=decided, canceled_at=canceled)
        row.update(columns)  # any other column, as the flow and webhooks would have left it
        with store.engine.begin() as connection:
            session_id = connection.execute(sa.insert(CancelSession.__table__).values(row)).inserted_primary_key[0]
            for offer in offers:
                connection.execute(sa.insert(SessionOffer.__table__).values(session_id=session_id, offer_id=offer, shown_at=created))
        return session_id
    return add


class Served:
    """`cancel-flow serve` in a child process, as an operator runs it."""

    def __init__(self, database_url: str, emulator_url: str, *extra: str, workers: int = 1, webhook_secret: str = WHSEC,
                 wait: bool = True, env: dict | None = None,
                 portal_configurations: tuple[str | None, str | None] = (None, None)):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_FLOW_", "STRIPE_", "PROMETHEUS_"))}
        environment.update(DATABASE_URL=database_url, CANCEL_FLOW_SECRET_KEY=SECRET, STRIPE_API_KEY=TEST_KEY,
                           STRIPE_API_BASE=emulator_url, CANCEL_FLOW_BASE_URL=self.url, STRIPE_WEBHOOK_SECRET=webhook_secret,
                           CANCEL_FLOW_OFFERS=str(ROOT / "offers.toml"), DATABASE_POOL_SIZE="10", **(env or {}))
        for name, value in zip(("STRIPE_PORTAL_CONFIGURATION", "STRIPE_BILLING_PORTAL_CONFIGURATION"), portal_configurations):
            if value:
                environment[name] = value
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cancel_flow", "serve", "--port", str(self.port), "--workers", str(workers), *extra],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        if wait:
            self.wait_until_up()

    def wait_until_up(self, timeout: float = 60) -> None:
        """Until /healthz answers; a server that exits first fails at once, with what it printed."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                httpx.get(f"{self.url}/healthz", timeout=2)
                return
            except httpx.HTTPError:
                if self.process.poll() is not None:
                    time.sleep(0.2)  # the reader thread takes the last lines
                    raise AssertionError(f"serve exited ({self.process.returncode}) before answering:\n"
                                         + "".join(self.lines[-30:]))
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def serve(database_url, emulator_url, emulator):
    def start(*extra, **kw):
        kw.setdefault("portal_configurations", (emulator.portal_configuration, emulator.billing_portal_configuration))
        return Served(kw.pop("database", database_url), emulator_url, *extra, **kw)

    with stopped_afterwards(start) as starting:
        yield starting


# --- The Stripe contract tests against Stripe test mode (`make test-stripe`, SPEC §12) ---------------
# The contract tests drive the emulator through the SDK. With --stripe-test-mode and
# STRIPE_TEST_SECRET_KEY, `stripe_client` drives Stripe test mode instead, so the emulator is held to
# what Stripe answers. Tests that need the emulator's controls, a loopback webhook receiver or an
# empty account stay emulator-only, and the run says why it skipped each.
CONTRACT_MODULES = ("test_emulator", "test_emulator_billing", "test_emulator_rules", "test_emulator_money",
                    "test_emulator_refunds")
STRIPE_API = "https://api.stripe.com"
_NO_LOOPBACK = "has webhooks delivered to a loopback receiver, which Stripe can't reach"
EMULATOR_ONLY_FIXTURES = {  # the first one a test uses names the reason
    "limits": "sets the emulator's rate limit (/_emulator/limits)",
    "restricted": "marks a key's permissions with /_emulator/keys",
    "receiver": _NO_LOOPBACK,
    "hooks": _NO_LOOPBACK,
    "emulator": "uses the emulator's controls (/_emulator/…)",
    "emulator_url": "talks to the emulator directly",
}
LEFT_IN_STRIPE: list[str] = []


def pytest_addoption(parser):
    parser.addoption("--stripe-test-mode", action="store_true", default=False,
                     help="run the Stripe contract tests against Stripe test mode with STRIPE_TEST_SECRET_KEY (make test-stripe)")


def configure_stripe_test_mode(config) -> None:
    config.stripe_test_key = None
    if not config.getoption("--stripe-test-mode", default=False):
        return
    key = os.environ.get("STRIPE_TEST_SECRET_KEY", "")
    if not key:
        raise pytest.UsageError("--stripe-test-mode needs STRIPE_TEST_SECRET_KEY: a Stripe test-mode secret key (sk_test_…)")
    if not key.startswith(("sk_test_", "rk_test_")):
        raise pytest.UsageError("STRIPE_TEST_SECRET_KEY must be a test-mode key (sk_test_…): the contract tests create and "
                                "delete objects")
    config.stripe_test_key = key


def is_contract_test(node) -> bool:
    module = getattr(node, "module", None)
    return module is not None and module.__name__.rsplit(".", 1)[-1] in CONTRACT_MODULES


def emulator_only_reason(item) -> str | None:
    marker = item.get_closest_marker("emulator_only")
    if marker is not None:
        return marker.args[0] if marker.args else marker.kwargs.get("reason", "runs against the emulator only")
    if item.get_closest_marker("no_portal_configuration") is not None:
        return "needs an account without a saved portal configuration"
    function = getattr(item, "function", None)
    arguments = inspect.signature(function).parameters if function is not None else {}
    return next((why for name, why in EMULATOR_ONLY_FIXTURES.items() if name in arguments), None)


def pytest_collection_modifyitems(config, items):
    if not config.stripe_test_key:
        return
    for item in items:
        reason = emulator_only_reason(item) if is_contract_test(item) else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"emulator only: {reason}"))


def contract_target(config) -> str:
    key = config.stripe_test_key
    if key:
        return (f"Stripe contract tests: against Stripe test mode at {STRIPE_API} (STRIPE_TEST_SECRET_KEY "
                f"{key[:8]}…{key[-4:]}); the emulator-only ones are skipped with their reason")
    if os.environ.get("STRIPE_TEST_SECRET_KEY"):
        return "Stripe contract tests: against the local emulator only (`make test-stripe` runs them against Stripe test mode)"
    return ("Stripe contract tests: against the local emulator only (set STRIPE_TEST_SECRET_KEY and run "
            "`make test-stripe` to run them against Stripe test mode)")


def pytest_report_header(config):
    return [contract_target(config)]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    ran = [report for reports in terminalreporter.stats.values() for report in reports
           if getattr(report, "nodeid", "").split("::")[0].rsplit("/", 1)[-1][:-3] in CONTRACT_MODULES]
    if ran:
        terminalreporter.write_line(contract_target(config))
    for left in LEFT_IN_STRIPE:
        terminalreporter.write_line(f"Left in the Stripe test account (delete it in the dashboard): {left}")


class StripeTestModeHTTP(stripe.HTTPXClient):
    """The SDK's HTTP client for Stripe test mode. It notes each object a test creates, for deletion
    afterwards, and makes idempotency keys unique to the run: Stripe keeps a key 24 hours
    (https://docs.stripe.com/api/idempotent_requests), so a test's fixed key would replay an earlier run."""

    CREATES = ("/v1/test_helpers/test_clocks", "/v1/customers", "/v1/webhook_endpoints", "/v1/coupons",
               "/v1/billing_portal/configurations", "/v1/prices", "/v1/products")

    def __init__(self):
        super().__init__(allow_sync_methods=True, timeout=60)
        self.run_id = "contract-" + secrets.token_hex(6)
        self.created: list[tuple[str, str]] = []

    def request(self, method, url, headers, post_data=None):
        headers = {name: f"{self.run_id}-{value}" if name.lower() == "idempotency-key" else value
                   for name, value in headers.items()}
        content, status, response_headers = super().request(method, url, headers, post_data)
        path = urlsplit(url).path
        if method.lower() == "post" and status == 200 and path in self.CREATES:
            try:
                self.created.append((path, json.loads(content)["id"]))
            except (ValueError, KeyError, TypeError):
                pass
        return content, status, response_headers


# What removes each kind of object: a test clock takes its customers and subscriptions along
# (https://docs.stripe.com/api/test_clocks/delete), a customer its subscriptions; prices can't be
# deleted and portal configurations neither, so they are archived; a product with prices is archived.
_CLEAN_UP = [("/v1/test_helpers/test_clocks", "delete", {}), ("/v1/customers", "delete", {}),
             ("/v1/webhook_endpoints", "delete", {}), ("/v1/coupons", "delete", {}),
             ("/v1/billing_portal/configurations", "post", {"active": False}), ("/v1/prices", "post", {"active": False}),
             ("/v1/products", "delete", {})]


def clean_stripe_test_account(key: str, created: list[tuple[str, str]]) -> list[str]:
    """Remove what a test created; what could not be removed, by id."""
    client = stripe.StripeClient(key, base_addresses={"api": STRIPE_API}, max_network_retries=2,
                                 http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=60))
    left = []
    for kind, method, params in _CLEAN_UP:
        for path, object_id in created:
            if path != kind:
                continue
            try:
                client.raw_request(method, f"{path}/{object_id}", **params)
            except stripe.InvalidRequestError as error:
                if error.code == "resource_missing":
                    continue
                try:
                    if kind != "/v1/products":
                        raise
                    client.raw_request("post", f"{path}/{object_id}", active=False)
                except stripe.StripeError:
                    left.append(object_id)
            except stripe.StripeError:
                left.append(object_id)
    return left


def stripe_test_mode_client(key: str):
    http = StripeTestModeHTTP()
    try:
        yield stripe.StripeClient(key, base_addresses={"api": STRIPE_API}, max_network_retries=2, http_client=http)
    finally:
        if http.created:
            LEFT_IN_STRIPE.extend(clean_stripe_test_account(key, http.created))


class Inbox:
    """A real SMTP server (aiosmtpd) that keeps what it receives; `down` answers every message with a
    temporary failure."""

    def __init__(self):
        self.messages: list = []
        self.recipients: list[list[str]] = []  # each message's envelope recipients (RCPT TO)
        self.down = False

    async def handle_DATA(self, server, session, envelope):
        import email
        from email import policy

        if self.down:
            return "451 4.3.0 Mail server temporarily unavailable"
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 Message accepted"

    def subjects(self) -> list[str]:
        return [m["Subject"] for m in self.messages]


@pytest.fixture
def inbox():
    from aiosmtpd.controller import Controller

    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=free_port())
    controller.start()
    box.url = f"smtp://127.0.0.1:{controller.port}"
    yield box
    controller.stop()
