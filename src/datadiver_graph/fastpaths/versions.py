"""The library versions the fast paths were tested on.

The fast paths lean on other libraries' internals, which any release may move. Outside
these ranges the service runs stock Strawberry and uvicorn rather than guess (see
`fastpaths.enabled`). The upper bounds are the next minor (major, for websockets) release
after the one tested; pyproject.toml carries the same bounds, so a fresh install stays
inside them. To widen a range, install the new version and run `make test` (guard tests
included) in both modes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import metadata


@dataclass(frozen=True, slots=True)
class Tested:
    library: str  # the distribution's name, as pip knows it
    at_least: str
    below: str
    used_by: tuple[str, ...]

    def admits(self, version: str) -> bool:
        return _key(self.at_least) <= _key(version) < _key(self.below)

    @property
    def range(self) -> str:
        return f">={self.at_least},<{self.below}"


TESTED = (
    Tested(
        "strawberry-graphql",
        "0.341.2",
        "0.342",
        used_by=("view.py", "direct.py", "ws_handler.py", "executor.py", "strawberry_schema.py"),
    ),
    Tested(
        "graphql-core",
        "3.3.2",
        "3.4",
        used_by=("execution.py", "executor.py", "query_plans.py", "live_operation.py"),
    ),
    Tested("uvicorn", "0.54.0", "0.55", used_by=("ws_transport.py",)),
    Tested("websockets", "17.4", "18", used_by=("ws_transport.py",)),
)


def installed_version(library: str) -> str | None:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return None


def outside_tested() -> list[str]:
    """One line per installed library outside its tested range (empty when all fit)."""
    problems = []
    for tested in TESTED:
        version = installed_version(tested.library)
        if version is None or not tested.admits(version):
            problems.append(
                f"{tested.library} {version or '(not installed)'} is outside {tested.range}, "
                f"the range fastpaths/{', '.join(tested.used_by)} were tested on"
            )
    return problems


def _key(version: str) -> tuple[int, ...]:
    """The release numbers of a version (`0.341.2` -> (0, 341, 2)); a pre-release such as
    `3.4.0a1` counts as its release, so it is outside a range that ends below it."""
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in numbers.group().split(".")) if numbers else (0,)
