"""Chat sessions: create, read, list a user's, update metadata, mark activity, end."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from pydantic import Field
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from datadiver_graph.domain import events
from datadiver_graph.domain.clock import now_ms
from datadiver_graph.domain.errors import Conflict, NotFound
from datadiver_graph.domain.ids import check_id
from datadiver_graph.domain.json_values import check_json_object, merge_by_key
from datadiver_graph.domain.merges import merge_atomic
from datadiver_graph.domain.pagination import Page, newest_first
from datadiver_graph.domain.records import Metadata, Record, Timestamp, new_id
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.versioned import update_atomic, update_versioned


class Session(Record):
    session_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    active: bool = True
    metadata: Metadata = Field(default_factory=dict)
    created_at: Timestamp
    last_activity: Timestamp
    updated_at: Timestamp
    ended_at: Timestamp | None = None


def channels(session: Session) -> tuple[str, ...]:
    return (
        events.session_channel(session.session_id),
        events.user_sessions_channel(session.user_id),
    )


async def create(
    store: Store,
    user_id: str,
    metadata: dict[str, Any] | None = None,
    session_id: str | None = None,
) -> Session:
    check_id(user_id, "userId")
    session_id = check_id(session_id, "sessionId") if session_id is not None else uuid.uuid4().hex
    now = now_ms()
    session = Session(
        id=new_id(),
        session_id=session_id,
        user_id=user_id,
        metadata=check_json_object(metadata or {}, "metadata"),
        created_at=now,
        last_activity=now,
        updated_at=now,
    )
    try:
        await store.db.sessions.insert_one(session.to_doc())
    except DuplicateKeyError:
        raise Conflict(f"session {session_id!r} already exists") from None
    return await store.publish("session.created", session, channels(session))


async def get(store: Store, session_id: str) -> Session | None:
    doc = await store.db.sessions.find_one({"sessionId": check_id(session_id, "sessionId")})
    return Session.from_doc(doc) if doc else None


async def list_for_user(
    store: Store,
    user_id: str,
    *,
    active_only: bool = False,
    first: int,
    after: str | None = None,
) -> Page[Session]:
    """Newest activity first; ties broken by sessionId so the order is total and stable."""
    query: dict[str, Any] = {"userId": check_id(user_id, "userId")}
    if active_only:
        query["active"] = True
    return await newest_first(
        store.db.sessions,
        query,
        time_field="lastActivity",
        key_field="sessionId",
        first=first,
        after=after,
        parse=Session.from_doc,
    )


async def update(
    store: Store,
    session_id: str,
    *,
    metadata: dict[str, Any] | None = None,
    active: bool | None = None,
) -> Session:
    """Merge `metadata` by top-level key (a null value removes that key) and/or set `active`.

    One atomic update (domain.merges), so concurrent merges never conflict. Ending or
    reopening depends on the stored state (`endedAt` is set only by the change), so that
    update matches the state it changes; a session already in it gets the merge alone.
    """
    check_id(session_id, "sessionId")
    if metadata is not None:
        check_json_object(metadata, "metadata")
    now = now_ms()
    key = {"sessionId": session_id}
    attempts: list[tuple[dict[str, Any], dict[str, Any]]] = [({}, {})]
    if active is not None:
        flip = {"active": active, "endedAt": None if active else now}
        attempts = [({"active": not active}, flip), ({"active": active}, {})]
    doc = None
    for guard, fields in attempts:
        doc = await merge_atomic(
            store.db.sessions,
            {**key, **guard},
            field="metadata",
            patch=metadata or {},
            fields={"updatedAt": now, **fields},
        )
        if doc is not None:
            break
    else:
        # Unknown (update_versioned says so), or metadata too large to merge unseen.
        doc = await update_versioned(
            store.db.sessions, key, _change(metadata, active), f"session {session_id!r}"
        )
    session = Session.from_doc(doc)
    return await store.publish("session.updated", session, channels(session))


def _change(
    metadata: dict[str, Any] | None, active: bool | None
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """`update` as a change of the stored document, for `update_versioned`."""

    def change(current: dict[str, Any]) -> dict[str, Any]:
        now = now_ms()
        fields: dict[str, Any] = {"updatedAt": now}
        if metadata is not None:
            merged = merge_by_key(current.get("metadata") or {}, metadata)
            fields["metadata"] = check_json_object(merged, "metadata")
        if active is not None and active != current.get("active"):
            fields["active"] = active
            fields["endedAt"] = None if active else now
        return fields

    return change


async def touch(store: Store, session_id: str) -> Session:
    check_id(session_id, "sessionId")
    now = now_ms()
    doc = await update_atomic(
        store.db.sessions,
        {"sessionId": session_id},
        {"lastActivity": now, "updatedAt": now},
        f"session {session_id!r}",
    )
    session = Session.from_doc(doc)
    return await store.publish("session.updated", session, channels(session))


async def end(store: Store, session_id: str) -> Session:
    """Idempotent: ending an ended session changes nothing and keeps its first `endedAt`."""
    check_id(session_id, "sessionId")
    now = now_ms()
    doc = await store.db.sessions.find_one_and_update(
        {"sessionId": session_id, "active": True},
        {"$set": {"active": False, "endedAt": now, "updatedAt": now}, "$inc": {"version": 1}},
        return_document=ReturnDocument.AFTER,
    )
    if doc is None:
        existing = await store.db.sessions.find_one({"sessionId": session_id})
        if existing is None:
            raise NotFound(f"session {session_id!r} not found")
        return Session.from_doc(existing)
    session = Session.from_doc(doc)
    return await store.publish("session.ended", session, channels(session))
