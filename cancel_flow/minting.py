"""Minting a customer's cancel link and billing link (CLI, JSON API)."""

from dataclasses import dataclass
from datetime import datetime

from cancel_flow.errors import BadRequest, NotFound
from cancel_flow.links import LinkSigner
from cancel_flow.settings import Settings
from cancel_flow.spreadsheet import safe_cell
from cancel_flow.stripe_gateway import StripeGateway


@dataclass(frozen=True)
class MintedLinks:
    customer: str
    subscription: str
    cancel_url: str
    billing_url: str
    expires_at: datetime
    billing_expires_at: datetime
    preferred_locales: tuple[str, ...] = ()  # the Stripe customer's languages, when they were read


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
        customer = await gateway.find_customer_by_email(email or "")
        if customer is None:
            raise NotFound("No customer with that email has an active subscription.")
    return links_for(signer, base_url, customer, await choose_subscription(gateway, customer, subscription))


def links_for(signer: LinkSigner, base_url: str, customer: str, subscription: str,
              max_age: int | None = None, preferred_locales: tuple[str, ...] = ()) -> MintedLinks:
    cancel_token, expires_at = signer.cancel_token(customer, subscription, max_age)
    billing_token, billing_expires_at = signer.billing_token(customer)
    return MintedLinks(customer, subscription, f"{base_url}/cancel/{cancel_token}", f"{base_url}/billing/{billing_token}",
                       expires_at, billing_expires_at, preferred_locales)


async def mint_links(settings: Settings, **who) -> MintedLinks:
    gateway = StripeGateway(settings)
    try:
        signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)
        return await mint_for(gateway, signer, settings.base_url, **who)
    finally:
        await gateway.close()


async def links_for_email(gateway: StripeGateway, signer: LinkSigner, base_url: str, email: str) -> list[MintedLinks]:
    """Links for each live subscription of the customer Stripe's portal rule picks; none when no match."""
    customer = await gateway.find_customer_by_email(email)
    if customer is None:
        return []
    return [links_for(signer, base_url, customer, facts.subscription_id, preferred_locales=facts.preferred_locales)
            for facts in (await gateway.list_live_subscriptions(customer))[:5]]


EXPORT_HEADER = ["email", "name", "billing_link", "cancel_link", "expires_at", "customer", "subscription"]


async def export_rows(gateway: StripeGateway, signer: LinkSigner, base_url: str, max_age: int | None):
    """The mail-merge rows, one per customer with an active subscription (their newest), as they come from Stripe."""
    async for customer, facts in gateway.customers_with_live_subscriptions():
        minted = links_for(signer, base_url, customer["id"], facts.subscription_id, max_age)
        yield [safe_cell(customer.get("email")), safe_cell(customer.get("name")), minted.billing_url,
               minted.cancel_url, minted.expires_at.isoformat(timespec="seconds"), customer["id"], facts.subscription_id]


async def export_links(settings: Settings, path: str, max_age: int | None) -> int:
    """One row per customer with an active subscription (their newest), for mail-merge."""
    import csv

    gateway = StripeGateway(settings)
    signer = LinkSigner(settings.secret_key, settings.link_max_age, settings.billing_link_max_age)
    written = 0
    try:
        with open(path, "w", newline="", encoding="utf-8") as target:
            writer = csv.writer(target)
            writer.writerow(EXPORT_HEADER)
            async for row in export_rows(gateway, signer, settings.base_url, max_age):
                writer.writerow(row)
                written += 1
    finally:
        await gateway.close()
    return written

