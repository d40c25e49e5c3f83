"""Counted limits hold exactly under parallel requests, on two workers, on either database."""

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.models import LinkRequest
from cancel_flow.store.api_keys import LinkRequestStore
from tests.helpers import csrf_of


def _shared_page(served):
    page = httpx.get(f"{served.url}/")
    return page.cookies, csrf_of(page.text)


def _ask_in_parallel(served, emails_and_addresses):
    cookies, token = _shared_page(served)
    with httpx.Client(base_url=served.url, timeout=60, limits=httpx.Limits(max_connections=50)) as http, \
            ThreadPoolExecutor(50) as pool:
        return list(pool.map(lambda pair: http.post("/", cookies=cookies, headers={"X-Forwarded-For": pair[1]},
                                                    data={"csrf_token": token, "email": pair[0]}).status_code,
                             emails_and_addresses))


def test_two_hundred_parallel_requests_from_one_address_get_exactly_twenty_through(serve, inbox, monkeypatch):
    monkeypatch.setenv("SMTP_URL", inbox.url)
    served = serve(workers=2)
    statuses = _ask_in_parallel(served, [(f"person{n}@example.com", "203.0.113.9") for n in range(200)])
    assert statuses.count(200) == 20 and statuses.count(429) == 180, sorted(statuses)


def test_two_hundred_parallel_requests_for_one_email_send_exactly_three_messages(serve, inbox, monkeypatch, catalogue):
    catalogue.subscription(catalogue.customer(email="member@example.com"))
    monkeypatch.setenv("SMTP_URL", inbox.url)
    served = serve(workers=2)
    statuses = _ask_in_parallel(served, [("member@example.com", f"10.2.{n // 250}.{n % 250}") for n in range(200)])
    assert statuses == [200] * 200  # the page reads the same whether or not a message goes out
    deadline = time.monotonic() + 30
    while len(inbox.messages) < 3:
        assert time.monotonic() < deadline, f"{len(inbox.messages)} message(s) arrived"
        time.sleep(0.05)
    time.sleep(1)  # room for a fourth, if the limit had let one through
    assert len(inbox.messages) == 3


def test_a_full_hour_opens_again_and_old_counts_are_pruned(store):
    requests = LinkRequestStore(store.engine)
    with freeze_time("2026-11-24 10:00:00") as frozen:
        assert [requests.allow("email", "member@example.com", 3, timedelta(hours=1)) for _ in range(4)] == [True] * 3 + [False]
        frozen.tick(timedelta(minutes=59))
        assert not requests.allow("email", "MEMBER@example.com", 3, timedelta(hours=1))
        assert requests.allow("ip", "203.0.113.9", 20, timedelta(hours=1))
        frozen.tick(timedelta(minutes=2))
        assert requests.allow("email", "member@example.com", 3, timedelta(hours=1))
        frozen.tick(timedelta(minutes=57))
        assert requests.prune(timedelta(hours=1)) == 0  # both windows still open
        frozen.tick(timedelta(minutes=2))
        assert requests.prune(timedelta(hours=1)) == 1  # the address's, opened at 10:59
        frozen.tick(timedelta(minutes=2))
        assert requests.prune(timedelta(hours=1)) == 1  # the email's, opened again at 11:01
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(LinkRequest.__table__)).scalar() == 0
