"""The subscriber's steps: read Stripe through the gateway, decide through the flow rules, record through the store.

A decision is written only after Stripe confirmed it, by a conditional UPDATE that succeeds once;
Stripe writes carry idempotency keys derived from the session and the offer, so repeats and
concurrent requests apply once.
"""

from dataclasses import dataclass
from datetime import datetime

from cancel_flow import flow
from sqlalchemy.exc import SQLAlchemyError

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.errors import BadRequest, InvalidLink, NotFound, RecordPending, StripeUnavailable
from cancel_flow.flow import SubscriptionFacts
from cancel_flow.links import CancelLink, LinkSigner
from cancel_flow.logs import log_event
from cancel_flow.metrics import DECISIONS
from cancel_flow.models import CancelSession
from cancel_flow.money import format_day
from cancel_flow.offers import REASONS, Offer, OfferBook
from cancel_flow.store import CLAIM_TIMEOUT, Store
from cancel_flow.stripe_gateway import StripeGateway, idempotency_key

MAX_COMMENT = 2000


@dataclass
class Visit:
    """What the subscriber should see for a link right now."""

    link: CancelLink
    session: CancelSession | None
    already_canceled: bool = False


@dataclass
class Outcome:
    """What a decided (or kept) session shows on its done page."""

    headline: str
    detail: str
    can_still_cancel: bool


class CancelService:
    def __init__(self, store: Store, gateway: StripeGateway, offers: OfferBook, signer: LinkSigner):
        self.store, self.gateway, self.offers, self.signer = store, gateway, offers, signer

    async def visit(self, token: str, reconcile: bool = False) -> Visit:
        """Resume the link's session, or read Stripe once and open it."""
        link = self.signer.read_cancel(token)
        session = self.store.find_session(link.nonce)
        if session is not None:
            return Visit(link, await self.reconcile(session) if reconcile else session)
        try:
            facts = await self.gateway.read_subscription(link.subscription)
        except NotFound:
            raise InvalidLink("This link points to a subscription that no longer exists.") from None
        if facts.customer_id != link.customer:
            raise InvalidLink("This link is not valid. Ask for a new one.")
        if facts.status not in flow.LIVE_STATUSES:
            return Visit(link, None, already_canceled=True)
        return Visit(link, self.store.open_session(_session_values(link, facts)))

    async def open_session(self, token: str) -> tuple[CancelLink, CancelSession]:
        visit = await self.visit(token)
        if visit.session is None:
            raise BadRequest("This subscription is already canceled.", title="Already canceled")
        return visit.link, visit.session

    def check_answer(self, reason: str | None, comment: str | None) -> tuple[str, str | None]:
        if reason not in REASONS:
            raise BadRequest("Choose one of the reasons in the list.")
        comment = (comment or "").strip() or None
        if comment and len(comment) > MAX_COMMENT:
            raise BadRequest(f"Your comment is {len(comment):,} characters long; please keep it under {MAX_COMMENT:,}.")
        if comment and any(ord(ch) < 32 and ch not in "\n\r\t" for ch in comment):
            raise BadRequest("Your comment contains characters we can't store. Please retype it.")
        return reason, comment

    def record_reason(self, session: CancelSession, reason: str, comment: str | None) -> list[Offer]:
        recent = self.store.accepted_offer_since(session.customer_id, flow.cooldown_start(self.offers, utc_now()))
        offers = flow.eligible_offers(
            self.offers, reason, has_discount=session.had_discount, paused=session.was_paused,
            interval=session.interval, interval_count=session.interval_count, accepted_offer_recently=recent)
        self.store.record_reason(session.id, reason, comment, [offer.id for offer in offers])
        return offers

    def offers_shown(self, session: CancelSession) -> list[Offer]:
        return [offer for offer_id in session.offers_shown or [] if (offer := self.offers.find(offer_id))]

    async def accept(self, session: CancelSession, offer_id: str | None, months: str | None) -> None:
        offer = self.offers.find(offer_id or "")
        if offer is None or offer.id not in (session.offers_shown or []):
            raise BadRequest("That offer isn't available for this subscription.", title="Unknown offer")
        terms = _terms(offer, _pause_months(offer, months))
        # The claim is written before Stripe is called: it names the offer being applied, so
        # a failure between Stripe and our record can be reconciled from Stripe later.
        if not self.store.claim_offer(session.id, offer.id, terms):
            return  # another offer is being applied right now; the done page will show it
        try:
            if offer.kind == "discount":
                await self.gateway.apply_discount(session.subscription_id, offer, idempotency_key(session.nonce, offer.id))
            else:
                resumes_at = terms["pause_resumes_at"]
                key = idempotency_key(session.nonce, offer.id, resumes_at.date().isoformat())
                await self.gateway.apply_pause(session.subscription_id, resumes_at, key)
        except StripeUnavailable as failure:
            if not failure.maybe_applied:
                self.store.release_claim(session.id, offer.id)
            # else the claim stays: the next visit (or the webhook) asks Stripe what happened
            raise
        self._record_saved(session, offer.id, offer.kind)

    def _record_saved(self, session: CancelSession, offer_id: str, kind: str) -> None:
        try:
            decided = self.store.record_saved(session.id, f"saved_{kind}", offer_id)
        except SQLAlchemyError:
            log_event("cancel_session.record_failed", level=40, session=session.id, offer=offer_id)
            raise RecordPending("Your choice was applied, but we couldn't note it just now. "
                                "Reload this page in a moment to see it.") from None
        if decided:
            DECISIONS.labels(f"saved_{kind}").inc()
            log_event("cancel_session.decided", session=session.id, outcome=f"saved_{kind}", offer=offer_id)

    async def reconcile(self, session: CancelSession) -> CancelSession:
        """An offer was claimed but never recorded (a crash, or the database failed after Stripe
        applied it): ask Stripe whether it was applied, and record it or free the claim."""
        if session.outcome != "open" or not session.claimed_offer:
            return session
        facts = await self.gateway.read_subscription(session.subscription_id)
        applied = (session.offer_kind == "discount" and facts.has_discount and not session.had_discount) or \
                  (session.offer_kind == "pause" and facts.paused and not session.was_paused)
        if applied:
            self._record_saved(session, session.claimed_offer, session.offer_kind)
        elif utc_now() - as_utc(session.claimed_at) > CLAIM_TIMEOUT:
            self.store.release_claim(session.id, session.claimed_offer)
        return self.store.find_session(session.nonce)

    async def send_to_portal(self, session: CancelSession, reason: str | None, comment: str | None,
                             return_url: str, done_url: str) -> str:
        if reason is not None:
            reason, comment = self.check_answer(reason, comment)
        url = await self.gateway.cancel_portal_url(session.customer_id, session.subscription_id,
                                                   return_url=return_url, done_url=done_url)
        if session.outcome == "open" and self.store.record_sent_to_portal(session.id, reason, comment):
            DECISIONS.labels("sent_to_portal").inc()
            log_event("cancel_session.decided", session=session.id, outcome="sent_to_portal", offer=None)
        return url

    async def keep(self, session: CancelSession) -> None:
        if not session.cancel_at_period_end:
            return
        await self.gateway.keep_subscription(session.subscription_id, idempotency_key(session.nonce, "keep"))
        self.store.record_kept(session.id)
        log_event("cancel_session.kept", session=session.id)

    async def outcome(self, session: CancelSession) -> Outcome | None:
        """The done page's words; None while nothing is decided yet."""
        if session.outcome == "saved_discount":
            return Outcome("Thanks for staying!", flow.describe_discount(
                session.discount_percent, session.discount_months, session.price_amount, session.currency), True)
        if session.outcome == "saved_pause":
            return Outcome("Your break has started", flow.describe_pause(session.pause_resumes_at)
                           + ". You keep your access meanwhile.", True)
        if session.kept_at and session.outcome == "open":
            return Outcome("Your subscription continues", "We've removed the scheduled cancellation.", True)
        if session.outcome == "open":
            return None
        try:
            facts = await self.gateway.read_subscription(session.subscription_id)
        except (StripeUnavailable, NotFound):
            return Outcome("Thanks for letting us know",
                           "If you confirmed the cancellation, Stripe will email you a confirmation.", True)
        return describe_stripe_state(facts)


