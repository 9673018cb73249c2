"""The tables the console browses, and their pages: keyset pagination on an index, always.

Each table has an order (a unique indexed key, or an index's fields ending in one) and a few
searches, each answered by an index: an exact match or a key prefix (as a range, which an
index answers, where a `^prefix` regex may not be). A page is `limit + 1` rows after the
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
    name: str  # the query parameter's value (`?by=email`)
    label: str
    field: str
    match: Literal["exact", "prefix"]
    # The order of the results: an index whose leading field is `field` (an exact match)
    # or the field itself (a prefix), ending in a unique key.
    order: Order
    prefix: str = ""  # put in front of what was typed (billing: "user:" + a Clerk id)


@dataclass(frozen=True, slots=True)
class Table:
    name: str  # in the URL
    title: str
    collection: str
    key: str  # unique: identifies a document in its URL
    order: Order
    columns: tuple[tuple[str, str], ...]  # (field, heading)
    searches: tuple[Search, ...] = field(default=())

    def search(self, name: str | None) -> Search | None:
        return next((s for s in self.searches if s.name == name), None)


def _by(field_name: str, label: str, order: Order | None = None, prefix: str = "") -> Search:
    if order is None:
        return Search(field_name, label, field_name, "prefix", ((field_name, 1),))
    return Search(field_name, label, field_name, "exact", order, prefix)


TABLES: dict[str, Table] = {
    table.name: table
    for table in (
        Table(
            "users",
            "Users",
            db.USERS,
            key="externalId",
            order=(("externalId", 1),),
            columns=(
                ("externalId", "Clerk id"),
                ("email", "email"),
                ("name", "name"),
                ("version", "version"),
                ("updatedAt", "updated"),
            ),
            searches=(
                _by("externalId", "Clerk id"),
                Search("email", "email", "email", "exact", (("email", 1), ("_id", 1))),
            ),
        ),
        Table(
            "sessions",
            "Sessions",
            db.SESSIONS,
            key="sessionId",
            order=(("sessionId", 1),),
            columns=(
                ("sessionId", "sessionId"),
                ("userId", "user"),
                ("active", "active"),
                ("version", "version"),
                ("lastActivity", "last activity"),
            ),
            searches=(
                _by("sessionId", "sessionId"),
                _by("userId", "Clerk id", (("userId", 1), ("lastActivity", -1), ("sessionId", -1))),
            ),
        ),
        Table(
            "payments",
            "Payment attempts",
            db.PAYMENT_ATTEMPTS,
            key="payment_id",
            order=(("payment_id", 1),),
            columns=(
                ("payment_id", "payment_id"),
                ("userId", "user"),
                ("status", "status"),
                ("amount", "amount"),
                ("currency", "currency"),
                ("createdAt", "created"),
            ),
            searches=(
                _by("payment_id", "payment_id"),
                _by("userId", "Clerk id", (("userId", 1), ("createdAt", -1), ("payment_id", -1))),
            ),
        ),
        Table(
            "subscriptions",
            "Billing subscriptions",
            db.BILLING_SUBSCRIPTIONS,
            key="payerKey",
            order=(("payerKey", 1),),
            columns=(
                ("payerKey", "payer"),
                ("subscriptionId", "subscription"),
                ("status", "status"),
                ("version", "version"),
                ("updatedAt", "updated"),
            ),
            searches=(
                Search("user", "Clerk id", "payerKey", "exact", (("payerKey", 1),), "user:"),
                _by("payerKey", "payer key"),
                Search("item", "item id", "items.id", "exact", (("items.id", 1), ("_id", 1))),
            ),
        ),
        Table(
            "webhooks",
            "Webhook deliveries",
            db.WEBHOOK_LOG,
            key="_id",
            order=(("_id", -1),),
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
                Search("svixId", "svix-id", "svixId", "exact", (("svixId", 1), ("_id", 1))),
                Search(
                    "refused", "refused only", "refused", "exact", (("refused", 1), ("_id", -1))
                ),
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


def page_query(
    table: Table, search: Search | None, text: str, after: str | None, size: int = PAGE_SIZE
) -> PageQuery:
    """The find that answers one page: equality or range on the search field, then the
    rows strictly after the cursor in the order's index."""
    order = search.order if search is not None and text else table.order
    query: Document = {}
    if search is not None and text:
        value: Any = search.prefix + text[:MAX_SEARCH]
        if search.field == "refused":
            value = True
        if search.match == "exact":
            query[search.field] = value
        else:
            query[search.field] = {"$gte": value, "$lt": value + _PREFIX_END}
    if after is not None:
        query = _after(query, order, decode_cursor(after, len(order)))
    return PageQuery(query, [(name, direction) for name, direction in order], size + 1)


def _after(query: Document, order: Order, values: list[Any]) -> Document:
    """`query` and "after `values` in `order`": (a > x) or (a = x and b > y) or ..."""
    branches = []
    for i, (name, direction) in enumerate(order):
        branch = {order[j][0]: values[j] for j in range(i)}
        branch[name] = {"$gt" if direction == 1 else "$lt": values[i]}
        branches.append(branch)
    # An exact search already fixes the first field: its branch can never match.
    if len(order) > 1 and order[0][0] in query and not isinstance(query[order[0][0]], dict):
        branches = branches[1:]
    keyset = branches[0] if len(branches) == 1 else {"$or": branches}
    return {"$and": [query, keyset]} if query else keyset


async def read_page(
    database: Database, table: Table, search: Search | None, text: str, after: str | None
) -> Page:
    plan = page_query(table, search, text, after)
    cursor = database.collection(table.collection).find(plan.filter)
    rows = await cursor.sort(plan.sort).limit(plan.limit).to_list()
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_cursor = None
    if more and rows:
        next_cursor = encode_cursor([_field(rows[-1], name) for name, _ in plan.sort])
    return Page(rows, next_cursor)


def _field(doc: Document, path: str) -> Any:
    # Only ever a scalar: a multikey order (items.id) matches one row, so it has no next page.
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
        or not all(v is None or isinstance(v, str | int | bool) for v in values)
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
