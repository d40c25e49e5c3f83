"""3: the dashboard's render time at 1,000 and at 1,000,000 sessions (100,000 when quick)."""

import re
import statistics
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import sqlalchemy as sa

from bench.harness import Bench, drop_database, figure, fresh_database, serve


def seed_history(database_url: str, count: int) -> None:
    from cancel_flow.demo import _BLANK_SESSION
    from cancel_flow.store import Store, make_engine, migrate

    engine = make_engine(database_url)
    migrate(engine)
    store = Store(engine)
    now = datetime.now(timezone.utc)
    reasons = ["too_expensive", "unused", "switched_service", "missing_features", "other", "too_complex"]
    outcomes = ["canceled", "saved_discount", "saved_pause", "deflected", "canceled", "open"]
    batch = []
    for index in range(count):
        created = now - timedelta(seconds=(index * 94_608_000 // count) + 60)  # spread over three years
        outcome = outcomes[index % len(outcomes)]
        saved = outcome.startswith("saved")
        batch.append(dict(_BLANK_SESSION, nonce=f"b{index}", customer_id=f"cus_b{index}", subscription_id=f"sub_b{index}",
                          customer_email=f"c{index}@example.com", price_amount=4900, interval="month", monthly_amount=4900,
                          currency="usd" if index % 5 else "eur", reason=reasons[index % len(reasons)],
                          offers_shown=["half-off-3-months"] if index % 2 else ["pause"], created_at=created,
                          updated_at=created, outcome=outcome, decided_at=created if outcome != "open" else None,
                          chosen_offer=("half-off-3-months" if outcome == "saved_discount" else "pause") if saved else None,
                          offer_kind=("discount" if outcome == "saved_discount" else "pause") if saved else None,
                          discount_percent=50.0 if outcome == "saved_discount" else None,
                          discount_months=3 if outcome == "saved_discount" else None,
                          canceled_at=created + timedelta(days=40) if saved and index % 7 == 0 else None))
        if len(batch) == 50_000:
            store.bulk_insert_sessions(batch)
            batch = []
    if batch:
        store.bulk_insert_sessions(batch)
    with engine.begin() as connection:
        connection.execute(sa.text("ANALYZE"))
    engine.dispose()


def dashboard_scaling(kind: str, emulator_url: str, workdir: Path, sizes=(1_000, 1_000_000)) -> None:
    from cancel_flow.passwords import hash_password
    from cancel_flow.store import make_engine
    from cancel_flow.store.coaches import CoachStore

    timings = {}
    for size in sizes:
        database = fresh_database(kind, workdir)
        try:
            started = time.monotonic()
            seed_history(database, size)
            print(f"   seeded {size:,} sessions on {kind} in {time.monotonic() - started:.0f} s", flush=True)
            engine = make_engine(database)
            CoachStore(engine).add("bench@example.com", hash_password("bench-password"))
            engine.dispose()
            app, url = serve(database, emulator_url)
            try:
                with httpx.Client(base_url=url, timeout=600) as http:
                    login = http.get("/dashboard/login")
                    csrf = re.search(r'name="csrf_token" value="([^"]+)"', login.text).group(1)
                    http.post("/dashboard/login", data={"csrf_token": csrf, "email": "bench@example.com", "password": "bench-password"})
                    all_time = f"/dashboard?from={(datetime.now(timezone.utc) - timedelta(days=3 * 366)).date()}&to={datetime.now(timezone.utc).date()}"
                    for view, path in (("30-day", "/dashboard"), ("all-time", all_time)):
                        http.get(path)  # warm
                        samples = []
                        for _ in range(5):
                            started = time.perf_counter()
                            response = http.get(path)
                            samples.append(time.perf_counter() - started)
                            assert response.status_code == 200, response.status_code
                        timings[(size, view)] = statistics.median(samples)
            finally:
                app.stop()
        finally:
            drop_database(database)
    for view in ("30-day", "all-time"):
        small, large = timings[(sizes[0], view)], timings[(sizes[1], view)]
        figure(f"3. dashboard {view} on {kind}: render at 1M / at 1k", large / small, "<= 3", large / small <= 3)
        figure(f"3. dashboard {view} on {kind}: render at 1M", large * 1000, "info", True, "ms")


def run(bench: Bench) -> None:
    for kind in bench.databases:
        dashboard_scaling(kind, bench.emulator_url, bench.workdir, sizes=(1_000, 100_000 if bench.quick else 1_000_000))
