"""Plain ASGI middleware: request ids and logs, security headers on every response and one log line (no
traceback) for an exception no handler took, in one layer; a cap on request bodies."""

import os
import re
import time
from collections.abc import Awaitable, Callable

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cancel_flow.logs import log_event, where_raised
from cancel_flow.metrics import LATENCY, REQUESTS

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_CSP_HEADER = (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())
# Pages carry a subscriber's plan, a coach's figures, signed links: no browser or proxy keeps a copy. A response
# that says how it may be cached (the brand's stylesheet and logo) keeps its own rule; static files are cached.
_NO_STORE = (b"cache-control", b"no-store")
STATIC_PREFIX = "/static/"
REQUEST_ID = "cancel_flow.request_id"  # where RequestEdge leaves the request id in the ASGI scope


class RequestEdge:
    """What every request passes once, in one layer (a layer per concern cost a coroutine and a `send`
    wrapper per request each, BENCHMARKS.md):
    - a request id (from X-Request-ID or new), echoed back and left in the scope at REQUEST_ID;
    - the security headers on every response, and `Cache-Control: no-store` on every one that sets no rule of its
      own (static files apart);
    - an exception no handler took: one JSON log line with the request id, the error's type and where it
      was raised (never a traceback, never its message, which may quote what the client sent); then, if
      nothing was sent yet, `page(scope, request_id)`, which names the request id for people to quote;
    - one JSON line per request: request id, method, route template (never the path, which may carry a
      token), status, duration; and the HTTP metrics."""

    def __init__(self, app: ASGIApp, page: Callable[[Scope, str], Awaitable[Response]], https: bool = False):
        self.app, self.page = app, page
        self.security = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"),
                         (b"x-frame-options", b"DENY")]
        if https:
            self.security.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        # The metrics' children by their labels: prometheus_client looks them up under a lock on every `labels()`.
        self._counted: dict[tuple, object] = {}
        self._timed: dict[str, object] = {}

    def _headers(self, headers, request_id: str, static: bool) -> list:
        headers = list(headers)
        policy = cache = False
        for name, _ in headers:
            if name == b"content-security-policy":
                policy = True
            elif name == b"cache-control":
                cache = True
        if not policy:
            headers.append(_CSP_HEADER)
        if not cache and not static:
            headers.append(_NO_STORE)
        headers += self.security
        headers.append((b"x-request-id", request_id.encode()))
        return headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                sent = value  # the last one, if sent more than once
        sent = sent.decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else os.urandom(16).hex()  # 32 random hex digits
        scope[REQUEST_ID] = request_id
        static = scope["path"].startswith(STATIC_PREFIX)
        status, responding = 500, False

        async def framed(message: Message) -> None:
            nonlocal status, responding
            if message["type"] == "http.response.start":
                status, responding = message["status"], True
                message["headers"] = self._headers(message.get("headers", []), request_id, static)
            await send(message)

        try:
            await self.app(scope, receive, framed)
        except Exception as error:
            log_event("request.failed", level=40, request_id=request_id, error=type(error).__name__,
                      where=where_raised(error), route=getattr(scope.get("route"), "path", None) or "unmatched",
                      response_started=responding)
            if not responding:  # else the server ends the half-sent response
                try:
                    response = await self.page(scope, request_id)
                except Exception:
                    response = PlainTextResponse(f"Something went wrong. Reference: {request_id}", status_code=500)
                await response(scope, receive, framed)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            counted = self._counted.get((route, scope["method"], status))
            if counted is None:
                counted = self._counted[(route, scope["method"], status)] = REQUESTS.labels(route, scope["method"], str(status))
            counted.inc()
            timed = self._timed.get(route)
            if timed is None:
                timed = self._timed[route] = LATENCY.labels(route)
            timed.observe(elapsed)
            log_event("http.request", request_id=request_id, method=scope["method"], route=route, status=status,
                      duration_ms=round(elapsed * 1000, 2), client=(scope.get("client") or ("", 0))[0],
                      scheme=scope.get("scheme"))


class HealthCheck:
    """`GET /healthz` answered here, without the router's search and the exception layers: a load balancer asks
    every few seconds. The answer is the route's own (`{"status": "ok"}`); RequestEdge around it adds its headers,
    log line and metrics under the route's template. Any other method goes on to the router (405 as before)."""

    def __init__(self, app: ASGIApp, route, body: bytes = b'{"status":"ok"}'):
        self.app, self.route = app, route
        self.start = {"type": "http.response.start", "status": 200,
                      "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]}
        self.body = {"type": "http.response.body", "body": body}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.route.path and scope["method"] in ("GET", "HEAD"):
            scope["route"] = self.route
            await send({**self.start, "headers": list(self.start["headers"])})
            await send(dict(self.body))
            return
        await self.app(scope, receive, send)


class BodySizeLimit:
    """Refuse bodies over MAX_BODY with 413 before the route reads them: a declared length at once; a body sent
    in chunks (no length) is read first, up to the limit, and handed to the route whole, so a route that would
    have refused it half-read (a form field too long) can't answer otherwise than for the same body with a length.
    `larger` gives a few paths (an upload) a limit of their own."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY, larger: dict[str, int] | None = None):
        self.app, self.limit, self.larger = app, limit, larger or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.larger.get(scope["path"], self.limit) if self.larger else self.limit
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _too_large(send)
            return
        if declared is None and b"transfer-encoding" in headers:
            await self._chunked(scope, receive, send, limit)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send)

    async def _chunked(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before the end of its body
            part = message.get("body", b"")
            size += len(part)
            if size > limit:
                await _too_large(send)
                return
            parts.append(part)
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": b"".join(parts), "more_body": False}

        async def replayed() -> Message:
            nonlocal whole
            if whole is None:
                return await receive()
            message, whole = whole, None
            return message

        await self.app(scope, replayed, send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b"Request body too large."
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

