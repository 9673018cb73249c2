"""Import: stream each file into a staging collection, validate as it goes, then swap in.

All of an import lands or none of it, at any size: documents go into staging collections
that nothing reads (`storage.swap`), in batches, so memory stays flat; the tables change
only at the commit, and a crash before it leaves them as they were.

References: Convex's `paymentAttempts.userId` is a `v.id("users")`, the `_id` of a users
document, where this service keys payers by Clerk id (`externalId`). A `userId` (in
sessions too) that names a users `_id`, in the import or already stored, becomes that
user's `externalId`; one naming an `externalId` stays. In a Convex document (one with
`_creationTime`, or from a Convex snapshot) a payment attempt's `userId` that names neither
is a broken reference: the import stops at its line, or with `skip_broken_refs` leaves the
document out and lists it. Elsewhere an unknown `userId` is kept as a Clerk id, as a
webhook would store it before the user's own event arrives.

Afterwards one re-read message per channel kind tells live subscribers to read again
(`Store.announce_reread`), instead of one event per document.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

from datadiver_graph.domain import sources
from datadiver_graph.domain.bulk import ImportMode, LineError, parse_record
from datadiver_graph.domain.convex_format import GeneratedSchema
from datadiver_graph.domain.errors import Conflict
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.tables import TABLES, Table
from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.swap import Swap, recover

BATCH = 1000
# The fields holding a user reference, per table; only payment attempts' are declared
# `v.id("users")` in the Convex schema, so only theirs can be broken.
USER_REFERENCES = {db.SESSIONS: False, db.PAYMENT_ATTEMPTS: True}
# The channels a table's records are announced on, by prefix (see `domain.events`).
CHANNEL_PREFIXES = {
    db.USERS: ("user:",),
    db.SESSIONS: ("session:", "user-sessions:"),
    db.PAYMENT_ATTEMPTS: ("payments:",),
}


@dataclass(frozen=True, slots=True)
class TableSource:
    """One table's documents in one file (or zip member), re-openable."""

    table: Table
    where: str  # named in errors: the file, or `snapshot.zip:users/documents.jsonl`
    fmt: str
    size: int  # bytes, for progress
    open: Callable[[], AbstractContextManager[IO[bytes]]]
    schema: GeneratedSchema | None = None
    convex: bool = False  # from `npx convex export`: references are Convex ids


class Progress(Protocol):
    def start_table(self, name: str, total_bytes: int) -> None: ...

    def advance(self, documents: int, position: int) -> None: ...

    def end_table(self) -> None: ...


class NoProgress:
    def start_table(self, name: str, total_bytes: int) -> None:
        return None

    def advance(self, documents: int, position: int) -> None:
        return None

    def end_table(self) -> None:
        return None


@dataclass(slots=True)
class ImportResult:
    counts: dict[str, int] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)  # skipped with skip_broken_refs
    refused: list[str] = field(default_factory=list)  # appended keys taken meanwhile


async def existing_counts(store: Store, names: list[str]) -> dict[str, int]:
    return {name: await store.db.table(name).count_documents({}) for name in names}


def affected_tables(mode: ImportMode, names: list[str]) -> list[str]:
    return list(TABLES) if mode is ImportMode.REPLACE_ALL else names


async def run_import(
    store: Store,
    table_sources: list[TableSource],
    mode: ImportMode,
    *,
    skip_broken_refs: bool = False,
    progress: Progress | None = None,
) -> ImportResult:
    """Stage, validate and swap in every source; see the module docstring."""
    progress = progress or NoProgress()
    names = [source.table.name for source in table_sources]
    if len(set(names)) != len(names):
        raise Conflict("an import names each table once")
    await recover(store.db)
    if mode is ImportMode.EMPTY_ONLY:
        for name, count in (await existing_counts(store, names)).items():
            if count:
                raise Conflict(
                    f"table {name} holds {count} documents; "
                    "use --append to add to them or --replace to replace them"
                )
    # Users first: the other tables' references are resolved against them.
    ordered = sorted(table_sources, key=lambda s: list(TABLES).index(s.table.name))
    swap = Swap(store.db)
    result = ImportResult()
    await swap.begin()
    committed = False
    try:
        for source in ordered:
            stager = _Stager(store, swap, source, mode, names, skip_broken_refs, result)
            result.counts[source.table.name] = await stager.run(progress)
        if mode is ImportMode.REPLACE_ALL:
            for name in TABLES:
                if name not in names:
                    await swap.stage(name, append=False)  # empty: the table is cleared
                    result.counts[name] = 0
        committed = True  # from here on a failure is finished by `recover`, not undone
        result.refused = await swap.commit()
    except BaseException:
        if not committed:
            await asyncio.shield(swap.abort())
        raise
    prefixes = tuple(p for name in result.counts for p in CHANNEL_PREFIXES[name])
    await store.announce_reread(prefixes)
    return result


