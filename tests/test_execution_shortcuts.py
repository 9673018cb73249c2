"""The executor's shortcuts (fastpaths/execution.py) answer as graphql-core does,
errors included: the same schema run with and without the shortcut gives the same result."""

from __future__ import annotations

import enum
from typing import Any, cast

import pytest
import strawberry
from graphql import execute_sync, parse

from datadiver_graph.fastpaths.execution import ShortcutExecutionContext

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
    ratio: float

    @strawberry.field
    def shout(self, times: int = 1) -> str:
        return self.name.upper() * times


@strawberry.type
class Query:
    @strawberry.field
    def things(self) -> list[Thing | None]:
        def thing(**changes: Any) -> Thing:
            fields: dict[str, Any] = {
                "name": "a",
                "nickname": None,
                "count": 2,
                "colour": Colour.RED,
                "ratio": 1.5,
            }
            return Thing(**{**fields, **changes})

        # The second's name is null where the schema says non-null; the third's count is
        # not an Int.
        return [thing(), thing(name=None), thing(count="many")]


QUERY = "{ things { name nickname count colour ratio shout(times: 2) alias: name } }"


def run(schema: strawberry.Schema) -> dict[str, Any]:
    result = schema.execute_sync(QUERY)
    errors = sorted((str(error.path), error.message) for error in result.errors or ())
    return {"data": result.data, "errors": errors}


def test_the_shortcut_gives_graphql_cores_answers() -> None:
    plain = strawberry.Schema(query=Query)
    short = strawberry.Schema(
        query=Query, execution_context_class=cast(Any, ShortcutExecutionContext)
    )
    expected = run(plain)
    assert run(short) == expected
    assert expected["data"] == {
        "things": [
            {
                "name": "a",
                "nickname": None,
                "count": 2,
                "colour": "RED",
                "ratio": 1.5,
                "shout": "AA",
                "alias": "a",
            },
            None,
            None,
        ]
    }
    assert len(expected["errors"]) == 2


DIRECTIVES = """
  query($with: Boolean!) {
    things { ...Names count @include(if: $with) ... on Thing @skip(if: $with) { ratio } }
  }
  fragment Names on Thing { name nickname }
"""


def test_collected_fields_follow_the_variables_of_each_operation() -> None:
    # One parsed document, as the server's document cache hands out.
    document = parse(DIRECTIVES)
    schema = strawberry.Schema(query=Query)._schema
    for flag in (True, False, True):
        variables = {"with": flag}
        expected = execute_sync(schema, document, variable_values=variables)
        got = execute_sync(
            schema,
            document,
            variable_values=variables,
            executor_class=cast(Any, ShortcutExecutionContext),
        )
        assert got.data == expected.data
        assert expected.data is not None
        first = expected.data["things"][0]
        assert ("count" in first) is flag and ("ratio" in first) is not flag
