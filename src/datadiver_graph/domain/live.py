"""Live views: the current value first, then every change, like Convex's reactive queries.

Each view subscribes to its channels *before* reading the snapshot, so no change can fall
between the two; events whose record is not newer (by `version`) than what was already
yielded are dropped. A RESYNC (the fan-out link was down) or a record-less event makes the
view re-read from the database and yield only if something changed.

`ends_with_user` names the subscriber's own user: when that user is deleted in Clerk the
view ends, so the client sees the subscription complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from datadiver_graph import events
from datadiver_graph.domain import billing, payments, sessions, users
from datadiver_graph.domain.billing import BillingSubscription
from datadiver_graph.domain.payments import PaymentAttempt
from datadiver_graph.domain.sessions import Session
from datadiver_graph.domain.users import User
from datadiver_graph.fanout import RESYNC
from datadiver_graph.store import Store

T = TypeVar("T")
OnOverflow = Callable[[], None] | None


def _user_deleted(event: events.Event, ends_with_user: str | None) -> bool:
    if ends_with_user is None or event.kind != "user.deleted":
        return False
    if event.record is None:
        # Too large for the backend (pg_notify), sent without its record. User events travel
        # only on their user's own channel, and a view hears only `ends_with_user`'s.
        return True
    return event.record.get("externalId") == ends_with_user


def _channels(main: tuple[str, ...], ends_with_user: str | None) -> tuple[str, ...]:
    extra = events.user_channel(ends_with_user) if ends_with_user else None
    return main + ((extra,) if extra and extra not in main else ())


async def _watch(
    store: Store,
    channels: tuple[str, ...],
    ends_with_user: str | None,
    load: Callable[[], Awaitable[T]],
    apply: Callable[[T, dict[str, Any]], T],
    on_overflow: OnOverflow,
) -> AsyncIterator[T]:
    """The shared loop: snapshot, then fold each event into the state with `apply`.

    `apply(state, record)` returns the new state, or the same object when nothing changed.
    """
    async with store.events.subscribe(
        *_channels(channels, ends_with_user), on_overflow=on_overflow
    ) as subscription:
        state = await load()
        yield state
        async for item in subscription:
            if item is RESYNC or (isinstance(item, events.Event) and item.record is None):
                if isinstance(item, events.Event) and _user_deleted(item, ends_with_user):
                    return
                fresh = await load()
                if fresh != state:
                    state = fresh
                    yield state
                continue
            assert isinstance(item, events.Event) and item.record is not None
            if _user_deleted(item, ends_with_user):
                return
            new_state = apply(state, item.record)
            if new_state is not state:
                state = new_state
                yield state


def _newer(current: Any, record: dict[str, Any]) -> bool:
    return current is None or record.get("version", 0) > current.version


async def watch_user(
    store: Store, external_id: str, *, on_overflow: OnOverflow = None
) -> AsyncIterator[User | None]:
    """Ends when the user is deleted (their own subscription, by definition)."""

    def apply(current: User | None, record: dict[str, Any]) -> User | None:
        if record.get("externalId") != external_id or not _newer(current, record):
            return current
        return User.from_doc(record)

    async for user in _watch(
        store,
        (events.user_channel(external_id),),
        external_id,
        lambda: users.get_by_external_id(store, external_id),
        apply,
        on_overflow,
    ):
        yield user


async def watch_session(
    store: Store,
    session_id: str,
    *,
    ends_with_user: str | None,
    on_overflow: OnOverflow = None,
) -> AsyncIterator[Session | None]:
    def apply(current: Session | None, record: dict[str, Any]) -> Session | None:
        if record.get("sessionId") != session_id or not _newer(current, record):
            return current
        return Session.from_doc(record)

    async for session in _watch(
        store,
        (events.session_channel(session_id),),
        ends_with_user,
        lambda: sessions.get(store, session_id),
        apply,
        on_overflow,
    ):
        yield session


def _visible(found: dict[str, Session], active_only: bool, limit: int) -> tuple[Session, ...]:
    chosen = [s for s in found.values() if s.active or not active_only]
    chosen.sort(key=lambda s: (s.last_activity, s.session_id), reverse=True)
    return tuple(chosen[:limit])


async def watch_user_sessions(
    store: Store,
    user_id: str,
    *,
    active_only: bool,
    limit: int,
    ends_with_user: str | None,
    on_overflow: OnOverflow = None,
) -> AsyncIterator[list[Session]]:
    """The user's `limit` most recently active sessions, re-sorted on every change."""
    # Every session seen, not only the visible ones: a session that drops off the end
    # can come back when it is touched, and its version must still be known.
    known: dict[str, Session] = {}

    async def load() -> tuple[Session, ...]:
        page = await sessions.list_for_user(store, user_id, active_only=active_only, first=limit)
        known.clear()
        known.update({s.session_id: s for s in page.items})
        return tuple(page.items)

    def apply(current: tuple[Session, ...], record: dict[str, Any]) -> tuple[Session, ...]:
        if record.get("userId") != user_id:
            return current
        previous = known.get(record.get("sessionId", ""))
        if not _newer(previous, record):
            return current
        session = Session.from_doc(record)
        known[session.session_id] = session
        visible = _visible(known, active_only, limit)
        return current if visible == current else visible

    async for visible in _watch(
        store,
        (events.user_sessions_channel(user_id),),
        ends_with_user,
        load,
        apply,
        on_overflow,
    ):
        yield list(visible)


def _later(candidate: PaymentAttempt, current: PaymentAttempt | None) -> bool:
    if current is None:
        return True
    if candidate.payment_id == current.payment_id:
        return candidate.version > current.version
    return (candidate.created_at, candidate.payment_id) > (current.created_at, current.payment_id)


async def watch_latest_payment(
    store: Store,
    user_id: str,
    *,
    ends_with_user: str | None,
    on_overflow: OnOverflow = None,
) -> AsyncIterator[PaymentAttempt | None]:
    def apply(current: PaymentAttempt | None, record: dict[str, Any]) -> PaymentAttempt | None:
        if record.get("userId") != user_id:
            return current
        candidate = PaymentAttempt.from_doc(record)
        return candidate if _later(candidate, current) else current

    async for attempt in _watch(
        store,
        (events.payments_channel(user_id),),
        ends_with_user,
        lambda: payments.latest_for_user(store, user_id),
        apply,
        on_overflow,
    ):
        yield attempt


async def watch_billing(
    store: Store,
    user_id: str,
    *,
    ends_with_user: str | None,
    on_overflow: OnOverflow = None,
) -> AsyncIterator[BillingSubscription | None]:
    """The user's Clerk Billing subscription (derive the status with `billing.derive`)."""

    def apply(
        current: BillingSubscription | None, record: dict[str, Any]
    ) -> BillingSubscription | None:
        if record.get("userId") != user_id or not _newer(current, record):
            return current
        return BillingSubscription.from_doc(record)

    async for subscription in _watch(
        store,
        (events.billing_channel(user_id),),
        ends_with_user,
        lambda: billing.get_for_user(store, user_id),
        apply,
        on_overflow,
    ):
        yield subscription
