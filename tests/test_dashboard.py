"""The coach's dashboard: numbers on hand-built histories, sign-in, CSV, charts."""

import csv
import re
import io
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from freezegun import freeze_time

from cancel_flow.passwords import hash_password
from cancel_flow.store.coaches import CoachStore
from cancel_flow.store.stats import DateRange, StatsQueries
from tests.helpers import csrf_of, run_cli

PASSWORD = "correct horse battery"
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)
NOVEMBER = DateRange(datetime(2026, 11, 1, tzinfo=timezone.utc), datetime(2026, 12, 1, tzinfo=timezone.utc))


def nov(day: int) -> datetime:
    return datetime(2026, 11, day, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def november(history):
    history(nov(2), "saved_discount", reason="too_expensive", offers=["half", "pause"], chosen="half", percent=50, months=3, decided=nov(2))
    history(nov(3), "saved_pause", reason="unused", currency="eur", price=2000, offers=["pause"], chosen="pause", decided=nov(3))
    history(nov(9), "canceled", reason="too_expensive", offers=["half"], decided=nov(9), canceled=nov(9))
    history(nov(10), "canceled", reason="unused", decided=nov(10), canceled=nov(10))
    history(nov(16), "deflected", reason="other")
    history(nov(17), "open")
    history(nov(23), "sent_to_portal", reason="too_expensive", decided=nov(23))
    history(datetime(2026, 10, 15, tzinfo=timezone.utc), "saved_discount", reason="too_expensive", chosen="half", percent=50, months=3, decided=datetime(2026, 10, 15, tzinfo=timezone.utc))


def test_stats_on_a_known_month(store, november):
    with freeze_time(NOW):
        stats = StatsQueries(store.engine).stats(NOVEMBER)
    assert stats.sessions == 7
    assert stats.outcomes == {"saved_discount": 1, "saved_pause": 1, "canceled": 2, "deflected": 1, "open": 1, "sent_to_portal": 1}
    assert (stats.saved, stats.canceled, stats.save_rate) == (2, 2, 0.5)
    assert stats.mrr_saved == [("eur", 2000), ("usd", 4900)]
    assert stats.discount_cost == [("usd", 7350)]
    by_reason = {row["reason"]: row for row in stats.reasons}
    assert by_reason["too_expensive"] == {"reason": "too_expensive", "sessions": 3, "saved": 1, "canceled": 1, "save_rate": 0.5}
    assert by_reason["unused"]["save_rate"] == 0.5 and by_reason["other"]["save_rate"] is None
    assert [{k: row[k] for k in ("offer", "kind", "shown", "accepted", "rate")} for row in stats.offers] == [
        {"offer": "half", "kind": "discount", "shown": 2, "accepted": 1, "rate": 0.5},
        {"offer": "pause", "kind": "pause", "shown": 2, "accepted": 1, "rate": 0.5}]
    assert stats.previous == {"sessions": 1, "saved": 1, "canceled": 0, "save_rate": 1.0, "mrr_saved": [("usd", 4900)]}
    assert [d["share"] for d in stats.durability] == [None, None, None]
    assert [w["week"].isoformat() for w in stats.weekly] == ["2026-10-26", "2026-11-02", "2026-11-09", "2026-11-16", "2026-11-23", "2026-11-30"]
    assert [(w["sessions"], w["saves"], w["cancels"]) for w in stats.weekly] == [(0, 0, 0), (2, 2, 0), (2, 0, 2), (2, 0, 0), (1, 0, 0), (0, 0, 0)]
    assert [w["days"] for w in stats.weekly] == [1, 7, 7, 7, 7, 1]  # 1 November is a Sunday, 30th a Monday


def set_cost(store, session_id, cost):
    import sqlalchemy as sa

    from cancel_flow.models import CancelSession

    with store.engine.begin() as connection:
        connection.execute(sa.update(CancelSession.__table__).where(CancelSession.__table__.c.id == session_id)
                           .values(offer_cost=cost, rolled_up=False))


def test_figures_per_offer_and_per_kind(store, history):
    """Shown, accepted, still active after 30/60/90 days, and revenue kept in the 90 days after accepting
    (a month's amount per 30 days still active) net of what the offer cost; replaced sessions left out."""
    old, recent = NOW - timedelta(days=120), NOW - timedelta(days=40)
    kept = history(old, "saved_discount", offers=["half"], chosen="half", percent=50, months=3, decided=old)
    set_cost(store, kept, 7350)  # 3 payments at half of $49.00
    gone = history(old, "saved_pause", offers=["pause"], chosen="pause", decided=old, canceled=old + timedelta(days=45))
    set_cost(store, gone, 9800)  # 2 skipped payments of $49.00
    set_cost(store, history(recent, "saved_pause", offers=["pause", "half"], chosen="pause", decided=recent), 4900)
    talk = history(old, "deflected", offers=["talk"], chosen="talk", decided=old)
    history(old, "canceled", offers=["half"], decided=old, canceled=old)
    replaced = history(old, "saved_discount", offers=["half"], chosen="half", percent=50, months=3, decided=old)
    import sqlalchemy as sa

    from cancel_flow.models import CancelSession
    with store.engine.begin() as connection:
        connection.execute(sa.update(CancelSession.__table__).where(CancelSession.__table__.c.id == replaced)
                           .values(superseded=True, rolled_up=False))
    with freeze_time(NOW):
        stats = StatsQueries(store.engine).stats(DateRange(NOW - timedelta(days=365), NOW + timedelta(days=1)),
                                                 kinds={"talk": "contact"})
    offers = {row["offer"]: row for row in stats.offers}
    half, pause, talk_row = offers["half"], offers["pause"], offers["talk"]
    assert (half["kind"], half["shown"], half["accepted"]) == ("discount", 3, 1)
    assert [(d["saves"], d["still_active"]) for d in half["durability"]] == [(1, 1), (1, 1), (1, 1)]
    # $49.00 × 3 months kept − $73.50 of discounts
    assert half["money"] == [{"currency": "usd", "mrr": 4900, "cost": 7350, "revenue_kept_90": 14700,
                              "net_revenue_kept_90": 7350}]
    assert (pause["kind"], pause["shown"], pause["accepted"]) == ("pause", 2, 2)
    assert [(d["saves"], d["still_active"]) for d in pause["durability"]] == [(2, 2), (1, 0), (1, 0)]
    # only the old pause is 90+ days old: 1 month kept (active at 30 days, canceled at 45) − 2 skipped payments
    assert pause["money"] == [{"currency": "usd", "mrr": 9800, "cost": 14700, "revenue_kept_90": 4900,
                               "net_revenue_kept_90": 4900 - 9800}]
    assert (talk_row["kind"], talk_row["accepted"], talk_row["money"][0]["cost"]) == ("contact", 1, 0)
    assert talk_row["money"][0]["revenue_kept_90"] == 3 * 4900
    kinds = {row["kind"]: row for row in stats.offer_kinds}
    assert set(kinds) == {"discount", "pause", "contact"}
    assert (kinds["pause"]["shown"], kinds["pause"]["accepted"]) == (2, 2)
    assert stats.offer_cost == [("usd", 7350 + 9800 + 4900)] and stats.discount_cost == [("usd", 7350)]


def test_offer_figures_are_unknown_until_90_days_have_passed(store, history):
    history(NOW - timedelta(days=10), "saved_discount", offers=["half"], chosen="half", percent=50, months=3,
            decided=NOW - timedelta(days=10))
    with freeze_time(NOW):
        stats = StatsQueries(store.engine).stats(DateRange(NOW - timedelta(days=30), NOW + timedelta(days=1)))
    (half,) = stats.offers
    assert half["money"][0]["revenue_kept_90"] is None and half["money"][0]["net_revenue_kept_90"] is None
    assert [d["share"] for d in half["durability"]] == [None, None, None]


def test_empty_range_has_zeros_and_no_rate(store, november):
    stats = StatsQueries(store.engine).stats(DateRange(datetime(2025, 1, 1, tzinfo=timezone.utc), datetime(2025, 2, 1, tzinfo=timezone.utc)))
    assert stats.sessions == 0 and stats.save_rate is None and stats.mrr_saved == [] and stats.reasons == []


def test_yearly_plans_count_a_twelfth_and_discounts_cost_one_invoice(store, history):
    history(nov(5), "saved_discount", reason="too_expensive", price=48000, interval="year", chosen="half", percent=50, months=3, decided=nov(5))
    stats = StatsQueries(store.engine).stats(NOVEMBER)
    assert stats.mrr_saved == [("usd", 4000)] and stats.discount_cost == [("usd", 24000)]


def test_how_long_saves_last_counts_only_saves_old_enough(store, history):
    decided = NOW - timedelta(days=100)
    history(decided, "saved_discount", chosen="half", percent=50, months=3, decided=decided)
    history(decided, "saved_pause", chosen="pause", decided=decided, canceled=decided + timedelta(days=45))
    history(NOW - timedelta(days=40), "saved_pause", chosen="pause", decided=NOW - timedelta(days=40))
    with freeze_time(NOW):
        stats = StatsQueries(store.engine).stats(DateRange(NOW - timedelta(days=365), NOW + timedelta(days=1)))
    assert [(d["days"], d["saves"], d["still_active"]) for d in stats.durability] == [(30, 3, 3), (60, 2, 1), (90, 2, 1)]


@pytest.fixture
def coach(store):
    CoachStore(store.engine).add("coach@example.com", hash_password(PASSWORD))
    return "coach@example.com"


def sign_in(client, email="coach@example.com", password=PASSWORD):
    page = client.get("/dashboard/login")
    return client.post("/dashboard/login", data={"csrf_token": csrf_of(page.text), "email": email, "password": password})


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/export.csv", "/dashboard/charts/weekly.svg", "/dashboard/charts/reasons.svg"])
def test_every_dashboard_route_redirects_to_login_when_signed_out(client, path):
    response = client.get(path)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard/login"


def test_sign_in_sets_a_safe_cookie_and_shows_the_numbers(client, coach, november):
    response = sign_in(client)
    assert response.status_code == 303 and response.headers["location"] == "/dashboard"
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("cf_coach="))
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie
    page = client.get("/dashboard?from=2026-11-01&to=2026-11-30")
    assert page.status_code == 200
    assert 'id="stat-sessions">7<' in page.text and 'id="stat-save-rate">50%<' in page.text
    assert "€20.00, $49.00" in page.text and "$73.50" in page.text


