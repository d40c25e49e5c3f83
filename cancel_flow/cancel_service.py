"""The subscriber's steps: read Stripe through the gateway, decide through the flow rules, record through the store.

One live offer per customer: an offer is claimed for the customer in one locked transaction before
Stripe is called, written as decided only after Stripe confirmed it, and the promise recorded is the
one computed from Stripe's billing (cancel_flow/billing.py). Stripe writes carry idempotency keys
derived from the session, the offer and the attempt, so repeats apply once and a retry after a
stored failure gets a new key.
"""

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote
from datetime import datetime, timedelta

from sqlalchemy.exc import SQLAlchemyError

from cancel_flow import billing, flow
from cancel_flow.clock import add_months, as_utc, utc_now
from cancel_flow.errors import (BadRequest, Conflict, InvalidLink, NotFound, PortalRefused, RecordPending,
                                StripeUnavailable)
from cancel_flow.experiments import assign_arm
from cancel_flow.flow import Card, SubscriptionFacts, TargetPrice
from cancel_flow.i18n import DEFAULT, LANGUAGES, N_, gettext
from cancel_flow.links import CancelLink, LinkSigner
from cancel_flow.logs import log_event
from cancel_flow.metrics import DECISIONS
from cancel_flow.models import CancelSession
from cancel_flow.money import format_day, format_money
from cancel_flow.config.live import LiveConfiguration
from cancel_flow.config.schema import Offer
from cancel_flow.reasons import REASONS
from cancel_flow.recent_answers import RecentAnswers
from cancel_flow.store import CLAIM_FRESH, CLAIM_TIMEOUT, Claim, Store
from cancel_flow.store.offload import Offloaded
from cancel_flow.stripe_gateway import StripeGateway, idempotency_key

MAX_COMMENT = 2000
# Queries in flight at once from one worker; more wait for a thread (off the event loop), never the loop.
DATABASE_THREADS = 10


@dataclass
class Visit:
    """What the subscriber should see for a link right now."""

    link: CancelLink
    session: CancelSession | None
    already_canceled: bool = False
    # An offer accepted on another link of this subscription that still plays out: this link shows it.
    decided_elsewhere: CancelSession | None = None
    preferred_locales: tuple[str, ...] = ()  # the Stripe customer's languages, when no session keeps them


@dataclass
class Outcome:
    """What a decided (or kept) session shows on its done page."""

    headline: str
    detail: str
    can_still_cancel: bool
    next_step: str | None = None
    schedule: list[tuple[str, str]] | None = None  # (date, what is charged then)
    next_step_label: str = N_("Talk to your coach")
    after: str | None = None  # under the schedule: what stays as it is


REUSE_SECONDS = 5  # a portal URL or a first read, shared by reloads of one link
ENDED_SECONDS = 600  # an ended subscription's link answers from memory this long


