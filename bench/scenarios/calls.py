"""2: the Stripe calls one subscriber's flow costs, counted by the emulator."""

import re
from pathlib import Path

import httpx

from bench.harness import Bench, ensure_coupon, figure, fresh_database, sdk, seed_subscriptions, serve, signer


def stripe_calls_per_flow(emulator_url: str, workdir: Path) -> None:
    client = sdk(emulator_url)
    ensure_coupon(client)  # first: the app is told the portal configuration it saves
    app, url = serve(fresh_database("sqlite", workdir), emulator_url)
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
                    http.post(f"/cancel/{token}/accept", data={"csrf_token": csrf, "offer": "half-off-3-payments"})
                    http.get(f"/cancel/{token}/done")
                else:
                    http.post(f"/cancel/{token}/reason", data={"csrf_token": csrf, "reason": "missing_features"})
                    http.post(f"/cancel/{token}/cancel", data={"csrf_token": csrf})
            calls = len(httpx.get(f"{emulator_url}/_emulator/requests").json()) - before
            figure(f"2. Stripe calls per {label} flow", calls, "<= 2", calls <= 2, "calls")
    finally:
        app.stop()


def run(bench: Bench) -> None:
    stripe_calls_per_flow(bench.emulator_url, bench.workdir)
