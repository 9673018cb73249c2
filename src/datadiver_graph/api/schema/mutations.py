"""Mutation resolvers: thin calls into the domain, which persists and publishes."""

from __future__ import annotations

from typing import Annotated

import strawberry

from datadiver_graph.api.schema.context import Info
from datadiver_graph.api.schema.errors import forbidden
from datadiver_graph.api.schema.permissions import ActsForUser, IsUser, OwnsSession
from datadiver_graph.api.schema.scalars import JSON, as_object
from datadiver_graph.api.schema.types import Session, User
from datadiver_graph.domain import sessions, users


async def _refuse_deleted(info: Info, user_id: str | None = None) -> None:
    """A user Clerk deleted writes nothing more, though their last token may still verify;
    nor does a service write for them. `user_id`: whom the write is for (else the caller)."""
    target = user_id if user_id is not None else info.context.identity.user_id
    if target is not None and await users.is_deleted(info.context.store, target):
        raise forbidden("this user was deleted")


@strawberry.type
class Mutation:
    @strawberry.mutation(permission_classes=[ActsForUser])
    async def create_session(
        self,
        info: Info,
        user_id: str | None = None,
        metadata: JSON | None = None,
        session_id: Annotated[
            str | None,
            strawberry.argument(description="Optional client-chosen id; generated when omitted."),
        ] = None,
    ) -> Session:
        target = info.context.target_user(user_id)
        await _refuse_deleted(info, target)
        session = await sessions.create(info.context.store, target, as_object(metadata), session_id)
        return Session.from_record(session)

    @strawberry.mutation(
        permission_classes=[OwnsSession],
        description=(
            "Merge `metadata` into the session by top-level key: each given key replaces the "
            "stored one, a key given as null is removed, keys not given are kept. "
            "`active: false` ends the session, `true` reopens it."
        ),
    )
    async def update_session(
        self,
        info: Info,
        session_id: str,
        metadata: JSON | None = None,
        active: bool | None = None,
    ) -> Session:
        await _refuse_deleted(info)
        session = await sessions.update(
            info.context.store, session_id, metadata=as_object(metadata), active=active
        )
        return Session.from_record(session)

    @strawberry.mutation(permission_classes=[OwnsSession], description="Bump lastActivity.")
    async def touch_session(self, info: Info, session_id: str) -> Session:
        await _refuse_deleted(info)
        return Session.from_record(await sessions.touch(info.context.store, session_id))

    @strawberry.mutation(permission_classes=[OwnsSession], description="Idempotent.")
    async def end_session(self, info: Info, session_id: str) -> Session:
        await _refuse_deleted(info)
        return Session.from_record(await sessions.end(info.context.store, session_id))

    @strawberry.mutation(
        permission_classes=[IsUser],
        description="Change the caller's own record. `preferences` merge like session metadata.",
    )
    async def update_user(
        self, info: Info, preferences: JSON | None = None, name: str | None = None
    ) -> User:
        user_id = info.context.require_signed_in().user_id
        assert user_id is not None  # IsUser guarantees it
        await _refuse_deleted(info)
        user = await users.update(
            info.context.store, user_id, preferences=as_object(preferences), name=name
        )
        return User.from_record(user)
