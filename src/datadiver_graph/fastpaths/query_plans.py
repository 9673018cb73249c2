"""The most common query shapes answered without graphql-core's executor.

Frontends call `getCurrentUser { id name email ... }` on every page: one root field whose
resolver reads one record, and a selection of that record's plain fields. graphql-core's
executor spends more on machinery the shape never needs (an executor object,
incremental-delivery bookkeeping, a path and a dispatch per field) than the rest of the
GraphQL layer together (bench/RESULTS.md). For a document of this shape a plan is made
once, when the document is first seen, and each request then does only:

- coerce the variables and the root field's arguments (graphql-core's own functions, so
  the answers, errors included, are the same),
- call the root field's strawberry resolver (permissions and all) with a real resolve info,
- read and coerce the selected fields into the response in one pass over the plan.

A resolver error is located and reported as graphql-core reports it. Anything irregular
after the resolver returned (a null where the schema says non-null, a value that does not
coerce, a list that is not a list) answers None: the caller then runs the whole operation
on graphql-core, which reports it exactly as before. Only queries are planned, so running
the resolver a second time in that (buggy, rare) case reads twice and changes nothing.

A document qualifies when its operation is a query with one root field (no
introspection), nothing in it carries a directive, and below the root field every selected
field is plain: no arguments, strawberry's default resolver (an attribute of the value),
and a leaf, object or list type (no interfaces or unions, no lists of lists). That covers
`getCurrentUser`, `getSession`, `getLatestPayment` and the connections of
`getUserSessions` and `getPaymentAttempts`; a field with a resolver of its own (`User.plan`)
leaves the whole document to graphql-core.
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
    GraphQLList,
    GraphQLObjectType,
    GraphQLResolveInfo,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
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

from datadiver_graph.fastpaths.execution import is_default_resolver, without_directives
from datadiver_graph.fastpaths.internals import Internal

_RESOLVE_INFO_FIELDS = (
    "field_name",
    "field_nodes",
    "return_type",
    "parent_type",
    "path",
    "schema",
    "fragments",
    "root_value",
    "operation",
    "variable_values",
    "context",
    "is_awaitable",
    "abort_signal",
    "async_helpers",
)
_COLLECT = "graphql.execution.collect_fields"
_VALUES = "graphql.execution.values"
INTERNALS = (
    Internal(
        "graphql-core",
        "graphql:GraphQLResolveInfo",
        "",
        "query_plans.py",
        fields=_RESOLVE_INFO_FIELDS,
    ),
    Internal(
        "graphql-core",
        "graphql.type.definition:GraphQLResolveInfoHelpers",
        "",
        "query_plans.py",
        fields=("gather", "track"),
    ),
    Internal(
        "graphql-core",
        _COLLECT,
        "collect_fields",
        "query_plans.py",
        parameters=("schema", "fragments", "variable_values", "runtime_type", "operation"),
    ),
    Internal(
        "graphql-core",
        _COLLECT,
        "collect_subfields",
        "query_plans.py",
        parameters=(
            "schema",
            "fragments",
            "variable_values",
            "operation",
            "return_type",
            "field_details_list",
        ),
    ),
    Internal(
        "graphql-core",
        f"{_COLLECT}:FragmentDetails",
        "",
        "query_plans.py",
        fields=("definition",),
    ),
    Internal(
        "graphql-core",
        f"{_VALUES}:VariableValues",
        "",
        "query_plans.py",
        fields=("sources", "coerced"),
    ),
    Internal(
        "graphql-core",
        _VALUES,
        "get_argument_values",
        "query_plans.py",
        parameters=("type_def", "node", "variable_values"),
    ),
    Internal(
        "graphql-core",
        _VALUES,
        "get_variable_values",
        "query_plans.py",
        parameters=("schema", "var_def_nodes", "inputs", "max_errors"),
    ),
    Internal(
        "strawberry-graphql", "strawberry.execution", "optimized_is_awaitable", "query_plans.py"
    ),
)

# Same as graphql-core's `execute` default.
MAX_COERCION_ERRORS = 50
# Distinct operations planned at most; past it the cache starts again, so clients
# sending ever new documents cannot grow it without bound.
MAX_PLANS = 4096
# The variables of an operation that declares none; also what collecting the fields of a
# document without directives reads (nothing). graphql-core never changes them.
_NO_VALUES = VariableValues({}, {})


class _Field:
    """One selected field below the root: how to read it and how to complete its value."""

    __slots__ = ("fields", "is_list", "item_nullable", "key", "leaf", "nullable", "resolve")

    def __init__(
        self,
        key: str,
        resolve: Any,
        *,
        nullable: bool,
        leaf: Any = None,
        fields: tuple[_Field, ...] | None = None,
        is_list: bool = False,
        item_nullable: bool = False,
    ) -> None:
        self.key = key
        # Strawberry's default resolver; None for `__typename`, whose value is in `leaf`.
        self.resolve = resolve
        self.nullable = nullable
        self.leaf = leaf  # the leaf type (coerces the value), when not an object
        self.fields = fields  # the object's selected fields, when an object
        self.is_list = is_list
        self.item_nullable = item_nullable


def _complete_object(source: Any, fields: tuple[_Field, ...]) -> dict[str, Any] | None:
    """The response object for `source`; None when anything is irregular."""
    completed: dict[str, Any] = {}
    for field in fields:
        if field.resolve is None:
            completed[field.key] = field.leaf
            continue
        try:
            value = field.resolve(source, None)
        except Exception:
            return None
        if value is None:
            if not field.nullable:
                return None
            completed[field.key] = None
            continue
        if field.is_list:
            if not isinstance(value, list | tuple):
                return None
            items: list[Any] = []
            for item in value:
                if item is None:
                    if not field.item_nullable:
                        return None
                    items.append(None)
                    continue
                done = _complete_item(item, field)
                if done is None:
                    return None
                items.append(done)
            completed[field.key] = items
            continue
        done = _complete_item(value, field)
        if done is None:
            return None
        completed[field.key] = done
    return completed


def _complete_item(value: Any, field: _Field) -> Any:
    """A non-null value of the field's (item) type, completed; None when irregular."""
    if field.fields is not None:
        return _complete_object(value, field.fields)
    try:
        coerced = field.leaf.coerce_output_value(value)
    except Exception:
        return None
    return None if coerced is Undefined else coerced


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
    non_null: bool
    # How to complete what the root resolver returns (its `resolve` is not used).
    completion: _Field

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
            values = _NO_VALUES
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
            field_name=node.name.value,
            field_nodes=self.field_nodes,
            return_type=self.field.type,
            parent_type=self.root_type,
            path=path,
            schema=self.schema,
            fragments=self.fragment_definitions,
            root_value=None,
            operation=operation,
            variable_values=values,
            context=context,
            is_awaitable=cast(Any, optimized_is_awaitable),
            abort_signal=None,
            async_helpers=_HELPERS,
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
        completed = _complete_object({self.key: source}, (self.completion,))
        return None if completed is None else ExecutionResult(completed, None)


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
    fragments = {name: FragmentDetails(definition=d) for name, d in definitions.items()}
    root = collect_fields(schema, fragments, _NO_VALUES, root_type, operation)
    if root.new_defer_usages or len(root.grouped_field_set) != 1:
        return None
    ((key, details),) = root.grouped_field_set.items()
    field = root_type.fields.get(details[0].node.name.value)
    if field is None or field.resolve is None:
        return None  # introspection (__typename, __schema, __type)
    planner = _Planner(schema, fragments, operation)
    completion = planner.field(key, field, details, resolve=_root_value)
    if completion is None:
        return None
    return QueryPlan(
        schema=schema,
        operation=operation,
        fragment_definitions=definitions,
        key=key,
        field=field,
        field_nodes=[d.node for d in details],
        root_type=root_type,
        non_null=is_non_null_type(field.type),
        completion=completion,
    )


