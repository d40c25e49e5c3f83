import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import free_port


@dataclass
class Demo:
    process: subprocess.Popen
    port: int
    emulator_port: int
    environment: dict  # this shell's, without any cancel-flow, Stripe or database setting


@contextmanager
def demo_running(directory: Path):
    """`cancel-flow demo` in `directory`, its output on a pipe; Ctrl-C when the block ends."""
    port, emulator_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_FLOW_", "STRIPE_", "DATABASE_"))}
    process = subprocess.Popen([sys.executable, "-m", "cancel_flow", "demo", "--port", str(port),
                                "--emulator-port", str(emulator_port)], cwd=directory, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        yield Demo(process, port, emulator_port, environment)
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)


def test_demo_serves_seeded_links_and_ctrl_c_stops_everything(tmp_path):
    output = ""
    with demo_running(tmp_path) as demo:
        deadline = time.monotonic() + 60
        while output.count("cancel:") < 4:
            assert time.monotonic() < deadline and demo.process.poll() is None, output
            output += demo.process.stdout.readline()
        assert "Coach dashboard:" in output
        links = re.findall(r"cancel:\s+(\S+)", output)
        assert len(links) == 4
        for _ in range(100):
            try:
                page = httpx.get(links[0], timeout=5)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert page.status_code == 200 and "Continue to cancel" in page.text
        assert "Keep my subscription" in httpx.get(links[3], timeout=5).text
    time.sleep(0.5)
    for url in (f"http://127.0.0.1:{demo.port}/", f"http://127.0.0.1:{demo.emulator_port}/_emulator/clock"):
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after Ctrl-C")
        except httpx.HTTPError:
            pass
