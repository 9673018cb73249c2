"""The lock files agree with pyproject.toml, on every Python that requires-python admits.

Every install (make, CI, the Dockerfile) takes its versions from requirements/*.lock, so a range
changed in pyproject.toml without `make lock` would go untested: these checks catch that
without a network, by evaluating each lock line's marker the way pip will.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
DEV_LOCK = ROOT / "requirements" / "dev.lock"
RUNTIME_LOCK = ROOT / "requirements" / "runtime.lock"
# The minor versions requires-python admits today; a new release joins when CI runs it.
PYTHONS = ("3.11", "3.12", "3.13")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def environment(python: str) -> dict[str, str]:
    """This machine's marker environment, as if it ran `python` (Linux x86_64 in CI)."""
    return {**default_environment(), "python_version": python, "python_full_version": f"{python}.0"}


def pins(lock: Path, python: str) -> dict[str, str]:
    """Name -> version of the lock lines pip installs on `python`."""
    selected: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate(environment(python)):
            continue
        key = canonicalize_name(name)
        assert key not in selected, f"{lock.name} pins {name} twice on Python {python}"
        selected[key] = version
    return selected


def declared(*extras: str) -> list[Requirement]:
    lines = list(PROJECT["dependencies"])
    for extra in extras:
        lines += PROJECT["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def assert_satisfies(lock: Path, requirements: list[Requirement], python: str) -> None:
    locked = pins(lock, python)
    for requirement in requirements:
        if requirement.marker and not requirement.marker.evaluate(environment(python)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement} is missing from {lock.name}: run `make lock`"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{lock.name} pins {requirement.name}=={locked[name]}, outside {requirement}: "
            "run `make lock`"
        )


@pytest.mark.parametrize("python", PYTHONS)
def test_dev_lock_satisfies_every_declared_range(python: str) -> None:
    assert_satisfies(DEV_LOCK, declared("dev", "bench"), python)


@pytest.mark.parametrize("python", PYTHONS)
def test_runtime_lock_is_the_dev_locks_runtime_part(python: str) -> None:
    """The image runs the versions the tests ran, and not SecantusDB (GPL, `embedded` extra)."""
    assert_satisfies(RUNTIME_LOCK, declared(), python)
    runtime, dev = pins(RUNTIME_LOCK, python), pins(DEV_LOCK, python)
    assert {name: dev.get(name) for name in runtime} == runtime
    assert "secantusdb" in dev
    assert "secantusdb" not in runtime


def imported_distributions(*folders: str) -> dict[str, set[str]]:
    """Distribution name -> the files under `folders` that import it (stdlib and our own
    modules left out); a module no installed distribution provides maps to `?module`."""
    providers = packages_distributions()
    local = {path.stem for folder in folders for path in (ROOT / folder).rglob("*.py")}
    local |= {"datadiver_graph", "tests", "bench"} | {
        path.name for folder in folders for path in (ROOT / folder).iterdir() if path.is_dir()
    }
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            if "node_modules" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.partition(".")[0]
                    if top in sys.stdlib_module_names or top in local:
                        continue
                    for name in providers.get(top, [f"?{top}"]):
                        found.setdefault(canonicalize_name(name), set()).add(
                            str(path.relative_to(ROOT))
                        )
    return found


def declared_names(*extras: str) -> set[str]:
    return {canonicalize_name(requirement.name) for requirement in declared(*extras)}


def test_every_package_src_imports_is_a_runtime_dependency() -> None:
    """A package reached only through another one's dependencies can vanish in its update."""
    undeclared = {
        name: sorted(files)
        for name, files in imported_distributions("src").items()
        if name not in declared_names()
    }
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_every_package_tests_and_bench_import_is_declared() -> None:
    undeclared = {
        name: sorted(files)
        for name, files in imported_distributions("tests", "bench").items()
        if name not in declared_names("dev", "bench")
    }
    assert not undeclared, f"imported but not in the dev or bench extra: {undeclared}"


def test_fast_path_libraries_are_bounded_to_their_tested_ranges() -> None:
    """pyproject.toml's range for each privately coupled library is the one the fast paths
    were tested on, so a fresh install never lands outside it (fastpaths/versions.py)."""
    from datadiver_graph.fastpaths.versions import TESTED

    ranges = {canonicalize_name(r.name): r.specifier for r in declared()}
    for tested in TESTED:
        declared_range = ranges.get(canonicalize_name(tested.library))
        assert declared_range is not None, f"{tested.library} is not a declared dependency"
        assert {str(spec) for spec in declared_range} == {
            f">={tested.at_least}",
            f"<{tested.below}",
        }, (
            f"pyproject.toml bounds {tested.library} {declared_range}; the fast paths were "
            f"tested on {tested.range} (fastpaths/versions.py): keep the two equal"
        )