class CancelService:
    def __init__(self, store: Store, gateway: StripeGateway, live: LiveConfiguration, signer: LinkSigner,
                 quick_store: Store | None = None, recent: RecentAnswers | None = None):
        self.store, self.gateway, self.live, self.signer = store, gateway, live, signer
        # first reads shared by simultaneous views of one link; an ended subscription's answer kept (see visit)
        self.recent = recent or RecentAnswers(REUSE_SECONDS)
        # a query that would wait on a lock or a slow database runs off the event loop (store/offload.py)
        self.db = Offloaded(store, threads=DATABASE_THREADS, quick=quick_store)

    # reading ----------------------------------------------------------------------------------------
    async def visit(self, token: str, reconcile: bool = False, show_decided: bool = False) -> Visit:
        """Resume the link's session, or read Stripe once and open it. With `show_decided`, a new link of a
        subscription whose offer accepted on another link still plays out opens no session: the visit
        names that decision (the page shows it, and a session is opened only if the subscriber acts)."""
        link = self.signer.read_cancel(token)
        session = await self.db.find_session(link.nonce)
        if session is not None:
            return Visit(link, await self.reconcile(session) if reconcile else session)
        if show_decided:
            now = utc_now()
            other = await self.db.latest_offer_save(link.subscription, link.nonce, flow.cooldown_start(self.live.current(), now))
            if other is not None and other.customer_id == link.customer and still_playing_out(other, now):
                return Visit(link, None, decided_elsewhere=other)
        # Simultaneous first views of one link share one read; an ended subscription stays ended
        # (https://docs.stripe.com/api/subscriptions/object#subscription_object-status: incomplete_expired "is a
        # terminal status"; https://docs.stripe.com/billing/subscriptions/cancel: a canceled subscription can't
        # be reactivated), so reloads of its link reuse the answer for ENDED_SECONDS.
        facts = await self.recent.get(("link", link.nonce), lambda: self._first_read(link),
                                      keep_for=lambda facts: ENDED_SECONDS if facts.status in flow.ENDED_STATUSES else None)
        if facts.status not in flow.LIVE_STATUSES:
            return Visit(link, None, already_canceled=True, preferred_locales=facts.preferred_locales)
        return Visit(link, await self.db.open_session(_session_values(link, facts)))

    async def _first_read(self, link: CancelLink) -> SubscriptionFacts:
        try:
            facts = await self.gateway.read_subscription(link.subscription)
        except NotFound:
            raise InvalidLink(N_("This link points to a subscription that no longer exists.")) from None
        if facts.customer_id != link.customer:
            raise InvalidLink(N_("This link is not valid. Ask for a new one."))
        return facts

    async def open_session(self, token: str) -> tuple[CancelLink, CancelSession]:
        visit = await self.visit(token)
        if visit.session is None:
            raise BadRequest(N_("There is nothing more to do: no further payments will be taken."),
                             title=N_("This subscription is already canceled"))
        return visit.link, visit.session

    def snapshot(self, session: CancelSession) -> SubscriptionFacts | None:
        """The subscription as Stripe last told it for this session, whatever its age."""
        return flow.snapshot_facts(session.stripe_snapshot) if session.stripe_snapshot else None

    async def facts(self, session: CancelSession) -> SubscriptionFacts:
        """The subscription now: the answer Stripe gave this link a few seconds ago, or a fresh read. Our own
        writes and Stripe's webhooks drop the kept answer at once."""
        if session.stripe_snapshot and session.snapshot_at and \
                utc_now() - as_utc(session.snapshot_at) < flow.SNAPSHOT_TTL:
            return flow.facts_from_json(session.stripe_snapshot)
        facts = await self.gateway.read_subscription(session.subscription_id)
        await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
        return facts

    # the reason and the offers ------------------------------------------------------------------------
    def check_answer(self, reason: str | None, comment: str | None) -> tuple[str, str | None]:
        if reason not in REASONS:
            raise BadRequest(N_("Choose one of the reasons in the list."))
        comment = (comment or "").strip() or None
        if comment and len(comment) > MAX_COMMENT:
            raise BadRequest(N_("Your comment is %(length)s characters long; please keep it under %(most)s."),
                             length=len(comment), most=MAX_COMMENT)
        if comment and any(ord(ch) < 32 and ch not in "\n\r\t" for ch in comment):
            raise BadRequest(N_("Your comment contains characters we can't store. Please retype it."))
        return reason, comment

    async def _target_prices(self, offers) -> dict[str, TargetPrice]:
        prices = {}
        for offer in offers:
            if offer.kind == "switch" and offer.price not in prices:
                price = await self.gateway.read_price(offer.price)
                if price is not None:
                    prices[offer.price] = price
        return prices

    async def record_reason(self, session: CancelSession, reason: str, comment: str | None) -> list[Offer]:
        config = self.live.current()
        facts = self.snapshot(session) or await self.facts(session)
        recent = await self.db.accepted_offer_since(session.customer_id, flow.cooldown_start(config, utc_now()))
        now = utc_now()
        experiment = flow.experiment_for(config, reason, facts, now)
        if experiment is not None:
            # the arm stays the subscription's on every link, even if the weights change later
            stored = await self.db.experiment_arm_of(session.subscription_id, experiment.id)
            arm = (experiment.arm(stored) if stored else None) or assign_arm(experiment, session.subscription_id)
            prices = await self._target_prices([config.find(o) for o in arm.offers if config.find(o)])
            offers = flow.arm_offers(config, arm, facts, now, accepted_offer_recently=recent, prices=prices)
            await self.db.record_reason(session.id, reason, comment, [offer.id for offer in offers],
                                        experiment=(experiment.id, arm.name))
            return offers
        prices = await self._target_prices([o for o in config.offers if o.enabled and o.fits(reason)])
        offers = flow.eligible_offers(config, reason, facts, now, accepted_offer_recently=recent, prices=prices)
        await self.db.record_reason(session.id, reason, comment, [offer.id for offer in offers])
        return offers

    def offers_shown(self, session: CancelSession) -> list[Offer]:
        config = self.live.current()  # an offer removed since it was shown can't be taken any more
        return [offer for offer_id in session.offers_shown or [] if (offer := config.find(offer_id))]

    async def cards(self, session: CancelSession, language: str = DEFAULT) -> list[Card]:
        """The offers shown, each with the promise the subscriber reads on its card (in `language`)."""
        facts = self.snapshot(session)
        now = utc_now()
        offers = self.offers_shown(session)
        if facts is None:
            return [Card(offer, None, []) for offer in offers]
        prices = await self._target_prices(offers)
        return [flow.offer_card(offer, facts, now, prices, language) for offer in offers]

    async def _promise(self, offer: Offer, facts: SubscriptionFacts, now: datetime, skip: int | None,
                       prices: dict[str, TargetPrice] | None = None):
        if offer.kind == "switch" and prices is None:
            prices = await self._target_prices([offer])
        return flow.offer_promise(offer, facts, now, skip, (prices or {}).get(offer.price))

    # accepting an offer ------------------------------------------------------------------------------
    async def accept(self, session: CancelSession, offer_id: str | None, payments: str | None) -> str | None:
        """Apply the chosen offer through Stripe (a `contact` offer: record the request, which alerts the
        coach). None: the done page says what happened; a string: another page to go to instead."""
        config = self.live.current()
        offer = config.find(offer_id or "")
        if offer is None or offer.id not in (session.offers_shown or []):
            raise BadRequest(N_("That offer isn't available for this subscription."), title=N_("Unknown offer"))
        if offer.kind == "contact":
            if await self.db.record_contact(session.id, session.subscription_id, offer.id):
                DECISIONS.labels("contact_requested").inc()
                log_event("cancel_session.decided", session=session.id, outcome="contact_requested", offer=offer.id)
            return None
        skip = _pause_length(offer, payments)
        facts = await self.facts(session)
        now = utc_now()
        cooldown = flow.cooldown_start(config, now)
        recent = await self.db.accepted_offer_since(session.customer_id, cooldown)
        prices = await self._target_prices([offer])
        why = flow.why_not(offer, facts, now, reason=None, accepted_offer_recently=recent, prices=prices)
        if why is not None:
            current = await self.db.find_session(session.nonce)
            if current is not None and current.outcome == "open" and current.claimed_offer:
                current = await self.reconcile(current, force=True)  # a lost answer Stripe did apply: say so
            if current is not None and current.outcome != "open":
                return self._own_decision(current, offer)
            if recent or facts.has_discount or facts.paused:
                raise Conflict(N_("An offer is already in place for this subscription, so this one can't be added. "
                                  "Your subscription is unchanged."))
            # the reason in the coach's words in English; in the client's language, in general words
            raise Conflict(N_("It can't be added now: %(why)s. Nothing was changed."),
                           title=N_("This offer is no longer available"),
                           why=lambda language: why if language == DEFAULT else
                           gettext(language, "it no longer fits your subscription"))
        promise = await self._promise(offer, facts, now, skip, prices)
        if promise is None:
            raise Conflict(N_("It can't be added now. Nothing was changed."), title=N_("This offer is no longer available"))
        terms = _terms(offer, promise, skip, now)
        claim, resending = await self.db.claim_offer(session, offer.id, terms, cooldown), False
        if claim.status == "stale":
            other = await self.db.find_session(claim.other_nonce)
            if other is not None:
                await self.reconcile(other, force=True)
            claim = await self.db.claim_offer(session, offer.id, terms, cooldown)
        if claim.status == "busy" and claim.other_nonce == session.nonce:
            claim = await self._same_page_claim(session, offer, terms)
            if claim is None:
                return self._own_decision(await self.db.find_session(session.nonce), offer)
            resending = True
        if claim.status == "busy":
            raise _still_applying()
        if claim.status != "claimed":
            if claim.other_nonce == session.nonce:
                return self._own_decision(await self.db.find_session(session.nonce), offer)
            raise Conflict(N_("An offer was already accepted for this subscription, so this one can't be added. "
                              "Your subscription is unchanged."))
        key = idempotency_key(session.nonce, offer.id, _terms_key(terms), str(claim.attempt))
        try:
            applied, corrected_months = await self._apply(offer, session, facts, promise, key)
        except StripeUnavailable as failure:
            if resending:
                # whatever this try met, the first request under this key may still be running at Stripe
                await self.db.mark_claim_unsure(session.id, offer.id, in_flight=True)
            elif not failure.maybe_applied:
                await self.db.release_claim(session.id, offer.id)
            else:
                # Stripe may have applied it. After Stripe's own answer (a server error) the next try asks Stripe
                # first (reconcile), then retries with a new idempotency key; when no answer came, the request
                # may still be running there: the claim is held, and the same choice retries under its key.
                await self.db.mark_claim_unsure(session.id, offer.id, failure.in_flight)
            raise
        if corrected_months is not None:
            terms = {**terms, "discount_months": corrected_months, "coupon_id": offer.coupon_id(corrected_months)}
        await self._record_saved(session, offer.id, offer.kind, terms, flow.facts_to_json(applied))
        return None

    async def _same_page_claim(self, session: CancelSession, offer: Offer, terms: dict) -> Claim | None:
        """This page's own claim is held: a double submit (another request is applying it), "Try again" after an
        answer that never came, or another offer meanwhile. Returns the claim to send again under its own
        idempotency key, or None when this page's decision has landed (for `_own_decision` to show)."""
        current = await self.db.find_session(session.nonce)
        if current is not None and current.outcome == "open" and current.claimed_offer not in (None, offer.id):
            # Another offer is held on this page: Stripe may have applied it by now (a lost answer).
            current = await self.reconcile(current, force=True)
            if current.outcome == "open":
                raise _still_applying(N_("Your earlier choice, %(offer)s, is still being applied, so this one can't be "
                                         "added. Reload this page in a minute to see it."),
                                      offer=self._title(current.claimed_offer))
        # A claim of the last two seconds is a double submit: its request may land first.
        if current is not None and current.outcome == "open" and utc_now() - as_utc(current.claimed_at) < CLAIM_FRESH \
                and await self._wait_for_decision(session):
            current = await self.db.find_session(session.nonce)
        if current is None or current.outcome != "open":
            return None
        if current.claimed_offer != offer.id or _terms_key(_claimed_terms(current)) != _terms_key(terms):
            raise _still_applying()
        # The same request again under the same idempotency key: Stripe answers what the first one did if it
        # ran, 409 while it still runs (retried within the deadline), and runs it if it never arrived
        # (https://docs.stripe.com/api/idempotent_requests). The claim is held anew while it runs.
        if not await self.db.renew_claim(session.id, offer.id, current.claim_attempt):
            raise _still_applying()
        return Claim("claimed", attempt=current.claim_attempt)

    def _title(self, offer_id: str | None):
        """The offer's title in quotes, in a language (the function of it a message takes)."""
        offer = self.live.offer(offer_id) if offer_id else None
        if offer is None:
            return lambda language: gettext(language, "another offer")
        return lambda language: gettext(language, "“%(title)s”", title=offer.title_in(language))

    def _own_decision(self, current: CancelSession | None, offer: Offer) -> None:
        """This link's own decision landed meanwhile (a double submit): the done page shows it. When the
        decision was another offer, the subscriber is told that this one was not added."""
        if current is not None and current.outcome.startswith("saved_") and current.chosen_offer != offer.id:
            raise Conflict(N_("You already accepted %(offer)s on this page, so this one wasn't added. Your "
                              "subscription is unchanged by this choice."), title=N_("Already accepted"),
                           offer=self._title(current.chosen_offer))
        return None

    async def _wait_for_decision(self, session: CancelSession, seconds: float = 5.0) -> bool:
        for _ in range(int(seconds / 0.1)):
            await asyncio.sleep(0.1)
            current = await self.db.find_session(session.nonce)
            if current is None or current.outcome != "open" or not current.claimed_offer:
                return current is not None and current.outcome != "open"
        return False

    async def _apply(self, offer: Offer, session: CancelSession, facts: SubscriptionFacts,
                     promise: billing.Promise, key: str) -> tuple[SubscriptionFacts, int | None]:
        """Stripe's answer, and for a discount the coupon length it was corrected to (None: as computed)."""
        if offer.kind == "discount":
            applied = await self.gateway.apply_discount(session.subscription_id, offer, promise.coupon_months, key)
            return await self._discount_as_promised(offer, session, promise, key, applied)
        if offer.kind == "pause":
            return await self.gateway.apply_pause(session.subscription_id, promise.resumes_at, key), None
        if offer.kind == "switch":
            return await self.gateway.apply_switch(session.subscription_id, facts.item_ids[0], offer.price, key), None
        return await self.gateway.apply_free_period(session.subscription_id, promise.trial_end, key), None

    async def _discount_as_promised(self, offer: Offer, session: CancelSession, promise: billing.Promise, key: str,
                                    applied: SubscriptionFacts) -> tuple[SubscriptionFacts, int | None]:
        """Stripe starts the coupon's months when it attaches it, by its own clock (a test clock's, or a few seconds
        after our page was computed). At a renewal's very second that decides whether the last promised payment is
        covered: the discount Stripe made is checked against the promise, and replaced once by the length that
        covers exactly the promised payments from its real start (the session then records that coupon)."""
        window = applied.discount_window
        if window is None or billing.covers_promise(promise, *window):
            return applied, None
        months = billing.months_for_promise(promise, window[0])
        if months is None or months == promise.coupon_months:
            log_event("cancel_session.discount_mismatch", level=30, session=session.id)
            return applied, None
        log_event("cancel_session.discount_corrected", session=session.id, months=months)
        corrected = await self.gateway.apply_discount(session.subscription_id, offer, months, idempotency_key(key, str(months)))
        return corrected, months

    async def _record_saved(self, session: CancelSession, offer_id: str, kind: str, terms: dict, snapshot: str | None) -> None:
        if kind == "switch" and snapshot:
            # the plan line, the sessions table and MRR follow what Stripe bills from now: the new price
            now_billed = flow.facts_from_json(snapshot)
            terms = {**terms, "plan_name": now_billed.plan_name[:512], "price_amount": now_billed.billed_amount,
                     "monthly_amount": now_billed.billed_monthly, "price_note": price_note(now_billed)}
        try:
            decided = await self.db.record_saved(session.id, session.subscription_id, f"saved_{kind}", offer_id, terms, snapshot)
        except SQLAlchemyError:
            log_event("cancel_session.record_failed", level=40, session=session.id, offer=offer_id)
            raise RecordPending(N_("Your choice was applied, but we couldn't note it just now. "
                                   "Reload this page in a moment to see it.")) from None
        if decided:
            DECISIONS.labels(f"saved_{kind}").inc()
            log_event("cancel_session.decided", session=session.id, outcome=f"saved_{kind}", offer=offer_id)

    async def reconcile(self, session: CancelSession, force: bool = False) -> CancelSession:
        """An offer was claimed but never recorded (a crash, a lost answer, or the database failed after
        Stripe applied it): ask Stripe whether it was applied, and record it or free a stale claim."""
        if session.outcome != "open" or not session.claimed_offer:
            return session
        stale = utc_now() - as_utc(session.claimed_at) > CLAIM_TIMEOUT
        if not (stale or force or session.claim_attempt):
            return session
        facts = await self.gateway.read_subscription(session.subscription_id)
        await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
        if _applied(session, facts):
            await self._record_saved(session, session.claimed_offer, session.offer_kind, {}, flow.facts_to_json(facts))
        elif stale:
            await self.db.release_claim(session.id, session.claimed_offer)
        return await self.db.find_session(session.nonce)

    # cancelling and keeping -------------------------------------------------------------------------
    async def send_to_portal(self, session: CancelSession, reason: str | None, comment: str | None,
                             return_url: str, done_url: str, here_url: str | None = None, language: str = DEFAULT) -> str:
        """Where "Continue to cancel" goes: Stripe's portal with a cancel flow; the done page when the subscription
        is already set to cancel or canceled (Stripe's portal refuses a cancel flow then, so it is never asked
        for one); our own page when the coach fixed an end date (`here_url`, which offers to end it earlier)."""
        if reason is not None:
            reason, comment = self.check_answer(reason, comment)
            if session.reason is None and session.outcome == "open":
                await self.db.record_reason_only(session.id, reason, comment)  # kept if Stripe fails below
        facts = await self.gateway.read_subscription(session.subscription_id)  # what Stripe has right now
        await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
        if facts.status not in flow.LIVE_STATUSES:
            return done_url
        if facts.scheduled_by_client:
            # set to cancel meanwhile (another tab, the portal): the page that says when, with "Keep my subscription"
            return here_url if here_url and session.outcome == "open" else done_url
        if facts.fixed_end is not None:
            return here_url or done_url
        try:
            url = await self.gateway.cancel_portal_url(session.customer_id, session.subscription_id,
                                                       return_url=return_url, done_url=done_url, language=language)
        except PortalRefused:
            # Stripe refuses a cancellation flow for a subscription already set to cancel (or canceled):
            # the done page says what Stripe has.
            facts = await self.gateway.read_subscription(session.subscription_id)
            await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
            if facts.cancel_at_period_end or facts.status not in flow.LIVE_STATUSES:
                return done_url
            raise
        await self._sent_to_portal(session, reason, comment)
        return url

    async def _sent_to_portal(self, session: CancelSession, reason: str | None, comment: str | None) -> None:
        if session.outcome in ("open", "contact_requested") and await self.db.record_sent_to_portal(
                session.id, session.subscription_id, reason, comment, ("open", "contact_requested")):
            DECISIONS.labels("sent_to_portal").inc()
            log_event("cancel_session.decided", session=session.id, outcome="sent_to_portal", offer=None)

    async def end_early(self, session: CancelSession, reason: str | None, comment: str | None) -> None:
        """The coach fixed an end date; the client ends the subscription at the end of the current period instead."""
        if reason is not None:
            reason, comment = self.check_answer(reason, comment)
        facts = await self.gateway.read_subscription(session.subscription_id)
        if facts.fixed_end is None or facts.next_payment is None or facts.fixed_end <= facts.next_payment:
            await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
            return  # nothing to end earlier (already ended, or ending sooner): the done page says what Stripe has
        feedback, note = reason or session.reason, comment if reason else session.comment
        ended = await self.gateway.end_at_period_end(session.subscription_id, facts, feedback, note,
                                                     idempotency_key(session.nonce, "end-early",
                                                                     str(int(facts.next_payment.timestamp()))))
        await self.db.save_snapshot(session.id, flow.facts_to_json(ended))
        await self._sent_to_portal(session, reason, comment)

    async def keep(self, session: CancelSession) -> None:
        """"Keep my subscription": undoes only a cancellation the client scheduled; an end date the coach fixed
        stays."""
        facts = await self.gateway.read_subscription(session.subscription_id)
        if not facts.scheduled_by_client:
            await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
            return
        kept = await self.gateway.keep_subscription(session.subscription_id, facts,
                                                    idempotency_key(session.nonce, "keep", str(int(utc_now().timestamp()) // 60)))
        await self.db.record_kept(session.id, session.subscription_id, flow.facts_to_json(kept))
        DECISIONS.labels("saved_keep").inc()
        log_event("cancel_session.kept", session=session.id)

    async def keep_scheduled(self, link: CancelLink) -> CancelSession | None:
        """"Keep my plan" from the changed-your-mind email: the scheduled cancellation undone as "Keep my
        subscription" does (`keep`), recorded on the subscription's newest session, or on a new one for this link
        when the subscription has none (it was canceled in the portal); None when the subscription has ended."""
        session = await self.db.newest_session_of(link.subscription)
        if session is None or session.customer_id != link.customer:
            facts = await self._first_read(link)
            if facts.status not in flow.LIVE_STATUSES:
                return None
            session = await self.db.open_session(_session_values(link, facts))
        await self.keep(session)
        return await self.db.find_session(session.nonce)

    # the done page ------------------------------------------------------------------------------------
    def _talk_outcome(self, session: CancelSession, language: str) -> Outcome:
        """"Talk to your coach first": the coach has been told (the contact.requested alert), how they'll
        reach out, and the coach's own address or booking page with the reason already written in."""
        say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
        offer = self.live.offer(session.chosen_offer) if session.chosen_offer else None
        brand = self.live.current().brand
        reach = (say("They'll reach out to you by email at %(email)s.", email=session.customer_email)
                 if session.customer_email else say("They'll get in touch with you soon."))
        detail = (say("We've let %(coach)s know that you'd like to talk before deciding, and why.", coach=brand.name)
                  + f" {reach} "
                  + say("Your subscription stays as it is meanwhile, and you can still cancel here at any time."))
        url = offer.url if offer else (f"mailto:{brand.support_email}" if brand.support_email else None)
        if url and url.startswith("mailto:"):
            return Outcome(say("Your coach has been told"), detail, True, next_step=contact_mail(url, session, language),
                           next_step_label=say("Write to your coach now"))
        return Outcome(say("Your coach has been told"), detail, True, next_step=url,
                       next_step_label=say("Book a time to talk"))

    async def outcome(self, session: CancelSession, language: str = DEFAULT) -> Outcome | None:
        """The done page's words (in `language`), from Stripe's state now; None while nothing is decided yet."""
        say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
        if session.outcome == "open" and not session.kept_at:
            return None
        if session.outcome == "withdrawn":
            return Outcome(say("You have withdrawn from your contract"),
                           say("Your subscription ended when we received your withdrawal, and you won't be "
                               "charged again. We've emailed you a confirmation with the date and time we "
                               "received it, and how your payment is refunded."), False)
        if session.outcome == "contact_requested" or (session.outcome == "deflected" and session.offer_kind == "contact"):
            return self._talk_outcome(session, language)
        try:
            # Back from the portal: always what Stripe says now (the answer of a few seconds ago may predate the
            # cancellation just confirmed there).
            if session.outcome == "sent_to_portal":
                facts = await self.gateway.read_subscription(session.subscription_id)
                await self.db.save_snapshot(session.id, flow.facts_to_json(facts))
            else:
                facts = await self.facts(session)
        except (StripeUnavailable, NotFound):
            return Outcome(say("Thanks for letting us know"),
                           say("If you confirmed the cancellation, Stripe will email you a confirmation."), True)
        if facts.status not in flow.LIVE_STATUSES or facts.cancel_at_period_end:
            return describe_stripe_state(facts, language)
        kind = session.outcome.removeprefix("saved_") if session.outcome.startswith("saved_") else None
        still = {"discount": facts.has_discount, "pause": facts.paused,
                 "switch": session.switch_price in facts.price_ids, "free_period": facts.status == "trialing",
                 "keep": True}
        if kind in still and not still[kind]:
            over = _played_out(session, facts, utc_now(), language)
            if over is not None:
                return over
            return Outcome(say("Your subscription continues"),
                           say("The offer you accepted no longer applies to your subscription: %(regular)s",
                               regular=_regular(facts, language)), True)
        if kind == "keep":
            return Outcome(say("Your subscription continues"),
                           say("We've removed the scheduled cancellation.") + f" {_regular(facts, language)}", True)
        headlines = {"discount": N_("Thanks for staying!"), "pause": N_("Your break has started"),
                     "switch": N_("Your plan is changing"), "free_period": N_("Enjoy your free time")}
        if kind in headlines:
            same = (say("Nothing else changes: you keep your access. We'll charge the card on file as usual.")
                    if kind == "switch" else
                    say("Nothing else changes: same plan, same access. We'll charge the card on file as usual."))
            return Outcome(say(headlines[kind]), promise_in(session, language) or say("Your offer is in place."), True,
                           schedule=_schedule_lines(session, language), after=same)
        return describe_stripe_state(facts, language)


def offer_ends_at(session: CancelSession) -> datetime | None:
    """When an accepted offer has run its course by our record: a pause when collection resumes, free time
    when the first payment falls due, a discount when its coupon's months are over (Stripe ends a repeating
    coupon that many months after it was applied); None for a switch, which lasts."""
    if getattr(session, "offer_ends_at", None) and session.outcome in ("saved_pause", "saved_free_period", "saved_discount"):
        return as_utc(session.offer_ends_at)
    if session.outcome == "saved_pause" and session.pause_resumes_at:
        return as_utc(session.pause_resumes_at)
    if session.outcome == "saved_free_period" and session.next_payment_at:
        return as_utc(session.next_payment_at)
    if session.outcome == "saved_discount" and session.discount_months and session.decided_at:
        return add_months(as_utc(session.decided_at), session.discount_months)
    return None


def still_playing_out(session: CancelSession, now: datetime) -> bool:
    """An accepted offer that hasn't run its course yet (a switch always plays out)."""
    ends = offer_ends_at(session)
    return session.outcome == "saved_switch" or (ends is not None and now < ends)


def _played_out(session: CancelSession, facts: SubscriptionFacts, now: datetime, language: str = DEFAULT) -> Outcome | None:
    """What the done page says once the offer has run its course (not when it was taken away early)."""
    ends = offer_ends_at(session)
    if ends is None or now < ends - timedelta(days=1):
        return None
    day, regular = format_day(ends, language), _regular(facts, language)
    words = {"saved_pause": (N_("Your break is over"), N_("Your break ended on %(day)s, and your plan is active again.")),
             "saved_free_period": (N_("Your free time is over"),
                                   N_("Your free time ended on %(day)s, and your plan is active.")),
             "saved_discount": (N_("Your discount has ended"),
                                N_("Your discount ended on %(day)s, and your plan is active at its regular price."))}
    headline, detail = words[session.outcome]
    detail = gettext(language, detail, day=day)
    return Outcome(gettext(language, headline), f"{detail} {regular}".strip(), True)


def promise_in(session: CancelSession, language: str) -> str | None:
    """The accepted offer's promise in `language` (as worded when it was accepted), else as stored."""
    texts = getattr(session, "promise_texts", None) or {}
    return texts.get(language) or session.promise


def contact_mail(url: str, session: CancelSession, language: str = DEFAULT) -> str:
    """The coach's `mailto:` address with a subject and a body that carry the plan, the reason and the
    comment (RFC 6068: percent-encoded, lines ending in CRLF); a subject or body already in the address wins.
    The client sends it, so it is written in the client's language."""
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    address, _, query = url.removeprefix("mailto:").partition("?")
    fields = dict(parse_qsl(query, keep_blank_values=True))
    comment = " ".join((session.comment or "").split())
    if len(comment) > 1000:
        comment = comment[:999] + "…"
    lines = [say("Hi,"), "", say("I'd like to talk before canceling my %(plan)s subscription.", plan=session.plan_name)]
    if session.reason:
        reason = gettext(language, REASONS[session.reason]) if session.reason in REASONS else session.reason
        lines += ["", say("Why I'm thinking of leaving: %(reason)s", reason=reason)]
    if comment:
        lines.append(say("What I'd add: %(comment)s", comment=comment))
    lines += ["", say("Thanks")]
    fields.setdefault("subject", say("Before I cancel my %(plan)s subscription", plan=session.plan_name))
    fields.setdefault("body", "\r\n".join(lines))
    return f"mailto:{address}?" + "&".join(f"{name}={quote(value, safe='')}" for name, value in fields.items())


def _schedule_lines(session: CancelSession, language: str = DEFAULT) -> list[tuple[str, str]] | None:
    """The promised payments, one line each, for the done page (in the wording function's words)."""
    if not session.schedule:
        return None
    return [(format_day(at, language), words)
            for at, words in billing.schedule_lines(session.schedule, session.currency, language)]


def _regular(facts: SubscriptionFacts, language: str = DEFAULT) -> str:
    if facts.next_payment is None:
        return ""
    if not facts.priced:
        return gettext(language, "Your next payment is on %(day)s.", day=format_day(facts.next_payment, language))
    return gettext(language, "Your next payment is %(amount)s on %(day)s.",
                   amount=format_money(facts.billed_amount, facts.currency, language),
                   day=format_day(facts.next_payment, language))


def _applied(session: CancelSession, facts: SubscriptionFacts) -> bool:
    """Whether Stripe shows the claimed offer applied (it wasn't before the session began)."""
    kind = session.offer_kind
    return (kind == "discount" and facts.has_discount and not session.had_discount) or \
        (kind == "pause" and facts.paused and not session.was_paused) or \
        (kind == "switch" and session.switch_price in facts.price_ids) or \
        (kind == "free_period" and facts.status == "trialing" and session.next_payment_at is not None
         and facts.next_payment is not None and abs((facts.next_payment - as_utc(session.next_payment_at)).total_seconds()) < 86400)


def describe_stripe_state(facts: SubscriptionFacts, language: str = DEFAULT) -> Outcome:
    say = lambda message, **values: gettext(language, message, **values)  # noqa: E731
    if facts.status not in flow.LIVE_STATUSES:
        return Outcome(say("Your subscription is canceled"), say("Nothing more will be charged."), False)
    if facts.fixed_end is not None:
        return Outcome(say("Your plan ends on its end date"),
                       say("Your plan ends on %(day)s, the end date set for it.", day=format_day(facts.fixed_end, language)),
                       True)
    if facts.cancel_at_period_end and facts.period_end:
        return Outcome(say("Your subscription is canceled"),
                       say("You keep access until %(day)s; nothing more will be charged.",
                           day=format_day(facts.period_end, language)), False)
    return Outcome(say("Your subscription is still active"), say("It looks like the cancellation wasn't confirmed."), True)


def _session_values(link: CancelLink, facts: SubscriptionFacts) -> dict:
    return {
        "nonce": link.nonce, "customer_id": facts.customer_id, "subscription_id": facts.subscription_id,
        "customer_email": facts.customer_email, "plan_name": facts.plan_name[:512],
        # what Stripe bills (discounts included), which the plan line, MRR and costs count
        "price_amount": facts.billed_amount, "price_note": price_note(facts),
        "interval": facts.interval, "interval_count": facts.interval_count,
        "monthly_amount": facts.billed_monthly, "currency": facts.currency, "had_discount": facts.has_discount,
        "was_paused": facts.paused, "cancel_at_period_end": facts.cancel_at_period_end,
        "period_end": facts.period_end, "stripe_snapshot": flow.facts_to_json(facts),
    }


def price_note(facts: SubscriptionFacts) -> str | None:
    """Beside the amount on the plan line: the discount it includes, or why there is no amount."""
    if not facts.priced:
        return UNPRICED
    return (billing.plan_words(facts.plan) or "").partition(" (")[2].rstrip(")")[:64] or None


UNPRICED = N_("billed by usage or by tiers")


def plan_note(session: CancelSession, facts: SubscriptionFacts | None, language: str) -> str | None:
    """The plan line's note in `language`: English as stored when the link was opened; in another language, from
    the subscription as Stripe last told it."""
    if language == DEFAULT or facts is None:
        return session.price_note
    if not facts.priced:
        return gettext(language, UNPRICED)
    return facts.plan.discount_words(language=language) if facts.plan.priced else None


def _terms(offer: Offer, promise: billing.Promise, skip: int | None, now: datetime) -> dict:
    """The columns an accepted offer writes: what Stripe will bill, the words for it, and when it ends (a
    repeating coupon ends its months after it is applied: https://docs.stripe.com/api/discounts/object#discount_object-end)."""
    terms = {"offer_kind": offer.kind, "discount_percent": None, "discount_months": None, "discount_payments": None,
             "pause_payments": None, "pause_resumes_at": None, "coupon_id": None, "switch_price": None,
             "free_months": None, "promise": promise.text, "promise_texts": promise.texts(LANGUAGES),
             "offer_cost": promise.cost, "schedule": promise.schedule(),
             "next_payment_at": promise.next_payment.at if promise.next_payment else None, "offer_ends_at": None}
    if offer.kind == "discount":
        terms.update(discount_percent=offer.percent_off, discount_months=promise.coupon_months,
                     discount_payments=offer.payments, coupon_id=offer.coupon_id(promise.coupon_months),
                     offer_ends_at=add_months(now, promise.coupon_months))
    elif offer.kind == "pause":
        terms.update(pause_payments=skip, pause_resumes_at=promise.resumes_at, offer_ends_at=promise.resumes_at)
    elif offer.kind == "switch":
        terms.update(switch_price=offer.price)
    elif offer.kind == "free_period":
        terms.update(free_months=offer.months, next_payment_at=promise.trial_end, offer_ends_at=promise.trial_end)
    return terms


def _still_applying(message: str = N_("Your earlier choice is still being applied. Reload this page in a minute to "
                                     "see it."), **values) -> Conflict:
    return Conflict(message, title=N_("One moment"), **values)


def _claimed_terms(session: CancelSession) -> dict:
    """The terms written with the session's claim, as `_terms` gives them (for `_terms_key`)."""
    return {name: getattr(session, name) for name in ("coupon_id", "switch_price", "pause_resumes_at", "next_payment_at")}


def _terms_key(terms: dict) -> str:
    moment = terms.get("pause_resumes_at") or terms.get("next_payment_at")
    return f"{terms.get('coupon_id') or terms.get('switch_price') or ''}|{moment.date().isoformat() if moment else ''}"


def _pause_length(offer: Offer, payments: str | None) -> int | None:
    """The number of payments to skip, as chosen on the page (ASCII digits only); none chosen: the shortest
    pause, as the page preselects."""
    if offer.kind != "pause":
        return None
    if payments in (None, ""):
        return 1
    if not (payments.isascii() and payments.isdigit()) or len(payments) > 3 or not 1 <= int(payments) <= offer.max_payments:
        raise BadRequest(N_("Choose to skip from 1 to %(most)s payments."), most=offer.max_payments)
    return int(payments)
