"""Errors with a stable `extensions.code`, and the extension that gives every error one."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

from graphql import ExecutionResult as GraphQLExecutionResult
from graphql import GraphQLError
from pymongo.errors import ConnectionFailure
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionResult
from strawberry.types.execution import StreamExecutionResult

from datadiver_graph.domain.errors import DomainError

log = logging.getLogger(__name__)

UNAUTHENTICATED = "UNAUTHENTICATED"
FORBIDDEN = "FORBIDDEN"
NOT_FOUND = "NOT_FOUND"
BAD_USER_INPUT = "BAD_USER_INPUT"
INTERNAL = "INTERNAL"
TIMEOUT = "TIMEOUT"
SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"
VALIDATION_FAILED = "GRAPHQL_VALIDATION_FAILED"

# Codes whose errors are the client's doing: a response made only of these is a 4xx.
REQUEST_ERROR_CODES = frozenset(
    {
        PARSE_FAILED,
        VALIDATION_FAILED,
        BAD_USER_INPUT,
        "QUERY_TOO_DEEP",
        "TOO_MANY_ALIASES",
        "TOO_MANY_TOKENS",
        "TOO_MANY_DIRECTIVES",
        "INTROSPECTION_DISABLED",
    }
)


class CodedError(GraphQLError):
    def __init__(self, message: str, code: str) -> None:
        super().__init__(message, extensions={"code": code})


def unauthenticated(reason: str = "sign in to do this") -> CodedError:
    return CodedError(reason, UNAUTHENTICATED)


def forbidden(reason: str = "not allowed") -> CodedError:
    return CodedError(reason, FORBIDDEN)


def bad_input(reason: str) -> CodedError:
    return CodedError(reason, BAD_USER_INPUT)


def error_code(error: GraphQLError) -> str | None:
    code = (error.extensions or {}).get("code")
    return code if isinstance(code, str) else None


_SUGGESTION = re.compile(r"\s*Did you mean [^?]*\?")


def without_suggestions(message: str) -> str:
    """graphql-core's "Did you mean ...?" hints map the schema for a prober."""
    return _SUGGESTION.sub("", message)


def request_error_code(error: GraphQLError, *, parsed: bool) -> str:
    """The code of an error graphql-core raised itself (no original exception)."""
    from datadiver_graph.api.schema.limits import limit_code

    limit = limit_code(error.message)
    if limit is not None:
        return limit
    if not parsed:
        return PARSE_FAILED
    return VALIDATION_FAILED if error.path is None else BAD_USER_INPUT


def coded(error: GraphQLError, *, parsed: bool, production: bool) -> GraphQLError:
    """The error as the client sees it: with a code, and an unexpected error's text hidden
    in production.

    Domain errors carry their own code; errors graphql-core raises itself (syntax,
    validation, variable coercion) have no original error; anything else is a bug.
    """
    if error_code(error) is not None:
        return error
    original = error.original_error
    if isinstance(original, GraphQLError):
        code = error_code(original)
        if code is not None:
            return _with(error, original.message, code)
        # graphql-core's own, raised while coercing the client's variables: bad input.
        message = without_suggestions(error.message) if production else error.message
        return _with(error, message, BAD_USER_INPUT)
    if isinstance(original, DomainError):
        return _with(error, original.message, original.code)
    if isinstance(original, ConnectionFailure):
        # Expected during a database outage: the client should retry; no traceback.
        log.warning("database unavailable: %s", original)
        return _with(error, "database unavailable; try again", SERVICE_UNAVAILABLE)
    if original is None:
        message = without_suggestions(error.message) if production else error.message
        return _with(error, message, request_error_code(error, parsed=parsed))
    log.error("unexpected error in GraphQL execution", exc_info=original)
    message = "Internal server error" if production else str(original)
    return _with(error, message, INTERNAL, keep_original=not production)


def _with(
    error: GraphQLError, message: str, code: str, *, keep_original: bool = False
) -> GraphQLError:
    return GraphQLError(
        message=message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error if keep_original else None,
        extensions={**(error.extensions or {}), "code": code},
    )


class ErrorCodes(SchemaExtension):
    """Gives each error of an operation its code (see `coded`).

    Through the public hooks strawberry's MaskErrors uses: the operation's result once it
    has run, and each result a subscription (or any streamed operation) yields.
    """

    def __init__(self, *, production: bool) -> None:
        self.production = production
        self.streamed = False

    def on_operation(self) -> Iterator[None]:
        self.streamed = False
        yield
        if self.streamed:  # each result was coded as it was yielded
            return
        result = self.execution_context.result
        if isinstance(result, GraphQLExecutionResult | ExecutionResult):
            self._code(result)
        elif (initial := getattr(result, "initial_result", None)) is not None:
            self._code(initial)

    def on_stream_result(self, result: StreamExecutionResult) -> Iterator[None]:
        self.streamed = True
        for each in (
            result,
            *(getattr(result, "incremental", None) or ()),
            *(getattr(result, "completed", None) or ()),
        ):
            self._code(each)
        yield None

    def _code(self, result: object) -> None:
        errors = getattr(result, "errors", None)
        if errors:
            parsed = self.execution_context.graphql_document is not None
            result.errors = [  # type: ignore[attr-defined]
                coded(error, parsed=parsed, production=self.production) for error in errors
            ]
