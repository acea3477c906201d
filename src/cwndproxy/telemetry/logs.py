"""Log output: the human and JSON formats (every line of a run in one of them), and the
access log (one line per client request, off unless server.access_log is set)."""

from __future__ import annotations

import datetime
import json
import logging
import logging.handlers
import sys
from typing import Any

HUMAN_LOG_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"
HUMAN_TIME_FORMAT = "%H:%M:%S"
ACCESS_LOGGER = "cwndproxy.access"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, and the record's
    ``fields`` (structured data, e.g. the periodic status) merged in."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


def setup_logging(verbose: bool, fmt: str = "human") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(HUMAN_LOG_FORMAT, HUMAN_TIME_FORMAT))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # h2 and granian are chatty at debug level; keep our own messages readable.
    for name in ("hpack", "h2", "granian", "_granian"):
        logging.getLogger(name).setLevel(logging.WARNING)


def access_logger(target: str | None, fmt: str) -> logging.Logger | None:
    """The access log: "-" is standard output, anything else a file, appended to and
    reopened when logrotate moves it (WatchedFileHandler), as nginx operators expect."""
    if not target:
        return None
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.propagate = False  # never mixed into the operational log
    logger.setLevel(logging.INFO)
    handler: logging.Handler = (
        logging.StreamHandler(sys.stdout)
        if target == "-"
        else logging.handlers.WatchedFileHandler(target)
    )
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%S%z"))
    for old in logger.handlers:
        old.close()
    logger.handlers = [handler]
    return logger
