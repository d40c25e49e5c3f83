"""Client pages rendered once per distinct input: a reload, or another client on the same plan at the same step in
the same language, gets the text Jinja made before instead of rendering it again (most of a page's CPU).

A page is looked up by its template, its environment (the language) and its whole context taken by value, as
`pickle` writes it (text, numbers, dates, containers), with two exceptions. The configuration's objects (the brand:
frozen, and made anew by every saved version) are taken by identity and kept alive with the page. The cancel
session (`session`) is taken by the columns the templates read (`SESSION_FIELDS`, checked against the templates by
a test), so a first view's new session and a reload's row look the same. A context holding what pickle can't
write (a function) is rendered as before, uncached. Templates are functions of their context: none reads the
clock or anything else outside it.

The link's own values (its token, and the form token made from it) differ for every link yet are only ever written
into a page as they are: they are replaced by stand-ins before the lookup and put back in the text after it, so the
first view of a new link finds the page another link of the same plan rendered. Only values at least 16 characters
long, of letters, digits and `-._~`, stand aside (no escaping or URL quoting changes them), and the stand-ins are
letters and digits; a mistyped link's value stays in the key as it is. A page still holding a link's value after
its render (inside a value the stand-ins don't reach) is not kept.

With `CANCEL_FLOW_CHECK_PAGE_CACHE=1` (the test suite sets it) every page found is rendered again and compared,
and a difference is an error: a template that starts reading something the lookup doesn't see fails the suite."""

import dataclasses
import os
from datetime import datetime
import pickle
import re
import secrets

from jinja2 import Environment

from cancel_flow.config import schema

# The columns of a cancel session the client pages read (`session.<column>` in the templates).
SESSION_FIELDS = ("currency", "decided_at", "interval", "interval_count", "period_end", "plan_name", "price_amount",
                  "price_note")
# The configuration's objects (frozen dataclasses, made anew by every saved version), taken by identity.
_CONFIGURATION = frozenset(kind for kind in vars(schema).values()
                           if isinstance(kind, type) and dataclasses.is_dataclass(kind) and kind.__dataclass_params__.frozen)
_SAME = "cancel_flow.page_cache: the object kept with the page"
_DERIVED = "cancel_flow.page_cache: derived from the rest"
_MOMENT = "cancel_flow.page_cache: a moment"
_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]+")
# Pages kept per process; when full the oldest goes. A page is a few kilobytes.
SIZE = 512


def keep(kept: dict, key, value, most: int) -> None:
    """`kept[key] = value` in a dict of at most `most` entries, the oldest going first (the per-process memories of
    the web side: pages, the language switch's links, logos)."""
    while len(kept) >= most and key not in kept:
        del kept[next(iter(kept))]
    kept[key] = value


def _session_view(session):
    """The page's cancel session (a row, a new session or the ORM's) as the columns the pages read; a moment as its
    ISO text (with its offset, if any: what pickle would tell apart, written without pickling a time zone)."""
    if session is None:
        return None
    return [(_MOMENT, value.isoformat()) if type(value) is datetime else value
            for value in [getattr(session, name) for name in SESSION_FIELDS]]


class RenderedPages:
    def __init__(self, size: int = SIZE, check: bool | None = None):
        self.size = size
        self.check = os.environ.get("CANCEL_FLOW_CHECK_PAGE_CACHE") == "1" if check is None else check
        self.pages: dict = {}
        self._stand_ins = tuple(f"cfvalue{secrets.token_hex(8)}" for _ in range(4))

    def render(self, environment: Environment, name: str, context: dict, link_values: tuple[str, ...] = (),
               derived: dict | None = None) -> bytes:
        """The template rendered with `context`, as UTF-8 (the response's bytes); `link_values` (the link's token,
        the form token) are the per-link values written into it as they are. `derived` names values of the context
        that are functions of other values in it and of the inputs given here (`{name: inputs}`): those are looked
        up by these inputs (the language switch's links: by the method and the query string, beside the address and
        the language in the context)."""
        swapped = [(real, stand_in) for real, stand_in in zip(link_values, self._stand_ins) if _swappable(real)]
        same, values = [], []
        for key, value in context.items():
            if derived is not None and key in derived:
                value = (_DERIVED, derived[key])
            elif key == "session":
                value = _session_view(value)
            elif type(value) in _CONFIGURATION:  # by identity: a saved configuration makes new ones
                same.append(value)
                value = (_SAME, len(same))
            values.append((key, value))
        try:
            written = pickle.dumps((id(environment), name, values), 5)
        except (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError):
            return environment.get_template(name).render(context).encode()
        for real, stand_in in swapped:
            written = written.replace(real.encode(), stand_in.encode())
        key = (written, *[id(value) for value in same])
        kept = self.pages.get(key)
        if kept is None:
            text = environment.get_template(name).render(_swapped(context, swapped) if swapped else context)
            pieces = _pieces(text.encode(), [stand_in.encode() for _, stand_in in swapped])
            # kept only when no link value is left in it as it is (one inside a value `_swapped` doesn't open, such
            # as Markup, must not reach another link's page)
            if not any(real in text for real, _ in swapped):
                keep(self.pages, key, (pieces, same), self.size)  # the objects keyed by identity live as long as their page
        else:
            pieces = kept[0]
        page = _joined(pieces, [real.encode() for real, _ in swapped])
        if self.check:
            fresh = environment.get_template(name).render(context).encode()
            if fresh != page:
                raise AssertionError(f"the page kept for {name} differs from a fresh render")
        return page


def _pieces(page: bytes, stand_ins: list[bytes]):
    """The page cut at its stand-ins, the first one's cuts outermost: put together again by `_joined`, with each
    stand-in's value, in one `join` per cut piece (not a search of the whole page per value)."""
    if not stand_ins:
        return page
    return [_pieces(piece, stand_ins[1:]) for piece in page.split(stand_ins[0])]


def _joined(pieces, values: list[bytes]) -> bytes:
    if not values:
        return pieces
    if len(values) == 1:
        return values[0].join(pieces)
    return values[0].join([_joined(piece, values[1:]) for piece in pieces])


def _swappable(value: str | None) -> bool:
    """A link's value that can stand aside: long (so no other text holds it) and written the same whatever escapes or
    quotes it (letters, digits and `-._~`). Any other (a mistyped link) stays in the key as it is."""
    return bool(value) and len(value) >= 16 and _UNRESERVED.fullmatch(value) is not None


def _swapped(value, swapped: list[tuple[str, str]]):
    """`value` with the link's values in its text replaced by their stand-ins (text, tuples, lists, dicts)."""
    kind = type(value)
    if kind is str:
        for real, stand_in in swapped:
            value = value.replace(real, stand_in)
        return value
    if kind is tuple or kind is list:
        return kind(_swapped(item, swapped) for item in value)
    if kind is dict:
        return {_swapped(k, swapped): _swapped(v, swapped) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return kind(*[_swapped(item, swapped) for item in value])
    return value


PAGES = RenderedPages()
