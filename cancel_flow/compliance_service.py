"""Withdrawals and cancel-button declarations: received (stored to the second), decided once (with the
acknowledgement email, the event and the coach's alert), then carried out in Stripe (ended or set to cancel,
refunded), retried by the sweep until Stripe has done it.

A declaration on the page anyone can open is decided after the page has answered, so neither the words nor
the timing tell whether the email belongs to a client. The rules are in cancel_flow/compliance.py."""

from dataclasses import replace
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from cancel_flow import compliance, flow
from cancel_flow.clock import as_utc, utc_now
from cancel_flow.compliance import WithdrawalRight, withdrawal_right
from cancel_flow.config.schema import Alerts, Configuration
from cancel_flow.emails import compose
from cancel_flow.errors import Conflict, NotFound, StripeUnavailable
from cancel_flow.flow import SubscriptionFacts
from cancel_flow.hooks import AlertText, event_data, stripe_customer_url, withdrawal_fields
from cancel_flow.i18n import DEFAULT, gettext, lang_query
from cancel_flow.links import LinkSigner
from cancel_flow.logs import log_event
from cancel_flow.money import format_day, format_money
from cancel_flow.store.declarations import Acknowledgement, Decision, DeclarationStore
from cancel_flow.stripe_gateway import StripeGateway, idempotency_key

DAY_SECONDS = 86400


def coach_alerts(config: Configuration) -> Alerts:
    """Where the coach hears of declarations: `[alerts]`, else the brand's support email; always, whatever
    `[alerts] events` lists (a declaration may need the coach to act)."""
    alerts = config.alerts
    return replace(alerts, email=alerts.email or config.brand.support_email,
                   events=tuple(dict.fromkeys((*alerts.events, "subscription.withdrawn"))))


def withdrawal_open(config: Configuration, session, now: datetime | None = None) -> bool:
    """Whether a cancel link's pages show "Withdraw from contract here" (from the session's Stripe snapshot)."""
    if config.compliance.withdrawal_days == 0 or session is None or not getattr(session, "stripe_snapshot", None):
        return False
    if session.outcome == "withdrawn":
        return False
    return withdrawal_right(config.compliance, flow.snapshot_facts(session.stripe_snapshot), now).open