def test_cookie_is_secure_behind_https(settings, coach):
    from dataclasses import replace

    from starlette.testclient import TestClient

    from cancel_flow.web.app import create_app

    app = create_app(replace(settings, base_url="https://cancel.example.com"))
    with TestClient(app, base_url="https://cancel.example.com", follow_redirects=False) as client:
        response = sign_in(client)
        assert "strict-transport-security" in response.headers
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and v.startswith("cf_coach="))
    assert "Secure" in cookie


def test_wrong_password_is_refused(client, coach):
    response = sign_in(client, password="not the password")
    assert response.status_code == 401 and "don&#39;t match" in response.text
    assert client.get("/dashboard").status_code == 303


def test_five_failures_lock_the_email_for_fifteen_minutes(client, coach):
    with freeze_time("2026-11-24 10:00:00", real_asyncio=True) as frozen:
        for _ in range(5):
            assert sign_in(client, password="wrong password!").status_code == 401
        locked = sign_in(client)
        assert locked.status_code == 429 and "15 minutes" in locked.text
        frozen.tick(timedelta(minutes=16))
        assert sign_in(client).status_code == 303


def test_login_without_csrf_token_is_refused(client, coach):
    client.get("/dashboard/login")
    assert client.post("/dashboard/login", data={"email": "coach@example.com", "password": PASSWORD}).status_code == 400


