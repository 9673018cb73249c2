"""The most common query shape answered without graphql-core's executor.

Frontends call `getCurrentUser { id name email ... }` on every page: one root field whose
resolver reads one record, and a selection of that record's plain fields. graphql-core's
executor spends about 40 µs per such request on machinery the shape never needs (an
executor object, incremental-delivery bookkeeping, a path and a dispatch per field), more
than the rest of the GraphQL layer together. For a document of exactly this shape a plan
is made once, when the document is first seen, and each request then does only:

- coerce the variables and the root field's arguments (graphql-core's own functions, so
  the answers, errors included, are the same),
- call the root field's strawberry resolver (permissions and all) with a real resolve info,
- read and coerce the selected fields into the response in one loop.

A resolver error is located and reported as graphql-core reports it. Anything irregular
after the resolver returned (a null where the schema says non-null, a value that does not
coerce) answers None: the caller then runs the whole operation on graphql-core, which
reports it exactly as before. Only queries are planned, so running the resolver a second
time in that (buggy, rare) case reads twice and changes nothing.

A document qualifies when its operation is a query with one root field (no
introspection), nothing in it carries a directive, and the root field returns an object
type (no interfaces, unions or lists) of which only `__typename` and plain fields (a leaf
type, no arguments, strawberry's default resolver) are selected.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_nullable_type,
    is_non_null_type,
    is_object_type,
    located_error,
)
from graphql.execution.collect_fields import (
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from graphql.pyutils import Path, Undefined
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.execution import optimized_is_awaitable

from datadiver_graph.graphql.execution import leaf_plan, without_directives

# Same as graphql-core's `execute` default.
MAX_COERCION_ERRORS = 50
# Distinct operations planned at most; past it the cache starts again, so clients
# sending ever new documents cannot grow it without bound.
MAX_PLANS = 4096

# (response key, resolver, leaf type, nullable); resolver None: `__typename`, whose
# value is the type's name in the leaf-type slot.
_Entry = tuple[str, Any, Any, bool]


async def _gather(values: Sequence[Awaitable[Any]]) -> list[Any]:
    return list(await asyncio.gather(*values))


_tracked: set[asyncio.Future[Any]] = set()


def _track(values: Sequence[Any]) -> None:
    for value in values:
        if optimized_is_awaitable(value):
            future = asyncio.ensure_future(value)
            _tracked.add(future)  # a task nothing refers to may be collected mid-way
            future.add_done_callback(_tracked.discard)


# Resolvers that use info.async_helpers get working (if simpler) helpers; none of ours do.
_HELPERS = GraphQLResolveInfoHelpers(gather=_gather, track=_track)


@dataclass(frozen=True, slots=True)
class QueryPlan:
    schema: GraphQLSchema
    operation: OperationDefinitionNode
    fragment_definitions: dict[str, FragmentDefinitionNode]
    key: str
    field: GraphQLField
    field_nodes: list[FieldNode]
    root_type: GraphQLObjectType
    object_type: GraphQLObjectType
    non_null: bool
    entries: tuple[_Entry, ...]

    async def run(self, context: Any, variables: dict[str, Any] | None) -> ExecutionResult | None:
        """The result, or None when graphql-core must run the operation instead."""
        operation = self.operation
        if operation.variable_definitions:
            values = get_variable_values(
                self.schema,
                operation.variable_definitions,
                variables or {},
                max_errors=MAX_COERCION_ERRORS,
            )
            if isinstance(values, list):
                return None  # graphql-core reports the coercion errors
        else:
            values = VariableValues({}, {})
        node = self.field_nodes[0]
        try:
            args = (
                get_argument_values(self.field, node, values)
                if self.field.args or node.arguments
                else {}
            )
        except GraphQLError:
            return None
        path = Path(None, self.key, self.root_type.name)
        info = GraphQLResolveInfo(
            node.name.value,
            self.field_nodes,
            self.field.type,
            self.root_type,
            path,
            self.schema,
            self.fragment_definitions,
            None,
            operation,
            values,
            context,
            cast(Any, optimized_is_awaitable),
            None,
            _HELPERS,
        )
        try:
            source = self.field.resolve(None, info, **args)  # type: ignore[misc]
            if optimized_is_awaitable(source):
                source = await source
        except Exception as exc:
            error = located_error(exc, self.field_nodes, [self.key])
            return ExecutionResult(None if self.non_null else {self.key: None}, [error])
        if source is None:
            return None if self.non_null else ExecutionResult({self.key: None}, None)
        completed = self._complete(source)
        return None if completed is None else ExecutionResult({self.key: completed}, None)

    def _complete(self, source: Any) -> dict[str, Any] | None:
        completed: dict[str, Any] = {}
        for key, resolve, leaf, nullable in self.entries:
            if resolve is None:
                completed[key] = leaf
                continue
            try:
                value = resolve(source, None)
                if value is None:
                    if not nullable:
                        return None
                    completed[key] = None
                    continue
                coerced = leaf.coerce_output_value(value)
            except Exception:
                return None
            if coerced is None or coerced is Undefined:
                return None
            completed[key] = coerced
        return completed


_plans: dict[int, tuple[OperationDefinitionNode, QueryPlan | None]] = {}


def plan_for(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> QueryPlan | None:
    """The plan of this (cached) document's operation; None when it does not qualify."""
    cached = _plans.get(id(operation))
    if cached is not None and cached[0] is operation:
        return cached[1]
    plan = _make_plan(schema, document, operation)
    if len(_plans) >= MAX_PLANS:
        _plans.clear()
    # The value keeps the operation alive, so its id in the key cannot be reused.
    _plans[id(operation)] = (operation, plan)
    return plan


def _make_plan(
    schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode
) -> QueryPlan | None:
    if operation.operation != OperationType.QUERY or operation.directives:
        return None
    root_type = schema.query_type
    definitions = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    if root_type is None or any(d.variable_definitions for d in definitions.values()):
        return None
    if not without_directives(operation.selection_set, definitions, set()):
        return None
    fragments = {name: FragmentDetails(d) for name, d in definitions.items()}
    # Without directives, collecting fields reads no variable.
    no_values = VariableValues({}, {})
    root = collect_fields(schema, fragments, no_values, root_type, operation)
    if root.new_defer_usages or len(root.grouped_field_set) != 1:
        return None
    ((key, details),) = root.grouped_field_set.items()
    name = details[0].node.name.value
    field = root_type.fields.get(name)
    if field is None or field.resolve is None:
        return None  # introspection (__typename, __schema, __type)
    object_type = get_nullable_type(field.type)
    if not is_object_type(object_type) or object_type.is_type_of is not None:
        return None
    sub = collect_subfields(schema, fragments, no_values, operation, object_type, details)
    if sub.new_defer_usages:
        return None
    entries: list[_Entry] = []
    for sub_key, sub_details in sub.grouped_field_set.items():
        sub_node = sub_details[0].node
        if sub_node.name.value == "__typename":
            entries.append((sub_key, None, object_type.name, False))
            continue
        plan = leaf_plan(object_type, sub_node.name.value)
        if plan is None or any(d.node.arguments for d in sub_details):
            return None
        resolve, leaf, nullable = plan
        entries.append((sub_key, resolve, leaf, nullable))
    return QueryPlan(
        schema=schema,
        operation=operation,
        fragment_definitions=definitions,
        key=key,
        field=field,
        field_nodes=[d.node for d in details],
        root_type=root_type,
        object_type=object_type,
        non_null=is_non_null_type(field.type),
        entries=tuple(entries),
    )
