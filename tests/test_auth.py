"""Coach sign-in under attack: throttles per address and per (email, address) that hold under parallel
guesses, a bounded pool for password checks, sessions that end everywhere at once, coach commands,
sane date ranges, and unexpected errors as one log line with a reference."""

import json
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
import sqlalchemy as sa
from freezegun import freeze_time
from starlette.routing import Route
from starlette.testclient import TestClient

from cancel_flow.logs import JsonLineFormatter
from cancel_flow.models import LoginAttempt
from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from tests.helpers import csrf_of, run_cli

PASSWORD = "correct horse battery"
EMAIL = "coach@example.com"
OFFICE, ATTACKER = "198.51.100.2", "203.0.113.7"


@pytest.fixture
def coach(store):
    CoachStore(store.engine).add(EMAIL, hash_password(PASSWORD))
    return EMAIL


@pytest.fixture
def client_at(make_client):
    """A browser at a given client address (each its own app, all on the one database)."""
    def make(address: str, **overrides) -> TestClient:
        return make_client(client_address=address, raise_server_exceptions=False, **overrides)
    return make


def sign_in(client, email=EMAIL, password=PASSWORD):
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password})


def signed_in_page(client):
    return client.get("/dashboard")


# --- throttle -------------------------------------------------------------------------------------

def test_guesses_from_another_address_never_lock_the_coach_out_of_their_own(client_at, coach):
    attacker, office = client_at(ATTACKER), client_at(OFFICE)
    statuses = [sign_in(attacker, password=f"guess number {n}").status_code for n in range(8)]
    assert statuses == [401] * 5 + [429] * 3
    assert sign_in(attacker).status_code == 429  # even the right password, from the guessing address
    assert sign_in(office).status_code == 303
    assert signed_in_page(office).status_code == 200


def test_the_lock_lasts_fifteen_minutes_and_a_right_password_clears_the_count(client_at, coach):
    office = client_at(OFFICE)
    with freeze_time("2026-11-24 10:00:00", real_asyncio=True) as frozen:
        for _ in range(4):
            assert sign_in(office, password="mistyped password").status_code == 401
        assert sign_in(office).status_code == 303  # the fifth try, right: allowed and the count starts over
        office.cookies.clear()
        for _ in range(5):
            assert sign_in(office, password="mistyped password").status_code == 401
        locked = sign_in(office)
        assert locked.status_code == 429 and "15 minutes" in locked.text and "this email" in locked.text
        frozen.tick(timedelta(minutes=14))
        assert sign_in(office).status_code == 429
        frozen.tick(timedelta(minutes=2))
        assert sign_in(office).status_code == 303


def test_one_address_guessing_many_emails_is_stopped(client_at, coach):
    sprayer, office = client_at(ATTACKER), client_at(OFFICE)
    statuses = [sign_in(sprayer, email=f"person{n}@example.com", password="Winter2026!!").status_code for n in range(21)]
    assert statuses == [401] * 20 + [429]
    refused = sign_in(sprayer, email="someone-new@example.com")
    assert refused.status_code == 429 and "your network" in refused.text
    assert sign_in(office).status_code == 303


def test_rotating_through_one_ipv6_network_counts_as_one_address(client_at, coach):
    statuses = [sign_in(client_at(f"2001:db8:1:2::{n + 1:x}"), password="a wrong password").status_code for n in range(6)]
    assert statuses == [401] * 5 + [429]
    assert sign_in(client_at("2001:db8:1:3::1")).status_code == 303


def _login_form(base_url: str):
    page = httpx.get(f"{base_url}/dashboard/login")
    return page.cookies, csrf_of(page.text)


def _post_login(http: httpx.Client, cookies, token, address, email=EMAIL, password="a wrong password"):
    return http.post("/dashboard/login", cookies=cookies, headers={"X-Forwarded-For": address},
                     data={"csrf_token": token, "email": email, "password": password})


def _http(served, connections: int) -> httpx.Client:
    """One client for all the threads: building a client per request costs more CPU than the server's work."""
    return httpx.Client(base_url=served.url, timeout=60, limits=httpx.Limits(max_connections=connections))


def test_forty_parallel_guesses_get_exactly_five_tries_across_two_workers(serve, coach):
    served = serve(workers=2)
    cookies, token = _login_form(served.url)
    with _http(served, 40) as http, ThreadPoolExecutor(40) as pool:
        statuses = sorted(pool.map(lambda _: _post_login(http, cookies, token, ATTACKER).status_code, range(40)))
        assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
        assert _post_login(http, cookies, token, ATTACKER, password=PASSWORD).status_code == 429
        assert _post_login(http, cookies, token, OFFICE, password=PASSWORD).status_code == 303


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_a_flood_of_logins_is_turned_away_quickly_and_healthz_stays_fast(serve):
    served = serve()
    cookies, token = _login_form(served.url)
    before = _rss_kb(served.process.pid)
    latencies, done = [], threading.Event()

    def probe_health():
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                started = time.perf_counter()
                assert http.get(f"{served.url}/healthz").status_code == 200
                latencies.append(time.perf_counter() - started)
                time.sleep(0.02)

    prober = threading.Thread(target=probe_health)
    prober.start()
    try:
        # Unknown emails, each from its own address: no throttle applies, only the password pool.
        with _http(served, 60) as http, ThreadPoolExecutor(60) as pool:
            statuses = list(pool.map(lambda n: _post_login(http, cookies, token, f"10.1.{n // 250}.{n % 250}",
                                                           email=f"nobody{n}@example.com").status_code, range(150)))
    finally:
        done.set()
        prober.join()
    assert set(statuses) <= {401, 503} and statuses.count(503) > 0 and statuses.count(401) > 0
    assert max(latencies) < 1.0, max(latencies)  # generous: the bench measures it precisely
    assert _rss_kb(served.process.pid) - before < 100_000


