"""The Stripe connection the service runs with: the webhook signing secret and the portal configurations.

Each value comes from the environment when it is set there (`STRIPE_WEBHOOK_SECRET`,
`STRIPE_PORTAL_CONFIGURATION`, `STRIPE_BILLING_PORTAL_CONFIGURATION` win), else from the database, where
`stripe setup` (the command or the dashboard's "Set up Stripe") stores what it made, encrypted with a key
derived from `CANCEL_FLOW_SECRET_KEY` (HKDF-SHA256 → Fernet). Nothing has to be copied and nothing restarts:
the app reads the stored values through `LiveConnection`, a per-worker copy read again every few seconds.

Stripe has no call that rolls an endpoint's signing secret (a secret comes only with a new endpoint), so
`roll_signing_secret` makes a new endpoint, accepts both secrets for 24 hours (Stripe sends every event to
both endpoints; the second copy is dropped by its event id) and `finish_roll` then deletes the old endpoint.
Secrets are never shown again after they are made, and never logged.
"""

import asyncio
import base64
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.logs import log_event
from cancel_flow.settings import Settings
from cancel_flow.store.audit import record_audit
from cancel_flow.store.stripe_connection import read_values, write_values

WEBHOOK_SECRET, WEBHOOK_ENDPOINT = "webhook_secret", "webhook_endpoint"
PREVIOUS_SECRET, PREVIOUS_ENDPOINT = "previous_webhook_secret", "previous_webhook_endpoint"
PORTAL, BILLING_PORTAL = "portal_configuration", "billing_portal_configuration"
ENVIRONMENT, DATABASE = "environment", "database"
ROLL_OVERLAP = timedelta(hours=24)
CACHE_SECONDS = 5.0
SYSTEM = "cancel-flow"  # the audit log's actor for what the service does on its own


class Cipher:
    """Fernet with a key derived from CANCEL_FLOW_SECRET_KEY, for this purpose only."""

    def __init__(self, secret_key: str):
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"cancel-flow", info=b"stripe-connection v1") \
            .derive(secret_key.encode("utf-8"))
        self._fernet = Fernet(base64.urlsafe_b64encode(key))

    def encrypt(self, text: str) -> str:
        return self._fernet.encrypt(text.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str | None:
        """The text, or None when it was encrypted with another CANCEL_FLOW_SECRET_KEY (or altered)."""
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, ValueError):
            return None


@dataclass(frozen=True)
class Effective:
    """What the service uses now, and where each value comes from ("environment", "database" or None)."""

    webhook_secrets: tuple[str, ...] = ()  # the current one first; the previous one during a roll
    webhook_secret_source: str | None = None
    webhook_endpoint: str | None = None
    previous_endpoint: str | None = None
    previous_until: datetime | None = None
    portal_configuration: str | None = None
    portal_configuration_source: str | None = None
    billing_portal_configuration: str | None = None
    billing_portal_configuration_source: str | None = None
    unreadable: tuple[str, ...] = ()  # stored, but not with this CANCEL_FLOW_SECRET_KEY

    @property
    def rolling(self) -> bool:
        return self.previous_endpoint is not None


def _from_environment(settings: Settings, name: str) -> str | None:
    return {WEBHOOK_SECRET: settings.stripe_webhook_secret, PORTAL: settings.stripe_portal_configuration,
            BILLING_PORTAL: settings.stripe_billing_portal_configuration}.get(name)


def stored(engine: Engine, settings: Settings) -> tuple[dict[str, tuple[str, datetime | None]], tuple[str, ...]]:
    """The stored values, decrypted, by name (value, expiry), and the names that could not be decrypted."""
    cipher, found, unreadable = Cipher(settings.secret_key), {}, []
    for row in read_values(engine):
        value = cipher.decrypt(row.value)
        if value is None:
            unreadable.append(row.name)
        else:
            found[row.name] = (value, as_utc(row.expires_at) if row.expires_at else None)
    return found, tuple(unreadable)


