"""The domain never imports the web or GraphQL layers, so a mutation, a webhook, an import
and the CLI all reach the same domain functions (the brief's rule, read with `ast`)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "datadiver_graph"
DOMAIN = sorted((PACKAGE / "domain").rglob("*.py"))
# Libraries of the transports, and our own modules built on them.
FORBIDDEN = (
    "strawberry",
    "graphql",
    "starlette",
    "uvicorn",
    "websockets",
    "jinja2",
    "datadiver_graph.api",
    "datadiver_graph.console",
    "datadiver_graph.fastpaths",
    "datadiver_graph.app",
    "datadiver_graph.cli",
    "datadiver_graph.cli_bulk",
)


def imported_modules(path: Path) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return found


def forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_domain_package_is_found() -> None:
    assert len(DOMAIN) > 10 and any(p.name == "users.py" for p in DOMAIN)


@pytest.mark.parametrize("path", DOMAIN, ids=lambda path: path.name)
def test_a_domain_module_imports_no_transport(path: Path) -> None:
    assert [m for m in imported_modules(path) if forbidden(m)] == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import strawberry\nfrom datadiver_graph.api import http\n")
    assert [m for m in imported_modules(sample) if forbidden(m)] == [
        "strawberry",
        "datadiver_graph.api",
        "datadiver_graph.api.http",
    ]
