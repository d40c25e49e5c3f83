"""Structured logs: one JSON object per line, dotted event names, ids as fields."""

import json
import logging
import sys

from cancel_flow.clock import utc_now

_logger = logging.getLogger("cancel_flow")


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"at": utc_now().isoformat(timespec="milliseconds"), "level": record.levelname.lower()}
        fields = getattr(record, "fields", None)
        if fields:
            line["event"] = record.getMessage()
            line.update(fields)
        else:
            line["event"] = "log"
            line["message"] = record.getMessage()
        if record.exc_info:
            line["error"] = repr(record.exc_info[1])
        return json.dumps(line, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    _logger.handlers[:] = [handler]
    _logger.setLevel(level)
    _logger.propagate = False


def log_event(event: str, level: int = logging.INFO, **fields) -> None:
    _logger.log(level, event, extra={"fields": fields})