def _root_value(source: dict[str, Any], _info: None) -> Any:
    """The root resolver's result: `run` completes it as the one entry of a dict."""
    return next(iter(source.values()))


class _Planner:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: dict[str, FragmentDetails],
        operation: OperationDefinitionNode,
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.operation = operation

    def field(self, key: str, field: GraphQLField, details: Any, *, resolve: Any) -> _Field | None:
        """The plan of a selected field, or None when it is not plain."""
        nullable = not is_non_null_type(field.type)
        inner: Any = get_nullable_type(field.type)
        is_list = isinstance(inner, GraphQLList)
        item_nullable = False
        if isinstance(inner, GraphQLList):
            item_nullable = not is_non_null_type(inner.of_type)
            inner = get_nullable_type(inner.of_type)
            if is_list_type(inner):
                return None
        if is_leaf_type(inner):
            return _Field(
                key,
                resolve,
                nullable=nullable,
                leaf=inner,
                is_list=is_list,
                item_nullable=item_nullable,
            )
        if not is_object_type(inner):
            return None  # an interface or a union: graphql-core resolves the type
        fields = self.selection(inner, details)
        if fields is None:
            return None
        return _Field(
            key,
            resolve,
            nullable=nullable,
            fields=fields,
            is_list=is_list,
            item_nullable=item_nullable,
        )

    def selection(self, object_type: GraphQLObjectType, details: Any) -> tuple[_Field, ...] | None:
        if object_type.is_type_of is not None:
            return None
        sub = collect_subfields(
            self.schema, self.fragments, _NO_VALUES, self.operation, object_type, details
        )
        if sub.new_defer_usages:
            return None
        fields: list[_Field] = []
        for key, sub_details in sub.grouped_field_set.items():
            name = sub_details[0].node.name.value
            if name == "__typename":
                fields.append(_Field(key, None, nullable=False, leaf=object_type.name))
                continue
            field = object_type.fields.get(name)
            if (
                field is None
                or field.args
                or any(d.node.arguments for d in sub_details)
                or not is_default_resolver(field)
            ):
                return None
            planned = self.field(key, field, sub_details, resolve=field.resolve)
            if planned is None:
                return None
            fields.append(planned)
        return tuple(fields)
