"""`cancel-flow demo`: the whole product on one machine, no Stripe account needed.

Starts the Stripe emulator as a child process, seeds sample customers, runs `stripe setup` against
it, serves cancel-flow on SQLite, and prints a ready-to-click link per customer and the shared link.
Its development settings go to a `.env`, so `cancel-flow link …` works from another shell; request
logs go to demo-data/requests.log; emails are printed as readable blocks. Ctrl-C stops both.
"""

import asyncio
import logging
import os
import random
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import uvicorn

from cancel_flow.clock import add_months
from cancel_flow.logs import configure_logging
from cancel_flow.settings import load_settings
from cancel_flow.setup import run_stripe_setup
from cancel_flow.passwords import hash_password
from cancel_flow.store import Store, make_engine, migrate
from cancel_flow.store.coaches import CoachStore
from cancel_flow.stripe_gateway import StripeGateway

DEMO_DIR = Path("demo-data")
ENV_FILE = Path(".env")
ENV_MARK = "# Written by `cancel-flow demo`: its development settings, so cancel-flow commands in another shell use them."
# The settings another shell needs to reach the demo's database and emulator.
ENV_KEYS = ("CANCEL_FLOW_ENV", "DATABASE_URL", "CANCEL_FLOW_BASE_URL", "CANCEL_FLOW_RETURN_URL", "CANCEL_FLOW_OFFERS",
            "STRIPE_API_KEY", "STRIPE_API_BASE", "STRIPE_PORTAL_CONFIGURATION", "STRIPE_BILLING_PORTAL_CONFIGURATION",
            "STRIPE_WEBHOOK_SECRET",
            "CANCEL_FLOW_ALLOW_PRIVATE_URLS")
EXAMPLE_OFFERS = Path(__file__).parent / "examples" / "offers.toml"
CUSTOMERS = [
    # (name, email, plan, note)
    ("Maya Lopez", "maya@example.com", "monthly", "monthly plan: sees the discount and the pause"),
    ("Yusuf Adeyemi", "yusuf@example.com", "yearly", "yearly plan: 25% off the next renewal, no pause"),
    ("Dana Kim", "dana@example.com", "discounted", "already has a discount: no second discount"),
    ("Sam Carter", "sam@example.com", "scheduled", "already set to cancel at period end"),
]


DEMO_COACH = ("coach@example.com", "demo-password")
_REASON_WEIGHTS = {"too_expensive": 30, "unused": 25, "switched_service": 10, "missing_features": 10, "other": 10,
                   "too_complex": 5, "low_quality": 5, "customer_service": 5}
_COMMENTS = ["Money is tight this month", "I travel a lot lately", "Found a gym closer to home", "",
             "The app is confusing", "", "Injured, can't train for a while", ""]
_BLANK_SESSION = dict(
    customer_email=None, plan_name="Peak Coaching Membership", interval_count=1, had_discount=False, was_paused=False,
    cancel_at_period_end=False, period_end=None, reason=None, comment=None, offers_shown=None, claimed_offer=None,
    claimed_at=None, chosen_offer=None, offer_kind=None, discount_percent=None, discount_months=None,
    pause_resumes_at=None, outcome="open", reason_at=None, decided_at=None, kept_at=None, canceled_at=None,
    canceled_outside_flow=False, stripe_feedback=None, stripe_comment=None, stripe_cancellation_reason=None,
    stripe_state_at=None, discount_payments=None, pause_payments=None, coupon_id=None, switch_price=None,
    free_months=None, next_payment_at=None, promise=None, schedule=None, offer_cost=None, claim_attempt=0, superseded=False,
    stripe_snapshot=None, snapshot_at=None, offer_ends_at=None, contact_handled_at=None, contact_handled_by=None)


