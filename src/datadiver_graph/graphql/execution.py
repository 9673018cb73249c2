"""A shorter road through graphql-core for plain scalar fields.

Most fields this API returns are attributes of a record read as they are (`name`,
`version`, `createdAt`, ...): strawberry resolves them with its default resolver, which
never looks at its `info`. graphql-core still builds a 14-field resolve info, reads the
arguments and dispatches on the type for each of them, which was most of the execution
cost of a `getCurrentUser` (bench/RESULTS.md). Here such a field is read and coerced
directly. Anything unusual (arguments, a null where the schema says non-null, a value
that does not coerce, a resolver error) goes through graphql-core's own path, which then
reports it exactly as before.
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphql import (
    GraphQLLeafType,
    GraphQLObjectType,
    get_nullable_type,
    is_leaf_type,
    is_non_null_type,
)
from graphql.pyutils import Path, Undefined

from datadiver_graph.graphql.executor import PerEventExecutionContext

# (resolver, leaf type, nullable) of a plain leaf field; None for any other field.
_LeafPlan = tuple[Any, GraphQLLeafType, bool] | None
_NOT_PLAIN = object()


def _plan(parent_type: GraphQLObjectType, name: str) -> _LeafPlan:
    field = parent_type.fields.get(name)
    if field is None or field.args:
        return None
    resolve = field.resolve
    # strawberry marks its resolver of a field that has no resolver of its own.
    if resolve is None or not getattr(resolve, "_is_default", False):
        return None
    leaf = get_nullable_type(field.type)
    if not is_leaf_type(leaf):
        return None
    return resolve, leaf, not is_non_null_type(field.type)


class LeafFieldsExecutionContext(PerEventExecutionContext):
    # Per schema type and field name; the schema is built once per process.
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], _LeafPlan]] = {}

    def execute_field(
        self,
        parent_type: GraphQLObjectType,
        source: Any,
        field_details_list: Any,
        path: Path,
        position_context: Any,
    ) -> Any:
        value = _NOT_PLAIN
        if not self.middleware_manager:
            value = self._plain_leaf(parent_type, source, field_details_list[0].node)
        if value is _NOT_PLAIN:
            return super().execute_field(
                parent_type, source, field_details_list, path, position_context
            )
        return value

    def _plain_leaf(self, parent_type: GraphQLObjectType, source: Any, node: Any) -> Any:
        name = node.name.value
        key = (parent_type, name)
        try:
            plan = self._plans[key]
        except KeyError:
            plan = self._plans[key] = _plan(parent_type, name)
        if plan is None or node.arguments:
            return _NOT_PLAIN
        resolve, leaf, nullable = plan
        try:
            value = resolve(source, None)
            if value is None:
                return None if nullable else _NOT_PLAIN
            coerced = leaf.coerce_output_value(value)
        except Exception:
            return _NOT_PLAIN  # graphql-core's path raises it again and reports it
        if coerced is None or coerced is Undefined:
            return _NOT_PLAIN
        return coerced
