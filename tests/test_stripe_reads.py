"""The gateway's GETs on kept connections, against a plain HTTP server that answers as a script says: what goes on
the wire, the forms an HTTP/1.1 answer may take, a kept connection the server closed, and failures raised as the
SDK raises them."""

import asyncio
import gzip
import json

import pytest
import stripe
import uvloop

from cancel_flow.stripe_reads import KeptConnectionGets

BODY = json.dumps({"id": "sub_1", "object": "subscription", "status": "active", "name": "Zoë"}).encode()


class ScriptedServer:
    """Answers each request with the next of `answers` (bytes, or a function of the request's bytes);
    `close_after` closes the connection after that many answers on it."""

    def __init__(self, answers, close_after=None):
        self.answers, self.close_after = list(answers), close_after
        self.requests: list[bytes] = []
        self.connections = 0
        self.handlers = []

    async def handle(self, reader, writer):
        self.connections += 1
        self.handlers.append(asyncio.current_task())
        served = 0
        try:
            while self.answers:
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append(head)
                answer = self.answers.pop(0)
                writer.write(answer(head) if callable(answer) else answer)
                await writer.drain()
                served += 1
                if answer is HANG:
                    await asyncio.sleep(30)
                if self.close_after is not None and served >= self.close_after:
                    break
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for handler in self.handlers:
            handler.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)


HANG = b""


def ok(body=BODY, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nRequest-Id: req_1\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body


def chunked(body=BODY):
    half = len(body) // 2
    return (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nRequest-Id: req_2\r\n\r\n" +
            f"{half:x}\r\n".encode() + body[:half] + b"\r\n" +
            f"{len(body) - half:x};ext=1\r\n".encode() + body[half:] + b"\r\n0\r\nTrailer-Field: x\r\n\r\n")


def gets(url):
    return KeptConnectionGets(url, stripe.AIOHTTPClient())


@pytest.fixture(params=["asyncio", "uvloop"])
def on_loop(request):
    """Each test on asyncio's own event loop and on uvloop's, which the server runs."""
    return asyncio.run if request.param == "asyncio" else uvloop.run


HEADERS = {"Authorization": "Bearer sk_test_123", "Stripe-Version": "2026-10-28.endive", "User-Agent": "Stripe/v1 PythonBindings"}


def test_a_get_goes_out_as_plain_http_and_its_connection_is_kept(on_loop):
    async def run():
        async with ScriptedServer([ok(), chunked(), ok()]) as server:
            reads = gets(server.url)
            answers = [await reads.get("/v1/subscriptions/sub_1?expand[0]=customer", HEADERS, ["raw_request"])
                       for _ in range(3)]
            reads.close()
            return server, answers

    server, answers = on_loop(run())
    assert server.connections == 1  # kept from one request to the next, whatever form the answer took
    for body, status, headers in answers:
        assert (json.loads(body), status) == (json.loads(BODY), 200)
    assert answers[0][2]["request-id"] == "req_1" and answers[1][2]["Request-Id"] == "req_2"  # any case
    first = server.requests[0].decode()
    assert first.startswith("GET /v1/subscriptions/sub_1?expand[0]=customer HTTP/1.1\r\n")
    assert f"Host: {server.url.removeprefix('http://')}\r\n" in first
    for name, value in HEADERS.items():
        assert f"{name}: {value}\r\n" in first
    # the SDK's telemetry: the request after the first one names the last request's id and time
    assert "X-Stripe-Client-Telemetry" not in first
    telemetry = next(line for line in server.requests[1].decode().split("\r\n") if line.startswith("X-Stripe-Client-Telemetry"))
    assert json.loads(telemetry.partition(": ")[2])["last_request_metrics"]["request_id"] == "req_1"


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_sent_again(on_loop):
    async def run():
        async with ScriptedServer([ok(), ok()], close_after=1) as server:
            reads = gets(server.url)
            first = await reads.get("/v1/subscriptions/sub_1", HEADERS, [])
            await asyncio.sleep(0.05)  # the server has closed the kept connection meanwhile
            second = await reads.get("/v1/subscriptions/sub_1", HEADERS, [])
            reads.close()
            return server, first, second

    server, first, second = on_loop(run())
    assert first[1] == second[1] == 200 and server.connections == 2 and len(server.requests) == 2


def test_an_answer_that_asks_to_close_or_has_no_length_ends_its_connection(on_loop):
    no_length = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + BODY

    async def run():
        async with ScriptedServer([ok(extra=b"Connection: close\r\n"), no_length], close_after=1) as server:
            reads = gets(server.url)
            answers = [await reads.get("/v1/x", HEADERS, []) for _ in range(2)]
            idle = len(reads.idle)
            reads.close()
            return server, answers, idle

    server, answers, idle = on_loop(run())
    assert [answer[0] for answer in answers] == [BODY, BODY] and server.connections == 2 and idle == 0


def test_a_compressed_answer_is_read_and_an_error_answer_comes_back_for_the_sdk_to_raise(on_loop):
    error = json.dumps({"error": {"type": "invalid_request_error", "code": "resource_missing",
                                  "message": "No such subscription"}}).encode()

    async def run():
        async with ScriptedServer([ok(gzip.compress(BODY), b"Content-Encoding: gzip\r\n"),
                                   b"HTTP/1.1 404 Not Found\r\nContent-Length: " + str(len(error)).encode() + b"\r\n\r\n" + error]) as server:
            reads = gets(server.url)
            answers = [await reads.get("/v1/x", HEADERS, []) for _ in range(2)]
            reads.close()
            return answers

    (body, status, _), (error_body, error_status, _) = on_loop(run())
    assert body == BODY and status == 200
    assert error_status == 404 and json.loads(error_body)["error"]["code"] == "resource_missing"


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n{\"id\":", b"SSH-2.0-OpenSSH\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 2\r\n\r\n{}"])
def test_a_broken_answer_is_a_connection_error_the_gateway_retries(answer, on_loop):
    async def run():
        async with ScriptedServer([answer], close_after=1) as server:
            reads = gets(server.url)
            try:
                await reads.get("/v1/x", HEADERS, [])
            finally:
                reads.close()

    with pytest.raises(stripe.APIConnectionError) as raised:
        on_loop(run())
    assert raised.value.should_retry


def test_nothing_listening_is_a_connection_error_and_a_deadline_drops_the_connection(on_loop):
    async def refused():
        reads = gets("http://127.0.0.1:9")  # the discard port: nothing listens here
        await reads.get("/v1/x", HEADERS, [])

    with pytest.raises(stripe.APIConnectionError):
        on_loop(refused())

    async def hanging():
        async with ScriptedServer([HANG, ok()]) as server:
            reads = gets(server.url)
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await reads.get("/v1/x", HEADERS, [])
            idle = len(reads.idle)
            answer = await reads.get("/v1/x", HEADERS, [])  # on a new connection
            reads.close()
            return idle, answer, server.connections

    idle, answer, connections = on_loop(hanging())
    assert idle == 0 and answer[1] == 200 and connections == 2
