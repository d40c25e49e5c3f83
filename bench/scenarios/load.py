"""6: simulated subscribers (bench/load.py) through two workers; every decision applied once."""

import asyncio
from pathlib import Path

from bench.harness import (COUPON_IDS, Bench, drop_database, ensure_coupon, figure, migrated_database, sdk,
                           seed_subscriptions, serve, signer)
from bench.load import corrections, redemptions, run_load, verify


def load_scenario(kind: str, emulator_url: str, workdir: Path, subscribers: int, seconds: int) -> None:
    database = migrated_database(kind, workdir)
    client = sdk(emulator_url)
    ensure_coupon(client)  # first: the app is told the portal configuration it saves
    app, url = serve(database, emulator_url, workers=2)
    links = signer()
    paths = [(sub.id, f"/cancel/{links.cancel_token(sub.customer, sub.id)[0]}") for sub in seed_subscriptions(client, subscribers)]
    redeemed_before = redemptions(client, COUPON_IDS)
    try:
        result = asyncio.run(run_load(url, paths, seconds))
        problems = verify(result, client, database, COUPON_IDS, redeemed_before, corrections(app.printed()))
    finally:
        app.stop()
        drop_database(database)
    figure(f"6. load on {kind}: 5xx among {sum(result.statuses.values())} requests", result.server_errors, "0",
           result.server_errors == 0)
    figure(f"6. load on {kind}: decisions missing or doubled", len(problems), "0", not problems)
    for problem in problems[:10]:
        print(f"     {problem}")


def run(bench: Bench) -> None:
    for kind in bench.databases:
        load_scenario(kind, bench.emulator_url, bench.workdir, subscribers=50 if bench.quick else 200,
                      seconds=15 if bench.quick else 60)