class _Stager:
    """One source into its staging collection, batch by batch."""

    def __init__(
        self,
        store: Store,
        swap: Swap,
        source: TableSource,
        mode: ImportMode,
        names: list[str],
        skip_broken_refs: bool,
        result: ImportResult,
    ) -> None:
        self.store = store
        self.swap = swap
        self.source = source
        self.table = source.table
        self.mode = mode
        self.skip_broken_refs = skip_broken_refs
        self.result = result
        self.count = 0
        self.user_sources: list[AsyncCollection[db.Document]] = []
        if self.table.name in USER_REFERENCES:
            if db.USERS in names:
                self.user_sources.append(store.db.collection(swap.staging_name(db.USERS)))
            users_replaced = mode is ImportMode.REPLACE_ALL or (
                mode is ImportMode.REPLACE and db.USERS in names
            )
            if not users_replaced:
                self.user_sources.append(store.db.users)

    async def run(self, progress: Progress) -> int:
        staged = await self.swap.stage(self.table.name, append=self.mode is ImportMode.APPEND)
        self.staging = self.store.db.collection(staged)
        progress.start_table(self.table.name, self.source.size)
        pending: list[tuple[int, Any]] = []
        with self.source.open() as stream:
            for line, doc in self._documents(stream):
                pending.append((line, doc))
                if len(pending) >= BATCH:
                    await self._flush(pending)
                    pending = []
                    progress.advance(self.count, _position(stream))
            await self._flush(pending)
            progress.advance(self.count, self.source.size)
        progress.end_table()
        return self.count

    def _documents(self, stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
        schema = self.source.schema
        for line, doc in sources.read(self.source.fmt, stream, self.source.where):
            yield line, schema.apply(doc) if schema is not None and isinstance(doc, dict) else doc

    async def _flush(self, pending: list[tuple[int, Any]]) -> None:
        if not pending:
            return
        if self.table.name in USER_REFERENCES:
            pending = await self._resolve_users(pending)
        where = self.source.where
        docs = [parse_record(self.table, doc, where, line).to_doc() for line, doc in pending]
        lines = [line for line, _ in pending]
        if self.mode is ImportMode.APPEND:
            await self._check_not_stored(docs, lines)
        try:
            await self.staging.insert_many(docs, ordered=True)
        except BulkWriteError as exc:
            raise await self._repeat(exc, docs, lines) from None
        self.count += len(docs)
        await self.swap.heartbeat()

    async def _resolve_users(self, pending: list[tuple[int, Any]]) -> list[tuple[int, Any]]:
        values = {
            doc["userId"]
            for _, doc in pending
            if isinstance(doc, dict) and isinstance(doc.get("userId"), str)
        }
        found: dict[str, str] = {}
        if values:
            query = {"$or": [{"_id": {"$in": list(values)}}, {"externalId": {"$in": list(values)}}]}
            for collection in self.user_sources:
                async for user in collection.find(query, {"externalId": 1}):
                    found.setdefault(user["_id"], user["externalId"])
                    found.setdefault(user["externalId"], user["externalId"])
        strict = USER_REFERENCES[self.table.name]
        kept: list[tuple[int, Any]] = []
        for line, doc in pending:
            value = doc.get("userId") if isinstance(doc, dict) else None
            if not isinstance(value, str):
                kept.append((line, doc))
            elif value in found:
                kept.append((line, {**doc, "userId": found[value]}))
            elif strict and (self.source.convex or "_creationTime" in doc):
                message = f"userId: {value!r} names no users document (in the import or stored)"
                if not self.skip_broken_refs:
                    raise LineError(self.source.where, line, message)
                self.result.broken.append(f"{self.source.where}: line {line}: {message}")
            else:
                kept.append((line, doc))
        return kept

    async def _check_not_stored(self, docs: list[db.Document], lines: list[int]) -> None:
        key = self.table.key_field
        ids = [doc["_id"] for doc in docs]
        keys = [doc[key] for doc in docs]
        stored = (
            await self.store.db.table(self.table.name)
            .find({"$or": [{"_id": {"$in": ids}}, {key: {"$in": keys}}]}, {key: 1})
            .to_list()
        )
        if not stored:
            return
        taken_ids = {doc["_id"] for doc in stored}
        taken_keys = {doc.get(key) for doc in stored}
        for doc, line in zip(docs, lines, strict=True):
            if doc[key] in taken_keys:
                what = f"{key} {doc[key]!r}"
            elif doc["_id"] in taken_ids:
                what = f"_id {doc['_id']!r}"
            else:
                continue
            raise Conflict(
                f"{self.source.where}: line {line}: {what} is already stored; nothing written"
            )

    async def _repeat(
        self, exc: BulkWriteError, docs: list[db.Document], lines: list[int]
    ) -> Exception:
        """The error for a document whose key or `_id` an earlier one had: naming both lines."""
        errors = exc.details.get("writeErrors") or [{}]
        error = errors[0]
        index = error.get("index")
        if error.get("code") != db.DUPLICATE_KEY or not isinstance(index, int):
            return exc
        doc, line = docs[index], lines[index]
        key_value = error.get("keyValue") or {}
        field_name = next(iter(key_value), None)
        if field_name not in ("_id", self.table.key_field):
            field_name = self.table.key_field
        value = doc[field_name]
        first = await asyncio.to_thread(self._first_line, field_name, value)
        return LineError(self.source.where, line, f"{field_name} {value!r} repeats line {first}")

    def _first_line(self, field_name: str, value: Any) -> int | str:
        """Read the source again for the first document with this value (an error path)."""
        with self.source.open() as stream:
            for line, doc in self._documents(stream):
                if isinstance(doc, dict) and doc.get(field_name) == value:
                    return line
        return "?"


def _position(stream: IO[bytes]) -> int:
    try:
        return stream.tell()
    except (OSError, ValueError):
        return 0
