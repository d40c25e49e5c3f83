"""Tables. One row per cancel link (a cancel session), and each Stripe event received once."""

from datetime import date, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

from cancel_flow.clock import utc_now

SAVED_OUTCOMES = ("saved_discount", "saved_pause", "saved_switch", "saved_free_period", "saved_keep")
# Saves by an accepted offer: these start the offer cooldown.
OFFER_OUTCOMES = ("saved_discount", "saved_pause", "saved_switch", "saved_free_period")
# `won_back`: canceled, then came back through a win-back comeback checkout (still a cancellation for the save rate);
# `withdrawn`: withdrew from the contract (the EU withdrawal function).
OUTCOMES = ("open", *SAVED_OUTCOMES, "contact_requested", "sent_to_portal", "canceled", "deflected", "won_back",
            "withdrawn")
CANCELED_OUTCOMES = ("canceled", "won_back")


OFFER_ENDS = sa.text("offer_ends_at IS NOT NULL")
CANCELED = sa.text("canceled_at IS NOT NULL")
TALK_NOT_HANDLED = sa.text("offer_kind = 'contact' AND contact_handled_at IS NULL")
UNPAID_FAILURE = sa.text("first_failed_at IS NOT NULL AND paid_at IS NULL AND voided_at IS NULL")


def _when(**kwargs):
    return Field(sa_type=sa.DateTime(timezone=True), **kwargs)


