"""8: outgoing deliveries with two hanging receivers. `serve` (one worker, its own dispatcher) has three webhook
endpoints: two that take the request and never answer (each delivery to them waits out the 10-second timeout)
and one that answers at once; the coach's Slack alerts go to the healthy receiver too. Events are written at
5 a second (quick: 10 s, else 30 s), as the flow writes them, each for all three endpoints and Slack.

Reported per database: the p99 of the healthy deliveries' delay from the event's write to its arrival (goal
<= 2 s: the hanging endpoints hold up only their own deliveries), and the healthy deliveries that never came."""

import http.server
import json
import re
import socket
import threading
import time

from bench.harness import Bench, drop_database, figure, migrated_database, serve

RATE = 5  # events a second
WHO = re.compile(r"Bench client (\d+) ")


class Healthy:
    """Answers 200 at once; notes when each webhook (by its webhook-id) and each Slack message (by client) came."""

    def __init__(self):
        self.arrived: dict[str, float] = {}
        healthy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                now = time.time()
                if self.path == "/slack":
                    match = WHO.search(json.loads(body)["text"])
                    healthy.arrived.setdefault(f"slack:{match.group(1) if match else '?'}", now)
                else:
                    healthy.arrived.setdefault(f"hook:{self.headers.get('webhook-id')}", now)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Hanging:
    """Takes every connection and the request, and never answers."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.held.append(connection)

    def stop(self):
        self.listener.close()
        for connection in self.held:
            connection.close()


def write_events(database: str, seconds: int, slack_url: str) -> dict[str, float]:
    """Events at RATE a second, each as the flow writes it; {delivery key: when its event was written}."""
    from cancel_flow.config.schema import Alerts
    from cancel_flow.hooks import sample_data
    from cancel_flow.outbox import emit
    from cancel_flow.store import make_engine

    engine = make_engine(database)
    alerts = Alerts(slack_webhook_url=slack_url, events=("session.canceled",))
    written = {}
    start = time.monotonic()
    try:
        for n in range(seconds * RATE):
            time.sleep(max(0.0, start + n / RATE - time.monotonic()))
            data = sample_data("session.canceled")
            data["customer"] = {**data["customer"], "name": f"Bench client {n}"}
            with engine.begin() as connection:
                event_id = emit(connection, "session.canceled", data, alerts)
            now = time.time()
            written[f"hook:{event_id}"] = written[f"slack:{n}"] = now
    finally:
        engine.dispose()
    return written


def deliveries(kind: str, bench: Bench) -> None:
    from cancel_flow.outbox.endpoints import add_endpoint
    from cancel_flow.store import make_engine

    database = migrated_database(kind, bench.workdir)
    healthy, hanging = Healthy(), [Hanging(), Hanging()]
    engine = make_engine(database)
    for receiver in (*hanging, healthy):
        add_endpoint(engine, receiver.url, [], source="cli", allow_private=True)
    engine.dispose()
    app, _ = serve(database, bench.emulator_url, env={"CANCEL_FLOW_ALLOW_PRIVATE_URLS": "1"})
    try:
        written = write_events(database, 10 if bench.quick else 30, f"{healthy.url}/slack")
        deadline = time.monotonic() + 15
        while len(healthy.arrived) < len(written) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        app.stop()
        healthy.stop()
        for receiver in hanging:
            receiver.stop()
        drop_database(database)
    missing = [key for key in written if key not in healthy.arrived]
    delays = sorted(healthy.arrived[key] - written[key] for key in written if key in healthy.arrived) or [float("inf")]
    p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
    figure(f"8. healthy delivery p99, 2 hanging endpoints, {kind}", p99, "<= 2 s", p99 <= 2 and not missing, "s")
    figure(f"8. healthy deliveries lost, 2 hanging endpoints, {kind}", len(missing), "0", not missing, "")


def run(bench: Bench) -> None:
    for kind in bench.databases:
        deliveries(kind, bench)
