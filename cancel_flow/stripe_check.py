"""`cancel-flow stripe check`: everything cancel-flow needs from a Stripe account, checked by doing it.

Stripe has no API that lists what a restricted key may do, so each permission is checked by making
the call cancel-flow makes. With a test key the check also runs the subscriber's path for real on a
test clock (discount, pause, a cancel portal session, cancellation, keep, the end) and waits for the
webhooks; then it deletes the clock, which takes its customer and subscription with it
(https://docs.stripe.com/api/test_clocks/delete), and the coupon it made. With a live key it only
reads. One line per check: PASS, WARN or FAIL, and for each failure what to do.
"""

import asyncio
import ipaddress
import os
import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import sqlalchemy as sa
import stripe

from cancel_flow.errors import SettingsError
from cancel_flow.config.live import read_live
from cancel_flow.settings import Settings
from cancel_flow.stripe_gateway import LIST_EXPAND, SUBSCRIPTION_EXPAND, StripeGateway, StripeSetup, facts_from

DAY = 86400
# Reused by every run in test mode (created once, named as such): Stripe can't delete a price, so a
# product and price made per run would pile up in the account.
CHECK_PRODUCT = "cancel_flow_check"
CHECK_EMAIL = "stripe-check@example.com"
SETUP_HINT = "run `cancel-flow stripe setup`"


@dataclass(frozen=True)
class Result:
    status: str  # PASS, WARN or FAIL
    name: str
    detail: str
    advice: str | None = None

    def line(self) -> str:
        text = f"{self.status:<5} {self.name}: {self.detail}"
        return f"{text} To fix: {self.advice}" if self.advice else text


class Refused(Exception):
    """A check that can't go on; the result says why."""

    def __init__(self, result: Result):
        super().__init__(result.detail)
        self.result = result


def redact(key: str) -> str:
    return f"{key[:8]}…{key[-4:]}" if len(key) > 16 else key[:3] + "…"


def is_public_https(url: str) -> bool:
    """Whether Stripe (and a subscriber's phone) can reach this address: https on a public host."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return False
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal", ".lan", ".home.arpa", ".test",
                                             ".invalid", ".example")):
        return False
    try:
        return ipaddress.ip_address(host).is_global
    except ValueError:
        return "." in host


def _permission_name(message: str) -> str | None:
    """`rak_customer_portal_write` → "Customer portal: Write", as the dashboard's key editor names it."""
    found = re.search(r"'rak_([a-z_]+?)_(read|write)'", message or "")
    if not found:
        return None
    return f"{found.group(1).replace('_', ' ').capitalize()}: {found.group(2).capitalize()}"


def explain(error: stripe.StripeError, doing: str) -> tuple[str, str]:
    """What went wrong, and what to do about it, for a Stripe error met while `doing` something."""
    message = (error.user_message or str(error) or "").strip()
    if isinstance(error, stripe.PermissionError):
        permission = _permission_name(message)
        needed = f"'{permission}'" if permission else "the permission this call needs"
        return (f"Stripe refused the key while {doing} (403: it lacks {needed}).",
                f"edit the restricted key in Stripe's dashboard (Developers → API keys) and give it {needed}, "
                "or set STRIPE_API_KEY to a key that has it.")
    if isinstance(error, stripe.AuthenticationError):
        return (f"Stripe does not accept the key (401) while {doing}.",
                "set STRIPE_API_KEY to a current secret (sk_…) or restricted (rk_…) key of this account.")
    if isinstance(error, stripe.RateLimitError):
        return (f"Stripe rate-limited the check while {doing} (429).", "run the check again in a minute.")
    if isinstance(error, stripe.APIConnectionError):
        return (f"Stripe could not be reached while {doing}.",
                "check the network, HTTPS_PROXY and STRIPE_API_BASE, then run the check again.")
    status = getattr(error, "http_status", None)
    return (f"Stripe answered {status or 'an error'} while {doing}: {message}",
            "read Stripe's message above; the request log in Stripe's dashboard (Developers → Logs) has the detail.")


