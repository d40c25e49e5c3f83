"""The JSON lines the service writes: an event written straight to the handler reads as the line logging's own
path writes for it (run in a child process: configuring the logs changes the process's loggers)."""

import json
import subprocess
import sys

SCRIPT = r'''
import io, json, logging
from cancel_flow import logs
logs.configure_logging()
handler = logs._lines
handler.stream = io.StringIO()
fields = {"request_id": "r1", "route": "/cancel/{token}", "status": 200, "duration_ms": 1.25, "client": "é✓",
          "when": __import__("datetime").datetime(2027, 1, 2), "nothing": None, "ratio": float("nan")}
logs.log_event("http.request", **fields)
logs.log_event("stripe.busy", level=logging.WARNING, reason="budget")
logs.log_event("quiet.debug", level=logging.DEBUG, hidden=True)  # below the level: not written either way
logs._lines = None  # the same events through logging's own path
logs.log_event("http.request", **fields)
logs.log_event("stripe.busy", level=logging.WARNING, reason="budget")
logs.log_event("quiet.debug", level=logging.DEBUG, hidden=True)
print(json.dumps(handler.stream.getvalue().splitlines()))
'''


def test_an_event_written_straight_reads_as_through_logging():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lines = json.loads(done.stdout)
    assert len(lines) == 4
    direct, through = lines[:2], lines[2:]
    without_time = [{k: v for k, v in json.loads(line).items() if k != "at"} for line in lines]
    assert without_time[:2] == without_time[2:]
    assert [line.split(", ", 1)[1] for line in direct] == [line.split(", ", 1)[1] for line in through]
    assert without_time[0]["event"] == "http.request" and without_time[0]["level"] == "info"
    assert without_time[1] == {"level": "warning", "event": "stripe.busy", "reason": "budget"}
