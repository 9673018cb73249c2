"""Rules for the free-form JSON objects users store (session metadata, user preferences).

MongoDB gives `$`-prefixed and dotted keys special meaning, so they could smuggle operators
or paths into updates; NUL breaks BSON keys. Size and depth bounds keep one document from
starving the others.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from datadiver_graph.domain.errors import InvalidInput

MAX_OBJECT_BYTES = 16 * 1024
MAX_DEPTH = 8
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

JsonObject = dict[str, Any]


def _check(value: Any, what: str, path: str, depth: int) -> None:
    if isinstance(value, dict):
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{what} is nested deeper than {MAX_DEPTH} levels (at {path})")
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidInput(f"{what} has a non-string key at {path}")
            if key.startswith("$"):
                raise InvalidInput(f"{what} key {key!r} at {path} must not start with '$'")
            if "." in key:
                raise InvalidInput(f"{what} key {key!r} at {path} must not contain '.'")
            if "\x00" in key:
                raise InvalidInput(f"{what} key at {path} must not contain NUL")
            _check(item, what, f"{path}.{key}", depth + 1)
    elif isinstance(value, list):
        if depth > MAX_DEPTH:
            raise InvalidInput(f"{what} is nested deeper than {MAX_DEPTH} levels (at {path})")
        for index, item in enumerate(value):
            _check(item, what, f"{path}[{index}]", depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        return
    elif isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise InvalidInput(f"{what} number at {path} does not fit in 64 bits")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{what} number at {path} must be finite")
    else:
        raise InvalidInput(f"{what} value at {path} is not JSON ({type(value).__name__})")


def check_json_object(value: Any, what: str) -> JsonObject:
    """Return `value` unchanged when it is an acceptable object, else raise InvalidInput."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{what} must be a JSON object")
    _check(value, what, "$", 1)
    size = len(orjson.dumps(value))
    if size > MAX_OBJECT_BYTES:
        raise InvalidInput(f"{what} is {size} bytes as JSON; the limit is {MAX_OBJECT_BYTES}")
    return value


def merge_by_key(current: JsonObject, patch: JsonObject) -> JsonObject:
    """Shallow merge: each top-level key in `patch` replaces the stored one; null removes it."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# Twenty digits in a row: a number at least 10**19, past what 64 bits hold (or a long
# digit string, which the careful parse below reads as well).
_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def loads_exact(data: bytes | str) -> Any:
    """JSON text as Python values, integers kept exact.

    orjson turns an integer past 64 bits into a float (2**70 would be stored as 1.18e21
    without a word); the standard library keeps it an int, which `check_json_object` then
    refuses. It is slower, so it reads only text holding such a number.
    """
    raw = data.encode() if isinstance(data, str) else data
    if _LONG_DIGITS.search(raw) is None:
        return orjson.loads(raw)
    return json.loads(raw, parse_constant=_no_constants)