class CancelSession(SQLModel, table=True):
    __tablename__ = "cancel_session"
    # Only the few sessions not yet rolled up are in this index, so finding them stays cheap.
    __table_args__ = (sa.Index("ix_cancel_session_not_rolled_up", "rolled_up",
                               postgresql_where=sa.text("NOT rolled_up"), sqlite_where=sa.text("NOT rolled_up")),
                      # The attention list's windows (store/attention.py), each over the few rows it can hold.
                      sa.Index("ix_cancel_session_offer_ends_at", "offer_ends_at", postgresql_where=OFFER_ENDS,
                               sqlite_where=OFFER_ENDS),
                      sa.Index("ix_cancel_session_canceled_period_end", "period_end", postgresql_where=CANCELED,
                               sqlite_where=CANCELED),
                      sa.Index("ix_cancel_session_talk_not_handled", "created_at", postgresql_where=TALK_NOT_HANDLED,
                               sqlite_where=TALK_NOT_HANDLED),
                      # A new link's "already decided on another link" lookup (store `latest_offer_save`, every first
                      # view): the subscription's accepted offers at once, not every session of the subscription.
                      sa.Index("ix_cancel_session_subscription_outcome", "subscription_id", "outcome", "decided_at"))

    id: int | None = Field(default=None, primary_key=True)
    nonce: str = Field(max_length=64, unique=True)
    customer_id: str = Field(max_length=255, index=True)
    subscription_id: str = Field(max_length=255, index=True)
    customer_email: str | None = Field(default=None, max_length=512)
    plan_name: str = Field(max_length=512)
    # What one payment charges (discounts included), as the plan line shows it; the note says which discount.
    price_amount: int
    price_note: str | None = Field(default=None, max_length=64)
    interval: str = Field(max_length=16)
    interval_count: int = 1
    monthly_amount: int
    currency: str = Field(max_length=3)
    had_discount: bool = False
    was_paused: bool = False
    cancel_at_period_end: bool = False
    period_end: datetime | None = _when(default=None)
    reason: str | None = Field(default=None, max_length=32, index=True)
    comment: str | None = Field(default=None, sa_type=sa.Text)
    offers_shown: list[str] | None = Field(default=None, sa_type=sa.JSON)
    claimed_offer: str | None = Field(default=None, max_length=128)
    claimed_at: datetime | None = _when(default=None)
    chosen_offer: str | None = Field(default=None, max_length=128)
    offer_kind: str | None = Field(default=None, max_length=16)
    discount_percent: float | None = None
    discount_months: int | None = None
    pause_resumes_at: datetime | None = _when(default=None)
    outcome: str = Field(default="open", max_length=20, index=True)
    created_at: datetime = _when(default_factory=utc_now, index=True)
    reason_at: datetime | None = _when(default=None)
    decided_at: datetime | None = _when(default=None)
    updated_at: datetime = _when(default_factory=utc_now)
    # False until the dashboard's daily roll-up has counted this session as it now is.
    rolled_up: bool = False
    kept_at: datetime | None = _when(default=None)
    # When Stripe says the subscription was canceled (or set to cancel), whatever the outcome.
    canceled_at: datetime | None = _when(default=None, index=True)
    # Canceled by the coach or by Stripe's test-mode clean-up, not by the subscriber in our flow.
    canceled_outside_flow: bool = False
    stripe_feedback: str | None = Field(default=None, max_length=32)
    stripe_comment: str | None = Field(default=None, sa_type=sa.Text)
    stripe_cancellation_reason: str | None = Field(default=None, max_length=64)
    # Version of the newest Stripe state applied (event time × 10 + how far the cancellation went),
    # so an older event never undoes a newer one.
    stripe_state_at: int | None = Field(default=None, sa_type=sa.BigInteger)
    # The [[experiment]] this session took part in and the arm its subscription was hashed to.
    experiment_id: str | None = Field(default=None, max_length=64, index=True)
    experiment_arm: str | None = Field(default=None, max_length=64)
    # The accepted offer's terms as Stripe bills them, and the words the subscriber was shown.
    discount_payments: int | None = None
    pause_payments: int | None = None
    coupon_id: str | None = Field(default=None, max_length=128)
    switch_price: str | None = Field(default=None, max_length=255)
    free_months: int | None = None
    next_payment_at: datetime | None = _when(default=None)
    promise: str | None = Field(default=None, sa_type=sa.Text)
    # The same promise in each language shipped ({"es": "…"}): the client's done page and confirmation email.
    promise_texts: dict | None = Field(default=None, sa_type=sa.JSON)
    # The payments the promise names: [[ISO moment, amount, regular amount], …], the last at the regular price.
    schedule: list | None = Field(default=None, sa_type=sa.JSON)
    offer_cost: int | None = None
    # Each new try at applying an offer after a failure gets a new idempotency key.
    claim_attempt: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # A later session of the same subscription decided: the dashboard counts that one instead.
    superseded: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # The subscription as Stripe last told it, reused by reloads for a few seconds; cleared by webhooks.
    stripe_snapshot: str | None = Field(default=None, sa_type=sa.Text)
    snapshot_at: datetime | None = _when(default=None)
    # When the accepted offer has run its course: a pause resumes, free time ends, a discount's coupon ends.
    offer_ends_at: datetime | None = _when(default=None)
    # A "talk to your coach" request the coach marked as handled on the attention list, and by whom.
    contact_handled_at: datetime | None = _when(default=None)
    contact_handled_by: str | None = Field(default=None, max_length=320)
    # Won back by a win-back comeback checkout: when, and the new subscription.
    won_back_at: datetime | None = _when(default=None)
    won_back_subscription_id: str | None = Field(default=None, max_length=255)


