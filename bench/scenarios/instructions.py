"""1, counted in instructions: the pages of scenario 1 (and /healthz) under callgrind, against goals in instructions."""

import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import Bench, Process, app_env, drive, figure, free_port, fresh_database, sdk, seed_subscriptions, signer


# Millions of instructions per request (stable from run to run, unlike throughput on a shared machine): the
# throughput goals of scenario 1 (first view >= 4 %, repeat view >= 10 % of "hello") follow from these.
INSTRUCTION_GOALS = {"first": 2.5, "repeat": 1.0, "healthz": 0.4}


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

    # Under callgrind the server runs tens of times slower: the Stripe deadline is stretched to match.
    pages = callgrind_per_request(["cancel_flow", "serve"], "/healthz",
                                  lambda url: {**app_env(fresh_database("sqlite", workdir), emulator_url, url),
                                               "STRIPE_DEADLINE": "600"},
                                  lambda: ([repeat] * 50 + fresh(50) + ["/healthz"] * 50,
                                           {"first": fresh(requests), "repeat": [repeat] * requests,
                                            "healthz": ["/healthz"] * requests}))
    figure("1. hello: CPU instructions per request (callgrind)", hello / 1e6, "info", True, "M")
    for name, label in (("first", "first view"), ("repeat", "repeat view"), ("healthz", "/healthz")):
        goal = INSTRUCTION_GOALS[name]
        figure(f"1. {label}: CPU instructions per request (callgrind)", pages[name] / 1e6, f"<= {goal} M",
               pages[name] / 1e6 <= goal, "M")
        if name != "healthz":
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


def run(bench: Bench) -> None:
    instruction_shares(bench.emulator_url, bench.workdir, requests=100 if bench.quick else 300)
