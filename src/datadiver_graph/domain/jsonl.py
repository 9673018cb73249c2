"""Table files in Convex's JSONL format: one JSON document per line; snapshots as zip."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

from datadiver_graph.domain.bulk import LineError, check_unique, export_records, parse_record
from datadiver_graph.domain.records import Record
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import TABLES, Table

_BOM = b"\xef\xbb\xbf"


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes]]:
    for number, raw in enumerate(stream, start=1):
        line = raw.strip()
        if number == 1 and line.startswith(_BOM):  # files saved by Windows editors
            line = line[len(_BOM) :].strip()
        if line:
            yield number, line


def read_records(table: Table, stream: IO[bytes]) -> list[tuple[int, Record]]:
    """Parse and validate every line; the first bad line raises LineError naming it."""
    records = []
    for number, line in _lines(stream):
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise LineError(number, f"not valid JSON ({exc})") from None
        records.append((number, parse_record(table, doc, number)))
    check_unique(table, records)
    return records


def _encode(doc: dict[str, Any]) -> bytes:
    # Stored values are JSON already; `str` only guards against foreign BSON types.
    return orjson.dumps(doc, default=str) + b"\n"


async def write_table(store: Store, table: Table, out: IO[bytes]) -> int:
    count = 0
    async for doc in export_records(store, table):
        out.write(_encode(doc))
        count += 1
    return count


async def write_snapshot(store: Store, path: Path) -> dict[str, int]:
    """Every table as `<table>/documents.jsonl` in one zip; written to a temp file, then moved,
    so an interrupted export never leaves a truncated snapshot under the final name."""
    counts: dict[str, int] = {}
    partial = path.with_name(path.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, table in TABLES.items():
                buffer = io.BytesIO()
                counts[name] = await write_table(store, table, buffer)
                archive.writestr(f"{name}/documents.jsonl", buffer.getvalue())
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return counts