class InvoiceRecord(SQLModel, table=True):
    """A Stripe invoice as its `invoice.*` webhooks told it: discounts billed, failed and recovered payments."""

    __tablename__ = "invoice_record"
    # Failed payments not recovered (the attention list): a few rows among every invoice ever paid.
    __table_args__ = (sa.Index("ix_invoice_record_unpaid_failure", "first_failed_at", postgresql_where=UNPAID_FAILURE,
                               sqlite_where=UNPAID_FAILURE),)

    id: str = Field(primary_key=True, max_length=255)
    customer_id: str = Field(max_length=255, index=True)
    subscription_id: str | None = Field(default=None, max_length=255, index=True)
    status: str = Field(max_length=20)
    billing_reason: str | None = Field(default=None, max_length=40)
    currency: str = Field(max_length=3)
    subtotal: int = Field(sa_type=sa.BigInteger)
    total_discount: int = Field(sa_type=sa.BigInteger)
    amount_due: int = Field(sa_type=sa.BigInteger)
    amount_paid: int = Field(sa_type=sa.BigInteger)
    attempt_count: int = 0
    created: datetime = _when(index=True)
    first_failed_at: datetime | None = _when(default=None)
    paid_at: datetime | None = _when(default=None)
    voided_at: datetime | None = _when(default=None)
    failure_message: str | None = Field(default=None, max_length=500)
    card_brand: str | None = Field(default=None, max_length=32)
    card_last4: str | None = Field(default=None, max_length=4)
    event_created: int = Field(default=0, sa_type=sa.BigInteger)
    updated_at: datetime = _when(default_factory=utc_now)


class OutsideCancellation(SQLModel, table=True):
    """A subscription canceled (or set to cancel) without our flow: in Stripe's portal, by the coach in Stripe,
    or by Stripe itself (failed payments, test-mode clean-up), with Stripe's `cancellation_details`."""

    __tablename__ = "outside_cancellation"

    subscription_id: str = Field(primary_key=True, max_length=255)
    customer_id: str = Field(max_length=255, index=True)
    canceled_at: datetime = _when(index=True)
    ended: bool = False
    feedback: str | None = Field(default=None, max_length=32)
    comment: str | None = Field(default=None, sa_type=sa.Text)
    reason: str | None = Field(default=None, max_length=64)
    monthly_amount: int = Field(default=0, sa_type=sa.BigInteger)
    currency: str = Field(default="usd", max_length=3)
    event_created: int = Field(default=0, sa_type=sa.BigInteger)


class StripeEvent(SQLModel, table=True):
    __tablename__ = "stripe_event"

    id: str = Field(primary_key=True, max_length=255)
    type: str = Field(max_length=128)
    created: int = Field(sa_type=sa.BigInteger)
    payload: str = Field(sa_type=sa.Text)
    received_at: datetime = _when(default_factory=utc_now)
    handled_at: datetime | None = _when(default=None)


class SessionOffer(SQLModel, table=True):
    """One row per offer shown in a session, so the dashboard counts offers with plain GROUP BY."""

    __tablename__ = "session_offer"

    session_id: int = Field(foreign_key="cancel_session.id", primary_key=True)
    offer_id: str = Field(max_length=128, primary_key=True, index=True)
    shown_at: datetime = _when(default_factory=utc_now)


class Coach(SQLModel, table=True):
    __tablename__ = "coach"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True)
    password_hash: str = Field(max_length=512)
    created_at: datetime = _when(default_factory=utc_now)
    # Carried in the session cookie; logout and a new password raise it, which ends every session at once.
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # owner | editor | viewer (cancel_flow/web/access.py says what each may do); logins made before roles are owners
    role: str = Field(default="owner", max_length=8, sa_column_kwargs={"server_default": "owner"})


class CoachToken(SQLModel, table=True):
    """A single-use link for a coach: an invitation (72 hours) or a password reset (1 hour). Only the token's
    SHA-256 is kept; using it is one conditional UPDATE, so it works once however often it is sent."""

    __tablename__ = "coach_token"

    token_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=8)  # invite | reset
    email: str = Field(max_length=320, index=True)
    role: str | None = Field(default=None, max_length=8)  # an invitation's role
    created_by: str | None = Field(default=None, max_length=320)
    created_at: datetime = _when(default_factory=utc_now)
    expires_at: datetime = _when()
    used_at: datetime | None = _when(default=None)


