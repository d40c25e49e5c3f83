"""Minting a customer's cancel link and billing link (CLI, JSON API)."""

from dataclasses import dataclass
from datetime import datetime

from cancel_flow.errors import BadRequest, NotFound
from cancel_flow.links import LinkSigner
from cancel_flow.settings import Settings
from cancel_flow.stripe_gateway import StripeGateway, find_customer_by_email


@dataclass(frozen=True)
class MintedLinks:
    customer: str
    subscription: str
    cancel_url: str
    billing_url: str
    expires_at: datetime
    billing_expires_at: datetime


async def choose_subscription(gateway: StripeGateway, customer: str, subscription: str | None) -> str:
    live = await gateway.list_live_subscriptions(customer)
    if subscription:
        if subscription not in {facts.subscription_id for facts in live}:
            raise NotFound(f"Customer {customer} has no active subscription {subscription}.")
        return subscription
    if not live:
        raise NotFound(f"Customer {customer} has no active subscription.")
    if len(live) > 1:
        listed = ", ".join(f"{facts.subscription_id} ({facts.plan_name})" for facts in live)
        raise BadRequest(f"Customer {customer} has several active subscriptions; pass --subscription with one of: {listed}")
    return live[0].subscription_id


async def mint_for(gateway: StripeGateway, signer: LinkSigner, base_url: str, *, customer: str | None = None,
                   email: str | None = None, subscription: str | None = None) -> MintedLinks:
    if customer is None:
        customer = await find_customer_by_email(gateway, email or "")
        if customer is None:
            raise NotFound("No customer with that email has an active subscription.")
    chosen = await choose_subscription(gateway, customer, subscription)
    cancel_token, expires_at = signer.cancel_token(customer, chosen)
    billing_token, billing_expires_at = signer.billing_token(customer)
    return MintedLinks(customer, chosen, f"{base_url}/cancel/{cancel_token}", f"{base_url}/billing/{billing_token}",
                       expires_at, billing_expires_at)


async def mint_links(settings: Settings, **who) -> MintedLinks:
    gateway = StripeGateway(settings)
    try:
        signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)
        return await mint_for(gateway, signer, settings.base_url, **who)
    finally:
        await gateway.close()
