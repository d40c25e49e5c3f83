"""The Stripe gateway's GETs on kept HTTP/1.1 connections (asyncio streams), for the subscriber's pages.

A first view of a link reads the subscription once. Sent by the SDK's aiohttp client, that one GET cost more
CPU than the rest of the page (aiohttp's request, connector, writer and response machinery, for one small
request). Here the same request goes out as plain HTTP/1.1 on a connection kept from the last one: the SDK's
own headers (built once by the gateway), its telemetry header and its record of the last request, an answer that
isn't a 2xx read and raised by the SDK as any other, and a failed connection raised as the SDK raises it
(`APIConnectionError`, to be retried). Only the gateway uses this (`StripeGateway._get`), and only where no proxy
is set: a proxy's requests go through the SDK's client, which speaks to proxies."""

import asyncio
import ssl
import zlib
from urllib.parse import urlsplit

import stripe
from multidict import CIMultiDict
from stripe._http_client import _now_ms

KEEP_IDLE = 16  # connections kept between requests, at most (one per GET running at the same moment)
LONGEST_HEAD = 64 * 1024  # an answer's status line and headers, at most
CONNECTION_FAILED = ("Unexpected error communicating with Stripe. If this problem persists, let us know at\n"
                     "support@stripe.com.\n\n(Network error: A %s was raised)")  # the SDK's own words


class _Stale(Exception):
    """A kept connection the server had closed before this request's answer began: sent again on a new one."""


class KeptConnectionGets:
    def __init__(self, base: str, http_client: stripe.HTTPClient):
        self.base = base.rstrip("/")
        parts = urlsplit(base)
        self.secure = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.secure else 80)
        self.prefix = parts.path.rstrip("/")
        self.authority = parts.netloc.rpartition("@")[2]
        self.http_client = http_client  # the SDK's: its telemetry (the last request's id and time)
        self._ssl = None
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.loop = None  # the event loop the kept connections belong to

    def _context(self) -> ssl.SSLContext | None:
        """The SDK's TLS settings (its CA bundle, or no verification when `stripe.verify_ssl_certs` is off)."""
        if not self.secure:
            return None
        if self._ssl is None:
            if stripe.verify_ssl_certs:
                self._ssl = ssl.create_default_context(cafile=stripe.ca_bundle_path)
            else:
                self._ssl = ssl.create_default_context()
                self._ssl.check_hostname, self._ssl.verify_mode = False, ssl.CERT_NONE
        return self._ssl

    async def get(self, target: str, headers: dict[str, str], usage: list[str]) -> tuple[bytes, int, CIMultiDict]:
        """(body, status, headers) of `GET <base><target>`; a connection that fails raises APIConnectionError."""
        headers = self.http_client._add_telemetry_header(headers)
        request = "".join([f"GET {self.prefix}{target} HTTP/1.1\r\nHost: {self.authority}\r\n",
                           *(f"{name}: {value}\r\n" for name, value in headers.items()),
                           "Accept-Encoding: identity\r\n\r\n"]).encode("utf-8")
        started = _now_ms()
        loop = asyncio.get_running_loop()
        if self.loop is not loop:  # connections of another (ended) event loop can't be used from this one
            self.close()
            self.loop = loop
        while True:
            kept = self.idle.pop() if self.idle else None
            if kept is not None and (kept[1].is_closing() or kept[0].at_eof()):  # closed by the server while idle
                kept[1].close()
                continue
            try:
                reader, writer = kept or await asyncio.open_connection(
                    self.host, self.port, ssl=self._context(), server_hostname=self.host if self.secure else None,
                    limit=LONGEST_HEAD)
            except (OSError, ssl.SSLError, ValueError) as error:
                raise stripe.APIConnectionError(CONNECTION_FAILED % type(error).__name__, should_retry=True) from error
            try:
                body, status, answer, reusable = await self._exchange(reader, writer, request, kept is not None)
            except _Stale:
                writer.close()
                continue
            except (OSError, ssl.SSLError, EOFError, ValueError, asyncio.IncompleteReadError,
                    asyncio.LimitOverrunError, zlib.error) as error:
                writer.close()
                raise stripe.APIConnectionError(CONNECTION_FAILED % type(error).__name__, should_retry=True) from error
            except BaseException:  # cancelled (a deadline): the connection is in an unknown state
                writer.close()
                raise
            if reusable and len(self.idle) < KEEP_IDLE:
                self.idle.append((reader, writer))
            else:
                writer.close()
            self.http_client._record_request_metrics((None, status, answer), started, usage=usage)
            return body, status, answer

    @staticmethod
    async def _exchange(reader, writer, request: bytes, kept: bool):
        try:
            writer.write(request)
        except (ConnectionError, RuntimeError) as error:  # a transport closed meanwhile
            if kept:
                raise _Stale() from error
            raise ConnectionError("the connection closed before the request was sent") from error
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as error:
            # closed by the server while idle: nothing of an answer came, so nothing was done with the request
            if kept and (not isinstance(error, asyncio.IncompleteReadError) or not error.partial):
                raise _Stale() from error
            raise
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status = int(rest[:3])
        if not version.startswith("HTTP/1.") or not 100 <= status <= 599:
            raise ValueError("not an HTTP/1.x answer")
        answer = CIMultiDict()
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError("a header line without a colon")
            answer.add(name.strip(), value.strip())
        reusable = version == "HTTP/1.1" and "close" not in answer.get("Connection", "").lower()
        if "chunked" in answer.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    break
                chunks.append(await reader.readexactly(size))
                if await reader.readexactly(2) != b"\r\n":
                    raise ValueError("a chunk without its line end")
            body = b"".join(chunks)
        elif "Content-Length" in answer:
            body = await reader.readexactly(int(answer["Content-Length"]))
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # the answer ends with the connection
            body, reusable = await reader.read(), False
        coding = answer.get("Content-Encoding", "identity").lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            body = zlib.decompress(body, 47 if coding != "deflate" else 15)
        elif coding != "identity":
            raise ValueError(f"an answer in an encoding not asked for: {coding}")
        return body, status, answer, reusable

    def close(self) -> None:
        idle, self.idle = self.idle, []
        for _reader, writer in idle:
            try:
                writer.close()
            except RuntimeError:  # its event loop has ended: the connection went with it
                pass
