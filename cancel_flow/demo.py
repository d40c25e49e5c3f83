"""`cancel-flow demo`: the whole product on one machine, no Stripe account needed.

Starts the Stripe emulator as a child process, seeds sample customers, runs `stripe setup` against
it, serves cancel-flow on SQLite, and prints a ready-to-click link per customer. Ctrl-C stops both.
"""

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import uvicorn

from cancel_flow.logs import configure_logging
from cancel_flow.settings import load_settings
from cancel_flow.setup import run_stripe_setup
from cancel_flow.store import make_engine, migrate
from cancel_flow.stripe_gateway import StripeGateway

DEMO_DIR = Path("demo-data")
CUSTOMERS = [
    # (name, email, plan, note)
    ("Maya Lopez", "maya@example.com", "monthly", "monthly plan: sees the discount and the pause"),
    ("Yusuf Adeyemi", "yusuf@example.com", "yearly", "yearly plan: no pause offered"),
    ("Dana Kim", "dana@example.com", "discounted", "already has a discount: no second discount"),
    ("Sam Carter", "sam@example.com", "scheduled", "already set to cancel at period end"),
]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _start_emulator(port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "cancel_flow", "stripe-emulator", "--port", str(port)],
                               stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/_emulator/clock", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.terminate()
    raise RuntimeError(f"The Stripe emulator did not start on port {port}")


async def seed(gateway: StripeGateway) -> list[tuple[str, str, str, str]]:
    """Products, prices and the sample customers; returns (name, customer id, subscription id, note)."""
    client = gateway.client.v1
    product = await client.products.create_async(params={"name": "Peak Coaching Membership"})
    monthly = await client.prices.create_async(params={"product": product.id, "unit_amount": 4900, "currency": "usd",
                                                       "recurring": {"interval": "month"}})
    yearly = await client.prices.create_async(params={"product": product.id, "unit_amount": 49000, "currency": "usd",
                                                      "recurring": {"interval": "year"}})
    await client.coupons.create_async(params={"id": "welcome-10", "percent_off": 10, "duration": "forever",
                                              "name": "Welcome 10%"})
    seeded = []
    for name, email, plan, note in CUSTOMERS:
        customer = await client.customers.create_async(params={
            "name": name, "email": email, "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"}})
        params = {"customer": customer.id, "items": [{"price": (yearly if plan == "yearly" else monthly).id}]}
        if plan == "discounted":
            params["discounts"] = [{"coupon": "welcome-10"}]
        if plan == "scheduled":
            params["cancel_at_period_end"] = True
        subscription = await client.subscriptions.create_async(params=params)
        seeded.append((name, customer.id, subscription.id, note))
    return seeded


def run_demo(port: int = 8000, emulator_port: int = 12111) -> int:
    if not _port_free(port):
        print(f"cancel-flow demo: port {port} is taken; pass --port", file=sys.stderr)
        return 1
    if not _port_free(emulator_port):
        print(f"cancel-flow demo: port {emulator_port} is taken; pass --emulator-port", file=sys.stderr)
        return 1
    DEMO_DIR.mkdir(exist_ok=True)
    database = DEMO_DIR / "cancel_flow.db"
    for leftover in DEMO_DIR.glob("cancel_flow.db*"):
        leftover.unlink()
    base_url = f"http://127.0.0.1:{port}"
    os.environ.update({
        "CANCEL_FLOW_ENV": "development", "DATABASE_URL": f"sqlite:///{database.resolve()}",
        "CANCEL_FLOW_BASE_URL": base_url, "STRIPE_API_KEY": "sk_test_demo",
        "STRIPE_API_BASE": f"http://127.0.0.1:{emulator_port}",
    })
    os.environ.pop("CANCEL_FLOW_SECRET_KEY", None)
    emulator = _start_emulator(emulator_port)
    try:
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        engine.dispose()
        setup_lines = asyncio.run(run_stripe_setup(settings))
        for line in setup_lines:
            if line.startswith(("STRIPE_PORTAL_CONFIGURATION=", "STRIPE_WEBHOOK_SECRET=")):
                key, value = line.split("=", 1)
                os.environ[key] = value
        settings = load_settings()

        async def seed_and_mint():
            from cancel_flow.links import LinkSigner
            from cancel_flow.minting import mint_for

            gateway = StripeGateway(settings)
            try:
                signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)
                minted = []
                for name, customer, subscription, note in await seed(gateway):
                    links = await mint_for(gateway, signer, base_url, customer=customer, subscription=subscription)
                    minted.append((name, note, links))
                return minted
            finally:
                await gateway.close()

        minted = asyncio.run(seed_and_mint())
        print("\ncancel-flow demo is running (Ctrl-C stops it and the Stripe emulator).\n")
        print(f"Stripe emulator: http://127.0.0.1:{emulator_port}   database: {database}\n")
        for name, note, links in minted:
            print(f"{name} ({note})\n  cancel:  {links.cancel_url}\n  billing: {links.billing_url}\n")
        sys.stdout.flush()
        from cancel_flow.web.app import create_app

        configure_logging()
        uvicorn.run(create_app(settings, sweep_every=600), host="127.0.0.1", port=port, log_level="warning")
    finally:
        emulator.terminate()
        try:
            emulator.wait(timeout=5)
        except subprocess.TimeoutExpired:
            emulator.kill()
    return 0
