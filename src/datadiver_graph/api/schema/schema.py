"""The executable schema. Built once per process; parse and validation results are cached."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

import strawberry
from graphql import GraphQLError, GraphQLSchema
from strawberry.schema.config import BatchingConfig, StrawberryConfig
from strawberry.types import ExecutionContext, ExecutionResult

from datadiver_graph import fastpaths
from datadiver_graph.api.schema.documents import Prepared, document_extension, document_preparer
from datadiver_graph.api.schema.errors import (
    TIMEOUT,
    CodedError,
    ErrorCodes,
    error_code,
    request_error_code,
)
from datadiver_graph.api.schema.mutations import Mutation
from datadiver_graph.api.schema.observe import OperationObserver
from datadiver_graph.api.schema.queries import Query
from datadiver_graph.api.schema.scalars import SCALAR_MAP
from datadiver_graph.api.schema.subscriptions import Subscription
from datadiver_graph.config import Settings


class Schema(strawberry.Schema):
    # Set per configuration by _build(); queries and mutations only (subscriptions live on).
    request_timeout: float = 10.0
    production: bool = False
    # The cached parse + validate of a query text, shared by strawberry's path (through
    # the PreparedDocuments extension) and the direct one (fastpaths/direct.py).
    prepare: Callable[[str], Prepared]

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        try:
            async with asyncio.timeout(self.request_timeout):
                return await super().execute(*args, **kwargs)
        except TimeoutError:
            return ExecutionResult(
                data=None,
                errors=[self.timed_out()],
            )

    def timed_out(self) -> CodedError:
        """The error of a query or mutation that ran past REQUEST_TIMEOUT (both paths)."""
        return CodedError(f"operation exceeded {self.request_timeout:g} s", TIMEOUT)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # ErrorCodes already logged the unexpected ones with their traceback; the rest
        # (FORBIDDEN, validation, ...) are the client's business, not the operator's.
        # A syntax error returns before any extension sees the result: code it here.
        unparsed = execution_context is None or execution_context.graphql_document is None
        for error in errors:
            if unparsed and error_code(error) is None:
                code = request_error_code(error, parsed=False)
                error.extensions = {**(error.extensions or {}), "code": code}


def build_schema(settings: Settings | None = None) -> Schema:
    """One schema per distinct configuration: building one costs milliseconds, not per request."""
    settings = settings or Settings()
    return _build(
        fast_paths=fastpaths.enabled(settings),
        production=settings.is_production,
        limits=(
            settings.request_timeout,
            settings.max_query_depth,
            settings.max_aliases,
            settings.max_tokens,
            settings.max_directives_per_field,
            settings.max_batch_operations,
        ),
        settings=settings,
    )


_schemas: dict[tuple[bool, bool, tuple[float, ...]], Schema] = {}


def graphql_schema(schema: strawberry.Schema) -> GraphQLSchema:
    """The graphql-core schema strawberry built (it has no public accessor for it)."""
    from datadiver_graph.fastpaths.strawberry_schema import graphql_schema

    return graphql_schema(schema)


def _execution_context_class(fast_paths: bool) -> Any:
    """graphql-core's executor with the fast paths' shortcuts; None: strawberry's own."""
    if not fast_paths:
        return None
    from datadiver_graph.fastpaths.execution import ShortcutExecutionContext

    return ShortcutExecutionContext


def _build(
    *, fast_paths: bool, production: bool, limits: tuple[float, ...], settings: Settings
) -> Schema:
    key = (fast_paths, production, limits)
    if key not in _schemas:
        prepare = document_preparer(settings, lambda: graphql_schema(_schemas[key]))
        _schemas[key] = Schema(
            query=Query,
            mutation=Mutation,
            subscription=Subscription,
            execution_context_class=_execution_context_class(fast_paths),
            config=StrawberryConfig(
                scalar_map=SCALAR_MAP,
                disable_field_suggestions=production,
                batching_config=BatchingConfig(max_operations=settings.max_batch_operations),
            ),
            extensions=[
                # Factories: extensions hold per-operation state, so each operation gets its
                # own instance; the parse/validation LRU caches behind them are per process.
                # First: its hooks unwind last, after ErrorCodes has coded each error.
                OperationObserver,
                document_extension(prepare, settings.max_tokens),
                partial(ErrorCodes, production=production),
            ],
        )
        _schemas[key].request_timeout = settings.request_timeout
        _schemas[key].production = production
        _schemas[key].prepare = prepare
    return _schemas[key]


def schema_sdl() -> str:
    return build_schema(Settings(DATADIVER_ENV="development")).as_str() + "\n"
