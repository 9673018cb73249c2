"""graphql-core's executor with two shortcuts for the documents clients send again and again.

1. Plain scalar fields. Most fields this API returns are attributes of a record, read as
they are (`name`, `version`, `createdAt`, ...): strawberry resolves them with its default
resolver, which never looks at its `info`. graphql-core still builds a resolve info,
reads the arguments and dispatches on the type for each of them. Here such a field
is read and coerced directly. Anything unusual (arguments, a null where the schema says
non-null, a value that does not coerce, a resolver error) goes through graphql-core's own
path, which then reports it exactly as before.

2. Sub-field collection. graphql-core collects the sub-selections of each object field anew
for every operation (and every subscription event). A selection set without directives
collects to the same result every time, so it is kept per process, keyed by the field
nodes of the cached document and the object type.
"""

from __future__ import annotations

from typing import Any, ClassVar

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLLeafType,
    GraphQLObjectType,
    InlineFragmentNode,
    SelectionSetNode,
    get_nullable_type,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import CollectedFields
from graphql.pyutils import Path, Undefined
from strawberry.resolvers import is_default_resolver as strawberry_default_resolver

from datadiver_graph.fastpaths.executor import PerEventExecutionContext
from datadiver_graph.fastpaths.internals import Internal

_EXECUTOR = "graphql.execution.executor:Executor"
INTERNALS = (
    # Overridden (graphql-core marks both private), with the parameters they are called with.
    Internal(
        "graphql-core",
        _EXECUTOR,
        "collect_subfields",
        "execution.py",
        parameters=("return_type", "field_details_list"),
    ),
    Internal(
        "graphql-core",
        _EXECUTOR,
        "execute_field",
        "execution.py",
        parameters=("parent_type", "source", "field_details_list", "path", "position_context"),
    ),
    # Read (upstream plans to remove fragment_definitions).
    Internal("graphql-core", _EXECUTOR, "fragment_definitions", "execution.py", instance=True),
    Internal("graphql-core", _EXECUTOR, "middleware_manager", "execution.py", instance=True),
    Internal(
        "graphql-core",
        "graphql.execution.collect_fields:FieldDetails",
        "",
        "execution.py",
        fields=("node", "defer_usage", "fragment_variable_values"),
    ),
    Internal(
        "graphql-core", "graphql.execution.collect_fields:CollectedFields", "", "execution.py"
    ),
)

# Distinct (object type, field nodes) kept at most; past it the cache starts again, so
# clients sending ever new documents cannot grow it without bound.
MAX_COLLECTED = 4096

# (resolver, leaf type, nullable) of a plain leaf field; None for any other field.
_LeafPlan = tuple[Any, GraphQLLeafType, bool] | None
_NOT_PLAIN = object()


def is_default_resolver(field: GraphQLField) -> bool:
    """Strawberry's resolver of a field without one of its own: it reads the attribute and
    never looks at its resolve info."""
    return field.resolve is not None and strawberry_default_resolver(field.resolve)


def leaf_plan(parent_type: GraphQLObjectType, name: str) -> _LeafPlan:
    field = parent_type.fields.get(name)
    if field is None or field.args or not is_default_resolver(field):
        return None
    resolve = field.resolve
    leaf = get_nullable_type(field.type)
    if not is_leaf_type(leaf):
        return None
    return resolve, leaf, not is_non_null_type(field.type)


def without_directives(
    selection_set: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    seen: set[str],
) -> bool:
    """Whether nothing under this selection set (fragments included) has a directive:
    only then does collecting it not depend on variables."""
    if selection_set is None:
        return True
    for selection in selection_set.selections:
        if selection.directives:
            return False
        if isinstance(selection, FieldNode | InlineFragmentNode):
            if not without_directives(selection.selection_set, fragments, seen):
                return False
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            if name in seen:
                continue
            seen.add(name)
            fragment = fragments.get(name)
            if fragment is None or fragment.directives:
                return False
            if not without_directives(fragment.selection_set, fragments, seen):
                return False
    return True


class ShortcutExecutionContext(PerEventExecutionContext):
    # Per schema type and field name; the schema is built once per process.
    _plans: ClassVar[dict[tuple[GraphQLObjectType, str], _LeafPlan]] = {}
    # The value keeps the nodes alive, so their ids in the key cannot be reused.
    _collected: ClassVar[
        dict[
            tuple[GraphQLObjectType, tuple[int, ...]],
            tuple[tuple[FieldNode, ...], CollectedFields | None],
        ]
    ] = {}

    def collect_subfields(
        self, return_type: GraphQLObjectType, field_details_list: Any
    ) -> CollectedFields:
        if any(
            details.defer_usage is not None or details.fragment_variable_values is not None
            for details in field_details_list
        ):
            return super().collect_subfields(return_type, field_details_list)
        nodes = tuple(details.node for details in field_details_list)
        key = (return_type, tuple(map(id, nodes)))
        cached = self._collected.get(key)
        if cached is not None:
            if cached[1] is not None:
                return cached[1]
            return super().collect_subfields(return_type, field_details_list)
        collected = super().collect_subfields(return_type, field_details_list)
        fragments = self.fragment_definitions
        static = all(
            not node.directives and without_directives(node.selection_set, fragments, set())
            for node in nodes
        )
        if len(self._collected) >= MAX_COLLECTED:
            self._collected.clear()
        self._collected[key] = (nodes, collected if static else None)
        return collected

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
            plan = self._plans[key] = leaf_plan(parent_type, name)
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
