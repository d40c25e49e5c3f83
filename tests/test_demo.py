import os
import re
import signal
import subprocess
import sys
import time

import httpx

from tests.conftest import free_port


def test_demo_serves_seeded_links_and_ctrl_c_stops_everything(tmp_path):
    port, emulator_port = free_port(), free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("CANCEL_FLOW_", "STRIPE_", "DATABASE_"))}
    process = subprocess.Popen([sys.executable, "-m", "cancel_flow", "demo", "--port", str(port),
                                "--emulator-port", str(emulator_port)], cwd=tmp_path, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = ""
    try:
        deadline = time.monotonic() + 60
        while output.count("cancel:") < 4:
            assert time.monotonic() < deadline and process.poll() is None, output
            output += process.stdout.readline()
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
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
    time.sleep(0.5)
    for url in (f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{emulator_port}/_emulator/clock"):
        try:
            httpx.get(url, timeout=1)
            raise AssertionError(f"{url} still answers after Ctrl-C")
        except httpx.HTTPError:
            pass