def describe_stripe_state(facts: SubscriptionFacts) -> Outcome:
    if facts.status not in flow.LIVE_STATUSES:
        return Outcome("Your subscription is canceled", "Nothing more will be charged.", False)
    if facts.cancel_at_period_end and facts.period_end:
        return Outcome("Your subscription is canceled",
                       f"You keep access until {format_day(facts.period_end)}; nothing more will be charged.", False)
    return Outcome("Your subscription is still active", "It looks like the cancellation wasn't confirmed.", True)


def _session_values(link: CancelLink, facts: SubscriptionFacts) -> dict:
    return {
        "nonce": link.nonce, "customer_id": facts.customer_id, "subscription_id": facts.subscription_id,
        "customer_email": facts.customer_email, "plan_name": facts.plan_name[:512],
        "price_amount": facts.price_amount, "interval": facts.interval, "interval_count": facts.interval_count,
        "monthly_amount": facts.monthly_amount, "currency": facts.currency, "had_discount": facts.has_discount,
        "was_paused": facts.paused, "cancel_at_period_end": facts.cancel_at_period_end,
        "period_end": facts.period_end,
    }


def _terms(offer: Offer, pause_months: int) -> dict:
    if offer.kind == "discount":
        return {"offer_kind": "discount", "discount_percent": offer.percent_off, "discount_months": offer.months,
                "pause_resumes_at": None}
    return {"offer_kind": "pause", "discount_percent": None, "discount_months": None,
            "pause_resumes_at": flow.pause_until(_start_of_day(utc_now()), pause_months)}


def _pause_months(offer: Offer, months: str | None) -> int:
    if offer.kind != "pause":
        return 0
    if months in (None, ""):
        return offer.max_months
    if not months.isdigit() or not 1 <= int(months) <= offer.max_months:
        raise BadRequest(f"Choose a pause from 1 to {offer.max_months} months.")
    return int(months)


def _start_of_day(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)
