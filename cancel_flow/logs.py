"""Structured logs: one JSON object per line, dotted event names, ids as fields.

An exception is logged as its type and where it was raised, never as a traceback (many lines) or
its message (which may quote what a client sent)."""

import json
import logging
import os
import sys
import traceback

from cancel_flow.clock import utc_now

_logger = logging.getLogger("cancel_flow")
_PACKAGE = os.path.dirname(os.path.abspath(__file__))
_PLUMBING = os.path.join(_PACKAGE, "web", "middleware.py")  # every request passes through it: never the place


def _ours(filename: str) -> bool:
    path = os.path.abspath(filename)
    return path.startswith(_PACKAGE + os.sep) and path != _PLUMBING


def where_raised(error: BaseException) -> str:
    """The innermost frame of our own code the error passed through, like 'cancel_flow/web/app.py:12 in readyz'
    (the innermost frame at all when none is ours)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return "unknown"
    ours = [frame for frame in frames if _ours(frame.filename)]
    frame = (ours or frames)[-1]
    if ours:
        name = "cancel_flow/" + os.path.relpath(os.path.abspath(frame.filename), _PACKAGE).replace(os.sep, "/")
    else:
        name = "/".join(frame.filename.replace(os.sep, "/").split("/")[-2:])
    return f"{name}:{frame.lineno} in {frame.name}"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"at": utc_now().isoformat(timespec="milliseconds"), "level": record.levelname.lower()}
        fields = getattr(record, "fields", None)
        if fields:
            line["event"] = record.getMessage()
            line.update(fields)
        else:
            line["event"] = "log"
            line["logger"] = record.name
            line["message"] = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            line["error"] = type(record.exc_info[1]).__name__
            line["where"] = where_raised(record.exc_info[1])
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Our events at `level`; the server's and other libraries' warnings and errors as JSON lines too."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(level)
    _logger.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    # RequestEdge writes one line per request: uvicorn's access log is off, and with no handler to reach it
    # uvicorn doesn't even build its lines (it asks `hasHandlers()` per connection)
    access = logging.getLogger("uvicorn.access")
    access.handlers[:] = []
    access.propagate = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    _logger.log(level, event, extra={"fields": fields})
