"""Users: synced from Clerk, read and updated by their owner."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError

from datadiver_graph.domain import events
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.errors import Conflict, InvalidInput
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.json_values import check_json_object, merge_by_key
from datadiver_graph.domain.merges import merge_atomic
from datadiver_graph.domain.records import Preferences, Record, Timestamp, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.versioned import backoff, update_versioned
from datadiver_graph.storage import mongo as db

MAX_NAME_LENGTH = 200
TOMBSTONES = "userTombstones"
# Attempts of a Clerk upsert whose user other writers keep changing in between.
ATTEMPTS = 8
Document = db.Document


class User(Record):
    external_id: str = Field(min_length=1, max_length=128)
    name: str | None = Field(default=None, max_length=MAX_NAME_LENGTH)
    email: str | None = Field(default=None, max_length=320)
    image_url: str | None = Field(default=None, max_length=2048)
    preferences: Preferences = Field(default_factory=dict)
    created_at: Timestamp
    updated_at: Timestamp
    # Clerk's own `updated_at`: the order key for webhook deliveries, which arrive in any order.
    clerk_updated_at: Timestamp | None = None


@dataclass(frozen=True, slots=True)
class ClerkProfile:
    """What Clerk says about a user, already reduced to the fields we keep."""

    external_id: str
    name: str | None
    email: str | None
    image_url: str | None
    created_at: int | None
    updated_at: int | None


def channels(external_id: str) -> tuple[str, ...]:
    return (events.user_channel(external_id),)


async def get_by_external_id(store: Store, external_id: str) -> User | None:
    doc = await store.db.users.find_one({"externalId": check_id(external_id, "userId")})
    return User.from_doc(doc) if doc else None


async def get_unless_deleted(store: Store, external_id: str) -> User | None:
    """The user, or None when unknown or deleted in Clerk: a service must not act for a
    deleted user. One round trip reads the user and its tombstone together, so a document
    a late Clerk upsert left for an instant after the delete (see `_upsert_many`) is not
    shown either."""
    check_id(external_id, "userId")
    [row] = await store.db.look_up([{"externalId": external_id}], *stored_lookups("externalId"))
    if row["tombstone"] or not row["user"]:
        return None
    return User.from_doc(row["user"][0])


async def is_deleted(store: Store, external_id: str) -> bool:
    """Whether Clerk deleted the user (a tombstone is kept): their writes are refused,
    though a session token issued before the delete may still verify for a minute."""
    found = await store.db.collection(TOMBSTONES).find_one({"_id": external_id}, {"_id": 1})
    return found is not None


def _check_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"name must be at most {MAX_NAME_LENGTH} characters")
    if any(unicodedata.category(ch) == "Cc" for ch in name):
        raise InvalidInput("name must not contain control characters")
    return name


async def update(
    store: Store,
    external_id: str,
    *,
    preferences: dict[str, Any] | None = None,
    name: str | None = None,
) -> User:
    """Merge `preferences` by top-level key (null removes a key); replace `name` when given."""
    check_id(external_id, "userId")
    if preferences is not None:
        check_json_object(preferences, "preferences")
    new_name = _check_name(name) if name is not None else None

    def change(current: dict[str, Any]) -> dict[str, Any]:
        fields: dict[str, Any] = {"updatedAt": now_ms()}
        if preferences is not None:
            merged = merge_by_key(current.get("preferences") or {}, preferences)
            fields["preferences"] = check_json_object(merged, "preferences")
        if new_name is not None:
            fields["name"] = new_name
        return fields

    # One atomic merge (domain.merges): concurrent writers of other keys never conflict.
    fields: dict[str, Any] = {"updatedAt": now_ms()}
    if new_name is not None:
        fields["name"] = new_name
    doc = await merge_atomic(
        store.db.users,
        {"externalId": external_id},
        field="preferences",
        patch=preferences or {},
        fields=fields,
    )
    if doc is None:  # unknown (update_versioned says so), or too large to merge unseen
        doc = await update_versioned(
            store.db.users, {"externalId": external_id}, change, f"user {external_id!r}"
        )
    user = User.from_doc(doc)
    return await store.publish("user.updated", user, channels(user.external_id))


async def upsert_from_clerk(store: Store, profile: ClerkProfile) -> User | None:
    """Create or update from Clerk. Returns None when the change is stale and was ignored:
    the user was deleted in Clerk, or what is stored is already newer (by Clerk's updated_at).
    """
    return (await upsert_many_from_clerk(store, [profile]))[0]


def stored_lookups(external_id_field: str) -> list[Document]:
    """`$lookup` stages adding what is stored about the user named in `external_id_field`:
    `user` (its document, if any) and `tombstone` (if it was deleted). What
    `upsert_many_from_clerk` reads first; a caller may read it in a round trip of its own
    (`Database.look_up`) and pass the rows."""
    return [
        {
            "$lookup": {
                "from": db.USERS,
                "localField": external_id_field,
                "foreignField": "externalId",
                "as": "user",
            }
        },
        {
            "$lookup": {
                "from": TOMBSTONES,
                "localField": external_id_field,
                "foreignField": "_id",
                "as": "tombstone",
            }
        },
    ]


async def upsert_many_from_clerk(
    store: Store, profiles: Sequence[ClerkProfile], rows: Sequence[Document] | None = None
) -> list[User | None]:
    """`upsert_from_clerk` for several users (one profile each), in two round trips however
    many there are; one when the caller read `rows` (one per profile, with `stored_lookups`).

    Each user is written only if still as read (same `version`), so the document published is
    exactly the one stored. A user changed by another writer meanwhile is read and written
    again on its own. A user the write created costs one more read: its tombstone, as a
    delete may have landed since the first read; then the new document is deleted again.
    """
    external_ids = [check_id(profile.external_id, "userId") for profile in profiles]
    if len(set(external_ids)) != len(external_ids):
        raise ValueError("upsert_many_from_clerk takes one profile per user")
    return await _upsert_many(store, profiles, rows, ATTEMPTS)


@dataclass(frozen=True, slots=True)
class _Write:
    """One user's upsert, planned from the document as read (`current`)."""

    index: int  # in the profiles
    external_id: str
    current: Document | None
    match: Document
    fields: Document  # what Clerk says, to $set
    on_insert: Document

    def op(self) -> UpdateOne:
        return UpdateOne(
            self.match,
            {"$set": self.fields, "$setOnInsert": self.on_insert, "$inc": {"version": 1}},
            upsert=True,
        )

    def stored(self, inserted: bool) -> Document:
        """The document as the write left it: MongoDB builds an inserted one from the
        match's fields and $setOnInsert."""
        base = {**self.match, **self.on_insert} if inserted else self.current or {}
        version = (self.current or {}).get("version") or 0
        return {**base, **self.fields, "version": version + 1}


def _plan(index: int, profile: ClerkProfile, current: Document | None, now: int) -> _Write:
    # Matches only the document as read. Changed meanwhile: the upsert tries an insert that
    # a unique index refuses (a conflict). Deleted meanwhile: it inserts. A new user's fresh
    # _id matches nothing: an insert, refused when another writer created the user first.
    match: Document
    if current is None:
        match = {"_id": new_id(), "externalId": profile.external_id}
    else:
        match = {
            "_id": current["_id"],
            "externalId": profile.external_id,
            "version": current.get("version"),
        }
    return _Write(
        index=index,
        external_id=profile.external_id,
        current=current,
        match=match,
        fields={
            "name": profile.name,
            "email": profile.email,
            "imageUrl": profile.image_url,
            "clerkUpdatedAt": profile.updated_at,
            "updatedAt": now,
        },
        on_insert={
            "preferences": {},
            "createdAt": profile.created_at if profile.created_at is not None else now,
        },
    )


def _is_stale(profile: ClerkProfile, current: Document) -> bool:
    """Stored with a newer or equal Clerk timestamp (a profile without one always applies)."""
    stored_at = current.get("clerkUpdatedAt")
    if profile.updated_at is None or stored_at is None:
        return False
    return bool(stored_at >= profile.updated_at)


async def _upsert_many(
    store: Store,
    profiles: Sequence[ClerkProfile],
    rows: Sequence[Document] | None,
    attempts: int,
) -> list[User | None]:
    if not profiles:
        return []
    if attempts == 0:
        raise Conflict(f"user {profiles[0].external_id!r} kept changing; retry")
    if rows is None:
        names = [{"externalId": profile.external_id} for profile in profiles]
        rows = await store.db.look_up(names, *stored_lookups("externalId"))
    now = now_ms()
    writes: list[_Write] = []
    for index, (profile, row) in enumerate(zip(profiles, rows, strict=True)):
        # A user deleted without a document left is not seen here: the write inserts it,
        # and the tombstone check after the write deletes it again.
        doc = row["user"][0] if row["user"] else None
        if not row["tombstone"] and not (doc and _is_stale(profile, doc)):
            writes.append(_plan(index, profile, doc, now))
    results: list[User | None] = [None] * len(profiles)
    if not writes:
        return results
    try:
        result = await store.db.users.bulk_write([w.op() for w in writes], ordered=False)
        conflicts: set[int] = set()
        inserted = set(result.upserted_ids or ())
    except BulkWriteError as exc:
        conflicts = db.duplicate_key_errors(exc) or set()
        if not conflicts:
            raise
        inserted = {upserted["index"] for upserted in exc.details.get("upserted", [])}
    deleted_meanwhile: set[str] = set()
    if inserted:  # a delete may have landed since the read: no user comes back
        created = {writes[i].external_id: writes[i].match["_id"] for i in inserted}
        tombstoned = store.db.collection(TOMBSTONES).find(
            {"_id": {"$in": list(created)}}, {"_id": 1}
        )
        deleted_meanwhile = {doc["_id"] async for doc in tombstoned}
        if deleted_meanwhile:
            undone = [created[external_id] for external_id in deleted_meanwhile]
            await store.db.users.delete_many({"_id": {"$in": undone}})
    for i, write in enumerate(writes):
        if i in conflicts:
            profile = profiles[write.index]
            results[write.index] = await _update_unseen(store, profile, write, attempts)
        elif write.external_id not in deleted_meanwhile:
            kind = "user.created" if i in inserted else "user.updated"
            user = User.from_doc(write.stored(i in inserted))
            results[write.index] = await store.publish(kind, user, channels(user.external_id))
    return results


async def _update_unseen(
    store: Store, profile: ClerkProfile, write: _Write, attempts: int
) -> User | None:
    """A user another writer changed since it was read (a preference merge, another
    instance's delivery): what Clerk says does not depend on what is stored, so it is
    written without matching the version, unless the stored profile is as new. Created or
    deleted meanwhile: planned again from a fresh read, after a jittered wait."""
    if write.current is not None:
        match: Document = {"_id": write.current["_id"], "externalId": write.external_id}
        if profile.updated_at is not None:
            match["clerkUpdatedAt"] = {"$not": {"$gte": profile.updated_at}}
        doc = await store.db.users.find_one_and_update(
            match,
            {"$set": write.fields, "$inc": {"version": 1}},
            return_document=ReturnDocument.AFTER,
        )
        if doc is not None:
            user = User.from_doc(doc)
            return await store.publish("user.updated", user, channels(user.external_id))
    await backoff(ATTEMPTS - attempts)
    return (await _upsert_many(store, [profile], None, attempts - 1))[0]


async def delete_from_clerk(store: Store, external_id: str) -> User | None:
    """Delete the user and leave a tombstone so late create/update deliveries stay ignored.

    Their sessions and payment attempts are kept unchanged (billing history must survive):
    they keep their `userId`, are not marked, and publish no event. The tombstone in
    `userTombstones` (with `deletedAt`) is the one record that says the user is gone, so an
    orphan is a row whose `userId` has a tombstone. Marking every row instead would be an
    unbounded fan-out of writes and events that a failed delivery could leave half done.
    Returns the deleted user, if there was one; the tombstone is written either way.
    """
    check_id(external_id, "userId")
    await store.db.collection(TOMBSTONES).update_one(
        {"_id": external_id}, {"$setOnInsert": {"deletedAt": now_ms()}}, upsert=True
    )
    doc = await store.db.users.find_one_and_delete({"externalId": external_id})
    if doc is None:
        return None
    user = User.from_doc(doc)
    return await store.publish("user.deleted", user, channels(user.external_id))