class AuditEntry(SQLModel, table=True):
    """One change of settings, team, keys, endpoints or the Stripe connection: who, when, what, from where."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _when(default_factory=utc_now, index=True)
    actor: str = Field(max_length=320)  # a coach's email, "command line", or "API key 'name'"
    action: str = Field(max_length=64, index=True)  # dotted: team.invited, api_key.created, stripe.setup, …
    detail: str = Field(default="", sa_type=sa.Text)
    address: str | None = Field(default=None, max_length=64)  # the client's address (an IPv6 client's /64)


class StripeConnectionValue(SQLModel, table=True):
    """What `stripe setup` made that the service needs (the webhook signing secret, the endpoint and portal
    configuration ids), one row per name, encrypted with a key derived from CANCEL_FLOW_SECRET_KEY."""

    __tablename__ = "stripe_connection"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=sa.Text)  # a Fernet token
    # the previous signing secret and endpoint while a secret is rolled: accepted, then deleted, at this time
    expires_at: datetime | None = _when(default=None)
    updated_at: datetime = _when(default_factory=utc_now)


class StripeCheckRun(SQLModel, table=True):
    """A run of `stripe check` started from the dashboard: its lines, so every worker shows the last one."""

    __tablename__ = "stripe_check_run"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = _when(default_factory=utc_now, index=True)
    started_by: str = Field(max_length=320)
    finished_at: datetime | None = _when(default=None)
    ok: bool | None = None
    # each check's {status, name, detail, advice}, in the order they ran
    lines: list = Field(default_factory=list, sa_type=sa.JSON)


class LoginAttempt(SQLModel, table=True):
    """Dashboard login attempts counted per window, per (email, address) and per address, for every worker.
    One row per key, raised by a single conditional upsert, so parallel guesses can't pass the count."""

    __tablename__ = "login_attempt"

    key_hash: str = Field(primary_key=True, max_length=64)  # SHA-256 of kind, email and/or address
    kind: str = Field(max_length=8)  # "pair" or "address"
    failures: int = 0
    window_start: datetime = _when(default_factory=utc_now, index=True)


class ApiKey(SQLModel, table=True):
    """A JSON API key; only its SHA-256 is kept (keys are long and random, so a fast hash is enough)."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100, unique=True)
    key_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = _when(default_factory=utc_now)
    last_used_at: datetime | None = _when(default=None)
    revoked_at: datetime | None = _when(default=None)
    # what the key may do, space-separated (api_keys.SCOPES); keys made before scopes existed keep the first three
    scopes: str = Field(default="links stats hooks", max_length=100, sa_column_kwargs={"server_default": "links stats hooks"})


class ConfigVersion(SQLModel, table=True):
    """One saved version of the coach's configuration (the TOML document as JSON); the highest is live.
    Versions are never changed: a restore saves an old one's document as a new version."""

    __tablename__ = "config_version"

    version: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    document: str = Field(sa_type=sa.Text)
    saved_at: datetime = _when(default_factory=utc_now)
    saved_by: str = Field(max_length=320)
    origin: str = Field(max_length=16)  # file | dashboard | api | import | restore
    note: str | None = Field(default=None, max_length=500)


class BrandLogo(SQLModel, table=True):
    """A logo the coach uploaded (PNG, JPEG or WebP), kept in the database so every replica serves it; the
    configuration names it as `[brand] logo = "upload:<sha256>"`. Rows are never changed, so every version
    that names one can be restored."""

    __tablename__ = "brand_logo"

    sha256: str = Field(primary_key=True, max_length=64)
    content_type: str = Field(max_length=16)
    data: bytes = Field(sa_type=sa.LargeBinary)
    uploaded_at: datetime = _when(default_factory=utc_now)
    uploaded_by: str = Field(max_length=320)


class LinkRequest(SQLModel, table=True):
    """Requests for links on the shared page in the current hour, by hashed email and by hashed client
    address; one row per key, counted by a single conditional upsert."""

    __tablename__ = "link_request"

    key_hash: str = Field(primary_key=True, max_length=64)
    kind: str = Field(max_length=8)  # "email" or "ip"
    requests: int = 0
    window_start: datetime = _when(default_factory=utc_now, index=True)


