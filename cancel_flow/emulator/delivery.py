"""Signed webhook delivery, in order, retried with back-off when the receiver fails."""

import hashlib
import hmac
import heapq
import itertools
import json
import threading
import time

import httpx

RETRY_DELAYS = (1, 2, 4, 8, 16, 32)


def signature_header(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header that `stripe.Webhook.construct_event` verifies."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class Deliverer:
    def __init__(self, timeout: float = 10.0, on_delivered=None, on_failed=None):
        # called with the event id after each successful delivery: Stripe's event.pending_webhooks counts
        # the deliveries not yet successful (https://docs.stripe.com/api/events/object#event_object-pending_webhooks)
        self._on_delivered = on_delivered
        self._on_failed = on_failed  # after each failed attempt (a renewal's finalization waits for its webhook)
        self._queue: list = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._generation = 0
        self.attempts: list[dict] = []
        self._timeout = timeout
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._thread.start()

    def enqueue(self, event: dict, endpoint: dict) -> None:
        payload = json.dumps(event, indent=2)
        with self._wake:
            heapq.heappush(self._queue, (time.monotonic(), next(self._order), self._generation,
                                         payload, event["id"], endpoint["url"], endpoint["secret"], 0))
            self._wake.notify()

    def forget(self) -> None:
        with self._wake:
            self._queue.clear()
            self.attempts.clear()
            self._generation += 1

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                with self._wake:
                    while not self._queue or self._queue[0][0] > time.monotonic():
                        self._wake.wait(None if not self._queue else self._queue[0][0] - time.monotonic())
                    due, order, generation, payload, event_id, url, secret, attempt = heapq.heappop(self._queue)
                status = self._post(client, url, payload, secret)
                delivered = isinstance(status, int) and 200 <= status < 300
                with self._wake:
                    if generation != self._generation:
                        continue
                    self.attempts.append({"event": event_id, "url": url, "attempt": attempt + 1,
                                          "status": status, "at": time.time()})
                    if not delivered and attempt < len(RETRY_DELAYS):
                        heapq.heappush(self._queue, (time.monotonic() + RETRY_DELAYS[attempt], order, generation,
                                                     payload, event_id, url, secret, attempt + 1))
                if delivered and self._on_delivered is not None:
                    self._on_delivered(event_id)  # outside our lock: it takes the account's
                elif not delivered and self._on_failed is not None:
                    self._on_failed(event_id)

    @staticmethod
    def _post(client: httpx.Client, url: str, payload: str, secret: str):
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                   "Stripe-Signature": signature_header(payload, secret)}
        try:
            return client.post(url, content=payload.encode(), headers=headers).status_code
        except httpx.HTTPError as error:
            return type(error).__name__
