"""`cancel-flow offers explain`: which offers a customer would see now, and for each offer not shown,
the first condition that failed."""

from cancel_flow import flow
from cancel_flow.clock import utc_now
from cancel_flow.errors import NotFound
from cancel_flow.config.live import open_live
from cancel_flow.reasons import REASONS
from cancel_flow.settings import Settings
from cancel_flow.store import Store, make_engine, require_migrated
from cancel_flow.stripe_gateway import StripeGateway


async def explain_offers(settings: Settings, customer_id: str, reason: str | None) -> list[str]:
    engine = make_engine(settings.database_url)
    try:
        require_migrated(engine)
        book = open_live(engine, settings).current()
    except BaseException:
        engine.dispose()
        raise
    gateway = StripeGateway(settings)
    try:
        try:
            subscriptions = await gateway.list_live_subscriptions(customer_id)
        except NotFound:
            return [f"No customer {customer_id} in Stripe."]
        if not subscriptions:
            return [f"{customer_id} has no active, trialing or past-due subscription: no offer is shown."]
        now = utc_now()
        recent = Store(engine).accepted_offer_since(customer_id, flow.cooldown_start(book, now))
        prices = {}
        for offer in book.offers:
            if offer.enabled and offer.kind == "switch" and offer.price not in prices:
                price = await gateway.read_price(offer.price)
                if price is not None:
                    prices[offer.price] = price
        lines = []
        for facts in subscriptions:
            lines.append(f"{facts.subscription_id}: {facts.plan_name}, {facts.interval_count} {facts.interval}(s), "
                         f"status {facts.status}; reason: {REASONS[reason] if reason else 'any'}")
            for offer, why in flow.explain(book, reason, facts, now, accepted_offer_recently=recent, prices=prices):
                lines.append(f"  {'SHOWN' if why is None else 'not shown'}  {offer.id} ({offer.kind})"
                             + ("" if why is None else f": {why}"))
        return lines
    finally:
        await gateway.close()
        engine.dispose()
