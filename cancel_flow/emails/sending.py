"""Sending billing emails through the outbox, with the intent recorded before the SMTP exchange: an email
whose sender stopped mid-exchange is never sent again (it may have arrived), one already sent is only
recorded, and one no longer wanted (the invoice was paid, the subscriber unsubscribed) is dropped. An address
the mail server refuses for good (a 5xx answer) is remembered: no win-back email goes to it again."""

import smtplib

from cancel_flow.clock import utc_now
from cancel_flow.emails import records
from cancel_flow.logs import log_event
from cancel_flow.outbox import Dispatcher, next_attempt
from cancel_flow.outbox.dispatcher import Result
from cancel_flow.store.winback import record_refusal

EVENT_PREFIX = "email."


def permanent_refusal(error: smtplib.SMTPException) -> tuple[int, str] | None:
    """(code, answer) when the mail server refused the recipient for good: a 5xx reply to RCPT TO, or to the
    message after DATA (RFC 5321 §4.2.1: 5yz is a permanent negative completion reply). A refused sender is our
    own setup's problem, not the address's."""
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        for code, answer in error.recipients.values():
            if 500 <= int(code) < 600:
                return int(code), answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
        return None
    if isinstance(error, smtplib.SMTPDataError) and 500 <= int(error.smtp_code) < 600:
        answer = error.smtp_error
        return int(error.smtp_code), answer.decode("utf-8", "replace") if isinstance(answer, bytes) else str(answer)
    return None


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
        if not result.ok and (result.permanent or next_attempt(row.created_at, row.attempts, utc_now()) is None):
            records.give_up(self.engine, row.key, result.error)
        return result

    def _smtp_failure(self, row, error: smtplib.SMTPException) -> Result:
        """A billing email refused for good (a 5xx for the address) is recorded, so that address gets no more."""
        refusal = permanent_refusal(error) if row.event_type.startswith(EVENT_PREFIX) and row.key else None
        if refusal is None:
            return super()._smtp_failure(row, error)
        code, answer = refusal
        record_refusal(self.engine, row.key, row.target, code, answer)
        log_event("emails.address_refused", key=row.key, code=code)
        return Result(False, error=f"The mail server refused this address for good: {code} {answer}"[:500],
                      permanent=True)
