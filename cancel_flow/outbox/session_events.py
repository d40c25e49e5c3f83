"""A cancel session's decision as an outgoing event (session.saved, session.canceled, session.deflected,
contact.requested), written in the decision's own transaction so the change and its event commit together."""

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cancel_flow.hooks import session_data
from cancel_flow.models import CancelSession
from cancel_flow.outbox.queue import emit

sessions = CancelSession.__table__


class SessionEvents:
    def __init__(self, offers, test_mode: bool):
        self.offers, self.test_mode = offers, test_mode

    def __call__(self, connection: Connection, event_type: str, session_id: int) -> None:
        row = connection.execute(sa.select(sessions).where(sessions.c.id == session_id)).first()
        if row is None:
            return
        offer = self.offers.find(row.chosen_offer or "")
        emit(connection, event_type, session_data(row, test_mode=self.test_mode, customer_name=_customer_name(row),
                                                  offer_title=offer.title if offer else None),
             self.offers.alerts, key=f"{event_type}:{row.id}")


def _customer_name(row) -> str | None:
    if not row.stripe_snapshot:
        return None
    from cancel_flow.flow import facts_from_json

    return facts_from_json(row.stripe_snapshot).customer_name
