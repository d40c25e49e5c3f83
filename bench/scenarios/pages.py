"""1 and 5: the cancel page's first and repeat view against a bare 'hello' app, run by wrk."""

import statistics
import sys
from pathlib import Path

import httpx

from bench.harness import (ROOT, Bench, Process, count_sessions, figure, free_port, fresh_database, median_run, sdk,
                           seed_subscriptions, serve, signer, wrk)


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


def run(bench: Bench) -> None:
    app = page_throughput(bench.emulator_url, bench.workdir, *((3, 1) if bench.quick else (6, 5)))
    bench.carried["peak_rss_after_pages"] = app.peak_rss_mb()  # scenario 5, with the webhook run's
    app.stop()