def history_rows(now: datetime, weeks: int = 8, per_week: int = 15, seed: int = 7) -> list[dict]:
    """Varied, plausible past sessions so the demo's dashboard looks like a real one."""
    chance = random.Random(seed)
    rows = []
    for index in range(weeks * per_week):
        created = now - timedelta(days=chance.uniform(1.2, weeks * 7), hours=chance.uniform(0, 23))
        yearly = chance.random() < 0.2
        reason = chance.choices(list(_REASON_WEIGHTS), weights=list(_REASON_WEIGHTS.values()))[0]
        offers = [o for o, fits in (("yearly-25-off" if yearly else "half-off-3-payments", reason in ("too_expensive", "unused")),
                                    ("pause", reason in ("unused", "other") and not yearly)) if fits]
        row = dict(_BLANK_SESSION, nonce=f"demo-{seed}-{index}", customer_id=f"cus_demo{index:05d}",
                   subscription_id=f"sub_demo{index:05d}", customer_email=f"client{index}@example.com",
                   price_amount=49000 if yearly else 4900, interval="year" if yearly else "month",
                   monthly_amount=4083 if yearly else 4900, currency="usd", reason=reason,
                   comment=chance.choice(_COMMENTS) or None, offers_shown=offers, created_at=created,
                   updated_at=created, reason_at=created)
        decided = created + timedelta(minutes=chance.uniform(1, 10))
        roll = chance.random()
        if reason in ("missing_features", "customer_service", "too_complex") and roll < 0.25:
            row.update(offers_shown=["talk"], chosen_offer="talk", offer_kind="contact", decided_at=decided,
                       outcome="deflected" if chance.random() < 0.7 else "canceled")
            if row["outcome"] == "canceled":
                row["canceled_at"] = decided + timedelta(days=chance.uniform(1, 5))
        elif offers and roll < 0.4:
            offer = chance.choice(offers)
            row.update(chosen_offer=offer, decided_at=decided)
            if offer == "pause":
                row.update(outcome="saved_pause", offer_kind="pause", pause_resumes_at=decided + timedelta(days=60),
                           offer_ends_at=decided + timedelta(days=60), pause_payments=2, offer_cost=2 * row["price_amount"])
            elif yearly:  # 25% off the next yearly renewal
                row.update(outcome="saved_discount", offer_kind="discount", discount_percent=25.0,
                           discount_months=12, discount_payments=1, offer_cost=row["price_amount"] // 4,
                           offer_ends_at=add_months(decided, 12))
            else:
                row.update(outcome="saved_discount", offer_kind="discount", discount_percent=50.0,
                           discount_months=3, discount_payments=3, offer_cost=3 * row["price_amount"] // 2,
                           offer_ends_at=add_months(decided, 3))
            if chance.random() < 0.15:
                row["canceled_at"] = decided + timedelta(days=chance.uniform(20, 50))
        elif roll < 0.8:
            row.update(outcome="canceled", decided_at=decided, canceled_at=decided + timedelta(minutes=2),
                       stripe_feedback=reason)
        else:
            row.update(outcome="deflected", decided_at=decided)
        rows.append(row)
    return rows


def write_env_file(path: Path = ENV_FILE) -> Path | None:
    """The demo's settings as a `.env`, so `cancel-flow link …` in another shell reaches the same database and
    emulator. A `.env` the demo didn't write is left alone: they go to demo-data/demo.env instead."""
    lines = [ENV_MARK] + [f"{key}={os.environ[key]}" for key in ENV_KEYS if os.environ.get(key)]
    if path.exists() and not path.read_text(errors="replace").startswith(ENV_MARK):
        path = DEMO_DIR / "demo.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def email_block(to: str, subject: str, text: str, width: int = 72) -> str:
    """An email as a block that stands out from everything else on the console."""
    rule = "─" * width
    body = "\n".join(f"│ {line}" for line in text.rstrip().splitlines())
    return f"\n┌{rule}\n│ Email to: {to}\n│ Subject:  {subject}\n├{rule}\n{body}\n└{rule}\n"


def _print_emails_as_blocks() -> None:
    """Without SMTP the demo prints the emails it would send; as blocks, not log-like lines."""
    from cancel_flow import mailer

    original = mailer.Mailer.send

    def send(self, message):
        if self.settings.smtp_url or not self.settings.is_development:
            return original(self, message)
        print(email_block(message.to, message.subject, message.text), flush=True)
    mailer.Mailer.send = send


def _logs_to_file(path: Path) -> None:
    """Our JSON log lines and the server's request lines go to a file; the console keeps links and emails.
    The server's request lines quote each address: a link's token is written as its short hash."""
    from cancel_flow.logs import JsonLineFormatter, TokenRedactor

    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(TokenRedactor())
    for name in ("cancel_flow", ""):
        logging.getLogger(name).handlers[:] = [handler]
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger().setLevel(logging.INFO)


