"""How a fast path names the private internals of another library it relies on.

Each fast-path module lists its internals in `INTERNALS`, next to the code that uses them.
`fastpaths.enabled` checks them once at start-up (a missing one means stock, with a
warning), and tests/test_fastpath_guards.py checks each one by name, so an upgrade that
moves one fails there, naming it, rather than misbehaving in production.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Internal:
    library: str  # the distribution: graphql-core, strawberry-graphql, uvicorn, websockets
    owner: str  # "module:Class" or "module" (a module-level function or class)
    name: str  # the attribute; "" for the owner itself
    used_by: str  # the fast-path module relying on it
    # Set on instances (`self.name = ...` in the owner or a base), not on the class.
    instance: bool = False
    # The leading parameters a function is called or overridden with, in order.
    parameters: tuple[str, ...] | None = None
    # A named tuple built by keyword: the fields passed (each must exist, and every field
    # without a default must be among them).
    fields: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        return f"{self.owner.replace(':', '.')}{'.' + self.name if self.name else ''}"

    def problem(self) -> str | None:
        """Why it no longer holds, naming it; None when it is still there."""
        try:
            owner = resolve(self.owner)
        except (ImportError, AttributeError) as exc:
            return self._moved(f"{self.owner} no longer imports ({exc})")
        if self.fields is not None:
            return self._fields_problem(owner)
        if not self.name:
            return None
        if self.instance:
            if not _set_on_instances(owner, self.name):
                return self._moved("no longer set on instances")
            return None
        if not hasattr(owner, self.name):
            return self._moved("is gone")
        if self.parameters is not None:
            found = _parameters(getattr(owner, self.name))
            if found is not None and found[: len(self.parameters)] != self.parameters:
                return self._moved(f"now takes {found}, not {self.parameters}")
        return None

    def _fields_problem(self, owner: Any) -> str | None:
        known = tuple(getattr(owner, "_fields", ()))
        defaults = getattr(owner, "_field_defaults", {})
        unknown = [name for name in self.fields or () if name not in known]
        unset = [name for name in known if name not in (self.fields or ()) and name not in defaults]
        if unknown or unset:
            return self._moved(f"has fields {known}; passed {self.fields}")
        return None

    def _moved(self, what: str) -> str:
        return (
            f"{self.library}'s private {self.label} {what}: fastpaths/{self.used_by} relies on it"
        )


def resolve(owner: str) -> Any:
    module_name, _, qualname = owner.partition(":")
    found: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        found = getattr(found, part)
    return found


def _set_on_instances(owner: Any, name: str) -> bool:
    """Whether the class or one of its bases assigns `self.<name>` or declares it.

    Reads the defining module's text rather than `inspect.getsource(cls)`: on CPython
    3.11 that parses with `ast`, whose recursion counter a RecursionError anywhere
    earlier in the process can leave off (gh-106905), failing the guard spuriously.
    """
    assigned = re.compile(rf"\bself\.{re.escape(name)}\b\s*(:[^=]+)?=[^=]")
    for cls in inspect.getmro(owner):
        if cls is object:
            continue
        if name in getattr(cls, "__annotations__", {}) or name in vars(cls):
            return True
        try:
            filename = inspect.getsourcefile(cls)
        except TypeError:
            continue  # a builtin class: no source to read
        if filename is None:
            continue
        try:
            source = Path(filename).read_text(encoding="utf-8")
        except OSError:
            continue
        if assigned.search(source):
            return True
    return False


def _parameters(function: Any) -> tuple[str, ...] | None:
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None  # a builtin without a signature: only its presence is checked
    names = tuple(signature.parameters)
    return names[1:] if names[:1] == ("self",) else names