def test_busy_sign_in_says_so_and_counts_nothing(client_at, coach, store):
    from cancel_flow.passwords import PASSWORD_CHECKS

    office = client_at(OFFICE)
    page = office.get("/dashboard/login")
    held, PASSWORD_CHECKS.in_flight = PASSWORD_CHECKS.in_flight, PASSWORD_CHECKS.limit  # every slot taken
    try:
        busy = office.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": EMAIL, "password": "wrong one!"})
    finally:
        PASSWORD_CHECKS.in_flight = held
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5" and "busy" in busy.text
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.sum(LoginAttempt.__table__.c.failures))).scalar() == 0
    assert sign_in(office).status_code == 303


def test_old_throttle_rows_are_pruned_by_the_periodic_sweep(settings, store, coach):
    from cancel_flow.web.app import create_app

    coaches = CoachStore(store.engine)
    with freeze_time("2026-11-24 10:00:00"):
        coaches.start_attempt("old@example.com", ATTACKER, __import__("cancel_flow.web.coach_auth", fromlist=["THROTTLE"]).THROTTLE)
    coaches.start_attempt("new@example.com", ATTACKER, __import__("cancel_flow.web.coach_auth", fromlist=["THROTTLE"]).THROTTLE)
    table = LoginAttempt.__table__

    def rows():
        with store.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar()

    assert rows() == 3  # old pair, new pair, and the address (its window reopened by the new attempt)
    with TestClient(create_app(settings, sweep_every=0.05)):
        deadline = time.monotonic() + 10
        while rows() > 2:
            assert time.monotonic() < deadline, "old rows were not pruned"
            time.sleep(0.05)
    assert rows() == 2


# --- sessions ---------------------------------------------------------------------------------------

def test_logout_ends_the_session_on_every_device_and_the_old_cookie_is_refused(client_at, coach):
    laptop, phone = client_at(OFFICE), client_at(OFFICE)
    sign_in(laptop), sign_in(phone)
    old_cookie = laptop.cookies.get("cf_coach")
    assert signed_in_page(phone).status_code == 200
    page = signed_in_page(laptop)
    assert laptop.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert signed_in_page(phone).status_code == 303
    laptop.cookies.set("cf_coach", old_cookie)
    assert signed_in_page(laptop).status_code == 303
    assert laptop.get("/dashboard/export.csv").status_code == 303
    assert sign_in(laptop).status_code == 303 and signed_in_page(laptop).status_code == 200


@pytest.fixture
def cli_env(monkeypatch, database_url):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")


def test_coach_password_command_ends_every_session_and_changes_the_password(cli_env, monkeypatch, client_at, coach, capsys):
    browser = client_at(OFFICE)
    sign_in(browser)
    assert signed_in_page(browser).status_code == 200
    assert run_cli(["coach", "password", EMAIL, "--password-stdin"], monkeypatch, "short\n") == 1
    assert "at least 10" in capsys.readouterr().err
    assert signed_in_page(browser).status_code == 200  # a refused change changes nothing
    assert run_cli(["coach", "password", "Coach@Example.com", "--password-stdin"], monkeypatch, "a brand new passphrase\n") == 0
    assert "every session" in capsys.readouterr().out
    assert signed_in_page(browser).status_code == 303
    assert sign_in(browser).status_code == 401
    assert sign_in(browser, password="a brand new passphrase").status_code == 303
    assert run_cli(["coach", "password", "nobody@example.com", "--password-stdin"], monkeypatch, "a brand new passphrase\n") == 1
    assert "no coach" in capsys.readouterr().err