def test_logout_needs_the_form_token_and_ends_the_session(client, coach, november):
    sign_in(client)
    page = client.get("/dashboard")
    assert client.post("/dashboard/logout", data={}).status_code == 400
    response = client.post("/dashboard/logout", data={"csrf_token": csrf_of(page.text)})
    assert response.status_code == 303
    assert client.get("/dashboard").status_code == 303


def test_new_install_shows_what_to_do_next(client, coach):
    sign_in(client)
    page = client.get("/dashboard")
    assert "No cancel sessions yet" in page.text and "cancel-flow stripe setup" in page.text


def test_comments_are_escaped(client, coach, history):
    history(datetime.now(timezone.utc) - timedelta(days=1), "open", reason="other", comment="<script>alert('x')</script>")
    sign_in(client)
    page = client.get("/dashboard/sessions")
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text


def test_recent_sessions_filter_and_paginate(client, coach, history):
    # Noon, so that "an hour before 29 days ago" is inside the default 30 days whatever the hour of the run.
    with freeze_time(NOW, real_asyncio=True):
        for day in range(30):
            history(NOW - timedelta(days=day, hours=1), "canceled" if day % 3 == 0 else "open",
                    reason="unused" if day % 2 else "other")
        sign_in(client)
        page = client.get("/dashboard/sessions?outcome=canceled")
        first = client.get("/dashboard/sessions")
        nonsense = client.get("/dashboard/sessions?outcome=nonsense")
        bad_dates = client.get("/dashboard?from=2026-13-01&to=2026-01-01")
    assert "10 sessions, newest first, page 1 of 1" in page.text
    assert "30 sessions, newest first, page 1 of 2" in first.text and "Older" in first.text
    assert 'aria-label="Page 2"' in first.text and 'href="/dashboard/sessions?from=' in first.text
    assert nonsense.status_code == 400 and bad_dates.status_code == 400


