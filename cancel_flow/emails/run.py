"""Running the billing emails: one pass (plan what is due, then send it), `serve`'s background loop,
`cancel-flow send-due-emails`, and the demo's failed renewal."""

import asyncio
import sys
import time
from collections import Counter
from datetime import timedelta

from starlette.concurrency import run_in_threadpool

from cancel_flow.clock import add_months, utc_now
from cancel_flow.emails.scheduler import Mailroom
from cancel_flow.emails.sending import GuardedDispatcher
from cancel_flow.links import LinkSigner
from cancel_flow.logs import log_event

EVERY = 60.0  # seconds between passes in each worker of `serve` (the day-0 email goes out within a minute)


def run_pass(engine, settings, live, *, scan: bool | None = None, dispatcher: GuardedDispatcher | None = None,
             send: bool = True) -> tuple[Counter, int]:
    """Write the emails due now and send what the outbox holds; (emails written per kind, deliveries tried).
    Runs in its own thread and event loop, so the database never blocks a serving loop. `live`: the
    LiveConfiguration (the pass reads the schedule and the brand as they are now)."""
    from cancel_flow.stripe_gateway import StripeGateway

    async def plan() -> Counter:
        gateway = StripeGateway(settings)
        try:
            signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)
            return await Mailroom(engine, settings, live.current(), signer, gateway).plan(scan=scan)
        finally:
            await gateway.close()

    written = asyncio.run(plan())
    attempted = 0
    if send:
        own = dispatcher is None
        dispatcher = dispatcher or GuardedDispatcher.for_config(engine, settings, live)
        try:
            attempted = dispatcher.run_due()
        finally:
            if own:
                dispatcher.close()
    return written, attempted


async def send_emails_periodically(engine, settings, live, every: float = EVERY) -> None:
    """`serve`'s background pass: writes what is due (the app's outbox dispatcher, a GuardedDispatcher, sends
    it within a second). Safe in every worker at once: each email has one key, the outbox claims each row."""
    while True:
        await asyncio.sleep(every)
        try:
            await run_in_threadpool(run_pass, engine, settings, live, send=False)
        except Exception as error:  # Stripe or the database is away: the next pass tries again
            log_event("emails.pass_failed", level=40, error=type(error).__name__)


# `cancel-flow send-due-emails` ----------------------------------------------------------------------------

def _send_due_emails(args) -> int:
    from cancel_flow.config.live import LiveConfiguration
    from cancel_flow.settings import load_settings
    from cancel_flow.store import make_engine, migrate
    from cancel_flow.store.config_versions import ConfigVersions

    settings = load_settings()
    settings.require_stripe()
    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
        live = LiveConfiguration.start(ConfigVersions(engine), settings.offers_path)
        written, attempted = run_pass(engine, settings, live, scan=True)
    finally:
        engine.dispose()
    kinds = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in sorted(written.items())) or "none"
    print(f"Emails written: {kinds}. Deliveries attempted: {attempted}.")
    return 0


def register(subparsers) -> None:
    """Adds `send-due-emails` to the command line."""
    command = subparsers.add_parser("send-due-emails", help="send the billing emails that are due (serve also runs this)")
    command.set_defaults(handler=_send_due_emails)


# The demo --------------------------------------------------------------------------------------------

def demo_failed_payment(settings, live, out=sys.stdout, wait: float = 30.0) -> str | None:
    """For `cancel-flow demo` (run in a thread once the server is up): a subscriber whose card declines at the
    renewal, on a Stripe test clock moved past it; the failed-payment email printed; returns the customer id.
    The email's button opens the card update, and the payment goes through as soon as a good card is saved."""
    import httpx
    import sqlalchemy as sa
    import stripe

    from cancel_flow.models import InvoiceRecord
    from cancel_flow.store import make_engine

    client = stripe.StripeClient(settings.stripe_api_key, base_addresses={"api": settings.stripe_api_base},
                                 http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=10))
    deadline = time.monotonic() + wait
    while True:
        try:
            httpx.get(f"{settings.base_url}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)
    now = utc_now()
    start = add_months(now, -1) - timedelta(hours=2)  # the renewal falls two hours ago
    clock = client.v1.test_helpers.test_clocks.create(params={"frozen_time": int(start.timestamp()),
                                                              "name": "cancel-flow demo: failed renewal"})
    product = client.v1.products.create(params={"name": "Peak Coaching Membership"})
    price = client.v1.prices.create(params={"product": product.id, "unit_amount": 4900, "currency": "usd",
                                            "recurring": {"interval": "month"}})
    customer = client.v1.customers.create(params={
        "name": "Riley Brooks", "email": "riley@example.com", "payment_method": "pm_card_visa",
        "invoice_settings": {"default_payment_method": "pm_card_visa"}, "test_clock": clock.id})
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    # The subscription's own card (as Stripe Checkout sets one) now declines every charge (Stripe's test card
    # 4000 0000 0000 0341), attached as Stripe's docs set cards up (https://docs.stripe.com/api/payment_methods/attach).
    # The card update in the portal changes the customer's card; cancel-flow pays with it and makes it the
    # subscription's too.
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": customer.id})
    client.v1.subscriptions.update(subscription.id, params={"default_payment_method": failing.id})
    renewal = add_months(start, 1)
    print(f"\nMoving Riley Brooks's Stripe test clock past the renewal of {renewal.day} {renewal:%B %Y} (the card declines)…",
          file=out, flush=True)
    client.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": int((renewal + timedelta(hours=1, minutes=1)).timestamp())})
    while client.v1.test_helpers.test_clocks.retrieve(clock.id).status != "ready" and time.monotonic() < deadline:
        time.sleep(0.2)
    engine = make_engine(settings.database_url)
    invoices = InvoiceRecord.__table__
    try:
        while time.monotonic() < deadline:  # the invoice.payment_failed webhook reaches the server
            with engine.connect() as connection:
                if connection.execute(sa.select(invoices.c.id).where(invoices.c.customer_id == customer.id,
                                                                     invoices.c.first_failed_at.is_not(None))).first():
                    break
            time.sleep(0.2)
        print("The renewal failed; the failed-payment email (SMTP_URL unset: printed here):", file=out, flush=True)
        run_pass(engine, settings, live)
        print("Open the email's \"Update my card\" link, choose Visa, and the payment goes through at once.\n",
              file=out, flush=True)
    finally:
        engine.dispose()
    return customer.id
