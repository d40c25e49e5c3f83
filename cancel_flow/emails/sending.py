"""Sending billing emails through the outbox, with the intent recorded before the SMTP exchange: an email
whose sender stopped mid-exchange is never sent again (it may have arrived), one already sent is only
recorded, and one no longer wanted (the invoice was paid, the subscriber unsubscribed) is dropped."""

from cancel_flow.clock import utc_now
from cancel_flow.emails import records
from cancel_flow.outbox import Dispatcher, next_attempt
from cancel_flow.outbox.dispatcher import Result

EVENT_PREFIX = "email."


class GuardedDispatcher(Dispatcher):
    """The outbox's dispatcher; billing emails (event type `email.…`) go through the send guard, everything
    else as usual. Use it wherever a dispatcher runs, so billing emails always get the guard."""

    def deliver(self, row) -> Result:
        if row.kind != "email" or not row.event_type.startswith(EVENT_PREFIX) or not row.key:
            return super().deliver(row)
        state = records.begin_send(self.engine, row.key)
        if state == "sent":
            return Result(True)
        if state == "unknown":
            return Result(False, error="The sender stopped while sending; not sent again so it can't arrive twice.",
                          permanent=True)
        if state.startswith("skip"):
            return Result(False, error=state.removeprefix("skip: "), permanent=True)
        result = self._email(row)
        records.finish_send(self.engine, row.key, result.ok, result.error)
        if not result.ok and next_attempt(row.created_at, row.attempts, utc_now()) is None:
            records.give_up(self.engine, row.key, result.error)
        return result
