"""What `/api/…` accepts and answers, each described once: the routes validate with these models and
`/api/openapi.json` is generated from them (cancel_flow/web/openapi.py).

`Body` (a JSON request body: unknown fields refused), `Query` (a query string: unknown parameters
ignored) and `Answer` (a response body). A field's description is also the end of the message a
client gets when its value is refused ("'customer' must be …"), so it reads as a noun phrase; a
rule of our own raises `PydanticCustomError("refused", message)` and its message is shown whole.
"""

from datetime import date, timedelta
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, RootModel, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from cancel_flow.clock import utc_now
from cancel_flow.web.dates import EARLIEST, LATEST, BadDates, check_range, parse_day


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Query(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Answer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)


def stripe_id(prefix: str, what: str):
    return Annotated[str, StringConstraints(min_length=len(prefix) + 1, max_length=255, pattern=rf"^{prefix}[A-Za-z0-9_]+$"),
                     Field(description=f"{what} (a Stripe id starting with {prefix})")]


def _day(value: Any) -> date:
    try:
        return parse_day(value)
    except BadDates as bad:
        raise PydanticCustomError("refused", bad.message.removeprefix("'date' ")) from None


Day = Annotated[date, BeforeValidator(_day)]
Rate = Annotated[float | None, Field(description="a share from 0 to 1; null when there is nothing to divide by")]
Email = Annotated[str, StringConstraints(max_length=320, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+$"),
                  Field(description="an email address")]


# errors ------------------------------------------------------------------------------------------
class ErrorDetail(Answer):
    code: str = Field(description="stable, for programs: unauthorized, forbidden, invalid_body, invalid_query, "
                                  "not_found, invalid_config, …")
    message: str = Field(description="for people")
    field: str | None = Field(default=None, description="the field refused, when one is (invalid_config: a dotted "
                                                        "path such as offer.pause.max_payments)")


class Error(Answer):
    """Every refusal: 401, 404, 422, 503."""
    error: ErrorDetail


# POST /api/links ----------------------------------------------------------------------------------
class LinkRequest(Body):
    """Exactly one of customer or email; a subscription when the customer has several active ones."""
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["customer"], "not": {"required": ["email"]}},
                                                           {"required": ["email"], "not": {"required": ["customer"]}}]})

    customer: stripe_id("cus_", "a customer") = None
    email: Email = None
    subscription: stripe_id("sub_", "a subscription") = None

    @model_validator(mode="after")
    def _one_way_to_find(self):
        if (self.customer is None) == (self.email is None):
            raise PydanticCustomError("refused", "Send exactly one of 'customer' or 'email'.")
        return self


class Links(Answer):
    cancel_url: str = Field(json_schema_extra={"format": "uri"})
    billing_url: str = Field(json_schema_extra={"format": "uri"})
    expires_at: str = Field(json_schema_extra={"format": "date-time"})
    customer: str
    subscription: str


# GET /api/stats -----------------------------------------------------------------------------------
class StatsQuery(Query):
    first: Day = Field(None, alias="from", description=f"the first day, UTC, from {EARLIEST} to {LATEST}; "
                                                         "default 29 days before 'to'")
    last: Day = Field(None, alias="to", description=f"the last day (included), UTC, up to {LATEST}; default today")
    experiment: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$",
                                   description="an experiment id: its per-arm figures in 'experiment'")

    @model_validator(mode="after")
    def _a_sane_range(self):
        last = self.last or utc_now().date()
        first = self.first or max(EARLIEST, last - timedelta(days=29))
        try:
            self.first, self.last = check_range(first, last)
        except BadDates as bad:
            raise PydanticCustomError("refused", bad.message) from None
        return self


class Money(Answer):
    currency: str
    amount: int = Field(description="minor units")


class ReasonNumbers(Answer):
    reason: str
    sessions: int
    saved: int
    canceled: int
    save_rate: Rate


class Durability(Answer):
    days: int
    saves: int = Field(description="saves (or accepted offers) whose day is more than `days` days ago")
    still_active: int
    share: Rate


class OfferMoney(Answer):
    currency: str
    mrr: int = Field(description="monthly amount of the subscriptions that accepted, minor units")
    cost: int = Field(description="what the offers cost: discount amounts, skipped or free payments, price "
                                  "differences (the promise while the subscription lives, the invoices once "
                                  "canceled), minor units")
    revenue_kept_90: int | None = Field(description="over acceptances 90+ days old: a month's amount for each 30 "
                                                    "days the subscription stayed, up to three; null until then")
    net_revenue_kept_90: int | None = Field(description="revenue_kept_90 minus those acceptances' cost")


