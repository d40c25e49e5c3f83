"""`make bench`: measure cancel-flow against the limits of its stack, side by side, on this machine.

Prints one line per figure (value, goal, PASS/FAIL) and writes bench/results.json. Each throughput
figure is the median of several runs; ratios are taken within one run of this script.
"""

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import sqlalchemy as sa
import stripe

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
KEY = "sk_test_bench"
SECRET = "bench-secret-key-0123456789abcdef"
WHSEC = "whsec_bench_" + "d" * 32
COUPON = "cancel-flow_half-off-3-months_50pct_3m"
figures: list[dict] = []


def figure(name: str, value: float, goal: str, passed: bool, unit: str = "") -> None:
    figures.append({"name": name, "value": round(value, 3), "unit": unit, "goal": goal, "pass": passed})
    print(f"{name:<58} {value:>12.3f} {unit:<6} goal {goal:<14} {'PASS' if passed else 'FAIL'}", flush=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


class Process:
    def __init__(self, args: list[str], env: dict | None = None, ready: str | None = None, ready_timeout: float = 60):
        self.process = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, cwd=ROOT)
        if ready:
            wait_for(ready, ready_timeout)

    def peak_rss_mb(self) -> float:
        """Largest resident set of the process or its children (the uvicorn worker)."""
        pids = [self.process.pid] + [int(p) for p in subprocess.run(
            ["pgrep", "-P", str(self.process.pid)], capture_output=True, text=True).stdout.split()]
        peaks = []
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            match = re.search(r"VmHWM:\s+(\d+) kB", status)
            if match:
                peaks.append(int(match.group(1)) / 1024)
        return max(peaks or [0])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


WRK_THREADS = 1  # on a 2-core machine a second wrk thread takes the server's core and skews its latency


def wrk(url: str, seconds: int, connections: int = 32, script: str | None = None) -> dict:
    args = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    if script:
        args += ["-s", script]
    args.append(url)
    if script:
        args += ["--", str(WRK_THREADS)]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    time.sleep(2)  # let requests still in flight when wrk stopped drain before the next run

    def ms(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    return {"rps": rps, "p50": ms("50"), "p99": ms("99"), "non_2xx": int(errors.group(1)) if errors else 0,
            "requests": requests}


def median_run(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def app_env(database_url: str, emulator_url: str, base_url: str) -> dict:
    return {"DATABASE_URL": database_url, "CANCEL_FLOW_SECRET_KEY": SECRET, "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": emulator_url, "CANCEL_FLOW_BASE_URL": base_url, "STRIPE_WEBHOOK_SECRET": WHSEC,
            "CANCEL_FLOW_OFFERS": str(ROOT / "offers.toml"), "CANCEL_FLOW_ENV": "production"}


def serve(database_url: str, emulator_url: str, workers: int = 1) -> tuple[Process, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process([sys.executable, "-m", "cancel_flow", "serve", "--port", str(port), "--workers", str(workers)],
                      env=app_env(database_url, emulator_url, url), ready=f"{url}/healthz")
    return process, url


def sdk(emulator_url: str) -> stripe.StripeClient:
    return stripe.StripeClient(KEY, base_addresses={"api": emulator_url},
                               http_client=stripe.HTTPXClient(allow_sync_methods=True, timeout=30))


def seed_subscriptions(client: stripe.StripeClient, count: int) -> list[stripe.Subscription]:
    product = client.v1.products.create(params={"name": "Bench Coaching"})
    price = client.v1.prices.create(params={"product": product.id, "unit_amount": 4900, "currency": "usd",
                                            "recurring": {"interval": "month"}})
    subs = []
    for index in range(count):
        customer = client.v1.customers.create(params={"email": f"bench{index}@example.com", "payment_method": "pm_card_visa",
                                                      "invoice_settings": {"default_payment_method": "pm_card_visa"}})
        subs.append(client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]}))
    return subs