class StatsDay(SQLModel, table=True):
    """Daily roll-up of sessions by the day they started, so the dashboard reads days, not sessions.
    Rebuilt for the days whose sessions changed since the last refresh (see store/stats.py)."""

    __tablename__ = "stats_day"

    id: int | None = Field(default=None, primary_key=True)
    day: date = Field(index=True)
    outcome: str = Field(max_length=20)
    reason: str | None = Field(default=None, max_length=32)
    currency: str = Field(max_length=3)
    chosen_offer: str | None = Field(default=None, max_length=128)
    sessions: int
    monthly_amount: int
    discount_cost: float
    lasted_30: int
    lasted_60: int
    lasted_90: int


class StatsDayOffer(SQLModel, table=True):
    __tablename__ = "stats_day_offer"

    day: date = Field(primary_key=True)
    offer_id: str = Field(max_length=128, primary_key=True)
    shown: int


class StatsWatermark(SQLModel, table=True):
    """One row: sessions updated before this moment are in the roll-ups."""

    __tablename__ = "stats_watermark"

    id: int = Field(default=1, primary_key=True)
    refreshed_until: datetime = _when()


# Outgoing webhooks, alerts and the outbox that delivers them ---------------------------------------

class WebhookEndpoint(SQLModel, table=True):
    """A URL that receives signed events (Standard Webhooks); added with the CLI or as a REST hook."""

    __tablename__ = "webhook_endpoint"

    id: str = Field(primary_key=True, max_length=32)
    url: str = Field(max_length=2048)
    secret: str = Field(max_length=100)
    # Event types sent to this URL; empty: every event.
    events: list[str] = Field(default_factory=list, sa_type=sa.JSON)
    enabled: bool = True
    source: str = Field(max_length=8)  # "cli" or "api"
    # First failure of the current run of failures; cleared by a success.
    failing_since: datetime | None = _when(default=None)
    disabled_at: datetime | None = _when(default=None)
    created_at: datetime = _when(default_factory=utc_now)


class OutboxEvent(SQLModel, table=True):
    """Something that happened, recorded in the transaction of the change; its id is the `webhook-id`."""

    __tablename__ = "outbox_event"

    id: str = Field(primary_key=True, max_length=40)
    type: str = Field(max_length=64, index=True)
    # Set by callers that may report the same happening twice (a redelivered Stripe event): one event per key.
    key: str | None = Field(default=None, max_length=255, unique=True)
    body: str = Field(sa_type=sa.Text)
    created_at: datetime = _when(default_factory=utc_now)


class OutboxDelivery(SQLModel, table=True):
    """One message to send (webhook, Slack or email), written before it is sent and claimed by one worker."""

    __tablename__ = "outbox_delivery"
    __table_args__ = (sa.Index("ix_outbox_delivery_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8)  # webhook | slack | email
    target: str = Field(max_length=2048)  # URL or email address
    endpoint_id: str | None = Field(default=None, max_length=32, index=True)
    event_id: str = Field(max_length=40, index=True)
    event_type: str = Field(max_length=64)
    # Callers sending one message per thing (an email per invoice and day): one delivery per key.
    key: str | None = Field(default=None, max_length=255, unique=True)
    payload: str = Field(sa_type=sa.Text)
    status: str = Field(default="pending", max_length=12)  # pending | delivering | delivered | failed
    attempts: int = 0
    next_attempt_at: datetime = _when(default_factory=utc_now)
    claimed_at: datetime | None = _when(default=None)
    claimed_by: str | None = Field(default=None, max_length=64)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _when(default_factory=utc_now, index=True)
    delivered_at: datetime | None = _when(default=None)


# Billing emails (failed payments, renewal and discount reminders, confirmations) -------------------

class BillingEmail(SQLModel, table=True):
    """One email to a subscriber, written (with its outbox delivery) before anything is sent: one row per
    key (an invoice and day, a renewal, a discount, a session), so no worker or restart sends it twice."""

    __tablename__ = "billing_email"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=255, unique=True)
    kind: str = Field(max_length=32, index=True)
    customer_id: str = Field(max_length=255, index=True)
    email: str | None = Field(default=None, max_length=512)
    invoice_id: str | None = Field(default=None, max_length=255, index=True)
    subscription_id: str | None = Field(default=None, max_length=255)
    session_id: int | None = None
    # Days after the first failure (failed payments) or before the date (reminders).
    step: int | None = None
    delivery_id: int | None = None
    # pending | sending | sent | failed | skipped | unknown (the sender stopped during SMTP: not sent again)
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=500)
    created_at: datetime = _when(default_factory=utc_now, index=True)
    sending_at: datetime | None = _when(default=None)
    sent_at: datetime | None = _when(default=None)


