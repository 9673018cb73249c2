"""Logging: JSON lines in production, readable text in development, a request id on each line.

`configure_logging(settings)` installs one handler on the root logger (stderr). Everything
logs through it, uvicorn included: `serve` turns uvicorn's own access log off and passes no
log config, so its start-up and error lines propagate here too.

Structured fields travel as `extra=` on the standard logging calls; the JSON formatter
(python-json-logger) writes each as a key, the text formatter appends them as `key=value`.
The request id lives in a context variable set by the request middleware: every line logged
while serving a request (or a WebSocket connection, or a task it started) carries it.
"""

from __future__ import annotations

import logging
import os
import sys
from contextvars import ContextVar
from typing import IO, Any, Literal

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from datadiver_graph.config import Settings

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128

request_id_var: ContextVar[str | None] = ContextVar("datadiver_request_id", default=None)

# A handler installed by configure_logging carries this attribute, so a second call (a worker
# process building its app, a test) replaces it instead of doubling every line.
_OURS = "_datadiver_handler"
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# uvicorn adds `color_message` (its message with ANSI colours) to its records: not for us.
_DROPPED = ("request_id", "taskName", "color_message")
_STANDARD_ATTRS = frozenset(RESERVED_ATTRS) | {"message", "asctime", *_DROPPED}


def valid_request_id(value: str | None) -> str | None:
    """The client's X-Request-ID when it is safe to log and echo: 1-128 printable ASCII."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > MAX_REQUEST_ID_LENGTH:
        return None
    if not (value.isascii() and value.isprintable()):
        return None
    return value


def new_request_id() -> str:
    # 32 random hex digits, as uuid4().hex gave, without its cost (one per request).
    return os.urandom(16).hex()


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (None outside a request) to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, request_id, then the extras."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message"],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # Everything the standard LogRecord carries is noise in a log pipeline; keep the
            # extras only (request_id is added back explicitly in add_fields).
            reserved_attrs=[*RESERVED_ATTRS, *_DROPPED],
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        super().add_fields(log_data, record, message_dict)
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            log_data["request_id"] = request_id


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...` for a terminal."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{key}={_text_value(value)}"
            for key, value in record.__dict__.items()
            if key not in _STANDARD_ATTRS and not key.startswith("_") and value is not None
        ]
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            extras.append(f"request_id={request_id}")
        if not extras:
            return line
        # Keep a traceback (if any) below the fields, where a reader expects it.
        first, newline, rest = line.partition("\n")
        return f"{first} {' '.join(extras)}{newline}{rest}"


def _text_value(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) or "-"
    text = str(value)
    return repr(text) if (" " in text or not text) else text


def make_handler(fmt: Literal["json", "text"], stream: IO[str] | None = None) -> logging.Handler:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonLineFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RequestIdFilter())
    setattr(handler, _OURS, True)
    return handler


def configure_logging(settings: Settings, *, level: str | None = None) -> None:
    """Send every logger's records to stderr in the configured format (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, _OURS, False):
            root.removeHandler(handler)
    root.addHandler(make_handler(settings.effective_log_format))
    root.setLevel(level or settings.log_level)
    # Python warnings, too, become log lines (so a JSON log stays JSON).
    logging.captureWarnings(True)
    # Their own access lines would duplicate ours (see middleware.py).
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    for name in ("uvicorn", "uvicorn.error"):
        # uvicorn's default config gives these handlers of their own; ours is the root's.
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
