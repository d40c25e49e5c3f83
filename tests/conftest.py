import os
import signal
import threading
import secrets
from datetime import datetime, timezone
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import stripe
from starlette.testclient import TestClient

from cancel_flow.links import LinkSigner
from cancel_flow.models import CancelSession, SessionOffer, SQLModel
from cancel_flow.offers import load_offers
from cancel_flow.settings import Settings
from cancel_flow.store import Store, make_engine, migrate

ROOT = Path(__file__).resolve().parents[1]
TEST_KEY = "sk_test_cancelflow"
WHSEC = "whsec_ops_" + "b" * 32
SECRET = "test-secret-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="session")
def emulator_url():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "cancel_flow", "stripe-emulator", "--port", str(port)],
                               stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/_emulator/clock")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def pytest_configure(config):
    config.addinivalue_line("markers", "no_portal_configuration: the emulator's account starts without a saved portal configuration")


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


@pytest.fixture
def emulator(emulator_url, request):
    """The emulator, emptied before each test (with a saved portal configuration unless the test is
    marked `no_portal_configuration`); a small client for its controls."""
    control = httpx.Client(base_url=emulator_url, timeout=10)
    control.delete("/_emulator/data").raise_for_status()
    if request.node.get_closest_marker("no_portal_configuration") is None:
        control.post("/v1/billing_portal/configurations", data=PORTAL_CONFIGURATION,
                     headers={"Authorization": f"Bearer {TEST_KEY}"}).raise_for_status()
    yield control
    control.delete("/_emulator/faults")
    control.close()


@pytest.fixture
def stripe_client(emulator, emulator_url):
    """The real SDK, pointed at the emulator."""
    return stripe.StripeClient(TEST_KEY, base_addresses={"api": emulator_url}, max_network_retries=0,
                               http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=10))


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
    from cancel_flow.web.app import create_app

    clients = []

    def make(**overrides):
        client = TestClient(create_app(replace(settings, **overrides)), follow_redirects=False,
                            raise_server_exceptions=bool(os.environ.get("RAISE_SERVER_EXCEPTIONS")))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


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

    def subscription(self, customer=None, interval: str = "month", amount: int = 4900, currency: str = "usd", **extra):
        customer = customer or self.customer()
        price = self.price(interval, amount, currency)
        return self.sdk.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}], **extra})


@pytest.fixture
def catalogue(stripe_client):
    return Catalogue(stripe_client)


@pytest.fixture
def offers():
    return load_offers(ROOT / "offers.toml")


os.environ.setdefault("CANCEL_FLOW_ENV", "development")


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

    servers = []

    def start(**overrides):
        servers.append(LiveServer(lambda url: create_app(replace(settings, base_url=url, **overrides))))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def history(store):
    """Insert sessions as they would be after the flow and webhooks ran."""
    def add(created: datetime, outcome: str = "open", *, reason=None, currency="usd", price=4900, interval="month",
            offers=(), chosen=None, percent=None, months=None, decided=None, canceled=None, comment=None,
            email="client@example.com"):
        monthly = price // 12 if interval == "year" else price
        row = dict(nonce=secrets.token_hex(8), customer_id="cus_" + secrets.token_hex(4), subscription_id="sub_" + secrets.token_hex(4),
                   customer_email=email, plan_name="Coaching", price_amount=price, interval=interval, interval_count=1,
                   monthly_amount=monthly, currency=currency, reason=reason, comment=comment, offers_shown=list(offers),
                   chosen_offer=chosen, offer_kind=("discount" if percent else "pause") if chosen else None,
                   discount_percent=percent, discount_months=months, outcome=outcome, created_at=created,
                   updated_at=datetime.now(timezone.utc), decided_at=decided, canceled_at=canceled)
        with store.engine.begin() as connection:
            session_id = connection.execute(sa.insert(CancelSession.__table__).values(row)).inserted_primary_key[0]
            for offer in offers:
                connection.execute(sa.insert(SessionOffer.__table__).values(session_id=session_id, offer_id=offer, shown_at=created))
        return session_id
    return add


class Served:
    """`cancel-flow serve` in a child process, as an operator runs it."""

    def __init__(self, database_url: str, emulator_url: str, *extra: str, workers: int = 1, webhook_secret: str = WHSEC):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_FLOW_", "STRIPE_", "PROMETHEUS_"))}
        environment.update(DATABASE_URL=database_url, CANCEL_FLOW_SECRET_KEY=SECRET, STRIPE_API_KEY=TEST_KEY,
                           STRIPE_API_BASE=emulator_url, CANCEL_FLOW_BASE_URL=self.url, STRIPE_WEBHOOK_SECRET=webhook_secret,
                           CANCEL_FLOW_OFFERS=str(ROOT / "offers.toml"), DATABASE_POOL_SIZE="10")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cancel_flow", "serve", "--port", str(self.port), "--workers", str(workers), *extra],
            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(f"{self.url}/healthz", timeout=60)

    def _read(self):
        for line in self.process.stderr:
            self.lines.append(line)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)


@pytest.fixture
def serve(database_url, emulator_url, emulator):
    started = []

    def start(*extra, **kw):
        started.append(Served(kw.pop("database", database_url), emulator_url, *extra, **kw))
        return started[-1]

    yield start
    for served in started:
        served.stop()