def ensure_coupon(client: stripe.StripeClient) -> None:
    try:
        client.v1.coupons.create(params={"id": COUPON, "percent_off": 50, "duration": "repeating", "duration_in_months": 3})
    except stripe.InvalidRequestError:
        pass  # made by an earlier scenario


def signer():
    from cancel_flow.links import LinkSigner

    return LinkSigner(SECRET, 86400, 2592000)


def fresh_database(kind: str, workdir: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{workdir / f'bench-{secrets.token_hex(3)}.db'}"
    admin = sa.create_engine(os.environ["BENCH_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
    name = f"cancel_flow_bench_{secrets.token_hex(4)}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return sa.engine.make_url(os.environ["BENCH_POSTGRES_URL"]).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        admin = sa.create_engine(os.environ["BENCH_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


# 1 and 5 --------------------------------------------------------------------------------------------
def page_throughput(emulator_url: str, workdir: Path, seconds: int, rounds: int) -> Process:
    hello_port = free_port()
    hello = Process([sys.executable, "-m", "uvicorn", "bench.hello:app", "--port", str(hello_port), "--log-level", "warning",
                     "--no-access-log"], ready=f"http://127.0.0.1:{hello_port}/")
    database = fresh_database("sqlite", workdir)
    app, url = serve(database, emulator_url)
    client = sdk(emulator_url)
    sub = seed_subscriptions(client, 1)[0]
    links = signer()
    repeat_token, _ = links.cancel_token(sub.customer, sub.id)
    httpx.get(f"{url}/cancel/{repeat_token}")
    paths = ROOT / "bench" / ".first-view-paths.txt"
    # A "hello" run before and after each pair of page runs: on a shared machine the speed drifts
    # within seconds, so each page run is compared with the "hello" runs on either side of it.
    runs = {"hello": [], "first": [], "repeat": []}
    reopened = 0
    try:
        runs["hello"].append(wrk(f"http://127.0.0.1:{hello_port}/", seconds))
        for _ in range(rounds):
            # Fresh links every round: a first view is a link nobody opened before. wrk starts the
            # list again when it runs out, so there are more than it can use, and the sessions the
            # run opened are counted to prove it.
            paths.write_text("\n".join(f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}"
                                       for _ in range(seconds * 6000)) + "\n")
            before = count_sessions(database)
            runs["first"].append(wrk(url, seconds, script=str(ROOT / "bench" / "paths.lua")))
            reopened += max(0, runs["first"][-1]["requests"] - (count_sessions(database) - before))
            runs["repeat"].append(wrk(f"{url}/cancel/{repeat_token}", seconds))
            runs["hello"].append(wrk(f"http://127.0.0.1:{hello_port}/", seconds))
    finally:
        hello.stop()
        paths.unlink(missing_ok=True)
    hello_rps = statistics.median(run["rps"] for run in runs["hello"])
    around = [(before["rps"] + after["rps"]) / 2 for before, after in zip(runs["hello"], runs["hello"][1:])]
    for name, label in (("first", "first view"), ("repeat", "repeat view")):
        result = median_run(runs[name])
        share = statistics.median(run["rps"] / hello for run, hello in zip(runs[name], around))
        goal = 0.04 if name == "first" else 0.10
        figure(f"1. {label}: share of bare 'hello' throughput", share, f">= {goal:.0%}", share >= goal)
        figure(f"1. {label}: p99 / p50 latency", result["p99"] / result["p50"], "<= 3", result["p99"] / result["p50"] <= 3)
        figure(f"1. {label}: requests/s (hello {hello_rps:.0f}/s)", result["rps"], "info", True, "req/s")
        figure(f"1. {label}: non-2xx responses", result["non_2xx"], "0", result["non_2xx"] == 0)
    figure("1. first view: requests that reopened a link", reopened, "0", reopened == 0)
    return app


# 1, counted in instructions -------------------------------------------------------------------------
def instruction_shares(emulator_url: str, workdir: Path, requests: int) -> None:
    """The pages of scenario 1 again, each server under callgrind: CPU instructions per request do not
    move with what else the machine runs, so this share is the one to compare code changes by."""
    if not shutil.which("valgrind"):
        print("valgrind is not installed: the instruction counts are skipped.")
        return
    hello = callgrind_per_request(["uvicorn", "bench.hello:app", "--log-level", "warning", "--no-access-log"], "/", None,
                                  lambda: (["/"] * 50, {"hello": ["/"] * requests}))["hello"]
    sub = seed_subscriptions(sdk(emulator_url), 1)[0]
    links = signer()
    repeat = f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}"

    def fresh(count: int) -> list[str]:
        return [f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}" for _ in range(count)]

    pages = callgrind_per_request(["cancel_flow", "serve"], "/healthz", lambda url: app_env(fresh_database("sqlite", workdir), emulator_url, url),
                                  lambda: ([repeat] * 50 + fresh(50), {"first": fresh(requests), "repeat": [repeat] * requests}))
    figure("1. hello: CPU instructions per request (callgrind)", hello / 1e6, "info", True, "M")
    for name, label in (("first", "first view"), ("repeat", "repeat view")):
        figure(f"1. {label}: CPU instructions per request (callgrind)", pages[name] / 1e6, "info", True, "M")
        figure(f"1. {label}: share of 'hello' in CPU instructions", hello / pages[name], "info", True)


def callgrind_per_request(module_args: list[str], ready_path: str, env_for, paths_for) -> dict[str, float]:
    """Start `python -m <module_args>` under callgrind, warm it up, then count the instructions it
    spends per request on each list of paths (16 requests in flight)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    out = Path(tempfile.mkdtemp(prefix="callgrind-")) / "callgrind.out"
    args = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-m", *module_args, "--port", str(port)]
    server = Process(args, env=env_for(url) if env_for else None, ready=url + ready_path, ready_timeout=600)
    per_request = {}
    try:
        warm_up, measured = paths_for()
        asyncio.run(drive(url, warm_up))
        for name, paths in measured.items():
            subprocess.run(["callgrind_control", "--zero", str(server.process.pid)], capture_output=True, check=True)
            asyncio.run(drive(url, paths))
            dumps_before = set(out.parent.iterdir())
            subprocess.run(["callgrind_control", "--dump", str(server.process.pid)], capture_output=True, check=True)
            (dump,) = set(out.parent.iterdir()) - dumps_before
            totals = re.search(r"^(?:totals|summary): (\d+)", dump.read_text(errors="replace"), re.M)
            per_request[name] = int(totals.group(1)) / len(paths)
    finally:
        server.stop()
        shutil.rmtree(out.parent, ignore_errors=True)
    return per_request


async def drive(url: str, paths: list[str], in_flight: int = 16) -> None:
    pending = list(reversed(paths))
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        async def one_connection():
            while pending:
                response = await client.get(pending.pop())
                if response.status_code != 200:
                    raise RuntimeError(f"{response.request.url.path[:20]}…: {response.status_code}")
        await asyncio.gather(*(one_connection() for _ in range(in_flight)))


def count_sessions(database_url: str) -> int:
    engine = sa.create_engine(database_url)
    with engine.connect() as connection:
        count = connection.execute(sa.text("SELECT count(*) FROM cancel_session")).scalar()
    engine.dispose()
    return count


# 2 --------------------------------------------------------------------------------------------------
def stripe_calls_per_flow(emulator_url: str, workdir: Path) -> None:
    app, url = serve(fresh_database("sqlite", workdir), emulator_url)
    client = sdk(emulator_url)
    ensure_coupon(client)
    discount_sub, cancel_sub = seed_subscriptions(client, 2)
    links = signer()
    try:
        for label, sub in (("accept-discount", discount_sub), ("continue-to-cancel", cancel_sub)):
            token, _ = links.cancel_token(sub.customer, sub.id)
            before = len(httpx.get(f"{emulator_url}/_emulator/requests").json())
            with httpx.Client(base_url=url) as http:
                page = http.get(f"/cancel/{token}")
                csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
                if label == "accept-discount":
                    http.post(f"/cancel/{token}/reason", data={"csrf_token": csrf, "reason": "too_expensive"})
                    http.get(f"/cancel/{token}")
                    http.post(f"/cancel/{token}/accept", data={"csrf_token": csrf, "offer": "half-off-3-months"})
                    http.get(f"/cancel/{token}/done")
                else:
                    http.post(f"/cancel/{token}/reason", data={"csrf_token": csrf, "reason": "missing_features"})
                    http.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf})
            calls = len(httpx.get(f"{emulator_url}/_emulator/requests").json()) - before
            figure(f"2. Stripe calls per {label} flow", calls, "<= 2", calls <= 2, "calls")
    finally:
        app.stop()


# 3 --------------------------------------------------------------------------------------------------
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
        if engine.dialect.name == "postgresql":
            connection.execute(sa.text("ANALYZE"))
        else:
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


# 4 --------------------------------------------------------------------------------------------------
def webhook_ingest(kind: str, emulator_url: str, workdir: Path, seconds: int) -> Process:
    from cancel_flow.store import make_engine, migrate

    database = fresh_database(kind, workdir)
    engine = make_engine(database)
    migrate(engine)
    engine.dispose()
    app, url = serve(database, emulator_url)
    count = 40_000
    lines, unique = [], set()
    now = int(time.time())
    for index in range(count):
        event_index = index if index % 10 else max(index - 5, 0)  # every tenth is a duplicate of an earlier one
        unique.add(event_index)
        payload = json.dumps({"id": f"evt_bench_{event_index}", "object": "event", "type": "customer.subscription.updated",
                              "created": now + event_index, "data": {"object": {
                                  "id": f"sub_b{event_index % 500}", "object": "subscription", "status": "active",
                                  "cancel_at_period_end": False, "canceled_at": None, "discounts": [],
                                  "pause_collection": None, "cancellation_details": {}}}}, separators=(",", ":"))
        lines.append(f"{stripe.WebhookSignature.generate_signature_header(payload, WHSEC)}\t{payload}")
    events_file = ROOT / "bench" / ".webhook-events.txt"
    events_file.write_text("\n".join(lines) + "\n")
    try:
        result = wrk(f"{url}/webhooks/stripe", seconds, connections=32, script=str(ROOT / "bench" / "webhooks.lua"))
    finally:
        events_file.unlink(missing_ok=True)
    def stored_events() -> int:
        engine = make_engine(database)
        with engine.connect() as connection:
            count = connection.execute(sa.text("SELECT count(*) FROM stripe_event")).scalar()
        engine.dispose()
        return count

    time.sleep(1)  # requests in flight when wrk stopped are still being answered
    before = stored_events()
    # re-send 500 events that are stored: each must be acknowledged as a duplicate and change nothing
    engine = make_engine(database)
    with engine.connect() as connection:
        stored_ids = set(connection.execute(sa.text("SELECT id FROM stripe_event LIMIT 500")).scalars())
    engine.dispose()
    resent = [line.split("\t", 1) for line in lines if json.loads(line.split("\t", 1)[1])["id"] in stored_ids]
    resent = list({body: (sig, body) for sig, body in resent}.values())

    async def resend() -> list:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            return await asyncio.gather(*[http.post("/webhooks/stripe", content=body, headers={"Stripe-Signature": sig})
                                          for sig, body in resent])

    answers = asyncio.run(resend())
    applied = sum(1 for a in answers if a.status_code != 200 or not a.json().get("duplicate"))
    applied += stored_events() - before
    figure(f"4. webhook ingest on {kind} (10% duplicates)", result["rps"], ">= 500/s", result["rps"] >= 500, "ev/s")
    figure(f"4. webhook duplicates applied on {kind}", applied, "0", applied == 0 and result["non_2xx"] == 0, "events")
    if kind == "postgresql":
        drop_database(database)
    return app


# 6 --------------------------------------------------------------------------------------------------
def load_scenario(kind: str, emulator_url: str, workdir: Path, subscribers: int, seconds: int) -> None:
    from bench.load import run_load, verify
    from cancel_flow.store import make_engine, migrate

    database = fresh_database(kind, workdir)
    engine = make_engine(database)
    migrate(engine)
    engine.dispose()
    app, url = serve(database, emulator_url, workers=2)
    client = sdk(emulator_url)
    ensure_coupon(client)
    links = signer()
    paths = [(sub.id, f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}") for sub in seed_subscriptions(client, subscribers)]
    redeemed_before = client.v1.coupons.retrieve(COUPON).times_redeemed
    try:
        result = asyncio.run(run_load(url, paths, seconds))
        problems = verify(result, client, database, COUPON, redeemed_before)
    finally:
        app.stop()
        drop_database(database)
    figure(f"6. load on {kind}: 5xx among {sum(result.statuses.values())} requests", result.server_errors, "0",
           result.server_errors == 0)
    figure(f"6. load on {kind}: decisions missing or doubled", len(problems), "0", not problems)
    for problem in problems[:10]:
        print(f"     {problem}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short runs and 100k instead of 1M sessions")
    parser.add_argument("--only", nargs="*", default=["pages", "instructions", "calls", "webhooks", "dashboard", "load"],
                        help="scenarios to run (pages, instructions, calls, webhooks, dashboard, load)")
    args = parser.parse_args()
    seconds = 3 if args.quick else 8
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator = Process([sys.executable, "-m", "cancel_flow", "stripe-emulator", "--port", str(emulator_port)],
                       ready=f"{emulator_url}/_emulator/clock")
    workdir = Path(tempfile.mkdtemp(prefix="cancel-flow-bench-"))
    postgres = bool(os.environ.get("BENCH_POSTGRES_URL"))
    databases = ["sqlite"] + (["postgresql"] if postgres else [])
    if not postgres:
        print("BENCH_POSTGRES_URL is not set: PostgreSQL figures are skipped.")
    print(f"{'figure':<58} {'value':>12} {'unit':<6} goal")
    try:
        peak_after_pages = 0.0
        if "pages" in args.only:
            app = page_throughput(emulator_url, workdir, *((3, 1) if args.quick else (6, 5)))
            peak_after_pages = app.peak_rss_mb()
            app.stop()
        if "instructions" in args.only:
            instruction_shares(emulator_url, workdir, requests=100 if args.quick else 300)
        if "calls" in args.only:
            stripe_calls_per_flow(emulator_url, workdir)
        for kind in databases if "webhooks" in args.only else []:
            app = webhook_ingest(kind, emulator_url, workdir, seconds)
            if kind == "sqlite" and "pages" in args.only:
                peak = max(peak_after_pages, app.peak_rss_mb())
                figure("5. peak RSS of a worker after scenarios 1 and 4", peak, "<= 150 MB", peak <= 150, "MB")
            app.stop()
        for kind in databases if "dashboard" in args.only else []:
            dashboard_scaling(kind, emulator_url, workdir, sizes=(1_000, 100_000 if args.quick else 1_000_000))
        for kind in databases if "load" in args.only else []:
            load_scenario(kind, emulator_url, workdir, subscribers=50 if args.quick else 200, seconds=15 if args.quick else 60)
    finally:
        emulator.stop()
    RESULTS.write_text(json.dumps({
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
                    "python": platform.python_version(), "platform": platform.platform()},
        "quick": args.quick, "figures": figures}, indent=2))
    failed = [f["name"] for f in figures if not f["pass"]]
    print(f"\n{len(figures) - len(failed)} passed, {len(failed)} failed (results in {RESULTS.relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
