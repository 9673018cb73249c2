"""Planned queries (fastpaths/query_plans.py) answer exactly as graphql-core does.

Each case runs the same document through its plan and through graphql-core's `execute`
on the same schema and compares the formatted results, errors and their paths included.
Which documents get a plan is checked against the real schema; that the HTTP path takes
the plan is checked in test_direct_execution.py.
"""

from __future__ import annotations

import enum
from typing import Any

import pytest
import strawberry
from graphql import ExecutionResult, GraphQLError, execute, parse, specified_rules, validate

from datadiver_graph.api.schema.documents import make_preparer
from datadiver_graph.api.schema.schema import Schema, build_schema
from datadiver_graph.config import Settings
from datadiver_graph.fastpaths import query_plans
from datadiver_graph.fastpaths.direct import execute_prepared, prepare_operation
from datadiver_graph.fastpaths.execution import ShortcutExecutionContext
from datadiver_graph.fastpaths.query_plans import QueryPlan, plan_for

# Tests a fast path's own internals: skipped under FAST_PATHS=false (conftest.py).
pytestmark = pytest.mark.fast_paths


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"


@strawberry.type
class Thing:
    name: str
    nickname: str | None
    count: int
    colour: Colour

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()


def make_thing(kind: str) -> Thing | None:
    fields: dict[str, Any] = {"name": "a", "nickname": None, "count": 2, "colour": Colour.RED}
    if kind == "null-name":
        fields["name"] = None  # null where the schema says non-null
    elif kind == "bad-count":
        fields["count"] = "many"  # not an Int
    elif kind == "none":
        return None
    elif kind == "raise":
        raise PermissionError("not yours")
    return Thing(**fields)


@strawberry.type
class Box:
    label: str
    thing: Thing | None
    things: list[Thing]
    maybe: list[Thing | None] | None
    tags: list[str]


def make_box(kind: str) -> Box:
    fields: dict[str, Any] = {
        "label": "b",
        "thing": make_thing("ok"),
        "things": [make_thing("ok"), make_thing("ok")],
        "maybe": [make_thing("ok"), None],
        "tags": ["x", "y"],
    }
    if kind == "null-item":
        fields["things"] = [make_thing("ok"), None]  # a null item where the schema says non-null
    elif kind == "nested-null":
        fields["thing"] = make_thing("null-name")
    elif kind == "tuple":
        fields["things"] = (make_thing("ok"),)
    elif kind == "generator":
        fields["things"] = (make_thing("ok") for _ in range(2))
    elif kind == "bad-item":
        fields["maybe"] = [make_thing("bad-count")]
    return Box(**fields)


RESOLVER_CALLS: list[str] = []


@strawberry.type
class Query:
    @strawberry.field
    def thing(self, kind: str = "ok") -> Thing | None:
        RESOLVER_CALLS.append(kind)
        return make_thing(kind)

    @strawberry.field
    async def later(self, kind: str = "ok") -> Thing | None:
        RESOLVER_CALLS.append(kind)
        return make_thing(kind)

    @strawberry.field
    def must(self, kind: str = "ok") -> Thing:
        thing = make_thing(kind)
        assert thing is not None or kind == "none"
        return thing  # type: ignore[return-value]

    @strawberry.field
    def box(self, kind: str = "ok") -> Box:
        return make_box(kind)

    @strawberry.field
    def things(self) -> list[Thing]:
        return [Thing(name="a", nickname=None, count=1, colour=Colour.RED)]


def tiny_schema() -> Schema:
    schema = Schema(query=Query, execution_context_class=ShortcutExecutionContext)
    schema.prepare = make_preparer(lambda: schema._schema, tuple(specified_rules), 10_000)
    return schema


def by_graphql_core(schema: Schema, query: str, variables: dict[str, Any] | None) -> Any:
    document = parse(query)
    assert not validate(schema._schema, document)
    return execute(schema._schema, document, variable_values=variables)


PLANNED = [
    ("{ thing { name nickname count colour } }", None),
    ("{ t: thing { n: name name __typename count } }", None),
    ("{ thing { ...F } } fragment F on Thing { name count }", None),
    ("{ thing { ... on Thing { name } colour } }", None),
    ('{ thing(kind: "none") { name } }', None),
    ('{ thing(kind: "raise") { name } }', None),
    ('{ must(kind: "raise") { name } }', None),
    ('{ must(kind: "none") { name } }', None),
    ('{ thing(kind: "null-name") { name } }', None),
    ('{ thing(kind: "bad-count") { count } }', None),
    ('{ must(kind: "null-name") { name count } }', None),
    ("query($k: String!) { later(kind: $k) { name } }", {"k": "ok"}),
    ("query($k: String!) { later(kind: $k) { name } }", {"k": "raise"}),
    ("query($k: String!) { later(kind: $k) { name } }", {"k": 12}),
    ("query($k: String!) { later(kind: $k) { name } }", {}),
    ('query($k: String = "none") { later(kind: $k) { name } }', None),
    ("{ things { name count } }", None),
    ("{ box { label tags thing { name } things { name } maybe { count } } }", None),
    ('{ box(kind: "null-item") { things { name } } }', None),
    ('{ box(kind: "nested-null") { label thing { name count } } }', None),
    ('{ box(kind: "tuple") { things { ...F } } } fragment F on Thing { name }', None),
    ('{ box(kind: "generator") { things { name } } }', None),
    ('{ box(kind: "bad-item") { maybe { count } } }', None),
    ("{ box { t: thing { __typename n: name } other: thing { colour } } }", None),
]


