"""Win-back's steps for the pages and webhooks: "keep my plan" (through the cancel flow's own keep), the comeback
page and its Checkout Session made per click, and the return recorded from Stripe's `checkout.session.completed`
(or the success page, whichever comes first) with its outgoing event. Stripe through stripe_winback, rules from
winback and billing, records through store.winback."""

from dataclasses import dataclass, replace
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from cancel_flow import billing, winback
from cancel_flow.clock import as_utc, from_unix, utc_now
from cancel_flow.config.schema import Offer
from cancel_flow.emails.winback_schedule import keep_discounts, keep_plan, price_words
from cancel_flow.errors import BadRequest, Conflict, ExpiredLink, InvalidLink
from cancel_flow.flow import ENDED_STATUSES, PriceLine, monthly_amount
from cancel_flow.hooks import event_data, is_test_mode
from cancel_flow.i18n import DEFAULT, N_, STRIPE_LOCALES, gettext
from cancel_flow.links import NOT_VALID, CancelLink, ComebackLink
from cancel_flow.logs import log_event
from cancel_flow.outbox.queue import emit
from cancel_flow.store import winback as store
from cancel_flow.stripe_winback import WinbackStripe

METADATA_SUBSCRIPTION = "cancel_flow_winback_subscription"
METADATA_STEP = "cancel_flow_winback_step"


@dataclass
class KeepView:
    """What the "keep my plan" page shows: the plan, when it ends (None once kept), and what continues."""

    link: CancelLink
    state: str  # scheduled | kept | ended
    plan_name: str = ""
    ends_at: datetime | None = None
    promise: billing.Promise | None = None


@dataclass
class ComebackView:
    link: ComebackLink
    step: object  # the planned step's row, with its client's columns
    plan_name: str
    price_words: str
    price_replaced: bool
    promise: billing.Promise
    offer: Offer | None


def _plan_name(sub: dict) -> str:
    from cancel_flow.emails.scheduler import _plan_name as name

    return name(sub)