def test_csv_export_has_one_row_per_session_and_is_formula_safe(client, coach, history):
    history(nov(2), "saved_discount", reason="too_expensive", chosen="half", percent=50, months=3, decided=nov(2),
            comment="=HYPERLINK(\"http://evil\")")
    history(nov(3), "open", comment="@SUM(A1)", email="+1@example.com")
    history(nov(20), "canceled", reason="unused")
    sign_in(client)
    response = client.get("/dashboard/export.csv?from=2026-11-01&to=2026-11-10")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    assert len(rows) == 2
    newest, oldest = rows
    assert newest["comment"] == "'@SUM(A1)" and oldest["comment"] == "'=HYPERLINK(\"http://evil\")"
    assert newest["customer_email"] == "'+1@example.com"
    assert oldest["currency"] == "USD" and oldest["outcome"] == "saved_discount"


def test_csv_is_newest_first_in_major_units_and_the_coaches_time_zone_with_a_bom(make_client, coach, history, store):
    import sqlalchemy as sa

    from cancel_flow.models import CancelSession
    table = CancelSession.__table__
    first = history(datetime(2026, 11, 2, 10, 0, 0, 123456, tzinfo=timezone.utc), "saved_pause", chosen="pause",
                    decided=nov(2), comment="Zürich, déjà vu")
    history(nov(4), "open", currency="jpy", price=5000)
    with store.engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.id == first).values(offer_cost=9800))
    client = make_client(timezone="Europe/Paris")
    sign_in(client)
    response = client.get("/dashboard/export.csv?from=2026-11-01&to=2026-11-10")
    assert response.content.startswith(b"\xef\xbb\xbf")  # UTF-8 byte-order mark: Excel reads the accents right
    rows = list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))
    yen, pause = rows
    assert yen["currency"] == "JPY" and yen["price"] == "5000" and yen["price_minor"] == "5000"
    assert pause["created_at"] == "2026-11-02T11:00:00+01:00" and pause["time_zone"] == "Europe/Paris"
    assert (pause["price"], pause["price_minor"], pause["monthly_amount"], pause["monthly_amount_minor"]) == ("49.00", "4900", "49.00", "4900")
    assert (pause["offer_cost"], pause["offer_cost_minor"], pause["offer_kind"]) == ("98.00", "9800", "pause")
    assert pause["comment"] == "Zürich, déjà vu"


def test_charts_are_svg_drawn_by_the_service(client, coach, november):
    sign_in(client)
    chart = client.get("/dashboard/charts/weekly.svg?from=2026-11-01&to=2026-11-30")
    assert chart.status_code == 200 and chart.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in chart.text and "Sessions" in chart.text
    assert "Why people leave" in client.get("/dashboard/charts/reasons.svg?from=2026-11-01&to=2026-11-30").text