@pytest.mark.parametrize(("query", "variables"), PLANNED)
async def test_a_planned_query_answers_as_graphql_core(
    query: str, variables: dict[str, Any] | None
) -> None:
    schema = tiny_schema()
    prepared = prepare_operation(schema, query, None)
    assert prepared is not None and prepared.plan is not None
    expected = by_graphql_core(schema, query, variables)
    if not isinstance(expected, ExecutionResult):
        expected = await expected
    answered = await execute_prepared(schema, prepared, variables, None)  # type: ignore[arg-type]
    assert answered.data == expected.data
    assert [(e.message, e.path, e.locations) for e in answered.errors or ()] == [
        (e.message, e.path, e.locations) for e in expected.errors or ()
    ]


async def test_the_plan_answers_alone_and_hands_irregular_values_to_graphql_core() -> None:
    schema = tiny_schema()

    async def planned(query: str) -> ExecutionResult | None:
        prepared = prepare_operation(schema, query, None)
        assert prepared is not None and prepared.plan is not None
        return await prepared.plan.run(None, None)

    RESOLVER_CALLS.clear()
    answer = await planned('{ thing(kind: "ok") { name count colour } }')
    assert answer is not None
    assert answer.data == {"thing": {"name": "a", "count": 2, "colour": "RED"}}
    raised = await planned('{ thing(kind: "raise") { name } }')
    assert raised is not None and raised.data == {"thing": None}
    assert isinstance(raised.errors, list) and isinstance(raised.errors[0], GraphQLError)
    # A value the schema cannot carry: graphql-core runs the operation again and reports it.
    assert await planned('{ thing(kind: "null-name") { name } }') is None
    assert await planned('{ thing(kind: "bad-count") { count } }') is None
    assert await planned('{ box(kind: "null-item") { things { name } } }') is None
    nested = await planned("{ box { things { name } maybe { count } } }")
    assert nested is not None and nested.data == {
        "box": {"things": [{"name": "a"}, {"name": "a"}], "maybe": [{"count": 2}, None]}
    }
    assert RESOLVER_CALLS == ["ok", "raise", "null-name", "bad-count"]


NOT_PLANNED = [
    'mutation { updateUser(name: "x") { id } }',
    "{ __typename }",
    "{ getCurrentUser { id } getLatestPayment { id } }",
    "{ getCurrentUser { id plan { name } } }",
    "{ getCurrentUser { billingStatus } }",
    "query($x: Boolean!) { getCurrentUser { id name @include(if: $x) } }",
    "{ getCurrentUser @skip(if: false) { id } }",
    "{ getUserSessions { edges { node { sessionId } } } getCurrentUser { id } }",
    "{ getCurrentUser { id } ... on Query { getLatestPayment { id } } }",
    "{ __schema { queryType { name } } }",
]


@pytest.mark.parametrize("query", NOT_PLANNED)
def test_other_shapes_are_left_to_graphql_core(query: str) -> None:
    schema = build_schema(Settings(DATADIVER_ENV="development"))
    document = parse(query)
    assert not validate(schema._schema, document), query
    operation = document.definitions[0]
    assert plan_for(schema._schema, document, operation) is None  # type: ignore[arg-type]


def test_the_api_s_common_reads_are_planned() -> None:
    schema = build_schema(Settings(DATADIVER_ENV="development"))
    for query in (
        "query Me { getCurrentUser { id externalId name email imageUrl preferences "
        "createdAt updatedAt version } }",
        "query($id: String!) { getSession(sessionId: $id) { ...S __typename } } "
        "fragment S on Session { sessionId userId active metadata lastActivity endedAt }",
        "{ getLatestPayment { id status amount currency totals paidAt } }",
        "query($n: Int) { getUserSessions(first: $n) { edges { cursor node { sessionId "
        "metadata } } nodes { version } pageInfo { hasNextPage endCursor } } }",
        "{ getSubscription { status items { status } plan { __typename } } }",
    ):
        prepared = prepare_operation(schema, query, None)
        assert prepared is not None
        assert isinstance(prepared.plan, QueryPlan), query


def test_plans_are_made_once_per_document_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    schema = tiny_schema()
    monkeypatch.setattr(query_plans, "MAX_PLANS", 3)
    query_plans._plans.clear()
    first = prepare_operation(schema, "{ thing { name } }", None)
    again = prepare_operation(schema, "{ thing { name } }", None)
    assert first is not None and again is not None and first.plan is again.plan
    for index in range(5):
        prepare_operation(schema, f"{{ thing {{ a{index}: name }} }}", None)
    assert len(query_plans._plans) <= 3
