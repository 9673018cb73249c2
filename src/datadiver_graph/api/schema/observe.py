"""A schema extension that logs and counts every GraphQL operation.

One line per query or mutation when it finishes: operation name and type, the caller's user
id (never a credential), duration and outcome with the error codes. A subscription logs
when it starts and when it ends (with its lifetime and why it ended), and is counted in the
active-subscriptions gauge meanwhile.

It must come first in the schema's extension list: hooks unwind in reverse order, so this
one sees each error after ErrorCodes has given it its code.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.execution import StreamExecutionResult

from datadiver_graph.api.schema.errors import INTERNAL, error_code, request_error_code
from datadiver_graph.observability.metrics import MAX_LABEL_LENGTH, Metrics

log = logging.getLogger("datadiver_graph.graphql.operations")

MAX_LOGGED_NAME = 128


def metrics_of(context: Any) -> Metrics | None:
    request = getattr(context, "request", None)
    app = getattr(request, "app", None) if request is not None else None
    state = getattr(app, "state", None)
    metrics = getattr(state, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


def caller_fields(context: Any) -> dict[str, Any]:
    identity = getattr(context, "identity", None)
    fields: dict[str, Any] = {
        "user_id": getattr(identity, "user_id", None),
        "service": bool(getattr(identity, "is_service", False)),
    }
    auth_error = getattr(context, "auth_error", None)
    if auth_error:
        fields["auth_error"] = auth_error  # why a token was refused, never the token
    return fields


def error_codes(errors: list[GraphQLError] | None) -> list[str]:
    return [error_code(error) or INTERNAL for error in errors or ()]


class OperationObserver(SchemaExtension):
    def __init__(self) -> None:
        self._codes: list[str] = []
        self._subscription_started: float | None = None

    # -- what we know about the operation ----------------------------------------------------

    def _name(self) -> str | None:
        try:
            name = self.execution_context.operation_name
        except Exception:  # no document, or a name the document does not define
            name = None
        return name[:MAX_LOGGED_NAME] if name else None

    def _type(self) -> str:
        try:
            return self.execution_context.operation_type.value
        except Exception:  # not parsed (a syntax error), or an unknown operation name
            return "unknown"

    def _caller(self) -> dict[str, Any]:
        return caller_fields(self.execution_context.context)

    # -- hooks -------------------------------------------------------------------------------

    def on_execute(self) -> Iterator[None]:
        yield
        # For a subscription, execution is its start: the source stream now exists.
        if self._type() == "subscription" and self._subscription_started is None:
            self._subscription_started = time.perf_counter()
            context = self.execution_context.context
            record_subscription_start(metrics_of(context), self._name(), caller_fields(context))

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        yield
        # After the hooks that follow ours (ErrorCodes) have coded the errors.
        self._codes.extend(error_codes(getattr(result, "errors", None)))

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        reason = "completed"
        try:
            yield
        except (GeneratorExit, asyncio.CancelledError):
            reason = "cancelled"  # the client unsubscribed or went away
            raise
        except GraphQLError as error:
            # Raised out of parsing or validation; strawberry turns it into the response's
            # error after this hook has unwound, so code it the way the schema will.
            reason = "error"
            parsed = self.execution_context.graphql_document is not None
            self._codes.append(error_code(error) or request_error_code(error, parsed=parsed))
            raise
        except BaseException:
            reason = "error"
            self._codes.append(INTERNAL)
            raise
        finally:
            self._finish(started, reason)

    def _finish(self, started: float, reason: str) -> None:
        elapsed = time.perf_counter() - started
        context = self.execution_context
        result = context.result
        if not self._codes:
            errors = getattr(result, "errors", None) or context.pre_execution_errors
            self._codes = error_codes(errors)
        metrics = metrics_of(context.context)
        subscription = self._subscription_started is not None
        if subscription and metrics is not None:
            metrics.active_subscriptions.dec()
        record_operation(
            metrics,
            name=self._name(),
            kind=self._type(),
            caller=self._caller(),
            codes=self._codes,
            elapsed=elapsed,
            subscription_end=reason if subscription else None,
        )


def record_subscription_start(
    metrics: Metrics | None, name: str | None, caller: dict[str, Any]
) -> None:
    """Count a subscription as active and log its start (`record_operation` logs its end)."""
    if metrics is not None:
        metrics.active_subscriptions.inc()
    log.info(
        "subscription %s started",
        name or "(anonymous)",
        extra={
            "event": "subscription_start",
            "operation": name,
            "operation_type": "subscription",
            **caller,
        },
    )


def record_operation(
    metrics: Metrics | None,
    *,
    name: str | None,
    kind: str,
    caller: dict[str, Any],
    codes: list[str],
    elapsed: float,
    subscription_end: str | None = None,
) -> None:
    """Count a finished operation and log its one line (a subscription's: why it ended)."""
    name = name[:MAX_LOGGED_NAME] if name else None
    distinct = sorted(set(codes))
    if metrics is not None:
        label = metrics.operation_name(name[: MAX_LABEL_LENGTH + 1] if name else None)
        seconds = None if subscription_end is not None else elapsed
        metrics.observe_operation(label, kind, codes, seconds)
    if not log.isEnabledFor(logging.INFO):
        return  # production may log at WARNING: then skip building the line's fields
    fields: dict[str, Any] = {
        "operation": name,
        "operation_type": kind,
        **caller,
        "duration_ms": round(elapsed * 1000, 2),
        "outcome": "error" if distinct else "ok",
        "error_codes": distinct,
    }
    if subscription_end is not None:
        log.info(
            "subscription %s ended (%s)",
            name or "(anonymous)",
            subscription_end,
            extra={"event": "subscription_end", **fields, "reason": subscription_end},
        )
    else:
        log.info(
            "%s %s %s",
            kind,
            name or "(anonymous)",
            fields["outcome"],
            extra={"event": "graphql_operation", **fields},
        )
