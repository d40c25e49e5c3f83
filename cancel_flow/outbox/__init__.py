"""The durable outbox: events and their deliveries (webhooks, Slack, email) are written in the same
transaction as the change that caused them, then sent by any worker, at least once, with back-off.

    with engine.begin() as connection:
        ...the change...
        emit(connection, "session.canceled", session_data(row, test_mode=True), config.alerts)

`serve` runs `dispatch_periodically`; `cancel-flow webhook deliver` and `Dispatcher.run_due` send on demand.
"""

from cancel_flow.outbox.dispatcher import Dispatcher, dispatch_periodically
from cancel_flow.outbox.queue import emit, enqueue_email, next_attempt, retry_delay

__all__ = ["Dispatcher", "dispatch_periodically", "emit", "enqueue_email", "next_attempt", "retry_delay"]