def test_coach_password_prompts_twice(cli_env, monkeypatch, coach):
    answers = iter(["first try of it", "second try of it"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert run_cli(["coach", "password", EMAIL], monkeypatch) == 1


def test_removed_coach_is_signed_out_at_once_and_cannot_sign_in(cli_env, monkeypatch, client_at, coach, capsys):
    browser = client_at(OFFICE)
    sign_in(browser)
    assert signed_in_page(browser).status_code == 200
    CoachStore(browser.app.state.store.engine).add("other-owner@example.com", hash_password(PASSWORD))  # not the last owner
    assert run_cli(["coach", "remove", EMAIL], monkeypatch) == 0
    assert "removed" in capsys.readouterr().out
    assert signed_in_page(browser).status_code == 303
    assert sign_in(browser).status_code == 401
    assert run_cli(["coach", "remove", EMAIL], monkeypatch) == 1
    # A new coach may get the removed one's id (SQLite reuses it): the old cookie still opens nothing.
    removed_cookie = dict(browser.cookies)
    assert run_cli(["coach", "add", "new-coach@example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    assert run_cli(["coach", "add", EMAIL, "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    stranger = client_at(OFFICE)
    stranger.cookies.update(removed_cookie)
    assert signed_in_page(stranger).status_code == 303
    browser.cookies.clear()
    assert sign_in(browser).status_code == 303


# --- date ranges --------------------------------------------------------------------------------------

BAD_RANGES = [
    "from=9999-12-01&to=9999-12-31", "from=2026-11-01&to=9999-12-31", "from=1999-12-31&to=2000-01-05",
    "from=2026-11-30&to=2026-11-01", "from=2001-01-01&to=2026-11-01", "from=２０２６-11-01&to=2026-11-30",
    "from=2026-1-01&to=2026-11-30", "from=20261101&to=20261130", "from=2026-02-30&to=2026-03-01",
    "range=5", "range=٣٠", "page=0", "page=١", "page=99999999999999999999",
]


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/export.csv", "/dashboard/charts/weekly.svg", "/dashboard/charts/reasons.svg"])
def test_dates_outside_a_sane_range_are_a_clear_400(client_at, coach, path):
    browser = client_at(OFFICE)
    sign_in(browser)
    for query in BAD_RANGES:
        response = browser.get(f"{path}?{query}")
        assert response.status_code == 400, (query, response.text)
        assert "Traceback" not in response.text and "<h1" in response.text


def test_parse_day_range_defaults_and_limits():
    from datetime import date

    from cancel_flow.errors import BadRequest
    from cancel_flow.web.dashboard_routes import parse_day_range

    today = date(2026, 11, 30)
    assert parse_day_range(None, None, today=today) == (date(2026, 11, 1), today)
    assert parse_day_range("2026-11-10", None, today=today) == (date(2026, 11, 10), today)
    assert parse_day_range(None, "2026-01-31", 7, today=today) == (date(2026, 1, 25), date(2026, 1, 31))
    assert parse_day_range("2016-11-22", "2026-11-30") == (date(2016, 11, 22), date(2026, 11, 30))  # 3660 days
    for start, end in [("2016-11-21", "2026-11-30"), ("2100-12-31", None), ("2000-01-01", "2101-01-01")]:
        with pytest.raises(BadRequest):
            parse_day_range(start, end, today=today)


def test_a_sane_range_still_shows_the_numbers(client_at, coach, history):
    from datetime import datetime, timezone

    history(datetime(2026, 11, 3, tzinfo=timezone.utc), "canceled", reason="unused")
    browser = client_at(OFFICE)
    sign_in(browser)
    assert browser.get("/dashboard?from=2026-11-01&to=2026-11-30").status_code == 200
    assert browser.get("/dashboard?from=2000-01-01&to=2009-12-31").status_code == 200
    assert browser.get("/dashboard/export.csv?from=2026-11-01&to=2026-11-30").text.count("\n") == 2


# --- unexpected errors ----------------------------------------------------------------------------------

def test_an_unexpected_error_is_one_log_line_with_a_reference_the_page_shows(client_at, caplog):
    browser = client_at(OFFICE)

    async def broken(request):
        raise ValueError(f"bad value {request.query_params['q']}")

    browser.app.router.routes.insert(0, Route("/broken-on-purpose", broken))
    hostile = "<script>alert(1)</script>\n{\"event\": \"forged\"}"
    with caplog.at_level(logging.INFO, logger="cancel_flow"):
        response = browser.get("/broken-on-purpose", params={"q": hostile})
    assert response.status_code == 500
    request_id = response.headers["x-request-id"]
    assert request_id in response.text and "Something went wrong" in response.text
    assert "<script>alert" not in response.text and "ValueError" not in response.text
    assert "content-security-policy" in response.headers
    lines = [JsonLineFormatter().format(record) for record in caplog.records]
    failed = [json.loads(line) for line in lines if '"request.failed"' in line]
    assert len(failed) == 1 and all("\n" not in line for line in lines)
    assert failed[0]["request_id"] == request_id and failed[0]["error"] == "ValueError"
    assert failed[0]["where"].startswith("tests/test_auth.py:") and failed[0]["where"].endswith("in broken")
    assert all("alert" not in line and "forged" not in line for line in lines)
    served = [json.loads(line) for line in lines if '"http.request"' in line]
    assert served[-1]["status"] == 500 and served[-1]["request_id"] == request_id


def test_an_unexpected_error_on_the_api_is_json_with_the_reference(client_at):
    browser = client_at(OFFICE)

    async def broken(request):
        raise KeyError("x")

    browser.app.router.routes.insert(0, Route("/api/broken-on-purpose", broken))
    response = browser.get("/api/broken-on-purpose", headers={"X-Request-ID": "req-42"})
    assert response.status_code == 500 and "req-42" in response.json()["error"]["message"]
