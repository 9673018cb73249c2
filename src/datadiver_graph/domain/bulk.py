"""Whole-table import: validate every record first, then write them in one transaction."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Iterable
from typing import Any

from pymongo.errors import BulkWriteError, OperationFailure

from datadiver_graph.domain.errors import Conflict, InvalidInput
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.records import Record, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import Table


class ImportMode(enum.Enum):
    EMPTY_ONLY = "empty-only"
    APPEND = "append"
    REPLACE = "replace"


class LineError(InvalidInput):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


def parse_record(table: Table, doc: Any, line: int) -> Record:
    """Validate one imported document. Convex's `_creationTime` stands in for `createdAt`."""
    if not isinstance(doc, dict):
        raise LineError(line, "a document must be a JSON object")
    doc = dict(doc)
    doc.setdefault("_id", new_id())
    creation_time = doc.pop("_creationTime", None)
    if creation_time is not None and "createdAt" not in doc:
        if not isinstance(creation_time, int | float) or isinstance(creation_time, bool):
            raise LineError(line, "_creationTime must be a number")
        doc["createdAt"] = int(creation_time)
    table.defaults(doc)
    try:
        record = table.record.from_untrusted(doc)
        stored = record.to_doc()
        for field in table.id_fields:
            if stored.get(field) is not None:
                check_id(stored[field], field)
    except InvalidInput as exc:
        raise LineError(line, exc.message) from None
    return record


def check_unique(table: Table, records: Iterable[tuple[int, Record]]) -> None:
    seen_keys: dict[Any, int] = {}
    seen_ids: dict[str, int] = {}
    for line, record in records:
        doc = record.to_doc()
        key = doc[table.key_field]
        if key in seen_keys:
            raise LineError(line, f"{table.key_field} {key!r} repeats line {seen_keys[key]}")
        if record.id in seen_ids:
            raise LineError(line, f"_id {record.id!r} repeats line {seen_ids[record.id]}")
        seen_keys[key] = line
        seen_ids[record.id] = line


async def import_records(
    store: Store,
    table: Table,
    records: list[Record],
    mode: ImportMode,
    lines: list[int] | None = None,
) -> int:
    """Write all records or none. Publishes one event per record after the commit.

    `lines[i]` is the file line `records[i]` came from, so a collision names that line.
    """
    collection = store.db.table(table.name)
    docs = [record.to_doc() for record in records]
    async with store.db.client.start_session() as session:
        try:
            async with await session.start_transaction():
                existing = await collection.count_documents({}, session=session)
                if existing and mode is ImportMode.EMPTY_ONLY:
                    raise Conflict(
                        f"table {table.name} holds {existing} documents; "
                        "use --append to add to them or --replace to replace them"
                    )
                if mode is ImportMode.REPLACE:
                    await collection.delete_many({}, session=session)
                if docs:
                    await collection.insert_many(docs, ordered=True, session=session)
        except BulkWriteError as exc:
            raise _collision(exc, lines) from None
        except OperationFailure as exc:
            if exc.code == 20:  # IllegalOperation: transactions need a replica set
                raise Conflict(
                    "import needs transactions: MongoDB must run as a replica set "
                    "(Atlas and the embedded SecantusDB do)"
                ) from None
            raise
    for record in records:
        await store.publish(table.event_kind, record, table.channels(record))
    return len(records)


def _collision(exc: BulkWriteError, lines: list[int] | None) -> Conflict:
    """Name the file line whose key is already stored, and the key, in one sentence."""
    detail = (exc.details.get("writeErrors") or [{}])[0]
    index = detail.get("index")
    if isinstance(index, int):
        where = f"line {lines[index]}" if lines and index < len(lines) else f"document {index + 1}"
    else:
        where = "a document"
    key_value = detail.get("keyValue")
    if isinstance(key_value, dict) and key_value:
        what = ", ".join(f"{field} {value!r}" for field, value in key_value.items())
        reason = f"{what} is already stored"
    else:
        reason = f"collides with a stored document ({detail.get('errmsg', 'duplicate key')})"
    return Conflict(f"{where}: {reason}; nothing written")


async def export_records(store: Store, table: Table) -> AsyncIterator[dict[str, Any]]:
    """Every stored document of the table, in `_id` order, streamed."""
    async for doc in store.db.table(table.name).find({}).sort("_id", 1):
        yield doc
