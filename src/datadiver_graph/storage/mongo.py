"""MongoDB connection, the collections the domain uses, and their indexes."""

from __future__ import annotations

import logging
from typing import Any

from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, IndexModel
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError

log = logging.getLogger(__name__)

Document = dict[str, Any]

# Public table names: the ones import/export and the Convex seed use.
USERS = "users"
SESSIONS = "sessions"
PAYMENT_ATTEMPTS = "paymentAttempts"
TABLES = (USERS, SESSIONS, PAYMENT_ATTEMPTS)

# Internal collections of the Clerk webhook (not import/export tables).
WEBHOOK_DELIVERIES = "webhookDeliveries"
BILLING_EVENTS = "billingEvents"
# Per payer, the Clerk Billing subscription and items as last reported (domain.billing).
BILLING_SUBSCRIPTIONS = "billingSubscriptions"
# One row per webhook delivery and its outcome, for operators (the console's webhook log).
WEBHOOK_LOG = "webhookLog"
# Svix retries a failed message for about 27 hours; a week covers that and manual replays.
WEBHOOK_DELIVERY_RETENTION_S = 7 * 24 * 3600

INDEXES: dict[str, list[IndexModel]] = {
    USERS: [
        IndexModel([("externalId", ASCENDING)], unique=True, name="by_external_id"),
        # The console's search by email.
        IndexModel([("email", ASCENDING), ("_id", ASCENDING)], name="by_email"),
    ],
    SESSIONS: [
        IndexModel([("sessionId", ASCENDING)], unique=True, name="by_session_id"),
        IndexModel(
            [("userId", ASCENDING), ("lastActivity", DESCENDING), ("sessionId", DESCENDING)],
            name="by_user_activity",
        ),
    ],
    PAYMENT_ATTEMPTS: [
        IndexModel([("payment_id", ASCENDING)], unique=True, name="by_payment_id"),
        IndexModel(
            [("userId", ASCENDING), ("createdAt", DESCENDING), ("payment_id", DESCENDING)],
            name="by_user_created",
        ),
    ],
    WEBHOOK_DELIVERIES: [
        # `receivedAt` is a BSON date: TTL indexes ignore integers.
        IndexModel(
            [("receivedAt", ASCENDING)],
            expireAfterSeconds=WEBHOOK_DELIVERY_RETENTION_S,
            name="ttl_received_at",
        ),
    ],
    WEBHOOK_LOG: [
        IndexModel(
            [("receivedAt", ASCENDING)],
            expireAfterSeconds=WEBHOOK_DELIVERY_RETENTION_S,
            name="ttl_received_at",
        ),
        # `at`, a time-ordered id written with each row, orders the log: newest first, and
        # the newest refusals without walking the accepted deliveries.
        IndexModel([("at", DESCENDING)], unique=True, name="by_at"),
        IndexModel([("refused", ASCENDING), ("at", DESCENDING)], name="by_refused_at"),
        IndexModel([("svixId", ASCENDING), ("_id", ASCENDING)], name="by_svix_id"),
    ],
    BILLING_EVENTS: [
        IndexModel([("svixId", ASCENDING)], unique=True, name="by_svix_id"),
        IndexModel(
            [("objectId", ASCENDING), ("clerkUpdatedAt", DESCENDING)], name="by_object_updated"
        ),
        IndexModel([("userId", ASCENDING), ("receivedAt", DESCENDING)], name="by_user_received"),
    ],
    BILLING_SUBSCRIPTIONS: [
        IndexModel([("payerKey", ASCENDING)], unique=True, name="by_payer"),
        IndexModel([("items.id", ASCENDING)], name="by_item_id"),
    ],
}


DUPLICATE_KEY = 11000


def duplicate_key_errors(exc: BulkWriteError) -> set[int] | None:
    """The indexes of the operations an unordered bulk write refused as duplicate keys, when
    those are its only failures; None when anything else failed (a write concern too)."""
    errors = exc.details.get("writeErrors", [])
    if exc.details.get("writeConcernErrors") or any(
        error.get("code") != DUPLICATE_KEY for error in errors
    ):
        return None
    return {error["index"] for error in errors}


class Database:
    """The client and the collections, looked up once: pymongo builds a new collection object
    on every `db[name]`, which showed up in profiles of the hot read path."""

    __slots__ = ("_collections", "client", "db", "payment_attempts", "sessions", "users")

    def __init__(self, client: AsyncMongoClient[Document], db: AsyncDatabase[Document]) -> None:
        self.client = client
        self.db = db
        self.users: AsyncCollection[Document] = db[USERS]
        self.sessions: AsyncCollection[Document] = db[SESSIONS]
        self.payment_attempts: AsyncCollection[Document] = db[PAYMENT_ATTEMPTS]
        self._collections: dict[str, AsyncCollection[Document]] = {}

    def collection(self, name: str) -> AsyncCollection[Document]:
        """Any collection by name, cached (internal ones too: deliveries, tombstones...)."""
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = self.db[name]
        return found

    def __repr__(self) -> str:
        return f"Database({self.db.name!r})"

    async def look_up(self, rows: list[Document], *stages: Document) -> list[Document]:
        """`rows` completed by `$lookup` stages (or others), in order, in one round trip:
        one aggregate over `$documents` (MongoDB 5.1+). A round trip costs the client more
        CPU than the documents it carries; each `$lookup` on an indexed field is a point read.
        (Not `$unionWith`: SecantusDB scans the whole collection for it.)"""
        cursor = await self.db.aggregate([{"$documents": rows}, *stages])
        found = await cursor.to_list()
        if len(found) != len(rows):
            raise RuntimeError(f"look_up: {len(rows)} rows in, {len(found)} out")
        return found

    def table(self, name: str) -> AsyncCollection[Document]:
        if name not in TABLES:
            raise KeyError(name)
        return self.collection(name)

    async def ping(self) -> bool:
        try:
            await self.client.admin.command("ping")
        except Exception:  # any driver failure means "not ready"
            return False
        return True

    async def close(self) -> None:
        await self.client.close()


def connect(
    uri: str, db_name: str, *, timeout_ms: int = 5_000, monitor_timeout_ms: int | None = None
) -> Database:
    """Create the client; the driver connects lazily on the first operation.

    `timeout_ms` bounds how long an operation waits for a server. `monitor_timeout_ms`
    (default: the same) is connectTimeoutMS, which the driver's heartbeat also uses as its
    read timeout: a server that answers no heartbeat within it is marked down and every
    operation in flight on it is cancelled. Commands that run long scans raise it.
    """
    client: AsyncMongoClient[Document] = AsyncMongoClient(
        uri,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=monitor_timeout_ms or timeout_ms,
        appname="datadiver-graph",
        # Acknowledged means journaled on a majority: a crash right after a mutation or a
        # webhook's 200 must not lose it (w:1 without j can, on SecantusDB and mongod alike).
        w="majority",
        journal=True,
    )
    return Database(client=client, db=client[db_name])


async def ensure_indexes(database: Database) -> None:
    """Create every index; creating an existing identical index is a no-op in MongoDB."""
    for table, models in INDEXES.items():
        await database.db[table].create_indexes(models)
    log.debug("indexes ensured on %s", ", ".join(INDEXES))
