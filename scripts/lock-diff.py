"""Print how the running environment's packages differ from a lock file.

`make upgrade-check` runs it inside the venv holding the newest versions the pyproject ranges
allow, so a maintainer sees which upgrades the test run that follows is trying out.
Usage: python scripts/lock-diff.py requirements/dev.lock
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_versions(lock: Path) -> dict[str, str]:
    """Name -> pinned version, keeping only the lines whose marker matches this interpreter."""
    pins = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker is None or Marker(marker).evaluate():
            pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    return {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if dist.metadata["Name"]
    }


def main() -> int:
    lock = Path(sys.argv[1])
    locked, installed = locked_versions(lock), installed_versions()
    rows = []
    for name in sorted(locked.keys() | installed.keys()):
        if name in ("datadiver-graph", "pip", "setuptools", "wheel"):
            continue
        old, new = locked.get(name, "-"), installed.get(name, "-")
        if old != new:
            rows.append((name, old, new))
    if not rows:
        print(f"Every package is at the version {lock} pins.")
        return 0
    width = max(len(name) for name, _, _ in rows)
    print(f"{'package':<{width}}  {'locked':<16} installed")
    for name, old, new in rows:
        print(f"{name:<{width}}  {old:<16} {new}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
