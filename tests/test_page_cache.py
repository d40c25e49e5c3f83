"""Client pages kept once rendered (cancel_flow/web/page_cache.py): each link still gets its own page, and a page
changes as soon as anything it shows changes. (The suite runs with CANCEL_FLOW_CHECK_PAGE_CACHE=1: every page found
in the cache is also rendered afresh and must be the same text.)"""

import re
from pathlib import Path

from cancel_flow.web.page_cache import SESSION_FIELDS, RenderedPages
from cancel_flow.web.pages import ENVIRONMENTS
from tests.helpers import csrf_of, visible_text

TEMPLATES = Path(__file__).resolve().parents[1] / "cancel_flow" / "web" / "templates"


def _link(signer, sub) -> str:
    return f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}"


def test_the_pages_read_only_the_session_columns_the_cache_looks_at():
    read = {name for path in TEMPLATES.glob("*.html") for name in re.findall(r"\bsession\.(\w+)", path.read_text())}
    assert read and read <= set(SESSION_FIELDS), read - set(SESSION_FIELDS)


def test_two_links_of_the_same_plan_each_get_their_own_page(client, catalogue, signer):
    price = catalogue.price("month", 4900, "usd")
    first, second = (catalogue.sdk.v1.subscriptions.create(params={"customer": catalogue.customer().id,
                                                                   "items": [{"price": price.id}]}) for _ in range(2))
    pages = {}
    for sub in (first, second, first):
        url = _link(signer, sub)
        page = client.get(url)
        assert page.status_code == 200
        assert f'action="{url}/reason"' in page.text and f'formaction="{url}/cancel"' in page.text
        assert f"{url}?lang=es" in page.text  # the language switch, on this link
        pages.setdefault(sub.id, set()).add(csrf_of(page.text))
        for other in (first, second):
            if other.id != sub.id:
                assert _link(signer, other).split("/")[-1][:40] not in page.text
    # each link's form token is its own (a reload of the first link carries the first's)
    assert len(pages[first.id]) == 2 and not pages[first.id] & pages[second.id]
    response = client.post(f"{_link(signer, second)}/reason", data={"csrf_token": next(iter(pages[first.id])),
                                                                   "reason": "unused"})
    assert response.status_code == 400  # another link's form token is refused, as always


def test_a_page_shows_the_plan_it_is_given_not_the_one_kept(client, catalogue, signer):
    cheap = catalogue.subscription(amount=2900)
    dear = catalogue.subscription(amount=9900)
    assert "$29.00 per month" in visible_text(client.get(_link(signer, cheap)).text)
    assert "$99.00 per month" in visible_text(client.get(_link(signer, dear)).text)
    spanish = visible_text(client.get(_link(signer, cheap), headers={"Accept-Language": "es"}).text)
    assert "29,00" in spanish and "$29.00" not in spanish


def test_the_cache_renders_a_context_it_cannot_key_afresh_each_time():
    pages = RenderedPages(size=2, check=True)
    environment = ENVIRONMENTS["en"]
    first, second = "abc" * 8, "xyz.-_" * 4
    text = pages.render(environment, "_withdraw_button.html", {"withdraw_url": f"/w/{first}"}, (first,)).decode()
    assert f"/w/{first}" in text
    text = pages.render(environment, "_withdraw_button.html", {"withdraw_url": f"/w/{second}"}, (second,)).decode()
    assert f"/w/{second}" in text and first not in text
    assert len(pages.pages) == 1  # the same page for both links, each with its own value put back
    pages.render(environment, "_withdraw_button.html", {"withdraw_url": "/w/other", "f": lambda: None})
    assert len(pages.pages) == 1  # a function can't be a key: rendered, not kept
    pages.render(environment, "_withdraw_button.html", {"withdraw_url": "/a"})
    pages.render(environment, "_withdraw_button.html", {"withdraw_url": "/b"})
    assert len(pages.pages) == 2  # at most `size`: the oldest went


def test_a_mistyped_link_is_written_escaped_as_before():
    pages = RenderedPages(check=True)
    environment = ENVIRONMENTS["en"]
    for value in ("<b>", "a" * 20 + "<"):
        text = pages.render(environment, "_withdraw_button.html", {"withdraw_url": f"/cancel/{value}/withdraw"},
                            (value,)).decode()
        assert "<b>" not in text and "&lt;" in text


def test_a_link_value_the_cache_cannot_stand_aside_is_never_shown_on_another_links_page():
    from markupsafe import Markup

    pages = RenderedPages(check=True)
    environment = ENVIRONMENTS["en"]
    first, second = "a" * 24, "b" * 24
    for token in (first, second):
        # the token inside Markup: a value the stand-ins don't reach, though the lookup's key has it swapped
        text = pages.render(environment, "_withdraw_button.html", {"withdraw_url": Markup(f"/cancel/{token}/withdraw")},
                            (token,)).decode()
        assert f"/cancel/{token}/withdraw" in text
    assert not pages.pages  # neither page was kept


def test_each_link_gets_its_own_values_wherever_the_page_writes_them():
    """A kept page is cut where the link's values were written: two links on one page each get theirs back in
    every place (next to each other, at the start and end, in text that isn't ASCII)."""
    from jinja2 import DictLoader, Environment

    environment = Environment(loader=DictLoader({"page.html": "{{ token }}<a href='/cancel/{{ token }}?f={{ csrf }}'>"
                                                              "Zoë{{ csrf }}{{ token }}{{ csrf }}</a> ünd {{ token }}"}),
                              autoescape=True)
    pages = RenderedPages(check=True)
    for token, csrf in (("T" * 22, "c" * 40), ("u-1_" * 5 + "xy", "d" * 40), ("T" * 22, "e" * 40)):
        page = pages.render(environment, "page.html", {"token": token, "csrf": csrf}, (token, csrf))
        assert page.decode() == environment.get_template("page.html").render(token=token, csrf=csrf)
    assert len(pages.pages) == 1
