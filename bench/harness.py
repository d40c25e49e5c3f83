"""What every scenario of `make bench` shares: the figures it reports, processes (the app, the
emulator, wrk, callgrind), fresh databases and Stripe test data."""

import asyncio
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import sqlalchemy as sa
import stripe

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_bench"
SECRET = "bench-secret-key-0123456789abcdef"
WHSEC = "whsec_bench_" + "d" * 32
# The offer's coupons: 3 months (what `stripe setup` makes), and 4, the length an accept in the middle of a period
# asks for (its first discounted payment is the next renewal; cancel_service corrects the length and makes the coupon
# once, the first time). Both made beforehand, so that a flow counts the calls of a deployment in use.
COUPONS = {"cancel-flow_half-off-3-payments_50pct_3m": 3, "cancel-flow_half-off-3-payments_50pct_4m": 4}
COUPON_IDS = tuple(COUPONS)
figures: list[dict] = []


@dataclass
class Bench:
    """One run of `make bench`: what the scenarios share, and what one leaves for a later one."""
    emulator_url: str
    workdir: Path
    quick: bool
    only: list[str]
    databases: list[str]
    seconds: int  # of each throughput run
    carried: dict = field(default_factory=dict)


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
        self.log = tempfile.TemporaryFile(mode="w+")  # what it prints, for `printed()`
        self.process = subprocess.Popen(args, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                                        stderr=self.log, cwd=ROOT)
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

    def printed(self) -> str:
        self.log.seek(0)
        return self.log.read()

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
    env = {"DATABASE_URL": database_url, "CANCEL_FLOW_SECRET_KEY": SECRET, "STRIPE_API_KEY": KEY,
           "STRIPE_API_BASE": emulator_url, "CANCEL_FLOW_BASE_URL": base_url, "STRIPE_WEBHOOK_SECRET": WHSEC,
           "CANCEL_FLOW_OFFERS": str(ROOT / "offers.toml"), "CANCEL_FLOW_ENV": "production"}
    configuration = portal_configuration(emulator_url)
    if configuration:  # as `stripe setup` prints it: a configuration made by the API is not the account's default
        env["STRIPE_PORTAL_CONFIGURATION"] = configuration
    return env


def portal_configuration(emulator_url: str) -> str | None:
    """The portal configuration `ensure_coupon` saved (the one marked `cancel_flow=1`), if any yet."""
    found = sdk(emulator_url).v1.billing_portal.configurations.list(params={"limit": 100}).data
    return next((c.id for c in found if c.metadata and c.metadata.to_dict().get("cancel_flow") == "1"), None)


def serve(database_url: str, emulator_url: str, workers: int = 1, env: dict | None = None) -> tuple[Process, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = Process([sys.executable, "-m", "cancel_flow", "serve", "--port", str(port), "--workers", str(workers)],
                      env={**app_env(database_url, emulator_url, url), **(env or {})}, ready=f"{url}/healthz")
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
    """The offer's coupon, and a saved portal configuration (Stripe's test mode refuses portal sessions
    without one), as `cancel-flow stripe setup` makes them."""
    for coupon, months in COUPONS.items():
        try:
            client.v1.coupons.create(params={"id": coupon, "percent_off": 50, "duration": "repeating",
                                             "duration_in_months": months})
        except stripe.InvalidRequestError:
            pass  # made by an earlier scenario
    if not client.v1.billing_portal.configurations.list(params={"limit": 1}).data:
        from cancel_flow.stripe_gateway import StripeSetup

        client.v1.billing_portal.configurations.create(params={
            "business_profile": {"headline": "Manage your subscription"}, "features": StripeSetup._features(),
            "metadata": {"cancel_flow": "1"}})


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


def migrated_database(kind: str, workdir: Path) -> str:
    """A fresh database with the schema built, for a server that starts writing at once."""
    from cancel_flow.store import make_engine, migrate

    database = fresh_database(kind, workdir)
    engine = make_engine(database)
    migrate(engine)
    engine.dispose()
    return database


def drop_database(url: str) -> None:
    if url.startswith("postgresql"):
        admin = sa.create_engine(os.environ["BENCH_POSTGRES_URL"], isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{sa.engine.make_url(url).database}" WITH (FORCE)'))
        admin.dispose()


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