class StripeCheck:
    def __init__(self, settings: Settings, *, events_timeout: float = 20.0, delivery_timeout: float = 30.0,
                 on_result=None):
        self.settings = settings
        self.gateway = StripeGateway(settings)
        self.client = self.gateway.client
        self.key = settings.stripe_api_key or ""
        self.test_mode = self.key.startswith(("sk_test_", "rk_test_"))
        self.events_timeout, self.delivery_timeout = events_timeout, delivery_timeout
        self.on_result = on_result
        self.results: list[Result] = []
        self.nonce = secrets.token_hex(6)
        self.endpoint: dict | None = None
        self.coupon_creatable: bool | None = None

    # -- plumbing --------------------------------------------------------------------------------

    def report(self, status: str, name: str, detail: str, advice: str | None = None) -> Result:
        result = Result(status, name, detail, advice if status != "PASS" else None)
        self.results.append(result)
        if self.on_result:
            self.on_result(result)
        return result

    async def call(self, method: str, path: str, /, **params) -> dict:
        """The SDK's raw request through the gateway's client (its retries, timeouts and proxy), with
        Stripe's own error kept, so a refusal can be explained."""
        response = await self.client.raw_request_async(method, path, **params)
        return response.data

    async def attempt(self, name: str, doing: str, method: str, path: str, /, fail: str = "FAIL", **params) -> dict:
        """Make one call; on a Stripe error report it under `name` and raise Refused."""
        try:
            return await self.call(method, path, **params)
        except stripe.StripeError as error:
            detail, advice = explain(error, doing)
            raise Refused(self.report(fail, name, detail, advice)) from None

    def key_for(self, step: str) -> str:
        return f"cancel-flow-check-{self.nonce}-{step}"

    # -- the checks ------------------------------------------------------------------------------

    async def run(self) -> list[Result]:
        clock_id, coupon_id = None, None
        try:
            if not await self.check_key():
                return self.results
            self.check_base_url()
            await self.check_reads()
            await self.check_portal_configuration()
            await self.check_billing_portal_configuration()
            await self.check_webhook_endpoint()
            if self.test_mode:
                coupon_id = await self.make_coupon()
            offers = self.load_offers()
            if offers is not None:
                await self.check_coupons(offers)
            if self.test_mode:
                clock_id = await self.make_clock()
                subscription = await self.make_subscription(clock_id)
                if subscription is not None:
                    await self.walk(subscription, coupon_id)
            else:
                self.report("WARN", "test-clock run", "not run: with a live key the check only reads, so the writes "
                            "(discount, pause, portal session, cancellation) and webhook delivery were not tried.",
                            "run the check with this account's test-mode key too: "
                            "`STRIPE_API_KEY=sk_test_… cancel-flow stripe check`.")
        finally:
            try:
                await self.clean_up(clock_id, coupon_id)
            finally:
                await self.gateway.close()
        return self.results

    async def check_key(self) -> bool:
        key = self.key
        if not key.startswith(("sk_test_", "rk_test_", "sk_live_", "rk_live_")):
            self.report("FAIL", "API key", f"STRIPE_API_KEY ({redact(key)}) is not a Stripe secret or restricted key.",
                        "set STRIPE_API_KEY to a secret key (sk_…) or a restricted key (rk_…) from Stripe's dashboard "
                        "(Developers → API keys); publishable keys (pk_…) can't be used.")
            return False
        kind = "restricted" if key.startswith("rk_") else "secret"
        mode = "test" if self.test_mode else "live"
        try:
            await self.call("get", "/v1/customers", limit=1)
        except (stripe.AuthenticationError, stripe.APIConnectionError) as error:
            detail, advice = explain(error, "listing customers")
            self.report("FAIL", "API key", f"{mode}-mode {kind} key {redact(key)}: {detail}", advice)
            return False
        except stripe.StripeError:
            pass  # authenticated; the permission is reported with the reads
        where = self.settings.stripe_api_base or "api.stripe.com"
        self.report("PASS", "API key", f"{mode}-mode {kind} key {redact(key)} accepted by {where}"
                    + (" (live mode: the check only reads)." if not self.test_mode else "."))
        return True

    def check_base_url(self) -> None:
        url = self.settings.base_url
        if is_public_https(url):
            self.report("PASS", "base URL", f"CANCEL_FLOW_BASE_URL {url} is a public https address.")
        elif self.test_mode:
            self.report("PASS", "base URL", f"CANCEL_FLOW_BASE_URL {url} is not public https: fine for testing, "
                        "but Stripe and subscribers reach only a public https address once live.")
        else:
            self.report("WARN", "base URL", f"CANCEL_FLOW_BASE_URL {url} is not a public https address, with a live "
                        "key: Stripe can't deliver webhooks to it and subscribers' links won't open outside your network.",
                        "set CANCEL_FLOW_BASE_URL to the service's public https address (behind your proxy), then run "
                        f"{SETUP_HINT} so the webhook endpoint follows it.")

    async def check_reads(self) -> None:
        reads = [
            ("read customers", "finding customers by email", "find customers by email (links by email, the shared page)",
             [("/v1/customers", {"limit": 1, "email": CHECK_EMAIL}),
              ("/v1/customers/search", {"limit": 1, "query": f"email:'{CHECK_EMAIL}'"})]),
            ("read subscriptions", "listing subscriptions", "read subscriptions (every cancel page, links, the export)",
             [("/v1/subscriptions", {"limit": 1, "status": "all", "expand": LIST_EXPAND})]),
            ("read products and prices", "listing products and prices",
             "read plan names and the prices of switch offers",
             [("/v1/products", {"limit": 1}), ("/v1/prices", {"limit": 1})]),
            ("read coupons", "listing coupons", "read the offers' coupons", [("/v1/coupons", {"limit": 1})]),
        ]
        for name, doing, can, calls in reads:
            try:
                for path, params in calls:
                    await self.attempt(name, doing, "get", path, **params)
            except Refused:
                continue
            self.report("PASS", name, f"the key can {can}.")

    async def check_portal_configuration(self) -> None:
        name = "portal configuration"
        configured = self.settings.stripe_portal_configuration
        try:
            if configured:
                try:
                    config = await self.call("get", f"/v1/billing_portal/configurations/{quote(configured, safe='')}")
                except stripe.InvalidRequestError as error:
                    if error.code != "resource_missing":
                        raise
                    self.report("FAIL", name, f"STRIPE_PORTAL_CONFIGURATION={configured} does not exist in this "
                                f"{'test' if self.test_mode else 'live'}-mode account (test and live mode have their own).",
                                f"{SETUP_HINT} with this key and set STRIPE_PORTAL_CONFIGURATION to the id it prints.")
                    return
                which = f"{config['id']} (STRIPE_PORTAL_CONFIGURATION)"
            else:
                page = await self.call("get", "/v1/billing_portal/configurations", is_default=True, limit=1)
                if not page["data"]:
                    self.report("FAIL", name, "the account has no saved portal configuration, and STRIPE_PORTAL_CONFIGURATION "
                                "is not set: Stripe refuses portal sessions until one is saved.",
                                f"{SETUP_HINT} and set STRIPE_PORTAL_CONFIGURATION to the id it prints.")
                    return
                config = page["data"][0]
                which = f"{config['id']} (the account's default; STRIPE_PORTAL_CONFIGURATION is not set)"
        except stripe.StripeError as error:
            detail, advice = explain(error, "reading the portal configuration")
            self.report("FAIL", name, detail, advice)
            return
        problems = StripeSetup.configuration_problems(config)
        if problems:
            self.report("FAIL", name, f"{which}: {'; '.join(problems)}.",
                        f"{SETUP_HINT} (it saves a configuration that cancels at period end without asking the reason) "
                        "and set STRIPE_PORTAL_CONFIGURATION to the id it prints; or fix it in Stripe's dashboard "
                        "(Settings → Billing → Customer portal).")
        else:
            self.report("PASS", name, f"{which} cancels at period end and doesn't ask the reason again.")

    async def check_billing_portal_configuration(self) -> None:
        """Billing links must open a portal that can't cancel: a cancellation there skips the flow (no reason
        asked, no offer, not attributed)."""
        name = "billing portal configuration"
        configured = self.settings.stripe_billing_portal_configuration
        if not configured:
            self.report("WARN", name, "STRIPE_BILLING_PORTAL_CONFIGURATION is not set: billing links open Stripe's "
                        "default portal configuration, which may let clients cancel without the flow.",
                        f"{SETUP_HINT} and set STRIPE_BILLING_PORTAL_CONFIGURATION to the id it prints.")
            return
        try:
            config = await self.call("get", f"/v1/billing_portal/configurations/{quote(configured, safe='')}")
        except stripe.StripeError as error:
            detail, advice = explain(error, "reading the billing portal configuration")
            if isinstance(error, stripe.InvalidRequestError) and error.code == "resource_missing":
                detail = (f"STRIPE_BILLING_PORTAL_CONFIGURATION={configured} does not exist in this "
                          f"{'test' if self.test_mode else 'live'}-mode account.")
                advice = f"{SETUP_HINT} with this key and set STRIPE_BILLING_PORTAL_CONFIGURATION to the id it prints."
            self.report("FAIL", name, detail, advice)
            return
        problems = StripeSetup.billing_configuration_problems(config)
        if problems:
            self.report("FAIL", name, f"{config['id']} (STRIPE_BILLING_PORTAL_CONFIGURATION): {'; '.join(problems)}.",
                        f"{SETUP_HINT} and set STRIPE_BILLING_PORTAL_CONFIGURATION to the id it prints.")
        else:
            self.report("PASS", name, f"{config['id']} updates cards and shows invoices, without cancellation.")

    async def check_webhook_endpoint(self) -> None:
        url = f"{self.settings.base_url}/webhooks/stripe"
        try:
            endpoints, params = [], {"limit": 100}
            while True:
                page = await self.call("get", "/v1/webhook_endpoints", **params)
                endpoints += page["data"]
                if not page.get("has_more") or not page["data"]:
                    break
                params = {"limit": 100, "starting_after": page["data"][-1]["id"]}
        except stripe.StripeError as error:
            detail, advice = explain(error, "listing webhook endpoints")
            self.report("FAIL", "webhook endpoint", detail, advice)
            return
        endpoint = next((e for e in endpoints if e.get("url") == url), None)
        if endpoint is None:
            self.report("FAIL", "webhook endpoint", f"no webhook endpoint sends events to {url}.",
                        f"{SETUP_HINT} (or Set up Stripe on /dashboard/stripe) with CANCEL_FLOW_BASE_URL set to the "
                        "service's address: it stores the new endpoint's signing secret.")
        elif endpoint.get("status") != "enabled":
            self.report("FAIL", "webhook endpoint", f"{endpoint['id']} for {url} is {endpoint.get('status')}: Stripe "
                        "sends it nothing.", "enable it in Stripe's dashboard (Developers → Webhooks).")
        else:
            self.endpoint = endpoint
            self.report("PASS", "webhook endpoint", f"{endpoint['id']} sends events to {url}.")
        if endpoint is not None:
            enabled = set(endpoint.get("enabled_events") or [])
            missing = [e for e in StripeSetup.WEBHOOK_EVENTS if e not in enabled and "*" not in enabled]
            if missing:
                self.report("FAIL", "webhook events", f"{endpoint['id']} does not send {', '.join(missing)}.",
                            f"{SETUP_HINT} (it adds the missing events to the endpoint).")
            else:
                self.report("PASS", "webhook events", f"{endpoint['id']} sends {', '.join(StripeSetup.WEBHOOK_EVENTS)}.")
            version = endpoint.get("api_version")
            if version != StripeSetup.API_VERSION:
                shown = f"in API version {version}" if version else (
                    "without an API version of its own, so in the account's default version, which may be years older")
                self.report("FAIL", "webhook API version", f"{endpoint['id']} sends events {shown}; "
                            f"cancel-flow reads them as {StripeSetup.API_VERSION}.",
                            "an endpoint's version can't be changed at Stripe: roll the signing secret on "
                            "/dashboard/stripe (a new endpoint, the old one kept for 24 hours) or run `cancel-flow "
                            "stripe setup --recreate-webhook`; either stores the new secret (unless "
                            "STRIPE_WEBHOOK_SECRET is set in the environment: then set it to the new one).")
            else:
                self.report("PASS", "webhook API version", f"events arrive in {version}, the SDK's version.")
        secret = self.settings.stripe_webhook_secret
        if not secret:
            self.report("FAIL", "webhook secret", "no webhook signing secret is set (STRIPE_WEBHOOK_SECRET, or one stored "
                        "by `stripe setup`): the service refuses every webhook.",
                        f"{SETUP_HINT} (or Set up Stripe on /dashboard/stripe): it stores the signing secret of the "
                        "endpoint it makes; if the endpoint existed already, roll the signing secret on /dashboard/stripe.")
        elif not secret.startswith("whsec_"):
            self.report("FAIL", "webhook secret", "STRIPE_WEBHOOK_SECRET does not start with whsec_: it is not a "
                        "webhook signing secret.", "copy the endpoint's signing secret (whsec_…) from Stripe's dashboard.")
        else:
            self.report("PASS", "webhook secret", "the webhook signing secret is set.")

    def load_offers(self):
        try:
            return read_live(self.settings)
        except SettingsError as error:
            self.report("FAIL", "offers", str(error), "fix the configuration, then run the check again.")
            return None
        except sa.exc.SQLAlchemyError as error:
            self.report("FAIL", "offers", f"the live configuration could not be read from the database "
                        f"({type(error).__name__}).", "check DATABASE_URL and run `cancel-flow migrate`.")
            return None

    async def check_coupons(self, offers) -> None:
        discounts = [offer for offer in offers.offers if offer.kind == "discount"]
        if not discounts:
            self.report("PASS", "coupons", "no discount offers, so no coupons are needed.")
            return
        for offer in discounts:
            name = f"coupons of offer '{offer.id}'"
            present, missing, wrong = [], [], []
            try:
                # one coupon per billing period it can serve, as `stripe setup` makes them
                for months in sorted({offer.payments * per_payment for per_payment in (1, 3, 12)}):
                    coupon_id = offer.coupon_id(months)
                    try:
                        coupon = await self.call("get", f"/v1/coupons/{quote(coupon_id, safe='')}")
                    except stripe.InvalidRequestError as error:
                        if error.code != "resource_missing":
                            raise
                        missing.append(coupon_id)
                        continue
                    terms = (coupon.get("percent_off"), coupon.get("duration"), coupon.get("duration_in_months"))
                    if terms != (offer.percent_off, "repeating", months) or not coupon.get("valid", True):
                        wrong.append(f"{coupon_id} ({terms[0]}% {terms[1]} {terms[2]} months"
                                     f"{'' if coupon.get('valid', True) else ', no longer valid'})")
                    else:
                        present.append(coupon_id)
            except stripe.StripeError as error:
                detail, advice = explain(error, f"reading the coupons of offer '{offer.id}'")
                self.report("FAIL", name, detail, advice)
                continue
            if wrong:
                self.report("FAIL", name, f"{', '.join(wrong)}: not the offer's terms ({offer.percent_off:g}% off, "
                            "repeating).", f"delete those coupons in Stripe's dashboard, then {SETUP_HINT}.")
            elif not missing:
                self.report("PASS", name, f"{', '.join(present)} present.")
            elif self.coupon_creatable:
                self.report("PASS", name, f"{', '.join(missing)} missing, and the key can create coupons: cancel-flow "
                            f"creates each on first use ({SETUP_HINT} to create them now).")
            elif self.coupon_creatable is False:
                self.report("FAIL", name, f"{', '.join(missing)} missing, and the key can't create coupons.",
                            f"{SETUP_HINT} with a key that may write coupons, or give this key 'Coupons: Write'.")
            else:
                self.report("WARN", name, f"{', '.join(missing)} missing (not created: the check only reads in live mode).",
                            f"{SETUP_HINT} with the live key, so the first subscriber who accepts doesn't wait for it.")

    # -- the test-clock run -----------------------------------------------------------------------

    async def make_clock(self) -> str | None:
        try:
            clock = await self.attempt("test-clock run", "creating a test clock", "post", "/v1/test_helpers/test_clocks",
                                       fail="WARN", frozen_time=int(time.time()), name="cancel-flow stripe check",
                                       idempotency_key=self.key_for("clock"))
        except Refused:
            return None
        self.frozen_time = clock["frozen_time"]
        return clock["id"]

    async def make_coupon(self) -> str | None:
        coupon_id = f"cancel-flow-check-{self.nonce}"
        try:
            await self.call("post", "/v1/coupons", id=coupon_id, percent_off=10, duration="once",
                            name="cancel-flow check", idempotency_key=self.key_for("coupon"))
        except stripe.StripeError as error:
            self.coupon_creatable = False
            detail, advice = explain(error, "creating a coupon (cancel-flow creates an offer's coupon on first use)")
            self.report("FAIL", "write coupons", detail, advice)
            return None
        self.coupon_creatable = True
        self.report("PASS", "write coupons", "the key can create coupons.")
        return coupon_id

    async def make_subscription(self, clock_id: str | None) -> dict | None:
        """A customer on the test clock with a monthly subscription: objects cancel-flow never makes itself,
        so a key refused here is reported as a warning (the writes below then go unchecked)."""
        if clock_id is None:
            return None
        name, fail = "test-clock run", "WARN"
        try:
            customer = await self.attempt(name, "creating a test customer", "post", "/v1/customers", fail=fail,
                                          email=CHECK_EMAIL, name="cancel-flow check", test_clock=clock_id,
                                          payment_method="pm_card_visa",
                                          invoice_settings={"default_payment_method": "pm_card_visa"},
                                          idempotency_key=self.key_for("customer"))
            price = await self.check_price(name, fail)
            subscription = await self.attempt(name, "creating a test subscription", "post", "/v1/subscriptions",
                                              fail=fail, customer=customer["id"], items=[{"price": price}],
                                              idempotency_key=self.key_for("subscription"))
        except Refused:
            self.report("WARN", "writes", "not checked: the sample subscription could not be made (see above).",
                        "run the check with a test-mode key that may also create customers, products, prices and "
                        "subscriptions (a secret sk_test_ key does).")
            return None
        return subscription

    async def check_price(self, name: str, fail: str) -> str:
        try:
            await self.call("get", f"/v1/products/{CHECK_PRODUCT}")
        except stripe.InvalidRequestError as error:
            if error.code != "resource_missing":
                detail, advice = explain(error, "reading the check's product")
                raise Refused(self.report(fail, name, detail, advice)) from None
            await self.attempt(name, "creating the check's product", "post", "/v1/products", fail=fail,
                               id=CHECK_PRODUCT, name="cancel-flow check (test mode)",
                               idempotency_key=self.key_for("product"))
        prices = await self.attempt(name, "reading the check's price", "get", "/v1/prices", fail=fail,
                                    product=CHECK_PRODUCT, active=True, limit=100)
        for price in prices["data"]:
            if (price.get("recurring") or {}).get("interval") == "month" and price.get("currency") == "usd" \
                    and price.get("unit_amount") == 1000:
                return price["id"]
        created = await self.attempt(name, "creating the check's price", "post", "/v1/prices", fail=fail,
                                     product=CHECK_PRODUCT, currency="usd", unit_amount=1000,
                                     recurring={"interval": "month"}, idempotency_key=self.key_for("price"))
        return created["id"]

    async def step(self, name: str, doing: str, method: str, path: str, /, **params) -> dict | None:
        try:
            return await self.attempt(name, doing, method, path, **params)
        except Refused:
            return None

    async def walk(self, subscription: dict, coupon_id: str | None) -> None:
        sub_id = subscription["id"]
        path = f"/v1/subscriptions/{quote(sub_id, safe='')}"
        # The reads of a cancel page and of a link by email, on a real subscription.
        read = await self.step("read a subscription", "reading a subscription as the cancel page does", "get", path,
                               expand=SUBSCRIPTION_EXPAND)
        listed = await self.step("read a subscription", "listing a customer's subscriptions as links do", "get",
                                 "/v1/subscriptions", customer=subscription["customer"], status="all", limit=100,
                                 expand=LIST_EXPAND)
        if read is not None and listed is not None:
            try:
                facts = facts_from(read)
            except (KeyError, TypeError, IndexError) as error:
                self.report("FAIL", "read a subscription", f"{sub_id} came back in a shape cancel-flow can't read "
                            f"(missing {error}): is STRIPE_API_BASE pointing at Stripe?",
                            "unset STRIPE_API_BASE (or point it at Stripe's API), then run the check again.")
            else:
                self.report("PASS", "read a subscription", f"{sub_id} read with its plan '{facts.plan_name}' and customer.")
        if coupon_id is None:
            self.report("WARN", "discount", "not tried: no coupon could be created (see 'write coupons').",
                        "give the key 'Coupons: Write', then run the check again.")
        else:
            done = await self.step("discount", "applying a discount", "post", path, discounts=[{"coupon": coupon_id}],
                                   expand=SUBSCRIPTION_EXPAND, idempotency_key=self.key_for("discount"))
            if done is not None:
                self.report("PASS", "discount", f"coupon {coupon_id} applied to {sub_id}.")
                await self.check_promise_against_preview(done)
        resumes_at = self.frozen_time + 30 * DAY
        done = await self.step("pause", "pausing payments", "post", path,
                               pause_collection={"behavior": "void", "resumes_at": resumes_at},
                               expand=SUBSCRIPTION_EXPAND, idempotency_key=self.key_for("pause"))
        if done is not None:
            self.report("PASS", "pause", f"payments of {sub_id} paused for 30 days.")
        await self.portal_session(subscription)
        scheduled = await self.step("cancellation", "scheduling the cancellation at period end, as the portal does",
                                    "post", path, cancel_at_period_end=True,
                                    idempotency_key=self.key_for("schedule"))
        detailed = await self.step("cancellation", "recording the subscriber's reason (cancellation_details)", "post",
                                   path, cancellation_details={"feedback": "other", "comment": "cancel-flow stripe check"},
                                   idempotency_key=self.key_for("details"))
        if scheduled is not None and detailed is not None:
            self.report("PASS", "cancellation", f"{sub_id} set to cancel at period end, with the reason recorded.")
        kept = await self.step("keep subscription", "undoing the scheduled cancellation (Keep my subscription)", "post",
                               path, cancel_at_period_end=False, expand=SUBSCRIPTION_EXPAND,
                               idempotency_key=self.key_for("keep"))
        if kept is not None:
            self.report("PASS", "keep subscription", f"the scheduled cancellation of {sub_id} undone.")
        ended = await self.step("subscription ended", "ending the subscription", "delete", path)
        if ended is not None:
            self.report("PASS", "subscription ended", f"{sub_id} canceled at once (customer.subscription.deleted).")
        await self.check_events(sub_id, expect_deleted=ended is not None)

    async def check_promise_against_preview(self, subscription: dict) -> None:
        """The billing model that writes every promise, against Stripe's own computation of the next invoice
        (POST /v1/invoices/create_preview): the date and the amount, the discount just applied included."""
        name = "promise vs Stripe's preview"
        try:
            facts = facts_from(subscription)
            plan = facts.plan
            promised_at, promised = plan.next_payment, plan.next_amount()
            preview = await self.call("post", "/v1/invoices/create_preview", subscription=subscription["id"])
        except stripe.StripeError as error:
            detail, advice = explain(error, "previewing the next invoice (POST /v1/invoices/create_preview)")
            self.report("FAIL", name, detail, advice)
            return
        except (KeyError, TypeError, IndexError) as error:
            self.report("FAIL", name, f"the subscription came back in a shape cancel-flow can't read (missing {error}).",
                        "unset STRIPE_API_BASE (or point it at Stripe's API), then run the check again.")
            return
        starts = {(line.get("period") or {}).get("start") for line in (preview.get("lines") or {}).get("data") or []}
        billed = preview.get("amount_due")
        if promised_at is None or starts != {int(promised_at.timestamp())} or billed != promised:
            self.report("FAIL", name, f"cancel-flow would promise {promised} on {promised_at}, Stripe's preview bills "
                        f"{billed} for a period starting {sorted(s for s in starts if s)}.",
                        "report it: cancel-flow's billing model and Stripe disagree on this account.")
        else:
            self.report("PASS", name, f"the next payment, {promised} {facts.currency.upper()} on {promised_at:%d %B %Y}, "
                        "is what Stripe's create_preview bills.")

    async def portal_session(self, subscription: dict) -> None:
        params = {"customer": subscription["customer"], "return_url": self.settings.return_url,
                  "flow_data": {"type": "subscription_cancel",
                                "subscription_cancel": {"subscription": subscription["id"]},
                                "after_completion": {"type": "redirect",
                                                     "redirect": {"return_url": f"{self.settings.base_url}/"}}}}
        if self.settings.stripe_portal_configuration:
            params["configuration"] = self.settings.stripe_portal_configuration
        try:
            session = await self.call("post", "/v1/billing_portal/sessions", **params)
        except stripe.StripeError as error:
            detail, advice = explain(error, "opening a cancel portal session (Continue to cancel)")
            if isinstance(error, stripe.InvalidRequestError):
                advice = (f"{SETUP_HINT} (it saves a portal configuration with cancellation at period end) and set "
                          "STRIPE_PORTAL_CONFIGURATION to the id it prints.")
            self.report("FAIL", "portal session", detail, advice)
            return
        self.report("PASS", "portal session", f"a subscription_cancel portal session opened ({session['id']}).")

    async def check_events(self, sub_id: str, expect_deleted: bool) -> None:
        wanted = ["customer.subscription.updated", "customer.subscription.deleted"]
        deadline = time.monotonic() + self.events_timeout
        found: list[dict] = []
        while True:
            try:
                page = await self.call("get", "/v1/events", types=wanted, limit=100)
            except stripe.StripeError as error:
                detail, advice = explain(error, "listing events")
                self.report("WARN", "events", f"not checked: {detail}", advice)
                return
            found = [e for e in page["data"] if ((e.get("data") or {}).get("object") or {}).get("id") == sub_id]
            kinds = {e["type"] for e in found}
            if ("customer.subscription.deleted" in kinds or not expect_deleted) and kinds or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        if not found:
            self.report("FAIL", "events", f"Stripe recorded no subscription events for {sub_id} within "
                        f"{self.events_timeout:g} s.", "run the check again; if it persists, look at Developers → "
                        "Events in Stripe's dashboard.")
            return
        counts = {kind: sum(1 for e in found if e["type"] == kind) for kind in wanted}
        self.report("PASS", "events", ", ".join(f"{n} {kind}" for kind, n in counts.items() if n) + f" for {sub_id}.")
        await self.check_delivery([e["id"] for e in found])

    def _stored_events(self, ids: list[str]) -> set[str] | None:
        """Which of these events the service stored (it keeps each event id once); None if its database
        can't be read from here."""
        from cancel_flow.store import make_engine

        try:
            url = sa.engine.make_url(self.settings.database_url)
            if url.get_backend_name() == "sqlite" and not (url.database and os.path.exists(url.database)):
                return None  # connecting would create an empty database file here
            engine = make_engine(self.settings.database_url)
        except (sa.exc.ArgumentError, ValueError, ImportError):
            return None
        try:
            with engine.connect() as connection:
                table = sa.table("stripe_event", sa.column("id"))
                rows = connection.execute(sa.select(table.c.id).where(table.c.id.in_(ids))).scalars()
                return set(rows)
        except sa.exc.SQLAlchemyError:
            return None
        finally:
            engine.dispose()

    async def check_delivery(self, ids: list[str]) -> None:
        name = "webhook delivery"
        url = f"{self.settings.base_url}/webhooks/stripe"
        if self.endpoint is None:
            self.report("WARN", name, f"not checked: no enabled endpoint for {url} (see 'webhook endpoint').",
                        "fix the webhook endpoint, then run the check again.")
            return
        deadline = time.monotonic() + self.delivery_timeout
        stored, pending = None, None
        while True:
            stored = await asyncio.to_thread(self._stored_events, ids)
            if stored is not None and stored >= set(ids):
                self.report("PASS", name, f"the {len(ids)} events reached the service at {url} (found in its database).")
                return
            pending = await self.pending_webhooks(ids)
            if pending == 0:
                self.report("PASS", name, f"Stripe delivered the {len(ids)} events to every endpoint listening, "
                            f"{url} included (pending_webhooks 0).")
                return
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        seen = "" if stored is None else f" {len(stored)} of {len(ids)} reached the service's database;"
        self.report("FAIL", name, f"the check's events did not all reach {url} within {self.delivery_timeout:g} s:{seen} "
                    f"{pending if pending is not None else 'an unknown number of'} deliveries still pending at Stripe.",
                    "make sure the service runs at CANCEL_FLOW_BASE_URL and that STRIPE_WEBHOOK_SECRET is this endpoint's "
                    "signing secret; Stripe's dashboard (Developers → Webhooks → the endpoint) shows each attempt and "
                    "the answer it got.")

    async def pending_webhooks(self, ids: list[str]) -> int | None:
        total = 0
        for event_id in ids:
            try:
                event = await self.call("get", f"/v1/events/{quote(event_id, safe='')}")
            except stripe.StripeError:
                return None
            total += int(event.get("pending_webhooks") or 0)
        return total

    async def clean_up(self, clock_id: str | None, coupon_id: str | None) -> None:
        removed, left = [], []
        made = (("/v1/test_helpers/test_clocks", "test clock", clock_id, " (with its customer and subscription)"),
                ("/v1/coupons", "coupon", coupon_id, ""))
        for collection, noun, object_id, along_with in made:
            if not object_id:
                continue
            try:
                await self.call("delete", f"{collection}/{quote(object_id, safe='')}")
                removed.append(f"{noun} {object_id}{along_with}")
            except stripe.StripeError:
                left.append(f"{noun} {object_id}")
        if left:
            self.report("WARN", "clean-up", f"could not delete {', '.join(left)}.",
                        "delete them in Stripe's dashboard (test mode); a test clock also deletes itself after 30 days.")
        elif removed:
            self.report("PASS", "clean-up", f"deleted {' and '.join(removed)}.")


def summary(results: list[Result], test_mode: bool, seconds: float) -> tuple[str, bool]:
    counts = {status: sum(1 for r in results if r.status == status) for status in ("PASS", "WARN", "FAIL")}
    ok = counts["FAIL"] == 0
    line = (f"{'OK' if ok else 'FAILED'}: {counts['PASS']} passed, {counts['WARN']} warning(s), {counts['FAIL']} failed "
            f"({'test' if test_mode else 'live'} mode, {seconds:.0f} s).")
    return line, ok


async def check_stripe(settings: Settings, on_line=None, **timeouts) -> tuple[list[str], bool]:
    """Every check's line (and a summary line last), and whether none failed."""
    started = time.monotonic()
    check = StripeCheck(settings, on_result=(lambda result: on_line(result.line())) if on_line else None, **timeouts)
    results = await check.run()
    last, ok = summary(results, check.test_mode, time.monotonic() - started)
    if on_line:
        on_line(last)
    return [r.line() for r in results] + [last], ok


def run_stripe_check(settings: Settings, on_line=None, **timeouts) -> tuple[list[str], bool]:
    return asyncio.run(check_stripe(settings, on_line, **timeouts))
