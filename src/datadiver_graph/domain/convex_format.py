"""Convex's export encodings, read back into plain JSON values.

Convex writes values two ways:

- its internal JSON (`convexToJson`): an Int64 is `{"$integer": <base64 of 8 bytes,
  little-endian>}`, bytes are `{"$bytes": <base64>}`, a float JSON cannot hold (NaN,
  infinities, -0) is `{"$float": <base64 of 8 bytes>}`;
- the snapshot export's "json" format: an Int64 is a base-10 string and bytes a base64
  string, with `<table>/generated_schema.jsonl` telling which fields those are (its first
  line describes the table's shape; each further line maps a document `_id` to the types
  of that document's fields where they differ).

Stored records here are JSON, so an Int64 becomes an integer and bytes stay base64 text.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from datadiver_graph.domain.errors import InvalidInput

# `{name: int64, ...}` in the shape line of generated_schema.jsonl (top-level fields only).
_INT64_FIELD = re.compile(r"(?:^|[{,\s])\"?([A-Za-z_][A-Za-z0-9_]*)\"?\s*:\s*int64\b")


def _b64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise InvalidInput(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        raise InvalidInput(f"{what} is not valid base64") from None


def decode_value(value: Any, where: str) -> Any:
    """`value` with every `$integer`/`$float`/`$bytes` wrapper replaced by its plain value.

    `where` names the field for errors (`preferences.count`).
    """
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$integer":
                raw = _b64(inner, f"{where}: $integer")
                if len(raw) != 8:
                    raise InvalidInput(f"{where}: $integer must encode 8 bytes")
                return int.from_bytes(raw, "little", signed=True)
            if key == "$float":
                raw = _b64(inner, f"{where}: $float")
                if len(raw) != 8:
                    raise InvalidInput(f"{where}: $float must encode 8 bytes")
                number = struct.unpack("<d", raw)[0]
                if not math.isfinite(number):
                    raise InvalidInput(f"{where}: {number} cannot be stored (JSON has no NaN)")
                return number
            if key == "$bytes":
                _b64(inner, f"{where}: $bytes")  # checked, kept as base64 text
                return inner
        return {k: decode_value(v, f"{where}.{k}" if where else k) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_value(item, f"{where}[{i}]") for i, item in enumerate(value)]
    return value


def _int64(text: Any, where: str) -> Any:
    if isinstance(text, str):
        try:
            return int(text, 10)
        except ValueError:
            raise InvalidInput(f"{where}: {text!r} is not an Int64") from None
    return text


def _apply_types(value: Any, types: Any, where: str) -> Any:
    """Follow an override's type tree (`"int64"`, `"bytes"`, nested objects and arrays)."""
    if types == "int64":
        return _int64(value, where)
    if isinstance(types, dict) and isinstance(value, dict):
        return {
            k: _apply_types(v, types.get(k), f"{where}.{k}" if where else k)
            for k, v in value.items()
        }
    if isinstance(types, list) and isinstance(value, list) and types:
        return [_apply_types(v, types[0], f"{where}[{i}]") for i, v in enumerate(value)]
    return value


@dataclass(slots=True)
class GeneratedSchema:
    """What a table's generated_schema.jsonl says about its Int64 fields."""

    int64_fields: frozenset[str] = frozenset()
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: Iterable[bytes]) -> GeneratedSchema:
        schema = cls()
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # a shape we cannot read only costs us the Int64 hints
            if number == 1:
                shape = value if isinstance(value, str) else orjson.dumps(value).decode()
                schema.int64_fields = frozenset(_INT64_FIELD.findall(shape))
            elif isinstance(value, dict):
                schema.overrides.update(value)
        return schema

    def apply(self, doc: dict[str, Any]) -> dict[str, Any]:
        if self.int64_fields:
            doc = {k: _int64(v, k) if k in self.int64_fields else v for k, v in doc.items()}
        doc_id = doc.get("_id")
        override = (
            self.overrides.get(doc_id) if self.overrides and isinstance(doc_id, str) else None
        )
        if isinstance(override, dict):
            doc = _apply_types(doc, override, "")
        return dict(doc)


_CSV_WORDS = {"true": True, "false": False, "null": None}


def csv_value(cell: str) -> Any:
    """A CSV cell as Convex reads it: a (floating point) number when it parses as one,
    else the text. Integral numbers stay integers, so timestamps and versions fit.

    Beyond Convex, because our tables have boolean and object fields: `true`, `false` and
    `null` are those values, and a cell holding a JSON object or array is that value.
    """
    text = cell.strip()
    if text in _CSV_WORDS:
        return _CSV_WORDS[text]
    if text[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return cell
    try:
        number = float(text)
    except ValueError:
        return cell
    if not math.isfinite(number):
        return cell  # "nan", "inf": text, as JSON has no such numbers
    if number.is_integer() and abs(number) < 2**63:
        return int(number)
    return number
