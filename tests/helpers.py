import http.server
import io
import json
import re
import threading
import time
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

# offers.toml pieces: the half-price discount and the pause that most offers files in the tests hold
HALF_PRICE_OFFER = """[[offer]]
id = "half"
kind = "discount"
percent_off = 50
payments = 3
title = "Stay for half price"
"""
PAUSE_OFFER = """[[offer]]
id = "pause"
kind = "pause"
max_payments = 2
title = "Take a break"
"""


class _Visible(HTMLParser):
    """The text a person reads in <main>: tags dropped (block elements apart, inline ones run on), hidden parts
    and scripts left out."""

    HIDDEN = {"script", "style", "template", "title", "head"}
    BLOCKS = {"p", "div", "li", "ul", "ol", "h1", "h2", "h3", "h4", "td", "th", "tr", "table", "caption", "section",
              "nav", "form", "label", "button", "summary", "details", "br", "option", "select", "fieldset", "legend",
              "header", "footer", "main", "textarea", "input"}

    def __init__(self):
        super().__init__()
        self.words, self.inside_main, self.hidden = [], 0, 0

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "main":
            self.inside_main += 1
        if tag in self.BLOCKS:
            self.words.append(" ")
        if tag in self.HIDDEN or "visually-hidden" in (attributes.get("class") or "").split() \
                or attributes.get("aria-hidden") == "true" or "hidden" in attributes:
            self.hidden += 1
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag == "main":
            self.inside_main -= 1
        if tag in self.BLOCKS:
            self.words.append(" ")
        if self.stack and self.stack[-1] == tag:
            self.stack.pop()
            self.hidden -= 1

    def handle_data(self, data):
        if self.inside_main and not self.hidden:
            self.words.append(data)

    def reset(self):
        super().reset()
        self.stack = []


def visible_text(html: str) -> str:
    """The words of a page's <main> as a person reads them, whitespace collapsed (hidden text left out)."""
    parser = _Visible()
    parser.feed(html)
    return " ".join("".join(parser.words).split())


def csrf_of(html: str) -> str:
    match = _CSRF.search(html)
    assert match, "page has no form"
    return match.group(1)


def arm_tables(*arms: tuple[str, list[str], float]) -> str:
    """offers.toml's [[experiment.arms]] tables, one per (name, offer ids, weight)."""
    return "".join(f'[[experiment.arms]]\nname = "{name}"\noffers = {json.dumps(list(offers))}\nweight = {weight}\n'
                   for name, offers, weight in arms)


def run_cli(args, monkeypatch, stdin_text=None):
    """`cancel-flow ARGS` in this process; its exit code."""
    from cancel_flow.cli import main

    if stdin_text is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin_text))
    with pytest.raises(SystemExit) as done:
        main(args)
    return done.value.code


@contextmanager
def stopped_afterwards(make, stop=lambda made: made.stop()):
    """`make`, remembering what it makes; when the block ends, `stop` runs on each, in the order they were made."""
    made = []

    def making(*args, **kwargs):
        made.append(make(*args, **kwargs))
        return made[-1]

    try:
        yield making
    finally:
        for each in made:
            stop(each)


class Receiver:
    """A webhook receiver on 127.0.0.1: records each request; answers with `status` (or a queue of answers)."""

    def __init__(self, status: int = 200, delay: float = 0.0, answer_headers: dict | None = None):
        self.status, self.delay, self.answer_headers = status, delay, answer_headers or {}
        self.requests: list[dict] = []
        self.arrived = threading.Event()
        self._lock = threading.Lock()
        self._in_flight: Counter = Counter()
        self.most_in_flight_per_id = 0
        self.most_in_flight = 0  # requests being answered at once, whatever their id
        self.began = 0  # requests received, answered or not
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                message_id = self.headers.get("webhook-id")
                with receiver._lock:
                    receiver.began += 1
                    receiver._in_flight[message_id] += 1
                    receiver.most_in_flight_per_id = max(receiver.most_in_flight_per_id, receiver._in_flight[message_id])
                    receiver.most_in_flight = max(receiver.most_in_flight, sum(receiver._in_flight.values()))
                if receiver.delay:
                    time.sleep(receiver.delay)  # a slow receiver, so overlapping deliveries would show
                with receiver._lock:
                    receiver._in_flight[message_id] -= 1
                    receiver.requests.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body,
                                              "at": datetime.now(timezone.utc)})
                try:
                    self.send_response(receiver.status)
                    for name, value in receiver.answer_headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting (a hanging receiver)
                receiver.arrived.set()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def ids(self) -> list[str]:
        return [request["headers"].get("webhook-id") for request in self.requests]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def load_config(path):
    """The Configuration an offers file holds (the one validator, as at first start)."""
    from cancel_flow.config.toml import read_configuration_file

    return read_configuration_file(path)[1]
