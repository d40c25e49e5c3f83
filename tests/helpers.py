import io
import json
import re
from contextlib import contextmanager
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
