"""A cancel session's decision as an outgoing event (session.saved, session.canceled, session.deflected,
contact.requested), written in the decision's own transaction so the change and its event commit together."""

from dataclasses import replace

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cancel_flow.hooks import event_data, invoice_fields, session_data
from cancel_flow.models import CancelSession
from cancel_flow.outbox.queue import emit

sessions = CancelSession.__table__


class SessionEvents:
    """`live` is the LiveConfiguration: alerts as it says now; an offer's title even once removed."""

    def __init__(self, live, test_mode: bool):
        self.live, self.test_mode = live, test_mode

    def __call__(self, connection: Connection, event_type: str, session_id: int) -> None:
        row = connection.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
        if row is None:
            return
        offer = self.live.offer(row.chosen_offer) if row.chosen_offer else None
        emit(connection, event_type, session_data(row, test_mode=self.test_mode, customer_name=_customer_name(row),
                                                  offer_title=offer.title if offer else None),
             self._alerts(event_type), key=f"{event_type}:{row.id}")

    def _alerts(self, event_type: str):
        """A request to talk reaches the coach by email even without an [alerts] email: at the brand's
        support email (unless [alerts] events leave contact.requested out)."""
        config = self.live.current()
        alerts, support = config.alerts, config.brand.support_email
        if event_type == "contact.requested" and not alerts.email and support and event_type in alerts.events:
            return replace(alerts, email=support)
        return alerts


    def payment(self, connection: Connection, event_type: str, invoice: dict) -> None:
        """payment.failed / payment.recovered for a subscription invoice, with what we know of the plan."""
        latest = connection.execute(sa.select(sessions).where(sessions.c.subscription_id == invoice["subscription_id"])
                                    .order_by(sessions.c.id.desc()).limit(1)).first()
        amount = invoice["amount_due"] if event_type == "payment.failed" else (invoice["amount_paid"] or invoice["amount_due"])
        data = event_data(
            customer_id=invoice["customer_id"], test_mode=self.test_mode,
            customer_email=invoice.get("_customer_email") or (latest.customer_email if latest else None),
            customer_name=invoice.get("_customer_name"), subscription_id=invoice["subscription_id"],
            plan=latest.plan_name if latest else None, monthly_amount=latest.monthly_amount if latest else None,
            currency=invoice["currency"], reason=latest.reason if latest else None,
            comment=latest.comment if latest else None,
            invoice=invoice_fields(invoice["id"], amount, invoice["currency"], invoice.get("failure_message")))
        emit(connection, event_type, data, self.live.current().alerts, key=f"{event_type}:{invoice['id']}")


def _customer_name(row) -> str | None:
    if not row.stripe_snapshot:
        return None
    from cancel_flow.flow import facts_from_json

    return facts_from_json(row.stripe_snapshot).customer_name
