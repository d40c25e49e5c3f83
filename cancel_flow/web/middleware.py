"""Plain ASGI middleware: request ids and logs, security headers on every response, a cap on request
bodies, and one log line (no traceback) for an exception no handler took."""

import re
import time
import uuid
from collections.abc import Awaitable, Callable

from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cancel_flow.logs import log_event, where_raised
from cancel_flow.metrics import LATENCY, REQUESTS

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
MAX_BODY = 64 * 1024
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID = "cancel_flow.request_id"  # where RequestLog leaves the request id in the ASGI scope


class RequestLog:
    """One JSON line per request: request id (from X-Request-ID or new, echoed back), method, route
    template (never the path, which may carry a token), status, duration; and the HTTP metrics."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        sent = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        request_id = sent if _REQUEST_ID.match(sent) else uuid.uuid4().hex
        scope[REQUEST_ID] = request_id
        status = 500

        async def tagged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, tagged)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            LATENCY.labels(route).observe(elapsed)
            log_event("http.request", request_id=request_id, method=scope["method"], route=route, status=status,
                      duration_ms=round(elapsed * 1000, 2), client=(scope.get("client") or ("", 0))[0],
                      scheme=scope.get("scheme"))


class SecurityHeaders:
    def __init__(self, app: ASGIApp, https: bool = False):
        self.app, self.https = app, https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name == b"content-security-policy" for name, _ in headers):
                    headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers += [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"x-frame-options", b"DENY"),
                ]
                if self.https:
                    headers.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, with_headers)


class BodySizeLimit:
    """Refuse bodies over MAX_BODY with 413 before anything reads them."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send)


class _TooLarge(Exception):
    pass


async def _too_large(send: Send) -> None:
    body = b"Request body too large."
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class UnexpectedErrors:
    """An exception no handler took: one JSON log line with the request id, the error's type and where it
    was raised (never a traceback, never its message, which may quote what the client sent); then, if
    nothing was sent yet, `page(scope, request_id)`, which names the request id for people to quote."""

    def __init__(self, app: ASGIApp, page: Callable[[Scope, str], Awaitable[Response]]):
        self.app, self.page = app, page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as error:
            request_id = scope.get(REQUEST_ID, "")
            log_event("request.failed", level=40, request_id=request_id, error=type(error).__name__,
                      where=where_raised(error), route=getattr(scope.get("route"), "path", None) or "unmatched",
                      response_started=started)
            if started:
                return  # the server ends the half-sent response
            try:
                response = await self.page(scope, request_id)
            except Exception:
                response = PlainTextResponse(f"Something went wrong. Reference: {request_id}", status_code=500)
            await response(scope, receive, send)
