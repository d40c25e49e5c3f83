"""`make bench`: measure cancel-flow against the limits of its stack, side by side, on this machine.

Prints one line per figure (value, goal, PASS/FAIL) and writes bench/results.json. Each throughput
figure is the median of several runs; ratios are taken within one run of this script.

Each scenario is a module of bench/scenarios with `run(bench)`; SCENARIOS is the order they run in.
"""

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from bench.harness import ROOT, Bench, Process, figures, free_port

RESULTS = ROOT / "bench" / "results.json"
SCENARIOS = ("pages", "instructions", "calls", "webhooks", "dashboard", "load", "storm", "deliveries")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="short runs and 100k instead of 1M sessions")
    parser.add_argument("--only", nargs="*", default=list(SCENARIOS), choices=SCENARIOS, metavar="SCENARIO",
                        help=f"scenarios to run ({', '.join(SCENARIOS)})")
    args = parser.parse_args()
    # The throughput scenarios measure CPU per request against an emulator without a rate limit: the app's
    # Stripe budget (STRIPE_RATE_LIMIT, 20/s by default) would measure itself instead. The storm sets its own.
    os.environ.setdefault("STRIPE_RATE_LIMIT", "100000")
    emulator_port = free_port()
    emulator_url = f"http://127.0.0.1:{emulator_port}"
    emulator = Process([sys.executable, "-m", "cancel_flow", "stripe-emulator", "--port", str(emulator_port)],
                       ready=f"{emulator_url}/_emulator/clock")
    postgres = bool(os.environ.get("BENCH_POSTGRES_URL"))
    if not postgres:
        print("BENCH_POSTGRES_URL is not set: PostgreSQL figures are skipped.")
    bench = Bench(emulator_url=emulator_url, workdir=Path(tempfile.mkdtemp(prefix="cancel-flow-bench-")), quick=args.quick,
                  only=args.only, databases=["sqlite"] + (["postgresql"] if postgres else []),
                  seconds=3 if args.quick else 8)
    print(f"{'figure':<58} {'value':>12} {'unit':<6} goal")
    try:
        for name in SCENARIOS:
            if name in args.only:
                importlib.import_module(f"bench.scenarios.{name}").run(bench)
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