def demo_account_routes(minted: list, base_url: str):
    """`GET /account`: the small account page "Back to my account" goes to in the demo."""
    from starlette.routing import Route

    from cancel_flow.web.pages import render

    async def account(request):
        # the stand-in for the coach's own app: English, no language switch of ours
        return render(request, "demo_account.html", customers=minted, shared_link=f"{base_url}/", language_switch=False)
    return [Route("/account", account, methods=["GET"])]


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
        if plan == "yearly":
            # a card of the subscription's own, as Stripe Checkout and Payment Links set it
            card = await client.payment_methods.attach_async("pm_card_mastercard", params={"customer": customer.id})
            params["default_payment_method"] = card.id
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
        "CANCEL_FLOW_BASE_URL": base_url, "CANCEL_FLOW_RETURN_URL": f"{base_url}/account",
        "STRIPE_API_KEY": "sk_test_demo", "STRIPE_API_BASE": f"http://127.0.0.1:{emulator_port}",
    })
    os.environ.pop("CANCEL_FLOW_SECRET_KEY", None)
    offers_file = Path(os.environ.get("CANCEL_FLOW_OFFERS", "offers.toml"))
    os.environ["CANCEL_FLOW_OFFERS"] = str(offers_file.resolve() if offers_file.is_file() else EXAMPLE_OFFERS)
    emulator = _start_emulator(emulator_port)
    try:
        settings = load_settings()
        engine = make_engine(settings.database_url)
        migrate(engine)
        Store(engine).bulk_insert_sessions(history_rows(datetime.now(timezone.utc)))
        CoachStore(engine).add(DEMO_COACH[0], hash_password(DEMO_COACH[1]))
        engine.dispose()
        setup_lines = asyncio.run(run_stripe_setup(settings))
        for line in setup_lines:
            if line.startswith(("STRIPE_PORTAL_CONFIGURATION=", "STRIPE_BILLING_PORTAL_CONFIGURATION=",
                                "STRIPE_WEBHOOK_SECRET=")):
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
        env_file = write_env_file()
        log_file = DEMO_DIR / "requests.log"
        print("\ncancel-flow demo is running (Ctrl-C stops it and the Stripe emulator).\n")
        print(f"Stripe emulator: http://127.0.0.1:{emulator_port}   database: {database}")
        print(f"Request logs:    {log_file}   settings for other shells: {env_file}\n")
        print(f"Coach dashboard: {base_url}/dashboard  (sign in as {DEMO_COACH[0]} / {DEMO_COACH[1]})\n")
        print(f"Shared link for every client: {base_url}/")
        print("  a client enters their email there and gets a fresh cancel link and billing link by email")
        print("  (printed below while the demo runs). That is how to get more links, or in another shell in")
        print("  this directory: cancel-flow link --email maya@example.com\n")
        for name, note, links in minted:
            print(f"{name} ({note})\n  cancel:  {links.cancel_url}\n  billing: {links.billing_url}\n")
        print(f"\"Back to my account\" opens the demo's account page: {base_url}/account\n")
        sys.stdout.flush()
        from cancel_flow.web.app import create_app

        configure_logging()
        _logs_to_file(log_file)
        _print_emails_as_blocks()
        app = create_app(settings, sweep_every=600)
        for route in demo_account_routes(minted, base_url):
            app.router.routes.insert(0, route)
        # a client whose card declines at the renewal: the clock moves, the failed-payment email is
        # printed, and its button's card update recovers the payment
        import threading

        from cancel_flow.emails.run import demo_failed_payment

        threading.Thread(target=demo_failed_payment, args=(settings, app.state.config), daemon=True).start()
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="info", log_config=None)
    finally:
        if ENV_FILE.exists() and ENV_FILE.read_text(errors="replace").startswith(ENV_MARK):
            ENV_FILE.unlink()  # its emulator and database are gone with the demo
        emulator.terminate()
        try:
            emulator.wait(timeout=5)
        except subprocess.TimeoutExpired:
            emulator.kill()
    return 0
