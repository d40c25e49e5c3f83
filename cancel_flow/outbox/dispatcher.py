"""Sending what the outbox holds: claim due deliveries, send each, record the result, retry with back-off."""

import asyncio
import json
import os
import socket
import smtplib
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
from cancel_flow.mailer import Mailer, MailNotConfigured, Message
from cancel_flow.outbox.endpoints import stop_deliveries
from cancel_flow.outbox.queue import (LEASE, claim, deliveries, endpoint_secret, endpoints, enqueue_email,
                                      next_attempt)
from cancel_flow.outbox.safe_http import DeliveryFailed, DeliveryRefused, post
from cancel_flow.settings import Settings

# An endpoint whose deliveries have all failed this long is switched off. The last retry of a
# delivery comes 3 days after it was written, a little less after its first failure: the hour
# lets that retry count.
DISABLE_AFTER = timedelta(days=3) - timedelta(hours=1)
BATCH = 4


@dataclass(frozen=True)
class Result:
    ok: bool
    status_code: int | None = None
    error: str | None = None
    permanent: bool = False  # no retry can help (the endpoint was removed)
    gone: bool = False  # 410: the receiver asks to be unsubscribed (Zapier does this for turned-off Zaps)


def _answer_text(body: bytes) -> str:
    return body[:200].decode("utf-8", "replace").strip()


class Dispatcher:
    """Any number of dispatchers (threads, workers, replicas) can share one database."""

    def __init__(self, engine: Engine, settings: Settings, *, notify_email: str | None = None,
                 sender: str | Callable[[], str] | None = None, worker: str | None = None, concurrency: int = BATCH,
                 lease: timedelta = LEASE):
        self.engine, self.settings, self._notify_email, self.live = engine, settings, notify_email, None
        self.mailer = Mailer(settings, sender or f"no-reply@{urlsplit(settings.base_url).hostname}")
        self.worker = worker or f"{socket.gethostname()}:{os.getpid()}"
        self.concurrency, self.lease = concurrency, lease
        self._pool: ThreadPoolExecutor | None = None

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
        if self._pool is not None:
            self._pool.shutdown(wait=wait)
            self._pool = None

    def run_due(self, rounds: int = 25) -> int:
        """Send what is due now, a few at a time; the number of deliveries attempted."""
        attempted = 0
        for _ in range(rounds):
            rows = claim(self.engine, self.worker, self.concurrency, self.lease)
            if not rows:
                break
            if len(rows) == 1:
                self._deliver_and_record(rows[0])
            else:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="outbox")
                list(self._pool.map(self._deliver_and_record, rows))
            attempted += len(rows)
            if len(rows) < self.concurrency:
                break
        return attempted

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
            answer = post(row.target, row.payload.encode(), headers, allow_private=self.settings.allow_private_urls)
        except (DeliveryRefused, DeliveryFailed) as problem:
            return Result(False, error=str(problem)[:500])
        if 200 <= answer.status < 300:
            return Result(True, answer.status)
        return Result(False, answer.status, f"HTTP {answer.status}: {_answer_text(answer.body)}"[:500],
                      gone=answer.status == 410 and row.kind == "webhook")

    def _email(self, row) -> Result:
        content = json.loads(row.payload)
        try:
            self.mailer.send(Message(to=row.target, subject=content["subject"], text=content["text"],
                                     html=content["html"]))
        except MailNotConfigured:
            return Result(False, error="SMTP_URL is not set, so email can't be sent")
        except (smtplib.SMTPException, OSError) as error:
            return Result(False, error=f"{type(error).__name__}: {error}"[:500])
        return Result(True)

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
    """`serve`'s background sender: polls for due deliveries, so an event goes out within about `every` s."""
    try:
        while True:
            try:
                await run_in_threadpool(dispatcher.run_due)
            except Exception as error:  # the database is away: the next round tries again
                log_event("outbox.dispatch_failed", level=40, error=type(error).__name__)
            await asyncio.sleep(every)
    finally:
        dispatcher.close(wait=False)