class EmailUnsubscribe(SQLModel, table=True):
    """A subscriber's one-click 'stop these emails', per customer and kind."""

    __tablename__ = "email_unsubscribe"

    customer_id: str = Field(primary_key=True, max_length=255)
    kind: str = Field(primary_key=True, max_length=32)
    created_at: datetime = _when(default_factory=utc_now)


class EmailScan(SQLModel, table=True):
    """When a scan of Stripe's subscriptions for reminders last started: one worker scans per period."""

    __tablename__ = "email_scan"

    name: str = Field(primary_key=True, max_length=32)
    started_at: datetime = _when()


# Win-back: clients whose subscription ended, the comeback steps they were sent, refused addresses ------

class WinbackClient(SQLModel, table=True):
    """A subscription that ended, as its `customer.subscription.deleted` told it: the plan, the reason (ours from
    the flow, else Stripe's feedback), and whether the client came back (through a comeback checkout, or alone)."""

    __tablename__ = "winback_client"

    subscription_id: str = Field(primary_key=True, max_length=255)
    customer_id: str = Field(max_length=255, index=True)
    customer_email: str | None = Field(default=None, max_length=512)
    customer_name: str | None = Field(default=None, max_length=512)
    # The cancel session that lost them (the subscription's newest decided one), if they used the flow.
    session_id: int | None = None
    reason: str | None = Field(default=None, max_length=32, index=True)
    reason_source: str | None = Field(default=None, max_length=8)  # flow | stripe
    stripe_reason: str | None = Field(default=None, max_length=64)  # cancellation_details.reason
    plan_name: str = Field(max_length=512)
    price_id: str | None = Field(default=None, max_length=255)
    product_id: str | None = Field(default=None, max_length=255)
    unit_amount: int = Field(sa_type=sa.BigInteger)
    quantity: int = 1
    currency: str = Field(max_length=3)
    interval: str = Field(max_length=16)
    interval_count: int = 1
    monthly_amount: int = Field(sa_type=sa.BigInteger)
    ended_at: datetime = _when(index=True)
    # Subscribed again without a comeback link (seen before a step was sent): no more steps.
    returned_at: datetime | None = _when(default=None)
    returned_subscription_id: str | None = Field(default=None, max_length=255)
    won_back_at: datetime | None = _when(default=None, index=True)
    won_back_step: int | None = None
    won_back_subscription_id: str | None = Field(default=None, max_length=255)
    checkout_session_id: str | None = Field(default=None, max_length=255)
    # The returned subscription's monthly amount at its regular price, in its currency.
    mrr_won_back: int | None = Field(default=None, sa_type=sa.BigInteger)
    won_back_currency: str | None = Field(default=None, max_length=3)
    created_at: datetime = _when(default_factory=utc_now)


