"""Outgoing POSTs to addresses other people chose (webhook receivers, Slack).

The host is resolved once, each address checked, and the connection made to a checked address (the
TLS name and Host header stay the host's), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot reach a private address. No redirects, no proxies from the
environment, no cookies; one deadline for the whole exchange; at most MAX_ANSWER bytes read back.
"""

import concurrent.futures
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass

import httpcore
import httpx

TIMEOUT = 10.0
MAX_ANSWER = 4096
USER_AGENT = "cancel-flow-webhooks/1"
REGISTRATION_LOOKUP_TIMEOUT = 3.0
_SSL = ssl.create_default_context()
_LOOKUPS = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="hook-lookup")


class DeliveryRefused(Exception):
    """The address is not one we send to (private, loopback, link-local…) or not an http(s) URL."""


class DeliveryFailed(Exception):
    """The receiver could not be reached, or did not answer in time."""


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


def forbidden(address: str) -> bool:
    """Private, loopback, link-local, multicast, reserved or unspecified, including IPv4 inside IPv6."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and forbidden(str(embedded)):
            return True
        if ip in ipaddress.IPv6Network("64:ff9b::/96") and forbidden(str(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))):
            return True
    return (not ip.is_global or ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
            or ip.is_reserved or ip.is_unspecified)


def resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise DeliveryFailed(f"{host} could not be resolved ({error})") from None
    addresses = []
    for _family, _type, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in addresses:
            addresses.append(sockaddr[0])
    return addresses


def allowed_addresses(host: str, port: int, allow_private: bool) -> list[str]:
    addresses = resolve(host, port)
    if allow_private:
        return addresses
    allowed = [address for address in addresses if not forbidden(address)]
    if not allowed:
        raise DeliveryRefused(f"{host} is a private, loopback or link-local address; cancel-flow sends only to "
                              "public addresses (CANCEL_FLOW_ALLOW_PRIVATE_URLS=1 allows others)")
    return allowed


def registration_problem(url: str, allow_private: bool) -> str | None:
    """At sign-up of an address: refuse it when it names or resolves only to forbidden addresses.
    A name that does not resolve (soon enough) is accepted; sending checks again every time."""
    if allow_private:
        return None
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "the URL is not valid"
    host = parts.raw_host.decode("ascii", "replace")
    if not host:
        return "the URL needs a host name"
    lookup = _LOOKUPS.submit(allowed_addresses, host, parts.port or (443 if parts.scheme == "https" else 80), False)
    try:
        lookup.result(timeout=REGISTRATION_LOOKUP_TIMEOUT)
    except DeliveryRefused as refused:
        return str(refused)
    except (DeliveryFailed, concurrent.futures.TimeoutError):
        return None
    return None


class _Deadline:
    def __init__(self, seconds: float):
        self.at = time.monotonic() + seconds

    def left(self, error: type[Exception]) -> float:
        remaining = self.at - time.monotonic()
        if remaining <= 0:
            raise error("the receiver took too long")
        return remaining


class _BoundedStream(httpcore.NetworkStream):
    """Every read and write gets what is left of the one deadline, so a trickling answer still ends."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: _Deadline):
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.left(httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.left(httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        stream = self._stream.start_tls(ssl_context, server_hostname, self._deadline.left(httpcore.ConnectTimeout))
        return _BoundedStream(stream, self._deadline)

    def get_extra_info(self, info: str):
        return self._stream.get_extra_info(info)


class _CheckedBackend(httpcore.NetworkBackend):
    """Connects only to an address checked just now, for this very connection."""

    def __init__(self, allow_private: bool, deadline: _Deadline):
        self.allow_private, self.deadline = allow_private, deadline
        self._backend = httpcore.SyncBackend()
        self.peer: str | None = None

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options=None) -> httpcore.NetworkStream:
        last_error: Exception | None = None
        for address in allowed_addresses(host, port, self.allow_private)[:4]:
            try:
                stream = self._backend.connect_tcp(address, port, timeout=self.deadline.left(httpcore.ConnectTimeout))
            except httpcore.ConnectError as error:
                last_error = error
                continue
            peer = stream.get_extra_info("server_addr")
            if peer is not None and not self.allow_private and forbidden(peer[0]):
                stream.close()
                raise DeliveryRefused(f"{host} connected to a private address")
            self.peer = address
            return _BoundedStream(stream, self.deadline)
        raise httpcore.ConnectError(f"could not connect to {host}: {last_error}")

    def connect_unix_socket(self, *args, **kwargs):
        raise DeliveryRefused("unix sockets are not a delivery target")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, timeout: float = TIMEOUT,
         max_answer: int = MAX_ANSWER) -> Answer:
    """POST `body`; the status and the first `max_answer` bytes of the answer. Redirects are answers too."""
    try:
        parts = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as error:
        raise DeliveryRefused(f"not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.raw_host or parts.userinfo:
        raise DeliveryRefused("only http:// and https:// URLs without user names are delivered to")
    default_port = 443 if parts.scheme == "https" else 80
    host_header = parts.raw_host.decode("ascii")
    if ":" in host_header:
        host_header = f"[{host_header}]"
    if parts.port and parts.port != default_port:
        host_header += f":{parts.port}"
    request_headers = [("Host", host_header), ("User-Agent", USER_AGENT), ("Content-Length", str(len(body))),
                       ("Connection", "close"), *headers.items()]
    deadline = _Deadline(timeout)
    pool = httpcore.ConnectionPool(ssl_context=_SSL, network_backend=_CheckedBackend(allow_private, deadline),
                                   max_connections=1, retries=0, http1=True, http2=False)
    target = httpcore.URL(scheme=parts.raw_scheme, host=parts.raw_host, port=parts.port or default_port,
                          target=parts.raw_path)
    try:
        with pool.stream("POST", target, headers=request_headers, content=body,
                         extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout,
                                                 "pool": timeout}}) as response:
            answer = b""
            for chunk in response.iter_stream():
                answer += chunk
                if len(answer) >= max_answer:
                    break
            return Answer(response.status, answer[:max_answer])
    except httpcore.TimeoutException:
        raise DeliveryFailed(f"no answer within {timeout:g} s") from None
    except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.UnsupportedProtocol, ssl.SSLError, OSError) as error:
        raise DeliveryFailed(f"{type(error).__name__}: {error}"[:300]) from None
    finally:
        pool.close()