class OfferNumbers(Answer):
    offer: str
    kind: str | None = Field(description="discount | pause | switch | free_period | contact")
    shown: int
    accepted: int
    rate: Rate
    durability: list[Durability] = Field(description="accepted subscriptions still active 30, 60 and 90 days on")
    money: list[OfferMoney]


class KindNumbers(Answer):
    kind: str
    shown: int
    accepted: int
    rate: Rate
    durability: list[Durability]
    money: list[OfferMoney]


class PreviousPeriod(Answer):
    sessions: int
    saved: int
    canceled: int
    save_rate: Rate
    mrr_saved: list[Money]


class Week(Answer):
    week: date = Field(description="its Monday")
    days: int = Field(description="days of the week inside the range: below 7 for a partial week at either end")
    sessions: int
    saves: int
    cancels: int


class Stats(Answer):
    first: date = Field(alias="from")
    last: date = Field(alias="to")
    sessions: int
    outcomes: dict[str, int]
    saved: int
    canceled: int
    save_rate: Rate
    mrr_saved: list[Money]
    discount_cost: list[Money]
    offer_cost: list[Money] = Field(description="what every accepted offer cost, discounts included")
    reasons: list[ReasonNumbers]
    offers: list[OfferNumbers]
    offer_kinds: list[KindNumbers]
    durability: list[Durability]
    weekly: list[Week]
    previous: PreviousPeriod = Field(description="the period of the same length just before 'from'")
    payments: dict[str, Any] = Field(description="failed payments whose first failure is in the range: failed_payments, "
                                                 "failed_amount, recovered, recovered_amount, recovery_rate, still_open, "
                                                 "lost, emails_sent by kind (amounts in minor units per currency)")
    outside_cancellations: dict[str, Any] = Field(description="subscriptions canceled in the range without the flow, by "
                                                               "Stripe's cancellation_details: count, monthly_amount per "
                                                               "currency, by_reason [{reason, feedback, count, monthly_amount}]")
    experiment: dict[str, Any] | None = Field(None, description="with ?experiment=ID: per arm sessions, saves, rates and "
                                                                "their posteriors, the verdict, the rule and the planner")


# GET /api/attention -------------------------------------------------------------------------------
class AttentionClient(Answer):
    id: str = Field(description="the Stripe customer")
    email: str | None
    stripe_url: str = Field(description="the customer in Stripe's dashboard (the test-mode page for test keys)",
                            json_schema_extra={"format": "uri"})


class AttentionRow(Answer):
    client: AttentionClient
    subscription: str | None
    plan: str | None
    at: str = Field(description="when the payment failed, the pause or discount ends, the cancellation takes effect, "
                                "or the client asked to talk", json_schema_extra={"format": "date-time"})
    amount: int | None = Field(description="the failed payment, or the plan's price per period (minor units)")
    currency: str | None
    reason: str | None = Field(description="the reason the client gave (one of Stripe's cancellation reasons)")
    reason_text: str | None
    comment: str | None
    offer: str | None = Field(description="the offer accepted (id), for pauses and discounts")
    terms: str | None = Field(description="the offer's promise, as the client read it")
    failure_message: str | None = Field(description="failed payments: why the payment failed")
    card: str | None
    attempts: int | None = Field(description="failed payments: Stripe's payment attempts so far")
    emails_sent: list[int] = Field(description="failed payments: the failed-payment emails sent, as days after the "
                                               "first failure")
    dunning_step: str | None = Field(description="failed payments: how far the failed-payment emails have gone, in words")
    session: int | None = Field(description="talk requests: the session to mark as handled")
    cancel_url: str | None = Field(json_schema_extra={"format": "uri"})
    billing_url: str = Field(description="a billing link; for a failed payment it opens the card update",
                             json_schema_extra={"format": "uri"})


class Attention(Answer):
    """The clients who need the coach, as /dashboard/attention lists them."""
    generated_at: str = Field(json_schema_extra={"format": "date-time"})
    days: int = Field(description="how far ahead endings and cancellations are looked for")
    count: int
    failed_payments: list[AttentionRow] = Field(description="subscription payments that failed in the last 90 days "
                                                            "and are neither paid nor voided")
    pauses_ending: list[AttentionRow]
    discounts_ending: list[AttentionRow]
    cancellations: list[AttentionRow] = Field(description="cancellations Stripe confirmed that take effect within `days`")
    talk_requests: list[AttentionRow] = Field(description='"talk to your coach first" requests of the last 90 days '
                                                          "not yet marked as handled")


# GET /api/openapi.json ----------------------------------------------------------------------------
class OpenApiDocument(RootModel[dict[str, Any]]):
    """This document (OpenAPI 3.1)."""