def read_connection(engine: Engine, settings: Settings) -> Effective:
    """The values in use now: the environment's where set, else the database's."""
    found, unreadable = stored(engine, settings)
    now = utc_now()

    def pick(name: str) -> tuple[str | None, str | None]:
        if _from_environment(settings, name):
            return _from_environment(settings, name), ENVIRONMENT
        if name in found:
            return found[name][0], DATABASE
        return None, None

    secret, secret_source = pick(WEBHOOK_SECRET)
    secrets_in_use: tuple[str, ...] = (secret,) if secret else ()
    previous = found.get(PREVIOUS_SECRET)
    if secret_source == DATABASE and previous and previous[1] and previous[1] > now:
        secrets_in_use += (previous[0],)
    portal, portal_source = pick(PORTAL)
    billing, billing_source = pick(BILLING_PORTAL)
    previous_endpoint = found.get(PREVIOUS_ENDPOINT)
    return Effective(webhook_secrets=secrets_in_use, webhook_secret_source=secret_source,
                     webhook_endpoint=found.get(WEBHOOK_ENDPOINT, (None,))[0],
                     previous_endpoint=previous_endpoint[0] if previous_endpoint else None,
                     previous_until=previous_endpoint[1] if previous_endpoint else None,
                     portal_configuration=portal, portal_configuration_source=portal_source,
                     billing_portal_configuration=billing, billing_portal_configuration_source=billing_source,
                     unreadable=unreadable)


class LiveConnection:
    """The app's view of the connection: read from the database at most every `max_age` seconds per worker, so
    a request costs no query; `forget` makes the next read fresh (after this worker changed it)."""

    def __init__(self, engine: Engine, settings: Settings, max_age: float = CACHE_SECONDS):
        self.engine, self.settings, self.max_age = engine, settings, max_age
        self._value: Effective | None = None
        self._read_at = 0.0
        self._reading: asyncio.Future | None = None

    def age(self) -> float:
        return time.monotonic() - self._read_at if self._value is not None else float("inf")

    async def current(self, max_age: float | None = None) -> Effective:
        if self._value is not None and self.age() < (self.max_age if max_age is None else max_age):
            return self._value
        if self._reading is None:  # one read at a time per worker; the others wait for it
            self._reading = asyncio.ensure_future(run_in_threadpool(read_connection, self.engine, self.settings))
        reading = self._reading
        try:
            value = await asyncio.shield(reading)
        finally:
            if self._reading is reading and reading.done():
                self._reading = None
        self._value, self._read_at = value, time.monotonic()
        return value

    def forget(self) -> None:
        self._value = None


def effective_settings(settings: Settings, connection: Effective) -> Settings:
    """The settings with the connection's values in place of the environment's (for `stripe check`)."""
    return replace(settings, stripe_webhook_secret=connection.webhook_secrets[0] if connection.webhook_secrets else None,
                   stripe_portal_configuration=connection.portal_configuration,
                   stripe_billing_portal_configuration=connection.billing_portal_configuration)


def settings_in_use(settings: Settings) -> Settings:
    """The settings with the stored connection's values where the environment has none (for `cancel-flow stripe
    check`); the settings as they are when the database can't be read from here."""
    import os

    import sqlalchemy as sa

    from cancel_flow.store import make_engine

    try:
        url = sa.engine.make_url(settings.database_url)
        if url.get_backend_name() == "sqlite" and not (url.database and os.path.exists(url.database)):
            return settings  # connecting would create an empty database file here
        engine = make_engine(settings.database_url)
    except (sa.exc.ArgumentError, ValueError, ImportError):
        return settings
    try:
        return effective_settings(settings, read_connection(engine, settings))
    except sa.exc.SQLAlchemyError:
        return settings
    finally:
        engine.dispose()


def _engine_for(settings: Settings, engine: Engine | None) -> tuple[Engine, bool]:
    if engine is not None:
        return engine, False
    from cancel_flow.store import make_engine, migrate

    made = make_engine(settings.database_url)
    migrate(made)
    return made, True


