"""Operation log lines for the live feed and `logs`, tapped from the operations logger.

Each finished query, mutation or subscription already logs one line
(`api/schema/observe.py`); this handler hands the same fields, and nothing else, to the feed
streams open in this process. Only this process's operations: sending them through the
fan-out would cost every request one more message whether anyone watches or not, so a
stream served by one worker shows that worker's operations (changes come from everywhere).
It does nothing while no stream asks for operations, and sees nothing when LOG_LEVEL is
above INFO (then the lines are not made at all).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from datadiver_graph.domain.events import PROCESS, Event
from datadiver_graph.fanout import Subscription
from datadiver_graph.observability.logs import request_id_var

OPERATIONS_LOGGER = "datadiver_graph.graphql.operations"
_EVENTS = frozenset({"graphql_operation", "subscription_end"})


class OperationTap(logging.Handler):
    """Offers each operation line to the subscriptions in `watchers` (their bounded
    queues: a watcher that falls behind is cut off like any other subscriber)."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.watchers: set[Subscription] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if not self.watchers or getattr(record, "event", None) not in _EVENTS:
            return
        line = operation_line(record)
        for watcher in list(self.watchers):
            watcher.offer(Event(line["type"], line))


def operation_line(record: logging.LogRecord) -> dict[str, Any]:
    """The fields a watcher sees: the log line's own (never a credential)."""
    fields = record.__dict__
    return {
        "type": f"operation.{fields.get('operation_type')}",
        "operation": fields.get("operation"),
        "userId": fields.get("user_id"),
        "service": fields.get("service", False),
        "durationMs": fields.get("duration_ms"),
        "outcome": fields.get("outcome"),
        "errorCodes": fields.get("error_codes") or [],
        "reason": fields.get("reason"),
        "time": int(record.created * 1000) if record.created else int(time.time() * 1000),
        "process": PROCESS,
        "requestId": request_id_var.get(),
    }


_tap: OperationTap | None = None


def tap() -> OperationTap:
    """This process's tap, attached to the operations logger the first time."""
    global _tap
    if _tap is None:
        _tap = OperationTap()
        logging.getLogger(OPERATIONS_LOGGER).addHandler(_tap)
    return _tap
