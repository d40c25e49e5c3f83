"""Sending what the outbox holds: claim due deliveries, send each, record the result, retry with back-off."""

import asyncio
import json
import os
import smtplib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool

from cancel_flow.clock import as_utc, utc_now
from cancel_flow.hooks import endpoint_disabled_message, signed_headers
from cancel_flow.logs import log_event
from cancel_flow.mailer import Mailer, MailNotConfigured, Message, MessageRefused
from cancel_flow.outbox.endpoints import stop_deliveries
from cancel_flow.outbox.queue import (LEASE, claim, deliveries, endpoint_secret, endpoints, enqueue_email,
                                      next_attempt)
from cancel_flow.outbox.safe_http import TIMEOUT, DeliveryFailed, DeliveryRefused, post
from cancel_flow.settings import Settings

# An endpoint whose deliveries have all failed this long is switched off. The last retry of a
# delivery comes 3 days after it was written, a little less after its first failure: the hour
# lets that retry count.
DISABLE_AFTER = timedelta(days=3) - timedelta(hours=1)
# Deliveries in flight at once: per worker, and per receiver (a webhook endpoint, a Slack address, the SMTP
# server) across workers. A receiver that hangs ties up PER_ENDPOINT threads for its 10-second timeout and
# its other deliveries wait their turn; everything else goes on in the remaining threads.
CONCURRENCY = 16
PER_ENDPOINT = 4


@dataclass(frozen=True)
class Result:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False  # no retry can help (the endpoint was removed, the address is refused)
    gone: bool = False  # 410: the receiver asks to be unsubscribed (Zapier does this for turned-off Zaps)


def _answer_text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