# --- what setup made ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Created:
    """What one run of `stripe setup` made or found (None: nothing of that kind)."""

    portal_configuration: str | None = None
    billing_portal_configuration: str | None = None
    webhook_endpoint: str | None = None
    webhook_secret: str | None = None  # only when the endpoint was made now: Stripe shows it once


def keep_created(settings: Settings, created: Created, *, engine: Engine | None = None, actor: str,
                 address: str | None = None) -> list[str]:
    """Store what setup made (encrypted), with its audit row in the same transaction; the lines that say so,
    never a secret."""
    engine, made = _engine_for(settings, engine)
    try:
        cipher = Cipher(settings.secret_key)
        current, _ = stored(engine, settings)
        changes: dict = {}
        if created.portal_configuration:
            changes[PORTAL] = (cipher.encrypt(created.portal_configuration), None)
        if created.billing_portal_configuration:
            changes[BILLING_PORTAL] = (cipher.encrypt(created.billing_portal_configuration), None)
        if created.webhook_secret and created.webhook_endpoint:
            changes[WEBHOOK_SECRET] = (cipher.encrypt(created.webhook_secret), None)
            changes[WEBHOOK_ENDPOINT] = (cipher.encrypt(created.webhook_endpoint), None)
        elif created.webhook_endpoint and WEBHOOK_ENDPOINT not in current:
            changes[WEBHOOK_ENDPOINT] = (cipher.encrypt(created.webhook_endpoint), None)
        parts = [f"portal configuration {created.portal_configuration}" if created.portal_configuration else None,
                 f"billing portal configuration {created.billing_portal_configuration}"
                 if created.billing_portal_configuration else None,
                 f"webhook endpoint {created.webhook_endpoint}" if created.webhook_endpoint else None,
                 "its new signing secret" if created.webhook_secret else None]
        with engine.begin() as connection:
            write_values(connection, changes)
            record_audit(connection, "stripe.setup", "stored " + ", ".join(p for p in parts if p), actor=actor,
                         address=address)
        return _setup_lines(settings, created, has_secret=bool(created.webhook_secret) or WEBHOOK_SECRET in current)
    finally:
        if made:
            engine.dispose()


def _setup_lines(settings: Settings, created: Created, has_secret: bool) -> list[str]:
    lines = ["Stored in the database, encrypted with a key derived from CANCEL_FLOW_SECRET_KEY: "
             + ", ".join(part for part in (
                 "the webhook signing secret" if created.webhook_secret else None,
                 "the portal configuration" if created.portal_configuration else None,
                 "the billing portal configuration" if created.billing_portal_configuration else None) if part)
             + ". The service uses them at once: nothing to copy, no restart."]
    if not created.webhook_secret:
        lines.append("The webhook endpoint existed already, and Stripe shows a signing secret only when it makes an "
                     "endpoint: " + ("the stored secret stays in use." if has_secret else
                                     "roll the signing secret on /dashboard/stripe (or run `cancel-flow stripe setup "
                                     "--recreate-webhook`) to get one the service stores."))
    for name, variable in ((WEBHOOK_SECRET, "STRIPE_WEBHOOK_SECRET"), (PORTAL, "STRIPE_PORTAL_CONFIGURATION"),
                           (BILLING_PORTAL, "STRIPE_BILLING_PORTAL_CONFIGURATION")):
        if _from_environment(settings, name):
            lines.append(f"{variable} is set in the environment and wins over the stored value: remove it there to "
                         "use the stored one.")
    return lines


# --- rolling the signing secret -------------------------------------------------------------------------

