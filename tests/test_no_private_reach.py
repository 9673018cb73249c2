"""Outside fastpaths/, no module reaches into another library's private names.

Read with `ast` over every source file: imports of a private module or name (`from
strawberry.x._y import z`, `from graphql import _z`, `import uvicorn._x`), and reads of
the private attributes these libraries are known for (`schema._schema`, `._is_default`,
`_process_errors`, ...) on anything but `self`. Our own private names are not the
concern here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "datadiver_graph"
LIBRARIES = ("strawberry", "graphql", "uvicorn", "websockets", "broadcaster", "starlette")
# Private attributes of those libraries' objects: read on anything, they mean a reach-in.
PRIVATE_ATTRIBUTES = frozenset(
    {
        "_schema",
        "_is_default",
        "_process_errors",
        "_process_result",
        "_relevant_sub_fields",
        "_raw_info",
        "_conn",
        "_listen_queue",
    }
)
SOURCES = sorted(
    path for path in PACKAGE.rglob("*.py") if "fastpaths" not in path.relative_to(PACKAGE).parts
)


def _library(module: str | None) -> bool:
    return module is not None and module.split(".")[0] in LIBRARIES


def _private(dotted: str) -> bool:
    return any(part.startswith("_") for part in dotted.split("."))


def reach_ins(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _library(node.module):
            assert node.module is not None
            if _private(node.module):
                found.append(f"line {node.lineno}: from {node.module} import ...")
            found.extend(
                f"line {node.lineno}: from {node.module} import {alias.name}"
                for alias in node.names
                if alias.name.startswith("_")
            )
        elif isinstance(node, ast.Import):
            found.extend(
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if _library(alias.name) and _private(alias.name)
            )
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in PRIVATE_ATTRIBUTES
            and not (isinstance(node.value, ast.Name) and node.value.id == "self")  # ours
        ):
            found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(PACKAGE)))
def test_no_private_name_of_another_library(path: Path) -> None:
    found = reach_ins(path.read_text())
    assert not found, (
        f"{path.relative_to(PACKAGE)} reaches into a library's private names "
        f"(move it under fastpaths/ with a guard, or use a public API): {found}"
    )


def test_the_check_sees_each_kind_of_reach_in() -> None:
    source = "\n".join(
        [
            "from broadcaster._backends.base import BroadcastBackend",
            "from strawberry.extensions import _private_thing",
            "import uvicorn._internal",
            "schema._schema",
            "resolver._is_default",
            "from datadiver_graph.api.http import _status",  # ours: fine
            "from strawberry.resolvers import is_default_resolver",  # public: fine
        ]
    )
    assert reach_ins(source) == [
        "line 1: from broadcaster._backends.base import ...",
        "line 2: from strawberry.extensions import _private_thing",
        "line 3: import uvicorn._internal",
        "line 4: ._schema",
        "line 5: ._is_default",
    ]
