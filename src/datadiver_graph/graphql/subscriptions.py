"""Subscription resolvers: the current value first, then every change (see domain.live)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Callable

import strawberry
from starlette.websockets import WebSocket

from datadiver_graph.domain import live
from datadiver_graph.fanout import SlowConsumer
from datadiver_graph.graphql.billing_types import BillingState
from datadiver_graph.graphql.context import Info
from datadiver_graph.graphql.permissions import ActsForUser, IsUser, OwnsSession
from datadiver_graph.graphql.types import PaymentAttempt, Session, User

log = logging.getLogger(__name__)

# 1013 "Try Again Later": the server shed this connection because it could not keep up.
SLOW_CONSUMER_CLOSE_CODE = 1013
SLOW_CONSUMER_REASON = "slow consumer: too many undelivered events"


def _shed_when_slow(info: Info) -> Callable[[], None]:
    """Close the whole connection when one of its subscriptions overflows.

    The delivery task may be blocked writing to this very client, so the close runs in a
    task of its own rather than in the subscription's generator.
    """
    request = info.context.request

    def close() -> None:
        if not isinstance(request, WebSocket):
            return
        log.warning("closing a WebSocket that fell behind on its subscriptions")

        async def do_close() -> None:
            with contextlib.suppress(Exception):
                await request.close(code=SLOW_CONSUMER_CLOSE_CODE, reason=SLOW_CONSUMER_REASON)

        asyncio.get_running_loop().create_task(do_close())

    return close


def _ends_with(info: Info) -> str | None:
    identity = info.context.identity
    return None if identity.is_service else identity.user_id


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[IsUser], description="The signed-in user; completes on deletion."
    )
    async def current_user(self, info: Info) -> AsyncGenerator[User | None, None]:
        user_id = info.context.identity.user_id
        assert user_id is not None  # IsUser guarantees it
        with contextlib.suppress(SlowConsumer):
            async for user in live.watch_user(
                info.context.store, user_id, on_overflow=_shed_when_slow(info)
            ):
                yield User.from_record(user) if user else None

    @strawberry.subscription(permission_classes=[OwnsSession])
    async def session(self, info: Info, session_id: str) -> AsyncGenerator[Session | None, None]:
        with contextlib.suppress(SlowConsumer):
            async for session in live.watch_session(
                info.context.store,
                session_id,
                ends_with_user=_ends_with(info),
                on_overflow=_shed_when_slow(info),
            ):
                yield Session.from_record(session) if session else None

    @strawberry.subscription(
        permission_classes=[ActsForUser],
        description="The user's most recently active sessions (up to MAX_QUERY_SIZE).",
    )
    async def user_sessions(
        self, info: Info, user_id: str | None = None, active_only: bool = False
    ) -> AsyncGenerator[list[Session], None]:
        with contextlib.suppress(SlowConsumer):
            async for found in live.watch_user_sessions(
                info.context.store,
                info.context.target_user(user_id),
                active_only=active_only,
                limit=info.context.settings.max_query_size,
                ends_with_user=_ends_with(info),
                on_overflow=_shed_when_slow(info),
            ):
                yield [Session.from_record(session) for session in found]

    @strawberry.subscription(permission_classes=[ActsForUser])
    async def latest_payment(
        self, info: Info, user_id: str | None = None
    ) -> AsyncGenerator[PaymentAttempt | None, None]:
        with contextlib.suppress(SlowConsumer):
            async for attempt in live.watch_latest_payment(
                info.context.store,
                info.context.target_user(user_id),
                ends_with_user=_ends_with(info),
                on_overflow=_shed_when_slow(info),
            ):
                yield PaymentAttempt.from_record(attempt) if attempt else None

    @strawberry.subscription(
        permission_classes=[ActsForUser],
        description="The user's billing status and plan, then each change (Clerk webhooks).",
    )
    async def billing_status(
        self, info: Info, user_id: str | None = None
    ) -> AsyncGenerator[BillingState, None]:
        target = info.context.target_user(user_id)
        with contextlib.suppress(SlowConsumer):
            async for found in live.watch_billing(
                info.context.store,
                target,
                ends_with_user=_ends_with(info),
                on_overflow=_shed_when_slow(info),
            ):
                yield BillingState.from_record(target, found)