def test_coach_add_command(monkeypatch, database_url, client, capsys):
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("CANCEL_FLOW_ENV", "development")
    assert run_cli(["coach", "add", "Me@Example.com", "--password-stdin"], monkeypatch, "short\n") == 1
    assert "at least 10" in capsys.readouterr().err
    assert run_cli(["coach", "add", "Me@Example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 0
    assert run_cli(["coach", "add", "me@example.com", "--password-stdin"], monkeypatch, PASSWORD + "\n") == 1
    assert sign_in(client, email="me@example.com").status_code == 303


def test_numbers_follow_sessions_that_change_after_they_were_counted(store, history):
    """The dashboard reads daily roll-ups; a day is rebuilt when one of its sessions changes."""
    started = datetime.now(timezone.utc) - timedelta(days=2)
    history(started, "open", reason="other")
    queries = StatsQueries(store.engine)
    period = DateRange(started - timedelta(days=1), datetime.now(timezone.utc) + timedelta(days=1))
    assert queries.stats(period).outcomes == {"open": 1}
    assert store.sweep_deflected() == 1
    history(started, "canceled", reason="unused", decided=started, canceled=started)
    later = queries.stats(period)
    assert later.outcomes == {"deflected": 1, "canceled": 1} and later.sessions == 2
    assert queries.recent(period, "deflected", None, 1)[1] == 1


def test_the_page_explains_its_terms_names_offers_by_title_and_compares_with_the_period_before(client, coach, history):
    today = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    for days_ago in (3, 4):
        history(today - timedelta(days=days_ago) + timedelta(hours=10), "saved_discount", reason="too_expensive",
                offers=["half-off-3-payments"], chosen="half-off-3-payments", percent=50, months=3,
                decided=today - timedelta(days=days_ago))
    history(today - timedelta(days=40), "canceled", reason="unused", decided=today - timedelta(days=40),
            canceled=today - timedelta(days=40))
    history(today - timedelta(days=5), "deflected", reason="other", offers=["retired-offer"])
    sign_in(client)
    page = client.get("/dashboard").text
    offers = client.get("/dashboard/offers").text
    assert "Stay for half price" in offers and ">half-off-3-payments<" not in offers  # titles, not ids
    assert "retired-offer" in offers and "(no longer offered)" in offers
    sessions = client.get("/dashboard/sessions").text
    for term in ("Deflected", "At Stripe&#39;s portal"):
        assert term in sessions
    assert "24 hours later the subscription was still active" in sessions  # deflected, explained
    assert "is on Stripe&#39;s cancel page; not confirmed yet" in sessions  # at Stripe's portal, explained
    assert "Save rate" in page and "Saved ÷ (saved + canceled)" in page  # save rate, explained
    # 3 sessions now against 1 in the 30 days before; save rate 100% against 0%
    assert re.search(r'id="stat-sessions">3<.*?\+200%', page, re.S)
    assert re.search(r'id="stat-save-rate">100%<.*?\+100 points', page, re.S)
    assert "vs previous 30 days" in page


def test_presets_keep_the_filters_and_the_active_range_is_marked(client, coach, history):
    history(datetime.now(timezone.utc) - timedelta(days=1), "canceled", reason="unused")
    sign_in(client)
    page = client.get("/dashboard?outcome=canceled&reason=unused").text
    assert 'href="/dashboard?range=7&amp;outcome=canceled&amp;reason=unused"' in page
    assert re.search(r'href="/dashboard\?range=30[^"]*" aria-current="true"', page)
    today = datetime.now(timezone.utc).date()
    typed = client.get(f"/dashboard?from={today - timedelta(days=6)}&to={today}").text
    assert re.search(r'href="/dashboard\?range=7[^"]*" aria-current="true"', typed)  # typed dates that are a preset
    custom = client.get("/dashboard?from=2026-01-01&to=2026-01-31").text
    assert "aria-current=\"true\"" not in custom and 'class="custom-range is-active"' in custom


@pytest.mark.parametrize("key, address", [("sk_test_abc", "https://dashboard.stripe.com/test/customers/"),
                                          ("rk_test_abc", "https://dashboard.stripe.com/test/customers/"),
                                          ("sk_live_abc", "https://dashboard.stripe.com/customers/")])
def test_sessions_link_to_the_customer_in_stripe_and_show_the_coaches_time(make_client, coach, history, key, address):
    history(datetime(2026, 11, 20, 23, 30, tzinfo=timezone.utc), "open", email="late@example.com")
    client = make_client(stripe_api_key=key, timezone="Asia/Tokyo")
    sign_in(client)
    page = client.get("/dashboard/sessions?from=2026-11-01&to=2026-11-30").text
    assert re.search(re.escape(address) + r'cus_\w+"', page)
    assert "21 Nov 2026, 08:30" in page and "Started (Asia/Tokyo)" in page  # 23:30 UTC is 08:30 the next day in Tokyo


def test_recovered_payments_card_shows_once_figures_exist(make_client, coach, history, store):
    import sqlalchemy as sa

    from cancel_flow.models import InvoiceRecord

    now = datetime.now(timezone.utc)
    history(now - timedelta(days=1), "open")
    client = make_client()
    sign_in(client)
    assert "Recovered payments" not in client.get("/dashboard").text

    def invoice(number, failed, paid=None, amount=4900):
        return dict(id=f"in_{number}", customer_id="cus_1", subscription_id=f"sub_{number}", status="paid" if paid else "open",
                    billing_reason="subscription_cycle", currency="usd", subtotal=amount, total_discount=0,
                    amount_due=amount, amount_paid=amount if paid else 0, attempt_count=1, created=failed,
                    first_failed_at=failed, paid_at=paid, event_created=0, updated_at=now)
    with store.engine.begin() as connection:
        connection.execute(sa.insert(InvoiceRecord.__table__), [
            invoice(1, now - timedelta(days=3), now - timedelta(days=2)),
            invoice(2, now - timedelta(days=4), now - timedelta(days=1), amount=14700),
            invoice(3, now - timedelta(days=5)),
            invoice(4, now - timedelta(days=40), now - timedelta(days=38)),  # the period before
        ])
    page = client.get("/dashboard").text
    assert "Recovered payments" in page and 'id="stat-recovered">2<' in page and "$196.00" in page and "+100%" in page
    payments = client.get("/dashboard/payments").text
    assert "Recovery rate" in payments and "67%" in payments and "Still unpaid" in payments


def test_api_stats_carry_the_per_offer_figures_of_the_page(client, store, history):
    import secrets as _secrets

    from cancel_flow.store.api_keys import ApiKeyStore

    key = "cfk_" + _secrets.token_urlsafe(32)
    ApiKeyStore(store.engine).add("app", key)
    day = datetime(2026, 11, 2, 10, tzinfo=timezone.utc)
    history(day, "saved_pause", reason="unused", offers=["pause", "half-off-3-payments"], chosen="pause", decided=day)
    body = client.get("/api/stats?from=2026-11-01&to=2026-11-30", headers={"Authorization": f"Bearer {key}"}).json()
    offers = {row["offer"]: row for row in body["offers"]}
    assert offers["pause"]["kind"] == "pause" and offers["pause"]["accepted"] == 1
    assert offers["half-off-3-payments"]["kind"] == "discount" and offers["half-off-3-payments"]["accepted"] == 0
    assert [d["days"] for d in offers["pause"]["durability"]] == [30, 60, 90]
    assert offers["pause"]["money"][0]["currency"] == "usd" and offers["pause"]["money"][0]["mrr"] == 4900
    assert {row["kind"] for row in body["offer_kinds"]} == {"discount", "pause"}
    assert body["previous"]["sessions"] == 0 and body["weekly"][0]["days"] == 1


def test_three_links_and_one_cancellation_are_one_subscription_on_the_dashboard(client, catalogue, signer, store):
    sub = catalogue.subscription()
    urls = [f"/cancel/{signer.cancel_token(sub.customer, sub.id)[0]}" for _ in range(3)]
    for url in urls:
        assert client.get(url).status_code == 200
    today = datetime.now(timezone.utc)
    period = DateRange(today - timedelta(days=1), today + timedelta(days=1))
    assert StatsQueries(store.engine).stats(period).outcomes == {"open": 1}  # three links, one subscription
    page = client.get(urls[-1])
    assert client.post(f"{urls[-1]}/cancel", data={"csrf_token": csrf_of(page.text), "reason": "unused"}).status_code == 303
    other = catalogue.subscription(catalogue.customer(email="other@example.com"))
    client.get(f"/cancel/{signer.cancel_token(other.customer, other.id)[0]}")
    stats = StatsQueries(store.engine).stats(period)
    assert stats.sessions == 2 and stats.outcomes == {"open": 1, "sent_to_portal": 1}


TAB_TABLES = {"/dashboard": {"weekly", "top-reasons"}, "/dashboard/sessions": {"outcomes", "sessions"},
              "/dashboard/offers": {"offer-kinds", "offers", "durability"}, "/dashboard/reasons": {"reasons"},
              "/dashboard/payments": {"payments"}}


def test_the_overview_reads_at_a_glance_and_each_detail_is_one_tab_away_with_the_range_and_filters(client, coach, november):
    from tests.helpers import visible_text

    query = "from=2026-11-01&to=2026-11-30&outcome=canceled&reason=unused"
    with freeze_time(NOW, real_asyncio=True):
        sign_in(client)
        pages = {path: client.get(f"{path}?{query}") for path in TAB_TABLES}
    overview = visible_text(pages["/dashboard"].text)
    assert "Summary Each change compares with the 30 days before (2 October 2026 to 31 October 2026). Sessions 7 +600%" \
        in overview
    assert "MRR saved €20.00, $49.00 a month no earlier period to compare Per month: what the subscriptions saved in " \
           "this range pay each month (yearly plans ÷ 12)." in overview
    assert "Offers cost $73.50 in all a total, once per accepted offer What the offers accepted in this range give away " \
           "over their whole length (discounts $73.50, skipped or free payments, cheaper plans): $73.50 is 1.5 months " \
           "of the MRR saved." in overview
    assert "Top reasons for leaving The most given reasons and their save rate Reason Sessions Save rate " \
           "It's too expensive 3 50% I don't use it enough 2 50% Another reason 1 –" in overview
    for path, page in pages.items():
        assert page.status_code == 200
        tables = set(re.findall(r'<table[^>]* id="([\w-]+)"', page.text))
        assert tables == TAB_TABLES[path], path  # each number on one tab, none lost
        for tab in TAB_TABLES:  # every tab links to every other with the same range and filters
            assert f'href="{tab}?from=2026-11-01&amp;to=2026-11-30&amp;outcome=canceled&amp;reason=unused"' in page.text
        assert re.search(rf'href="{path}\?[^"]*" aria-current="page"', page.text), path
        assert 'action="' + path + '"' in page.text  # the custom range stays on this tab
    assert "1 session, newest first" in pages["/dashboard/sessions"].text  # the filters apply to the list
    offers = visible_text(pages["/dashboard/offers"].text)
    assert "Kept in 90 days, against the cost – Not yet known: this range has no offer accepted at least 90 days ago." in offers


def test_a_bad_date_keeps_the_coach_in_the_dashboard(client, coach, november):
    from tests.helpers import visible_text

    sign_in(client)
    for path in ("/dashboard", "/dashboard/offers"):
        page = client.get(f"{path}?from=2026-11-31&to=2026-12-01")
        assert page.status_code == 400
        words = visible_text(page.text)
        assert "Retention Needs attention Experiments" in words and "Sign out" in words  # the dashboard's own pages
        assert "Those dates don't work Overview Sessions Offers Reasons Payments and emails 'from' is not a day of the " \
               "calendar. From To Show" in words
        assert "Back to the dashboard" in words and "Back to my account" not in words
        assert f'<form method="get" action="{path}"' in page.text
    export = client.get("/dashboard/export.csv?from=2026-12-01&to=2026-11-01")
    assert export.status_code == 400 and "Back to the dashboard" in export.text and "Back to my account" not in export.text
def test_the_dashboard_lists_cancellations_outside_the_flow_with_stripes_reason(client, coach, november, store):
    from cancel_flow.models import OutsideCancellation

    with store.engine.begin() as connection:
        connection.execute(sa.insert(OutsideCancellation.__table__).values(
            subscription_id="sub_portal", customer_id="cus_1", canceled_at=nov(12), ended=False, feedback="too_expensive",
            comment=None, reason="cancellation_requested", monthly_amount=4900, currency="usd", event_created=1))
    sign_in(client)
    page = client.get("/dashboard/reasons?from=2026-11-01&to=2026-11-30")
    assert "1 · $49.00/month" in page.text and "Canceled outside the flow" in page.text
    assert "canceled in Stripe (its portal, or by you)" in page.text and "too expensive" in page.text