class Dispatcher:
    """Any number of dispatchers (threads, workers, replicas) can share one database.

    `start_due` claims what may start now and hands each delivery to a thread of its own, without waiting
    for any of them; a thread that ends claims again, so a backlog drains at full speed. `run_due` does the
    same and waits until nothing is due or in flight (the command line and the tests)."""

    def __init__(self, engine: Engine, settings: Settings, *, notify_email: str | None = None,
                 sender: str | Callable[[], str] | None = None, worker: str | None = None,
                 concurrency: int = CONCURRENCY, per_endpoint: int = PER_ENDPOINT, lease: timedelta = LEASE,
                 timeout: float = TIMEOUT):
        self.engine, self.settings, self._notify_email, self.live = engine, settings, notify_email, None
        self.mailer = Mailer(settings, sender or f"no-reply@{urlsplit(settings.base_url).hostname}")
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency, self.per_endpoint, self.lease = concurrency, min(per_endpoint, concurrency), lease
        self.timeout = timeout  # seconds one HTTP delivery may take
        self.attempted = 0  # deliveries claimed and started by this dispatcher
        self._pool: ThreadPoolExecutor | None = None
        self._claiming = threading.Lock()  # one claim at a time, so the free threads are counted right
        self._changed = threading.Condition()  # guards the counts below; notified as each delivery ends
        self._running = 0  # deliveries started and not yet recorded
        self._refilling = 0  # threads that recorded theirs and are claiming the next
        self._closed = False

    @classmethod
    def for_config(cls, engine: Engine, settings: Settings, live, **options) -> "Dispatcher":
        """Coach notices go to `[alerts] email`, else the brand's support email; mail comes from the latter,
        as the live configuration (`live`, a LiveConfiguration) says at the time of sending."""
        fallback = f"no-reply@{urlsplit(settings.base_url).hostname}"
        dispatcher = cls(engine, settings, sender=lambda: live.current().brand.support_email or fallback, **options)
        dispatcher.live = live
        return dispatcher

    @property
    def notify_email(self) -> str | None:
        if self.live is None:
            return self._notify_email
        config = self.live.current()
        return config.alerts.email or config.brand.support_email

    def close(self, wait: bool = True) -> None:
        """No more claims; with `wait`, until the deliveries in flight are recorded."""
        with self._claiming:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=wait)

    def start_due(self) -> int:
        """Claim what may start now (free threads, receivers below PER_ENDPOINT) and start sending it; returns
        at once with the number started."""
        with self._claiming:
            if self._closed:
                return 0
            with self._changed:
                free = self.concurrency - self._running
            if free <= 0:
                return 0
            rows = claim(self.engine, self.worker, free, self.lease, per_lane=self.per_endpoint)
            if not rows:
                return 0
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="outbox")
            with self._changed:
                self._running += len(rows)
                self.attempted += len(rows)
            for row in rows:
                self._pool.submit(self._send, row)
            return len(rows)

    def run_due(self) -> int:
        """Send what is due now and wait for it; the number of deliveries attempted."""
        with self._claiming:
            self._closed = False
        before = self.attempted
        while True:
            self.start_due()
            with self._changed:
                if not self._running and not self._refilling:
                    break
                self._changed.wait()
        return self.attempted - before

    def _send(self, row) -> None:
        try:
            self._deliver_and_record(row)
        finally:
            with self._changed:
                self._running -= 1
                self._refilling += 1
        try:
            self.start_due()  # this thread is free: the next due delivery need not wait for the next poll
        except Exception as error:  # the database is away: the next poll tries again
            log_event("outbox.dispatch_failed", level=40, error=type(error).__name__)
        finally:
            with self._changed:
                self._refilling -= 1
                self._changed.notify_all()

    def _deliver_and_record(self, row) -> None:
        try:
            result = self.deliver(row)
        except Exception as error:  # a bug in one delivery must not stop the others
            result = Result(False, error=f"{type(error).__name__}")
        try:
            self.record(row, result)
        except Exception as error:  # the claim expires and the delivery is tried again
            log_event("outbox.record_failed", level=40, delivery=row.id, error=type(error).__name__)

    def deliver(self, row) -> Result:
        """Send one claimed delivery; never raises for the receiver's faults."""
        if row.kind == "email":
            return self._email(row)
        if row.kind == "webhook":
            secret = endpoint_secret(self.engine, row.endpoint_id)
            if secret is None:
                return Result(False, error="endpoint removed", permanent=True)
            headers = {"content-type": "application/json", **signed_headers(secret, row.event_id, row.payload)}
        else:
            headers = {"content-type": "application/json"}
        try:
            answer = post(row.target, row.payload.encode(), headers, allow_private=self.settings.allow_private_urls,
                          timeout=self.timeout)
        except DeliveryRefused as refused:  # the address is not one we send to: retrying can't change that
            return Result(False, error=f"Refused: {refused}"[:500], permanent=True)
        except DeliveryFailed as problem:
            return Result(False, error=str(problem)[:500])
        if 200 <= answer.status < 300:
            return Result(True, answer.status)
        return Result(False, answer.status, f"HTTP {answer.status}: {_answer_text(answer.body)}"[:500],
                      gone=answer.status == 410 and row.kind == "webhook")

    def _email(self, row) -> Result:
        content = json.loads(row.payload)
        try:
            self.mailer.send(Message(to=row.target, subject=content["subject"], text=content["text"],
                                     html=content["html"], headers=tuple(map(tuple, content.get("headers") or ()))))
        except MailNotConfigured:
            return Result(False, error="SMTP_URL is not set, so email can't be sent")
        except MessageRefused as refused:  # written before any exchange: nothing went out, and no retry can help
            return Result(False, error=f"Refused: {refused}"[:500], permanent=True)
        except smtplib.SMTPException as error:
            return self._smtp_failure(row, error)
        except OSError as error:
            return Result(False, error=f"{type(error).__name__}: {error}"[:500])
        return Result(True)

    def _smtp_failure(self, row, error: smtplib.SMTPException) -> Result:
        """What a mail server's refusal means for the row: here, try again later."""
        return Result(False, error=f"{type(error).__name__}: {error}"[:500])

    def record(self, row, result: Result) -> None:
        """Write the outcome, unless the claim was lost (then the new holder records its own)."""
        now = utc_now()
        mine = sa.and_(deliveries.c.id == row.id, deliveries.c.claimed_by == row.claimed_by,
                       deliveries.c.status == "delivering")
        with self.engine.begin() as connection:
            if result.ok:
                values = {"status": "delivered", "delivered_at": now, "last_status_code": result.status_code,
                          "last_error": None}
            else:
                retry_at = None if result.permanent or result.gone else next_attempt(row.created_at, row.attempts, now)
                values = {"status": "pending" if retry_at else "failed", "next_attempt_at": retry_at or now,
                          "last_status_code": result.status_code, "last_error": result.error}
            if connection.execute(sa.update(deliveries).where(mine).values(**values)).rowcount != 1:
                return
            if row.kind == "webhook" and row.endpoint_id:
                self._endpoint_health(connection, row, result, now)
        log_event("outbox.delivered" if result.ok else "outbox.failed", delivery=row.id, kind=row.kind,
                  event_type=row.event_type, event_id=row.event_id, attempts=row.attempts, status_code=result.status_code,
                  **({} if result.ok else {"error": (result.error or "")[:200], "final": values["status"] == "failed"}))

    def _endpoint_health(self, connection, row, result: Result, now) -> None:
        endpoint = endpoints.c
        if result.ok:
            connection.execute(sa.update(endpoints).where(
                endpoint.id == row.endpoint_id, sa.or_(endpoint.failing_since.is_not(None), endpoint.enabled.is_(False)),
            ).values(failing_since=None, enabled=True, disabled_at=None))
            return
        if result.gone:
            if connection.execute(sa.update(endpoints).where(endpoint.id == row.endpoint_id, endpoint.enabled)
                                  .values(enabled=False, disabled_at=now)).rowcount:
                stop_deliveries(connection, row.endpoint_id, "the receiver answered 410 Gone (unsubscribed)")
                log_event("webhook.endpoint_gone", endpoint=row.endpoint_id)
            return
        connection.execute(sa.update(endpoints).where(endpoint.id == row.endpoint_id, endpoint.failing_since.is_(None))
                           .values(failing_since=now))
        state = connection.execute(sa.select(endpoint.url, endpoint.failing_since, endpoint.enabled)
                                   .where(endpoint.id == row.endpoint_id)).first()
        if state is None or not state.enabled or now - as_utc(state.failing_since) < DISABLE_AFTER:
            return
        connection.execute(sa.update(endpoints).where(endpoint.id == row.endpoint_id)
                           .values(enabled=False, disabled_at=now))
        stop_deliveries(connection, row.endpoint_id, "endpoint switched off after failing for 3 days")
        log_event("webhook.endpoint_disabled", level=30, endpoint=row.endpoint_id)
        if self.notify_email:
            notice = endpoint_disabled_message(state.url, as_utc(state.failing_since))
            enqueue_email(connection, self.notify_email, notice["subject"], notice["text"], notice["html"],
                          event_type="endpoint.disabled",
                          key=f"endpoint-disabled:{row.endpoint_id}:{as_utc(state.failing_since).isoformat()}")


async def dispatch_periodically(dispatcher: Dispatcher, every: float = 1.0) -> None:
    """`serve`'s background sender: polls for due deliveries, so an event goes out within about `every` s.
    A poll only claims and starts: it never waits for a delivery, so a slow receiver delays no other."""
    try:
        while True:
            try:
                await run_in_threadpool(dispatcher.start_due)
            except Exception as error:  # the database is away: the next round tries again
                log_event("outbox.dispatch_failed", level=40, error=type(error).__name__)
            await asyncio.sleep(every)
    finally:
        dispatcher.close(wait=False)