class WinbackService:
    def __init__(self, engine, gateway, live, signer, settings, cancel_service):
        self.engine, self.gateway, self.live, self.signer = engine, gateway, live, signer
        self.settings, self.cancel_service = settings, cancel_service
        self.stripe = WinbackStripe(gateway)

    # "Keep my plan" -----------------------------------------------------------------------------------
    async def keep_view(self, token: str, language: str = DEFAULT) -> KeepView:
        link = self.signer.read_keep(token)
        sub = await self.stripe.subscription(link.subscription)
        customer = (sub or {}).get("customer")
        if sub is None or (customer.get("id") if isinstance(customer, dict) else customer) != link.customer:
            raise InvalidLink(N_("This link points to a subscription that no longer exists."))
        if sub["status"] in ENDED_STATUSES:
            return KeepView(link, "ended", _plan_name(sub))
        from cancel_flow.emails.scheduler import _cancels_at

        plan = keep_plan(sub)
        promise = billing.keep_promise(plan, utc_now(), keep_discounts(sub), language) if plan else None
        ends_at = _cancels_at(sub)
        return KeepView(link, "scheduled" if ends_at else "kept", _plan_name(sub), ends_at, promise)

    async def keep(self, token: str) -> None:
        """Undo the scheduled cancellation (outcome `saved_keep`), as the cancel flow's "Keep my subscription"."""
        link = self.signer.read_keep(token)
        session = await self.cancel_service.keep_scheduled(link)
        log_event("winback.kept", subscription=link.subscription, session=session.id if session else None)

    # The comeback page ----------------------------------------------------------------------------------
    async def comeback_view(self, token: str, opened: bool = True, language: str = DEFAULT) -> ComebackView:
        """The step this link names, as the page shows it; the first view is counted as the page opened.
        A link whose client came back already is used (410, with the way to a fresh link)."""
        link = self.signer.read_comeback(token)
        step = await run_in_threadpool(store.comeback, self.engine, link.customer, link.step)
        if step is None:
            raise InvalidLink(NOT_VALID)
        if step.won_back_at or step.returned_at:
            when = as_utc(step.won_back_at or step.returned_at)
            raise ExpiredLink(gettext(language, "This link has been used: you subscribed again on %(day)s. To manage "
                                                "your subscription, ask for a fresh link by email.",
                                      day=_day(when, language)),
                              title=gettext(language, "This link has already been used"))
        if step.unit_amount is None or step.price_id is None:
            raise InvalidLink(NOT_VALID)
        offer = self._offer(step)
        plan = billing.Plan(step.currency, (billing.Line(step.unit_amount, step.quantity),), step.interval,
                            step.interval_count, None, None)
        now = utc_now()
        promise = billing.comeback_promise(plan, now, step.percent_off if offer else None,
                                           step.payments if offer else None, language)
        if promise is None:
            offer, promise = None, billing.comeback_promise(plan, now, language=language)
        if opened and step.opened_at is None:
            await run_in_threadpool(store.mark_opened, self.engine, step.id)
        return ComebackView(link, step, step.plan_name or gettext(language, "your plan"),
                            price_words(step.unit_amount, step.quantity, step.currency, step.interval,
                                        step.interval_count, language),
                            bool(step.price_replaced), promise, offer)

    def _offer(self, step) -> Offer | None:
        """The offer the email promised: its terms as they were when the step was written."""
        if not step.offer_id or not step.percent_off or not step.payments:
            return None
        offer = self.live.offer(step.offer_id) or Offer(id=step.offer_id, kind="discount", title=step.offer_id)
        return replace(offer, percent_off=step.percent_off, payments=step.payments)

    async def checkout_url(self, token: str, language: str = DEFAULT) -> str:
        """A Checkout Session for this comeback (https://docs.stripe.com/api/checkout/sessions/create): the customer,
        the price, the offer's coupon, back to us on success or cancel, in the client's language. Made per click."""
        view = await self.comeback_view(token, opened=False, language=language)
        step = view.step
        if await self.stripe.live_subscription(view.link.customer):
            raise Conflict(gettext(language, "You're already subscribed again, so there's nothing to pay here."),
                           title=gettext(language, "You're already back"))
        base = f"{self.settings.base_url}/comeback/{token}"
        metadata = {METADATA_SUBSCRIPTION: step.subscription_id, METADATA_STEP: str(step.step)}
        params = {"mode": "subscription", "customer": view.link.customer,
                  "line_items": [{"price": step.price_id, "quantity": step.quantity}],
                  "success_url": f"{base}/welcome?session_id={{CHECKOUT_SESSION_ID}}", "cancel_url": base,
                  "locale": STRIPE_LOCALES.get(language, "auto"), "metadata": metadata,
                  "subscription_data": {"metadata": metadata}}
        if view.offer is not None and view.promise.coupon_months:
            coupon = await self.gateway.ensure_coupon(view.offer, view.promise.coupon_months)
            params["discounts"] = [{"coupon": coupon}]
        url = await self.stripe.checkout_url(params)
        log_event("winback.checkout_opened", subscription=step.subscription_id, step=step.step)
        return url

    async def welcome(self, token: str, checkout_session: str | None, language: str = DEFAULT):
        """Back from Stripe's payment page: the return recorded (if the webhook hasn't yet), and what the page says."""
        link = self.signer.read_comeback(token)
        if not checkout_session or not checkout_session.startswith("cs_") or len(checkout_session) > 255:
            raise BadRequest(gettext(language, "We couldn't find that payment. If you paid, you'll get Stripe's "
                                               "receipt by email."))
        session = await self.stripe.checkout_session(checkout_session)
        if session is None or session.get("customer") != link.customer:
            raise BadRequest(gettext(language, "We couldn't find that payment. If you paid, you'll get Stripe's "
                                               "receipt by email."))
        if session.get("status") != "complete":
            return None
        await run_in_threadpool(self.checkout_completed, session)
        return await run_in_threadpool(store.comeback, self.engine, link.customer, link.step)

    # Stripe's events -----------------------------------------------------------------------------------
    def subscription_ended(self, event: dict) -> bool:
        """`customer.subscription.deleted`: the client who left, kept for the comeback steps (once)."""
        sub = (event.get("data") or {}).get("object") or {}
        values = ended_values(sub, int(event.get("created") or 0))
        if values is None:
            return False
        if not winback.left(values["stripe_reason"]):
            return False
        written = store.record_ended(self.engine, values)
        if written:
            log_event("winback.client_left", subscription=values["subscription_id"])
        return written

    def checkout_completed(self, session: dict, at: datetime | None = None) -> bool:
        """`checkout.session.completed` of a comeback checkout (`at`: the event's time): the return recorded once,
        with its event."""
        metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
        old = metadata.get(METADATA_SUBSCRIPTION)
        if session.get("mode") != "subscription" or session.get("status") != "complete" or not isinstance(old, str) \
                or not isinstance(session.get("subscription"), (str, dict)):
            return False
        new = session["subscription"]["id"] if isinstance(session["subscription"], dict) else session["subscription"]
        client = store.ended(self.engine, old)
        if client is None or client.customer_id != session.get("customer"):
            return False
        try:
            number = int(metadata.get(METADATA_STEP) or 0) or None
        except (TypeError, ValueError):
            number = None
        step = store.comeback(self.engine, client.customer_id, number) if number else None
        unit = step.unit_amount if step is not None and step.unit_amount is not None else client.unit_amount
        mrr = monthly_amount((PriceLine(unit, client.quantity, client.interval, client.interval_count),))
        offer = self._offer(step) if step is not None else None
        plan = billing.Plan(client.currency, (billing.Line(unit, client.quantity),), client.interval,
                            client.interval_count, None, None)
        promise = billing.comeback_promise(plan, utc_now(), offer.percent_off if offer else None,
                                           offer.payments if offer else None)

        def announce(connection, row, cancel_session) -> None:
            data = event_data(
                customer_id=row.customer_id, test_mode=is_test_mode(self.settings.stripe_api_key),
                customer_email=row.customer_email, customer_name=row.customer_name, subscription_id=new,
                plan=row.plan_name, monthly_amount=mrr, currency=row.currency, reason=row.reason,
                comment=cancel_session.comment if cancel_session is not None else None,
                offer={"id": offer.id, "kind": "discount", "title": offer.title, "terms": promise.text if promise else None}
                if offer else None,
                previous_subscription=row.subscription_id, step=number, checkout_session=session.get("id"),
                session={"id": cancel_session.id, "outcome": cancel_session.outcome,
                         "started_at": as_utc(cancel_session.created_at).isoformat(timespec="seconds")}
                if cancel_session is not None else None)
            emit(connection, "subscription.won_back", data, self.live.current().alerts,
                 key=f"subscription.won_back:{row.subscription_id}")

        recorded = store.record_won_back(self.engine, old, number, new_subscription=new,
                                         checkout_session=session.get("id"), mrr=mrr, currency=client.currency,
                                         at=at, emit=announce)
        if recorded:
            log_event("winback.won_back", subscription=old, new_subscription=new, step=number)
        return recorded

    # A fresh comeback link (the shared link `/`) ---------------------------------------------------------------
    def fresh_comeback_url(self, email: str) -> str | None:
        """For the shared link `/`: a new comeback link to the newest step a client who left was sent."""
        customer_id = store.waiting_customer(self.engine, email)
        if customer_id is None:
            return None
        step = store.latest_comeback(self.engine, customer_id)
        if step is None:
            return None
        return f"{self.settings.base_url}/comeback/{self.signer.comeback_token(customer_id, step)}"


