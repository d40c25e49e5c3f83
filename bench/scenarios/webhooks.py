"""4 and 5: signed Stripe events posted by wrk (a tenth of them duplicates); a worker's peak memory."""

import asyncio
import json
import time
from pathlib import Path

import httpx
import sqlalchemy as sa
import stripe

from bench.harness import ROOT, WHSEC, Bench, Process, drop_database, figure, migrated_database, serve, wrk


def webhook_ingest(kind: str, emulator_url: str, workdir: Path, seconds: int) -> Process:
    from cancel_flow.store import make_engine

    database = migrated_database(kind, workdir)
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


def run(bench: Bench) -> None:
    for kind in bench.databases:
        app = webhook_ingest(kind, bench.emulator_url, bench.workdir, bench.seconds)
        if kind == "sqlite" and "peak_rss_after_pages" in bench.carried:
            peak = max(bench.carried["peak_rss_after_pages"], app.peak_rss_mb())
            figure("5. peak RSS of a worker after scenarios 1 and 4", peak, "<= 150 MB", peak <= 150, "MB")
        app.stop()
