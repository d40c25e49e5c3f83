"""`cancel-flow demo` as someone trying it: the shared link printed, a `.env` another shell can use,
request logs in a file rather than on the console, emails as readable blocks, and a demo account page."""

import re
import subprocess
import sys
import threading
import time

import httpx

from tests.helpers import csrf_of
from tests.test_demo import demo_running


def test_demo_prints_the_shared_link_writes_env_logs_to_a_file_and_has_an_account_page(tmp_path):
    lines: list[str] = []
    with demo_running(tmp_path) as demo:
        process, environment = demo.process, demo.environment
        reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")), daemon=True)
        reader.start()
        base = f"http://127.0.0.1:{demo.port}"
        deadline = time.monotonic() + 90
        while "Back to my account" not in "".join(lines):
            assert time.monotonic() < deadline and process.poll() is None, "".join(lines)
            time.sleep(0.1)
        for _ in range(100):
            try:
                httpx.get(f"{base}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        banner = "".join(lines)
        assert f"Shared link for every client: {base}/" in banner and "how to get more links" in banner

        # another shell, in the same directory, with none of the demo's variables: `.env` carries them
        env_file = (tmp_path / ".env").read_text()
        assert "DATABASE_URL=sqlite:///" in env_file and f"STRIPE_API_BASE=http://127.0.0.1:{demo.emulator_port}" in env_file
        other_shell = subprocess.run([sys.executable, "-m", "cancel_flow", "link", "--email", "maya@example.com"],
                                     cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
        assert other_shell.returncode == 0, other_shell.stderr
        minted = re.search(r"(http://127\.0\.0\.1:\d+/cancel/\S+)", other_shell.stdout).group(1)
        assert "Continue to cancel" in httpx.get(minted, timeout=10).text

        account = httpx.get(f"{base}/account", timeout=10)
        assert account.status_code == 200 and "Maya Lopez" in account.text and "Manage billing" in account.text
        reason_page = httpx.get(minted, timeout=10).text
        assert f'href="{base}/account"' in reason_page  # "Never mind, keep my subscription" lands there

        with httpx.Client(base_url=base, timeout=10) as browser:
            page = browser.get("/")
            browser.post("/", data={"csrf_token": csrf_of(page.text), "email": "maya@example.com"})
        deadline = time.monotonic() + 10
        while "Email to: maya@example.com" not in "".join(lines) and time.monotonic() < deadline:
            time.sleep(0.1)
        console = "".join(lines)
        assert "│ Email to: maya@example.com" in console and "│ Subject:" in console and "└" in console
        assert '"GET /account' not in console and "GET /account" not in console  # requests are not on the console
        log = (tmp_path / "demo-data" / "requests.log").read_text()
        assert "/account" in log
        # link tokens are secrets: the request log names each by a short hash
        from cancel_flow.logs import token_hash

        token = minted.split("/cancel/")[1]
        assert token not in log and f"/cancel/{token_hash(token)}" in log
    assert not (tmp_path / ".env").exists()  # its settings pointed at what just stopped