class WinbackStep(SQLModel, table=True):
    """One comeback step planned for an ended subscription (its email is a BillingEmail with `email_key`): the
    terms it offered, and when its comeback page was first opened. Skipped steps say why."""

    __tablename__ = "winback_step"
    __table_args__ = (sa.UniqueConstraint("subscription_id", "step", name="uq_winback_step_subscription_step"),)

    id: int | None = Field(default=None, primary_key=True)
    subscription_id: str = Field(max_length=255, index=True)
    customer_id: str = Field(max_length=255, index=True)
    step: int
    days_after: int
    offer_id: str | None = Field(default=None, max_length=128)
    percent_off: float | None = None
    payments: int | None = None
    # The price the comeback page offers: the old one, or the product's current default when it was archived.
    price_id: str | None = Field(default=None, max_length=255)
    unit_amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    price_replaced: bool = False
    email_key: str = Field(max_length=255)
    skipped: str | None = Field(default=None, max_length=500)
    opened_at: datetime | None = _when(default=None)
    created_at: datetime = _when(default_factory=utc_now, index=True)


class EmailRefusal(SQLModel, table=True):
    """An address the mail server refused permanently (a 5xx SMTP answer) when one of our emails was sent to it:
    no win-back email goes there again."""

    __tablename__ = "email_refusal"

    email: str = Field(primary_key=True, max_length=512)
    customer_id: str | None = Field(default=None, max_length=255, index=True)
    code: int
    message: str | None = Field(default=None, max_length=500)
    refused_at: datetime = _when(default_factory=utc_now)


# Compliance: withdrawals (EU) and cancel-button declarations (Germany), kept [compliance] records_keep_days -------

class Declaration(SQLModel, table=True):
    """A client's withdrawal or cancellation as they sent it, to the second, and what was done with it. Its
    acknowledgement is the outbox email with key `ack_key` (sent when: that delivery's `delivered_at`)."""

    __tablename__ = "declaration"

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)  # withdrawal | cancellation
    source: str = Field(max_length=16)  # flow (a cancel link) | shared_link (the page anyone can open)
    received_at: datetime = _when(index=True)  # to the second, as the acknowledgement says it
    name: str = Field(max_length=200)
    email: str = Field(max_length=320)
    contract: str = Field(max_length=500)  # which contract, as the client named it (or the link's subscription)
    cancellation: str | None = Field(default=None, max_length=16)  # ordinary | extraordinary (cancel button)
    reason: str | None = Field(default=None, sa_type=sa.Text)  # an extraordinary cancellation's reason
    content: str = Field(sa_type=sa.Text)  # the declaration in words, as stored and quoted in the acknowledgement
    language: str = Field(default="en", max_length=8)
    # One declaration per link and kind: a double submit finds the first.
    dedupe_key: str | None = Field(default=None, max_length=128, unique=True)
    session_id: int | None = None
    customer_id: str | None = Field(default=None, max_length=255)
    subscription_id: str | None = Field(default=None, max_length=255, index=True)
    plan_name: str | None = Field(default=None, max_length=512)
    # received | accepted (acted on) | needs_coach | not_eligible | undone
    status: str = Field(default="received", max_length=16, index=True)
    detail: str | None = Field(default=None, sa_type=sa.Text)  # what was decided, in words, for the coach
    effective_at: datetime | None = _when(default=None)  # when the contract ends
    refund_mode: str | None = Field(default=None, max_length=16)
    refund_amount: int | None = Field(default=None, sa_type=sa.BigInteger)
    refund_currency: str | None = Field(default=None, max_length=3)
    refunds: list | None = Field(default=None, sa_type=sa.JSON)  # [[refund id, amount], …] as Stripe answered
    ack_key: str | None = Field(default=None, max_length=128)
    applied_at: datetime | None = _when(default=None)  # Stripe did what was decided
    apply_error: str | None = Field(default=None, max_length=500)
    attempts: int = 0
    undone_at: datetime | None = _when(default=None)
