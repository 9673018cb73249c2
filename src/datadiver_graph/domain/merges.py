"""Merges by top-level key as one atomic update, so concurrent writers never conflict.

`updateSession(metadata:)` and `updateUser(preferences:)` replace or remove the keys they
name and leave the others alone, so two merges of different keys do not depend on each
other: each is a `$set`/`$unset` on `<field>.<key>` with the version bump in the same update,
and MongoDB applies them one after the other. Keys are already checked to hold no `.` or
`$`, so a key cannot reach outside its object.

What such a merge cannot see is the object's size after it: other writers may have added
keys meanwhile, and the limit (json_values.MAX_OBJECT_BYTES) is on the JSON text. The
update runs only while the stored object is small enough, as BSON, that no merge can pass
the limit as JSON (a BSON byte is at most six JSON bytes: a control character escaped as
`\\u00XX`). A larger object is merged the careful way (`versioned.update_versioned`: read,
check, write if unchanged), the one case where the write depends on what it read.
"""

from __future__ import annotations

from typing import Any

import bson
from pymongo import ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection

from datadiver_graph.domain.json_values import MAX_OBJECT_BYTES, JsonObject

Document = dict[str, Any]

# The most JSON bytes one BSON byte can become (see the module docstring).
_JSON_BYTES_PER_BSON_BYTE = 6
_SAFE_BSON_BYTES = MAX_OBJECT_BYTES // _JSON_BYTES_PER_BSON_BYTE


def merge_update(field: str, patch: JsonObject, fields: Document) -> Document:
    """The update document: each key of `patch` set (null: unset) under `field`, `fields`
    set, the version bumped."""
    sets = {**fields, **{f"{field}.{k}": v for k, v in patch.items() if v is not None}}
    update: Document = {"$set": sets, "$inc": {"version": 1}}
    unsets = {f"{field}.{k}": "" for k, v in patch.items() if v is None}
    if unsets:
        update["$unset"] = unsets
    return update


def small_enough(field: str, patch: JsonObject) -> Document | None:
    """A filter matching a record whose `field`, merged with `patch`, stays within the size
    limit whatever else it holds; None when `patch` alone is too large for that."""
    added = len(bson.encode({k: v for k, v in patch.items() if v is not None}))
    room = _SAFE_BSON_BYTES - added
    if room <= 0:
        return None
    size = {"$bsonSize": {"$ifNull": [f"${field}", {}]}}
    return {"$expr": {"$lte": [size, room]}}


async def merge_atomic(
    collection: AsyncCollection[Document],
    key: Document,
    *,
    field: str,
    patch: JsonObject,
    fields: Document,
) -> Document | None:
    """Merge `patch` into the record's `field` and set `fields`, in one update; the record
    as stored after it. None when no record matched `key`, or its object is too large for a
    merge unseen (the caller then merges with `update_versioned`)."""
    guard = small_enough(field, patch)
    if guard is None:
        return None
    updated: Document | None = await collection.find_one_and_update(
        {**key, **guard},
        merge_update(field, patch, fields),
        return_document=ReturnDocument.AFTER,
    )
    return updated
