"""Users: synced from Clerk, read and updated by their owner."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from datadiver_graph import events
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.json_values import check_json_object, merge_by_key
from datadiver_graph.domain.records import Preferences, Record, Timestamp, new_id
from datadiver_graph.domain.versioned import update_versioned
from datadiver_graph.store import Store

MAX_NAME_LENGTH = 200
TOMBSTONES = "userTombstones"


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


async def _publish(store: Store, kind: str, user: User) -> User:
    await store.events.publish(channels(user.external_id), events.Event(kind, user.to_doc()))
    return user


async def get_by_external_id(store: Store, external_id: str) -> User | None:
    doc = await store.db.users.find_one({"externalId": check_id(external_id, "userId")})
    return User.from_doc(doc) if doc else None


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

    doc = await update_versioned(
        store.db.users, {"externalId": external_id}, change, f"user {external_id!r}"
    )
    return await _publish(store, "user.updated", User.from_doc(doc))


async def upsert_from_clerk(store: Store, profile: ClerkProfile) -> User | None:
    """Create or update from Clerk. Returns None when the change is stale and was ignored:
    the user was deleted in Clerk, or what is stored is already newer (by Clerk's updated_at).
    """
    external_id = check_id(profile.external_id, "userId")
    tombstones = store.db.collection(TOMBSTONES)
    if await tombstones.find_one({"_id": external_id}) is not None:
        return None
    now = now_ms()
    newer_than_stored: dict[str, Any] = {"externalId": external_id}
    if profile.updated_at is not None:
        newer_than_stored["$or"] = [
            {"clerkUpdatedAt": None},
            {"clerkUpdatedAt": {"$lt": profile.updated_at}},
        ]
    try:
        doc = await store.db.users.find_one_and_update(
            newer_than_stored,
            {
                "$set": {
                    "name": profile.name,
                    "email": profile.email,
                    "imageUrl": profile.image_url,
                    "clerkUpdatedAt": profile.updated_at,
                    "updatedAt": now,
                },
                "$setOnInsert": {
                    "_id": new_id(),
                    "preferences": {},
                    "createdAt": profile.created_at if profile.created_at is not None else now,
                },
                "$inc": {"version": 1},
            },
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        # The user exists with a newer (or equal) Clerk timestamp: the filter missed it and
        # the upsert collided with the unique externalId index. Stale: ignore.
        return None
    assert doc is not None
    # A delete may have landed between the tombstone check and the write: honour it.
    if await tombstones.find_one({"_id": external_id}) is not None:
        await store.db.users.delete_one({"externalId": external_id})
        return None
    kind = "user.created" if doc.get("version") == 1 else "user.updated"
    return await _publish(store, kind, User.from_doc(doc))


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
    return await _publish(store, "user.deleted", User.from_doc(doc))