async def roll_signing_secret(settings: Settings, engine: Engine, *, actor: str, address: str | None = None) -> list[str]:
    """A new endpoint with its own secret becomes the one in use; the old secret is still accepted for 24 hours,
    then `finish_roll` deletes the old endpoint (at once when its secret isn't known here: nothing verified it)."""
    from cancel_flow.stripe_gateway import StripeGateway, StripeSetup

    found, _ = await run_in_threadpool(stored, engine, settings)
    if _from_environment(settings, WEBHOOK_SECRET):
        raise RollRefused("STRIPE_WEBHOOK_SECRET is set in the environment, so the service uses that secret: roll it in "
                          "Stripe's dashboard and change the environment, or remove it there to manage it here.")
    if PREVIOUS_ENDPOINT in found:
        raise RollRefused("A roll is under way already: the old endpoint is deleted at the end of its 24 hours.")
    gateway = StripeGateway(settings)
    try:
        setup = StripeSetup(gateway)
        url = f"{settings.base_url}/webhooks/stripe"
        old_endpoint = found.get(WEBHOOK_ENDPOINT, (None,))[0]
        if old_endpoint is None:
            existing = await setup.find_webhook_endpoint(url)
            old_endpoint = existing["id"] if existing else None
        endpoint_id, secret = await setup.create_webhook_endpoint(url)
        old_secret = found.get(WEBHOOK_SECRET, (None,))[0]
        deleted_now = False
        if old_endpoint and not old_secret:  # nothing here verified its events: no reason to keep it
            deleted_now = await setup.delete_webhook_endpoint(old_endpoint)
    finally:
        await gateway.close()
    cipher, until = Cipher(settings.secret_key), utc_now() + ROLL_OVERLAP
    changes = {WEBHOOK_SECRET: (cipher.encrypt(secret), None), WEBHOOK_ENDPOINT: (cipher.encrypt(endpoint_id), None)}
    if old_endpoint and old_secret:
        changes[PREVIOUS_SECRET] = (cipher.encrypt(old_secret), until)
        changes[PREVIOUS_ENDPOINT] = (cipher.encrypt(old_endpoint), until)
    detail = f"new webhook endpoint {endpoint_id} and its signing secret"
    if old_endpoint and old_secret:
        detail += f"; {old_endpoint} and its secret accepted until {until:%Y-%m-%d %H:%M} UTC, then deleted"
    elif old_endpoint:
        detail += f"; {old_endpoint} deleted at once (its secret was not stored here)" if deleted_now else ""

    def write():
        with engine.begin() as connection:
            write_values(connection, changes)
            record_audit(connection, "stripe.secret_rolled", detail, actor=actor, address=address)

    await run_in_threadpool(write)
    log_event("stripe.secret_rolled", endpoint=endpoint_id, previous=old_endpoint)
    return [f"Webhook endpoint {endpoint_id} made; its signing secret is stored and in use now."] + (
        [f"The old endpoint {old_endpoint} keeps working with its secret until {until:%d %b %Y, %H:%M} UTC; "
         "then it is deleted."] if old_endpoint and old_secret else [])


class RollRefused(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


async def finish_roll(settings: Settings, engine: Engine) -> bool:
    """When a roll's 24 hours are over: delete the old endpoint at Stripe and forget its secret. True if it did."""
    from cancel_flow.stripe_gateway import StripeGateway, StripeSetup

    found, _ = await run_in_threadpool(stored, engine, settings)
    previous = found.get(PREVIOUS_ENDPOINT)
    if previous is None or (previous[1] and previous[1] > utc_now()):
        return False
    gateway = StripeGateway(settings)
    try:
        await StripeSetup(gateway).delete_webhook_endpoint(previous[0])
    finally:
        await gateway.close()

    def forget():
        with engine.begin() as connection:
            write_values(connection, {PREVIOUS_SECRET: None, PREVIOUS_ENDPOINT: None})
            record_audit(connection, "stripe.old_endpoint_deleted",
                         f"{previous[0]}: the 24 hours of its rolled secret are over", actor=SYSTEM)

    await run_in_threadpool(forget)
    log_event("stripe.old_endpoint_deleted", endpoint=previous[0])
    return True


async def finish_roll_quietly(settings: Settings, engine: Engine) -> None:
    """finish_roll for the periodic sweep: a failure is logged and tried again next round."""
    try:
        await finish_roll(settings, engine)
    except Exception as error:  # Stripe or the database: the next round tries again
        log_event("stripe.finish_roll_failed", level=30, error=type(error).__name__)
