"""Queries and mutations run straight on graphql-core, for the common case over HTTP.

Strawberry's `Schema.execute` builds an execution context, an extensions runner, a
middleware manager and one instance of every extension for each operation, and its HTTP
view adds layers of its own: more than the whole budget of the GraphQL layer
(bench/RESULTS.md). The common
request is one query or mutation whose text this process has already parsed and
validated; for it this module does only what that needs: the cached document, graphql-core's
`execute` with the same strawberry resolvers and permission classes (or, for the shapes
query_plans.py knows, its plan), the timeout, error codes, and the operation's log line and
metrics (the same as the extensions do).

`prepare_operation` answers None for anything else (a syntax or validation error, a
subscription, an unknown operation name): strawberry's own path then answers it exactly
as before.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
)
from strawberry.execution import optimized_is_awaitable

from datadiver_graph.api.schema.context import Context
from datadiver_graph.api.schema.errors import coded
from datadiver_graph.api.schema.observe import (
    caller_fields,
    error_codes,
    metrics_of,
    record_operation,
)
from datadiver_graph.api.schema.schema import Schema
from datadiver_graph.fastpaths.internals import Internal
from datadiver_graph.fastpaths.query_plans import QueryPlan, plan_for
from datadiver_graph.fastpaths.strawberry_schema import graphql_schema

INTERNALS = (
    # graphql-core's execute, given strawberry's executor class and its extra argument.
    Internal(
        "graphql-core",
        "graphql.execution.execute",
        "execute",
        "direct.py",
        parameters=("schema", "document", "root_value", "context_value", "variable_values"),
    ),
    Internal(
        "strawberry-graphql",
        "strawberry.schema.schema:Schema",
        "execution_context_class",
        "direct.py",
        instance=True,
    ),
    Internal("strawberry-graphql", "strawberry.execution", "optimized_is_awaitable", "direct.py"),
)


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    document: DocumentNode
    operation: OperationDefinitionNode
    # What the client asked for (graphql-core picks the operation by it).
    requested_name: str | None
    # Set when the operation has the shape query_plans.py answers on its own.
    plan: QueryPlan | None = None

    @property
    def name(self) -> str | None:
        return self.requested_name or (self.operation.name.value if self.operation.name else None)

    @property
    def kind(self) -> str:
        return self.operation.operation.value


def prepare_operation(
    schema: Schema, query: str, operation_name: str | None
) -> PreparedOperation | None:
    """The parsed, valid query or mutation, or None when strawberry must answer instead."""
    try:
        document, errors = schema.prepare(query)
    except GraphQLError:
        return None  # a syntax error, or too many tokens
    if errors:
        return None
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation == OperationType.SUBSCRIPTION:
        return None
    plan = plan_for(graphql_schema(schema), document, operation)
    return PreparedOperation(document, operation, operation_name, plan)


async def execute_prepared(
    schema: Schema,
    prepared: PreparedOperation,
    variables: dict[str, Any] | None,
    context: Context,
) -> ExecutionResult:
    started = time.perf_counter()
    try:
        async with asyncio.timeout(schema.request_timeout):
            planned = await prepared.plan.run(context, variables) if prepared.plan else None
            result = (
                planned
                if planned is not None
                else execute(
                    graphql_schema(schema),
                    prepared.document,
                    context_value=context,
                    variable_values=variables,
                    operation_name=prepared.requested_name,
                    is_awaitable=cast(Any, optimized_is_awaitable),
                    executor_class=schema.execution_context_class,
                    operation_extensions=None,
                )
            )
            if not isinstance(result, ExecutionResult):
                result = await result
    except TimeoutError:
        result = ExecutionResult(None, [schema.timed_out()])
    except Exception as exc:
        # graphql-core turns resolver errors into result errors; this is anything else.
        result = ExecutionResult(None, [GraphQLError(str(exc), original_error=exc)])
    errors = [coded(e, parsed=True, production=schema.production) for e in result.errors or ()]
    record_operation(
        metrics_of(context),
        name=prepared.name,
        kind=prepared.kind,
        caller=caller_fields(context),
        codes=error_codes(errors) if errors else [],
        elapsed=time.perf_counter() - started,
    )
    return ExecutionResult(result.data, errors or None)