class ComplianceService:
    def __init__(self, store: DeclarationStore, gateway: StripeGateway, live, signer: LinkSigner, settings,
                 test_mode: bool):
        self.store, self.gateway, self.live, self.signer = store, gateway, live, signer
        self.settings, self.test_mode = settings, test_mode

    @property
    def config(self) -> Configuration:
        return self.live.current()

    async def cancel_button_on(self) -> bool:
        """`[compliance] cancel_button`, or when not set: on when the Stripe account is in Germany."""
        setting = self.config.compliance
        if setting.cancel_button is not None:
            return setting.cancel_button
        return setting.cancel_button_on(await self.gateway.account_country())

    def right(self, facts: SubscriptionFacts | None, now: datetime | None = None) -> WithdrawalRight:
        return withdrawal_right(self.config.compliance, facts, now or utc_now())

    # receiving -----------------------------------------------------------------------------------------
    async def withdraw_in_flow(self, session, facts: SubscriptionFacts, name: str, email: str, language: str = "en"):
        """A withdrawal from a cancel link's subscription: stored, decided and carried out now; the declaration.
        A second submit of the same link finds the first."""
        now = utc_now()
        right = self.right(facts, now)
        if not right.open:
            raise Conflict(self.why_not(right, facts, language), title=gettext(language, "Withdrawal not available"))
        contract = compliance.contract_words(facts, language)
        row, new = await self._receive(dict(
            kind="withdrawal", source="flow", received_at=now, name=name, email=email, contract=contract[:500],
            content=compliance.withdrawal_content(name, email, contract, language), language=language,
            dedupe_key=f"withdrawal:session:{session.id}", session_id=session.id, customer_id=facts.customer_id,
            subscription_id=facts.subscription_id, plan_name=facts.plan_name[:512]))
        if new or row.status == "received":
            await self.process(row.id, facts=facts)
        return await run_in_threadpool(self.store.get, row.id)

    async def receive(self, kind: str, name: str, email: str, contract: str, language: str = "en",
                      cancellation: str | None = None, reason: str | None = None):
        """A declaration sent from the page anyone can open: stored as received (the caller decides it after
        answering, with `process`)."""
        contract = contract or gettext(language, "the subscription of %(email)s", email=email)
        content = compliance.withdrawal_content(name, email, contract, language) if kind == "withdrawal" else \
            compliance.cancellation_content(name, email, contract, cancellation or "ordinary", reason, language)
        row, _ = await self._receive(dict(kind=kind, source="shared_link", received_at=utc_now(), name=name, email=email,
                                          contract=contract[:500], content=content, language=language,
                                          cancellation=cancellation if kind == "cancellation" else None,
                                          reason=reason if cancellation == "extraordinary" else None))
        return row

    async def _receive(self, values: dict):
        row, new = await run_in_threadpool(self.store.receive, values)
        if new:
            log_event("declaration.received", declaration=row.id, kind=row.kind, source=row.source)
        return row, new

    # deciding and carrying out ---------------------------------------------------------------------------
    async def process(self, declaration_id: int, facts: SubscriptionFacts | None = None) -> None:
        """Decide a received declaration (once), then have Stripe carry it out; safe to repeat (the sweep does)."""
        row = await run_in_threadpool(self.store.get, declaration_id)
        if row is None:
            return
        if row.status == "received":
            decision, facts = await self._decide(row, facts)
            if await run_in_threadpool(self.store.decide, row.id, decision):
                log_event("declaration.decided", declaration=row.id, kind=row.kind, status=decision.status)
            row = await run_in_threadpool(self.store.get, declaration_id)
        if row.status == "accepted" and row.applied_at is None:
            await self._carry_out(row, facts)

    async def process_due(self) -> int:
        """The sweep's part: declarations a stopped worker left, and Stripe work that failed before."""
        due = await run_in_threadpool(self.store.due)
        for row in due:
            try:
                await self.process(row.id)
            except Exception as error:  # one declaration must not stop the others; it is tried again next time
                log_event("declaration.process_failed", level=40, declaration=row.id, error=type(error).__name__)
        return len(due)

    async def _decide(self, row, facts: SubscriptionFacts | None) -> tuple[Decision, SubscriptionFacts | None]:
        if row.source == "flow":
            if facts is None:
                try:
                    facts = await self.gateway.read_subscription(row.subscription_id)
                except (StripeUnavailable, NotFound):
                    facts = None
            candidates = [facts] if facts is not None else []
            looked_up = facts is not None
        else:
            candidates, looked_up = await self._subscriptions_of(row.email)
        if row.kind == "withdrawal":
            return await self._decide_withdrawal(row, candidates, looked_up)
        return self._decide_cancellation(row, candidates, looked_up)

    async def _subscriptions_of(self, email: str) -> tuple[list[SubscriptionFacts], bool]:
        """The live subscriptions of the customer Stripe's portal login would pick for this email (each read with
        the customer's tax ids); (…, False) when Stripe couldn't be asked."""
        try:
            customer = await self.gateway.find_customer_by_email(email)
            if customer is None:
                return [], True
            listed = await self.gateway.list_live_subscriptions(customer)
            return [await self.gateway.read_subscription(sub.subscription_id) for sub in listed], True
        except (StripeUnavailable, NotFound):
            return [], False

    # withdrawals ------------------------------------------------------------------------------------------
    async def _decide_withdrawal(self, row, candidates: list[SubscriptionFacts], looked_up: bool):
        config, received = self.config, as_utc(row.received_at)
        language = row.language
        rights = [(facts, self.right(facts, received)) for facts in candidates]
        open_ones = [facts for facts, right in rights if right.open]
        if len(open_ones) > 1:
            named = [facts for facts in open_ones if _names(row.contract, facts)]
            open_ones = named if len(named) == 1 else open_ones
        if len(open_ones) == 1:
            facts = open_ones[0]
            mode = config.compliance.withdrawal_refund
            try:
                payments = await self.gateway.payments_since(facts.subscription_id, facts.started_at or received)
                refunds = compliance.refunds_for(mode, payments, received)
                amount, currency = compliance.refund_total(refunds)
                currency = currency or facts.currency
            except StripeUnavailable:
                amount, currency = None, facts.currency
            refund = compliance.refund_words(mode, amount, currency, language)
            declaration = compose.Declaration("withdrawal", row.content, "accepted", row.contract, refund=refund)
            data = event_data(customer_id=facts.customer_id, test_mode=self.test_mode, customer_email=row.email,
                              customer_name=row.name, subscription_id=facts.subscription_id, plan=facts.plan_name,
                              monthly_amount=facts.monthly_amount, currency=facts.currency,
                              withdrawal=withdrawal_fields(row.id, received.isoformat(), row.source, mode,
                                                           None if mode == "manual" else amount, currency, row.session_id))
            detail = f"Withdrawn: ended at once; refund {mode}" + (f" {format_money(amount, currency)}" if amount else "")
            return Decision("accepted", detail, self._ack(row, facts.plan_name, None, declaration),
                            customer_id=facts.customer_id, subscription_id=facts.subscription_id,
                            plan_name=facts.plan_name[:512], effective_at=received, refund_mode=mode,
                            refund_amount=None if mode == "manual" else amount, refund_currency=currency,
                            event=("subscription.withdrawn", data, coach_alerts(config)),
                            withdrawn_session=row.session_id), facts
        if open_ones:  # several, and the form doesn't say which
            return self._needs_coach(row, "Several subscriptions could be withdrawn from; the form doesn't say which."), None
        if rights:
            facts, right = rights[0]
            cancel = self._cancel_url(facts) + lang_query(language)
            declaration = compose.Declaration("withdrawal", row.content, "not_eligible", row.contract,
                                              cancel_url=cancel, why_not=self.why_not(right, facts, language))
            return Decision("not_eligible", f"Not a withdrawal: {right.reason}", self._ack(row, facts.plan_name, None, declaration),
                            customer_id=facts.customer_id, subscription_id=facts.subscription_id,
                            plan_name=facts.plan_name[:512]), None
        why = "No live subscription was found for this email." if looked_up else "Stripe couldn't be reached to find the subscription."
        return self._needs_coach(row, why), None

    def why_not(self, right: WithdrawalRight, facts: SubscriptionFacts | None, language: str = "en") -> str:
        """Why a subscription can't be withdrawn from, in the client's words."""
        days = self.config.compliance.withdrawal_days
        plan = facts.plan_name if facts else ""
        if right.reason == "period_over" and right.until:
            return gettext(language, "The %(days)s-day withdrawal period of your %(plan)s subscription ended on %(day)s.",
                           days=days, plan=plan, day=format_day(right.until, language))
        if right.reason == "business":
            return gettext(language, "Your %(plan)s subscription was taken out by a business (it has a tax ID), and the "
                                     "withdrawal right is for consumers.", plan=plan)
        if right.reason == "not_eea":
            return gettext(language, "The withdrawal function is for consumers in the EU and the EEA, and your %(plan)s "
                                     "subscription's address is elsewhere.", plan=plan)
        if right.reason == "ended":
            return gettext(language, "Your %(plan)s subscription has already ended.", plan=plan)
        return gettext(language, "The withdrawal function is not available for this subscription.")

    def _cancel_url(self, facts: SubscriptionFacts) -> str:
        token, _ = self.signer.cancel_token(facts.customer_id, facts.subscription_id, max_age=7 * DAY_SECONDS)
        return f"{self.settings.base_url}/cancel/{token}"

    # cancellations (the cancel button) ------------------------------------------------------------------
    def _decide_cancellation(self, row, candidates: list[SubscriptionFacts], looked_up: bool):
        if len(candidates) != 1:
            why = ("Several live subscriptions have this email; the form doesn't say which." if candidates else
                   "No live subscription was found for this email." if looked_up else
                   "Stripe couldn't be reached to find the subscription.")
            return self._needs_coach(row, why), None
        facts = candidates[0]
        already = facts.cancel_at_period_end
        ends = facts.period_end
        undo = None
        if not already and ends is not None:
            max_age = int((as_utc(ends) - utc_now()).total_seconds()) + DAY_SECONDS
            undo = f"{self.settings.base_url}/declarations/{self.signer.declaration_token(row.id, max_age)}/undo" + \
                lang_query(row.language or DEFAULT)
        declaration = compose.Declaration("cancellation", row.content, "accepted", row.contract, undo_url=undo)
        detail = ("Already set to cancel on " if already else "Set to cancel at the end of the period, ") + \
            (format_day(ends) if ends else "")
        alert = None
        if row.cancellation == "extraordinary":
            detail += "; extraordinary: review the reason and end it earlier in Stripe if it holds"
            alert = (coach_alerts(self.config), self._alert_text(row, facts, "Extraordinary cancellation: review the reason"))
        return Decision("accepted", detail, self._ack(row, facts.plan_name, ends, declaration),
                        customer_id=facts.customer_id, subscription_id=facts.subscription_id,
                        plan_name=facts.plan_name[:512], effective_at=ends, alert=alert), facts

    def _needs_coach(self, row, why: str) -> Decision:
        declaration = compose.Declaration(row.kind, row.content, "needs_coach", row.contract)
        return Decision("needs_coach", why, self._ack(row, row.contract, None, declaration),
                        alert=(coach_alerts(self.config), self._alert_text(row, None, why)))

    def _alert_text(self, row, facts: SubscriptionFacts | None, why: str) -> AlertText:
        what = "withdrawal" if row.kind == "withdrawal" else "cancellation"
        lines = [("Received", row.received_at.replace(microsecond=0).isoformat()), ("Contract", row.contract),
                 ("Declaration", row.content), ("To do", why)]
        if row.reason:
            lines.append(("Reason", row.reason))
        link = stripe_customer_url(facts.customer_id, self.test_mode) if facts else None
        return AlertText(headline=f"{row.name} ({row.email}) sent a {what} with the form: act on it",
                         lines=tuple(lines), link=link)

    def _ack(self, row, plan: str, access_until: datetime | None, declaration: compose.Declaration) -> Acknowledgement:
        style = compose.Style(self.config.brand, self.settings.base_url, self.settings.timezone)
        email = compose.cancellation_confirmed(style, to=row.email, name=row.name, plan=plan, access_until=access_until,
                                               keep_url=None, unsubscribe_url=None, received_at=as_utc(row.received_at),
                                               declaration=declaration, language=row.language)
        rendered = compose.render(email, style)
        return Acknowledgement(row.email, rendered.subject, rendered.text, rendered.html)

    # Stripe ---------------------------------------------------------------------------------------------------
    async def _carry_out(self, row, facts: SubscriptionFacts | None) -> None:
        try:
            if row.kind == "withdrawal":
                refunds = await self._end_and_refund(row)
            else:
                await self._set_to_cancel(row, facts)
                refunds = None
        except (StripeUnavailable, NotFound) as error:
            await run_in_threadpool(self.store.failed, row.id, str(error))
            log_event("declaration.stripe_failed", level=30, declaration=row.id, error=type(error).__name__)
            return
        await run_in_threadpool(self.store.applied, row.id, refunds)
        log_event("declaration.applied", declaration=row.id, kind=row.kind)

    async def _end_and_refund(self, row) -> list[tuple[str | None, int]]:
        received = as_utc(row.received_at)
        comment = (f"Withdrawal from the contract (EU Consumer Rights Directive, Art. 11a): declaration {row.id}, "
                   f"received {received.isoformat()}. {row.content}")
        facts = await self.gateway.end_now(row.subscription_id, comment)
        if row.refund_mode == "manual":
            return []
        payments = await self.gateway.payments_since(row.subscription_id, facts.started_at or received)
        made = []
        for refund in compliance.refunds_for(row.refund_mode, payments, received):
            answer = await self.gateway.refund(refund.payment_intent, refund.amount,
                                               idempotency_key("withdrawal-refund", str(row.id), refund.payment_intent),
                                               {"cancel_flow_declaration": str(row.id)})
            made.append(((answer or {}).get("id"), refund.amount))
        return made

    async def _set_to_cancel(self, row, facts: SubscriptionFacts | None) -> None:
        facts = facts or await self.gateway.read_subscription(row.subscription_id)
        if facts.cancel_at_period_end or facts.status not in flow.LIVE_STATUSES:
            return
        kind = "extraordinary" if row.cancellation == "extraordinary" else "ordinary"
        comment = (f"Cancellation with the cancel button (§ 312k BGB), {kind}: declaration {row.id}, received "
                   f"{as_utc(row.received_at).isoformat()}. {row.content}")
        await self.gateway.cancel_at_period_end(row.subscription_id, comment, idempotency_key("declaration", str(row.id)))

    # "This wasn't me" ---------------------------------------------------------------------------------------
    async def undoable(self, declaration_id: int):
        """The declaration an undo link names, while it can still be undone; None otherwise."""
        row = await run_in_threadpool(self.store.get, declaration_id)
        if row is None or row.kind != "cancellation" or row.status != "accepted":
            return None
        if row.effective_at is not None and as_utc(row.effective_at) <= utc_now():
            return None
        return row

    async def undo(self, declaration_id: int) -> bool:
        """Take a cancel-button cancellation back while the subscription is still active; the coach hears of it."""
        row = await self.undoable(declaration_id)
        if row is None:
            return False
        facts = await self.gateway.read_subscription(row.subscription_id)
        if facts.status not in flow.LIVE_STATUSES:
            return False
        if facts.cancel_at_period_end:
            await self.gateway.keep_subscription(row.subscription_id, facts, idempotency_key("declaration-undo", str(row.id)))
        alert = (coach_alerts(self.config), AlertText(
            headline=f"{row.name} ({row.email}) says the cancellation wasn't theirs: the plan continues",
            lines=(("Contract", row.contract), ("Declaration", row.content),
                   ("Received", row.received_at.replace(microsecond=0).isoformat())),
            link=stripe_customer_url(row.customer_id, self.test_mode) if row.customer_id else None))
        if await run_in_threadpool(self.store.undo, row.id, alert):
            log_event("declaration.undone", declaration=row.id)
        return True


def _names(contract: str, facts: SubscriptionFacts) -> bool:
    """Whether what the client wrote names this subscription (its plan or its id)."""
    text = (contract or "").casefold()
    return bool(text) and (facts.subscription_id.casefold() in text or facts.plan_name.casefold() in text)
