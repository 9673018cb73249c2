"""The tables the console browses, and their pages: keyset pagination on an index, always.

Each table is ordered by a unique indexed key, and has a few searches, each answered by an
index: a key prefix (as a range, which an index answers, where a `^prefix` regex may not),
or an exact match then the rest of that index's fields. A page is `limit + 1` rows after the
last row shown, so no page view ever skips or counts: the row total shown is the
collection's estimated count (metadata), cached for a few seconds.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from datadiver_graph.storage import mongo as db
from datadiver_graph.storage.mongo import Database, Document

PAGE_SIZE = 50
COUNT_TTL_S = 10.0
MAX_SEARCH = 320
_MAX_CURSOR = 1024
# Sorts after every character a key can hold: the end of a prefix's range.
_PREFIX_END = "\U0010ffff"

Order = tuple[tuple[str, Literal[1, -1]], ...]


class BadCursor(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Search:
    """`prefix`: a range on a unique key, in its order. `exact`: an equality, then `order`
    (one or two fields of the index that follows the equality field; empty when few rows
    can match: the first page is all there is)."""

    name: str  # the query parameter's value (`?by=email`)
    label: str
    field: str
    match: Literal["exact", "prefix"]
    order: Order = ()
    prefix: str = ""  # put in front of what was typed (billing: "user:" + a Clerk id)
    value: object = None  # a fixed value instead of the text (webhooks: refused = true)


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # in the URL
    title: str
    collection: str
    key: str  # unique and indexed: the default order, and a document's URL
    direction: Literal[1, -1]
    columns: tuple[tuple[str, str], ...]  # (field, heading)
    searches: tuple[Search, ...] = field(default=())

    @property
    def link_field(self) -> str:
        """The column that links to a row's document: the key's, else the first."""
        return self.key if any(name == self.key for name, _ in self.columns) else self.columns[0][0]

    def search(self, name: str | None) -> Search | None:
        return next((s for s in self.searches if s.name == name), None)


def _prefix(field_name: str, label: str) -> Search:
    return Search(field_name, label, field_name, "prefix")


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "users",
            "Users",
            db.USERS,
            key="externalId",
            direction=1,
            columns=(
                ("externalId", "Clerk id"),
                ("email", "email"),
                ("name", "name"),
                ("version", "version"),
                ("updatedAt", "updated"),
            ),
            searches=(
                _prefix("externalId", "Clerk id"),
                Search("email", "email", "email", "exact"),
            ),
        ),
        Table(
            "sessions",
            "Sessions",
            db.SESSIONS,
            key="sessionId",
            direction=1,
            columns=(
                ("sessionId", "sessionId"),
                ("userId", "user"),
                ("active", "active"),
                ("version", "version"),
                ("lastActivity", "last activity"),
            ),
            searches=(
                _prefix("sessionId", "sessionId"),
                Search(
                    "userId",
                    "Clerk id",
                    "userId",
                    "exact",
                    (("lastActivity", -1), ("sessionId", -1)),
                ),
            ),
        ),
        Table(
            "payments",
            "Payment attempts",
            db.PAYMENT_ATTEMPTS,
            key="payment_id",
            direction=1,
            columns=(
                ("payment_id", "payment_id"),
                ("userId", "user"),
                ("status", "status"),
                ("amount", "amount"),
                ("currency", "currency"),
                ("createdAt", "created"),
            ),
            searches=(
                _prefix("payment_id", "payment_id"),
                Search(
                    "userId", "Clerk id", "userId", "exact", (("createdAt", -1), ("payment_id", -1))
                ),
            ),
        ),
        Table(
            "subscriptions",
            "Billing subscriptions",
            db.BILLING_SUBSCRIPTIONS,
            key="payerKey",
            direction=1,
            columns=(
                ("payerKey", "payer"),
                ("subscriptionId", "subscription"),
                ("status", "status"),
                ("version", "version"),
                ("updatedAt", "updated"),
            ),
            searches=(
                Search("user", "Clerk id", "payerKey", "exact", prefix="user:"),
                _prefix("payerKey", "payer key"),
                Search("item", "item id", "items.id", "exact"),
            ),
        ),
        Table(
            "webhooks",
            "Webhook deliveries",
            db.WEBHOOK_LOG,
            key="at",
            direction=-1,
            columns=(
                ("receivedAt", "received"),
                ("svixId", "svix-id"),
                ("type", "type"),
                ("outcome", "outcome"),
                ("status", "status"),
                ("error", "error"),
                ("count", "count"),
            ),
            searches=(
                Search("svixId", "svix-id", "svixId", "exact"),
                Search("refused", "refused only", "refused", "exact", (("at", -1),), value=True),
            ),
        ),
    )
}


@dataclass(frozen=True, slots=True)
class PageQuery:
    filter: Document
    sort: list[tuple[str, int]]
    limit: int


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Document]
    next_cursor: str | None
    capped: bool = False  # an exact search with more matches than one page shows


def _range(direction: int, after: Any) -> Document:
    return {"$gt" if direction == 1 else "$lt": after}


def page_queries(
    table: Table, search: Search | None, text: str, after: str | None, size: int = PAGE_SIZE
) -> list[PageQuery]:
    """The finds that answer one page, read in turn until it is full. Each is one index
    range: a condition on one field, or an equality then a condition on the index's next
    field. (An `$or` of ranges, the usual keyset form, is the same on MongoDB, but the
    embedded database scans the collection for it.)"""
    limit = size + 1
    if search is None or (not text and search.value is None):
        condition: Document = {} if after is None else _range(table.direction, _one(after))
        return [_on(table.key, condition, [(table.key, table.direction)], limit)]
    if search.match == "prefix":
        start = text[:MAX_SEARCH]
        condition = {"$gte": start, "$lt": start + _PREFIX_END}
        if after is not None:
            condition["$gt"] = _one(after)
        return [_on(search.field, condition, [(search.field, 1)], limit)]
    value = search.value if search.value is not None else search.prefix + text[:MAX_SEARCH]
    equal: Document = {search.field: value}
    if not search.order:
        return [PageQuery(equal, [(table.key, 1)], limit)]
    if after is None:
        return [PageQuery(equal, list(search.order), limit)]
    values = decode_cursor(after, len(search.order))
    first, direction = search.order[0]
    if len(search.order) == 1:
        return [PageQuery({**equal, first: _range(direction, values[0])}, [search.order[0]], limit)]
    # (a, b) after (x, y): the rest of x's rows after y, then the rows after x.
    second, second_direction = search.order[1]
    ties = {**equal, first: values[0], second: _range(second_direction, values[1])}
    rest = {**equal, first: _range(direction, values[0])}
    return [
        PageQuery(ties, [search.order[1]], limit),
        PageQuery(rest, list(search.order), limit),
    ]


def _on(field_name: str, condition: Document, sort: list[tuple[str, int]], limit: int) -> PageQuery:
    return PageQuery({field_name: condition} if condition else {}, sort, limit)


def _one(after: str) -> Any:
    return decode_cursor(after, 1)[0]


async def read_page(
    database: Database, table: Table, search: Search | None, text: str, after: str | None
) -> Page:
    collection = database.collection(table.collection)
    rows: list[Document] = []
    queries = page_queries(table, search, text, after)
    for query in queries:
        wanted = PAGE_SIZE + 1 - len(rows)
        if wanted <= 0:
            break
        rows += await collection.find(query.filter).sort(query.sort).limit(wanted).to_list()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    sort = queries[-1].sort
    exact_only = search is not None and search.match == "exact" and not search.order and bool(text)
    if not more or not rows or exact_only:
        return Page(rows, None, capped=more and exact_only)
    return Page(rows, encode_cursor([_field(rows[-1], name) for name, _ in sort]))


def _field(doc: Document, path: str) -> Any:
    # Only ever a scalar: a multikey field (items.id) is searched exactly, never paged.
    value: Any = doc
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(values, default=str)).decode().rstrip("=")


def decode_cursor(cursor: str, length: int) -> list[Any]:
    if len(cursor) > _MAX_CURSOR:
        raise BadCursor("cursor too long")
    try:
        values = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        raise BadCursor("not a cursor this console made") from None
    if (
        not isinstance(values, list)
        or len(values) != length
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values)
        or any(isinstance(v, int) and not -(2**63) <= v < 2**63 for v in values)
    ):
        raise BadCursor("not a cursor this console made")
    return values


class RowCounts:
    """Each table's estimated row count (collection metadata, not a scan), kept briefly so
    a burst of page views asks once."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}

    async def estimate(self, database: Database, collection: str) -> int:
        now = self._clock()
        found = self._seen.get(collection)
        if found is not None and now - found[0] < COUNT_TTL_S:
            return found[1]
        count = await database.collection(collection).estimated_document_count()
        self._seen[collection] = (now, count)
        return count


async def find_document(database: Database, table: Table, key: str) -> Document | None:
    return await database.collection(table.collection).find_one({table.key: key})
