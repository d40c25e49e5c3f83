"""`cancel-flow stripe setup`: coupons, portal configuration and webhook endpoint, safe to run again; what the
service needs of them is stored in the database (cancel_flow/stripe_connection.py)."""

import asyncio

from sqlalchemy.engine import Engine

from cancel_flow.config.live import read_live
from cancel_flow.settings import Settings
from cancel_flow.store.audit import COMMAND_LINE
from cancel_flow.stripe_connection import Created, keep_created
from cancel_flow.stripe_gateway import StripeGateway, StripeSetup


async def run_stripe_setup(settings: Settings, recreate_webhook: bool = False, *, engine: Engine | None = None,
                           actor: str = COMMAND_LINE, address: str | None = None) -> list[str]:
    offers = read_live(settings)
    gateway = StripeGateway(settings)
    lines = []
    try:
        for offer in offers.offers:
            if offer.kind == "discount":
                # one coupon per billing period it can serve: monthly, quarterly and yearly plans (those its
                # `when` interval allows; other lengths are created on first use)
                intervals = offer.when.interval or ("month", "year")
                lengths = [months for months, interval in ((1, "month"), (3, "month"), (12, "year")) if interval in intervals]
                for per_payment in lengths:
                    coupon = await gateway.ensure_coupon(offer, offer.payments * per_payment)
                    lines.append(f"Coupon {coupon} ready for offer '{offer.id}'.")
        setup = StripeSetup(gateway)
        configuration = await setup.portal_configuration(settings.return_url)
        lines.append(f"Portal configuration {configuration} allows cancellation at period end (Continue to cancel).")
        billing = await setup.billing_portal_configuration(settings.return_url)
        lines.append(f"Portal configuration {billing} updates cards and shows invoices, without cancellation (billing links).")
        endpoint_id, secret, warning = await setup.webhook_endpoint(f"{settings.base_url}/webhooks/stripe", recreate_webhook)
        lines.append(f"Webhook endpoint {endpoint_id} sends {', '.join(StripeSetup.WEBHOOK_EVENTS)} to "
                     f"{settings.base_url}/webhooks/stripe.")
        if warning:
            lines.append(f"WARNING: {warning}")
        lines.append("")
        created = Created(portal_configuration=configuration, billing_portal_configuration=billing,
                          webhook_endpoint=endpoint_id, webhook_secret=secret)
        lines += await asyncio.to_thread(keep_created, settings, created, engine=engine, actor=actor, address=address)
        lines.append(f"STRIPE_PORTAL_CONFIGURATION={configuration}")
        lines.append(f"STRIPE_BILLING_PORTAL_CONFIGURATION={billing}")
    finally:
        await gateway.close()
    return lines
