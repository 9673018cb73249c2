"""Every private internal the fast paths rely on is still where they expect it.

Each fast-path module lists its internals in INTERNALS (fastpaths/internals.py). After a
library upgrade, a failure here names the internal that moved and the module relying on
it; at start-up the same check turns the fast paths off (stock, with a warning).
"""

from __future__ import annotations

import pytest

from datadiver_graph import fastpaths
from datadiver_graph.fastpaths.internals import Internal
from datadiver_graph.fastpaths.versions import TESTED, installed_version, outside_tested

INTERNALS = [
    internal for module in fastpaths.modules() for internal in getattr(module, "INTERNALS", ())
]


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda internal: internal.label)
def test_internal_is_where_the_fast_path_expects_it(internal: Internal) -> None:
    problem = internal.problem()
    assert problem is None, problem


def test_every_fast_path_module_lists_its_internals() -> None:
    for module in fastpaths.modules():
        if module.__name__.endswith((".view", ".ws_shortcut")):
            continue  # public hooks only (strawberry's view, starlette's routes)
        assert getattr(module, "INTERNALS", ()), f"{module.__name__} lists no INTERNALS"


def test_each_library_with_internals_has_a_tested_range() -> None:
    ranged = {tested.library for tested in TESTED}
    assert {internal.library for internal in INTERNALS} <= ranged


def test_the_installed_versions_are_the_tested_ones() -> None:
    """The lock file and versions.py agree; after an upgrade, widen TESTED deliberately."""
    assert outside_tested() == [], "\n".join(outside_tested())
    for tested in TESTED:
        assert installed_version(tested.library) is not None, tested.library


@pytest.mark.parametrize(
    ("internal", "expected"),
    [
        (
            Internal("graphql-core", "graphql.execution.executor:Executor", "gone", "execution.py"),
            "graphql-core's private graphql.execution.executor.Executor.gone is gone: "
            "fastpaths/execution.py relies on it",
        ),
        (
            Internal(
                "graphql-core",
                "graphql.execution.executor:Executor",
                "_gone",
                "executor.py",
                instance=True,
            ),
            "graphql-core's private graphql.execution.executor.Executor._gone no longer set on "
            "instances: fastpaths/executor.py relies on it",
        ),
        (
            Internal(
                "graphql-core",
                "graphql.execution.executor:Executor",
                "execute_field",
                "execution.py",
                parameters=("parent_type", "field_details_list"),
            ),
            "graphql-core's private graphql.execution.executor.Executor.execute_field now takes",
        ),
        (
            Internal("graphql-core", "graphql:GraphQLResolveInfo", "", "query_plans.py", fields=()),
            "graphql-core's private graphql.GraphQLResolveInfo has fields",
        ),
        (
            Internal("uvicorn", "uvicorn.protocols.gone:Protocol", "x", "ws_transport.py"),
            "uvicorn's private uvicorn.protocols.gone.Protocol.x uvicorn.protocols.gone:Protocol "
            "no longer imports",
        ),
    ],
)
def test_a_moved_internal_is_named_with_its_user(internal: Internal, expected: str) -> None:
    problem = internal.problem()
    assert problem is not None and problem.startswith(expected), problem
