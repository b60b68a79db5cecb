"""Logging: one JSON object per line for every logger, the servers' and libraries' included.

    {"time": "2026-11-22T15:20:00.123Z", "level": "info", "logger": "gateway", "message": "…",
     "request_id": "…", …}

`request_id` is there for lines written while a request is being served. A line may carry
fields of its own (`extra={"fields": {...}}`), as the access log does.

Library loggers are capped: at DEBUG, botocore writes the canonical request, the string to
sign and the session token, urllib3 and aiohttp write request lines and headers. Whatever the
gateway's own `log_level`, these libraries may only log warnings and errors."""

from __future__ import annotations

import contextvars
import logging
import sys
import time
from typing import Any, TextIO

import orjson

QUIET_LIBRARIES = (
    "botocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "aiohttp",
    "httpx",
    "httpcore",
    "hpack",
    "redis",
    "asyncio",
)

# The request being served in this task, for every line logged while serving it.
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


def cap_library_loggers(level: int = logging.WARNING) -> None:
    for name in QUIET_LIBRARIES:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < level or logger.level == logging.NOTSET:
            logger.setLevel(level)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        line: dict[str, Any] = {
            "time": f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{millis:03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        fields = record.__dict__.get("fields")
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


def setup_logging(level: str, stream: TextIO | None = None) -> None:
    """Every logger, through one JSON handler on the root logger. Servers' own loggers
    (uvicorn's) lose their handlers and propagate to it."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
    # The gateway writes its own access log (`gateway.access`), with request ids and no query text.
    logging.getLogger("uvicorn.access").disabled = True
    logging.captureWarnings(True)
    cap_library_loggers()
