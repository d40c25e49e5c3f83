"""Structured logs: one JSON object per line, dotted event names, ids as fields.

An exception is logged as its type and where it was raised, never as a traceback (many lines) or
its message (which may quote what a client sent)."""

import hashlib
import json
import logging
import os
import re
import sys
import traceback
from json.encoder import c_make_encoder, encode_basestring_ascii

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


_ENCODER = json.JSONEncoder(default=str)


def _JSON_LINE(line: dict) -> str:
    """`json.dumps(line, default=str)`: with the C encoder when there is one, made straight from its settings (the
    encoder's own `encode` makes it anew, with a fallback function, for every line)."""
    if c_make_encoder is None:
        return _ENCODER.encode(line)
    return "".join(c_make_encoder({}, str, encode_basestring_ascii, None, ": ", ", ", False, False, True)(line, 0))


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
        return _JSON_LINE(line)


# The pages whose address carries a link's token (a secret: whoever has it acts for the client).
_TOKEN_IN_PATH = re.compile(r"(/(?:cancel|billing|keep|comeback|emails/unsubscribe)/)([A-Za-z0-9._~%+=-]{8,})")


def token_hash(token: str) -> str:
    """A short, stable name for a link's token in logs: the same link shows the same name, and the
    token can't be recovered from it."""
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:10]


def without_tokens(text: str) -> str:
    """`text` with each link token in a page address replaced by its short hash."""
    return _TOKEN_IN_PATH.sub(lambda found: found.group(1) + token_hash(found.group(2)), text)


class TokenRedactor(logging.Filter):
    """Rewrites log lines that quote a request's address (a server's access log) without the link tokens."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = without_tokens(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Our events at `level`; the server's and other libraries' warnings and errors as JSON lines too."""
    global _lines
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    _lines = handler
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
    # What the JSON lines don't show, the records don't gather: the calling frame, thread and process
    # (https://docs.python.org/3/howto/logging.html#optimization); one line is written per request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.WARNING))


# The handler `configure_logging` made: while it is our logger's only one, with no filter on either, an event is
# written to it directly, the same JSON line its formatter writes, without a LogRecord built and passed through
# logging's layers for it (one line per request).
_lines: logging.StreamHandler | None = None
_LEVEL_NAMES = {level: logging.getLevelName(level).lower() for level in range(0, 60)}


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    handler, handlers = _lines, _logger.handlers
    if (handler is None or not fields or len(handlers) != 1 or handlers[0] is not handler or _logger.filters
            or handler.filters or not _logger.isEnabledFor(level)):
        _logger.log(level, event, extra={"fields": fields})
        return
    line = {"at": utc_now().isoformat(timespec="milliseconds"), "level": _LEVEL_NAMES.get(level, "level %s" % level),
            "event": event}
    line.update(fields)
    text = _JSON_LINE(line) + handler.terminator
    with handler.lock:
        try:
            handler.stream.write(text)
            handler.stream.flush()
        except Exception:  # as logging does: a line that can't be written stops nothing
            pass