def _day(moment: datetime, language: str) -> str:
    from cancel_flow.money import format_day

    return format_day(moment, language)


def ended_values(sub: dict, event_created: int) -> dict | None:
    """The columns of an ended subscription, from the subscription object of its event; None when the object
    is not one that can be read as such (a malformed or foreign event is ignored, never half-written)."""
    try:
        # Only a subscription that was running and was canceled is a client who left; one that never started
        # (`incomplete_expired`: its first payment never went through) is not.
        if sub.get("object") != "subscription" or not isinstance(sub.get("id"), str) or sub.get("status") != "canceled":
            return None
        customer = sub.get("customer")
        customer_id = customer.get("id") if isinstance(customer, dict) else customer
        items = sub["items"]["data"]
        item = items[0]
        price = item["price"]
        recurring = price.get("recurring") or {}
        product = price.get("product")
        details = sub.get("cancellation_details") or {}
        ended_at = sub.get("ended_at") or sub.get("canceled_at") or event_created
        quantity = int(item.get("quantity") or 1)
        unit = int(price.get("unit_amount") or 0)
        interval, count = recurring.get("interval"), int(recurring.get("interval_count") or 1)
        if not isinstance(customer_id, str) or interval not in ("day", "week", "month", "year") or len(items) != 1:
            return None
        return {
            "subscription_id": sub["id"][:255], "customer_id": customer_id[:255],
            "customer_email": customer.get("email") if isinstance(customer, dict) else None,
            "customer_name": customer.get("name") if isinstance(customer, dict) else None,
            "stripe_feedback": details.get("feedback") if isinstance(details.get("feedback"), str) else None,
            "stripe_reason": details.get("reason")[:64] if isinstance(details.get("reason"), str) else None,
            "plan_name": (product.get("name") if isinstance(product, dict) else "") or "",
            "price_id": price.get("id"), "product_id": product.get("id") if isinstance(product, dict) else product,
            "unit_amount": unit, "quantity": quantity, "currency": str(price.get("currency") or sub.get("currency"))[:3],
            "interval": interval, "interval_count": count,
            "monthly_amount": monthly_amount((PriceLine(unit, quantity, interval, count),)),
            "ended_at": from_unix(int(ended_at)),
        }
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None
