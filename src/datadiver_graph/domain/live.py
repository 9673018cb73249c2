"""Live views: the current value first, then every change, like Convex's reactive queries.

A view is a small object: the channels it listens to, how to read its value from the
database (`load`), and how an event's record changes that value (`apply`); it keeps the
value it last showed in `state`. Whoever runs it subscribes to its channels *before*
the first `load`, so no change can fall between the two; `advance` then folds in each
event. Events whose record is not newer (by `version`) than what was already shown are
dropped. A RESYNC (the fan-out link was down) or a record-less event makes the view
re-read from the database and report a change only if something changed.

`ends_with_user` names the subscriber's own user: when that user is deleted in Clerk the
view ends (ViewEnded), so the client sees the subscription complete.

Two ways to run a view: `stream(view)` is an async iterator (snapshot, then each
change) for a caller with a task to spare; the GraphQL WebSocket handler instead calls
`start` and `advance` itself as events arrive, so an idle subscription costs no task.
Thousands of views stay alive at once, hence the __slots__.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from datadiver_graph.domain import billing, events, payments, sessions, users
from datadiver_graph.domain.billing import BillingSubscription
from datadiver_graph.domain.payments import PaymentAttempt
from datadiver_graph.domain.sessions import Session
from datadiver_graph.domain.store import Store
from datadiver_graph.domain.users import User
from datadiver_graph.fanout import RESYNC, Item, SlowConsumer

T = TypeVar("T")
OnOverflow = Callable[[], None] | None


class ViewEnded(Exception):
    """The subscriber's own user was deleted: the view has nothing more to show."""


def _channels(main: str, ends_with_user: str | None) -> tuple[str, ...]:
    extra = events.user_channel(ends_with_user) if ends_with_user else None
    return (main, extra) if extra and extra != main else (main,)


def _newer(current: Any, record: dict[str, Any]) -> bool:
    return current is None or record.get("version", 0) > current.version


class LiveView(Generic[T]):
    __slots__ = ("channels", "ends_with_user", "state", "store")

    def __init__(self, store: Store, channel: str, ends_with_user: str | None) -> None:
        self.store = store
        self.channels = _channels(channel, ends_with_user)
        self.ends_with_user = ends_with_user
        self.state: T

    async def load(self) -> T:
        raise NotImplementedError

    def apply(self, record: dict[str, Any]) -> T:
        """The state with this record folded in; `self.state` itself when nothing changed."""
        raise NotImplementedError

    async def start(self) -> T:
        """Read the current value (after subscribing to the channels)."""
        self.state = await self.load()
        return self.state

    async def advance(self, item: Item) -> bool:
        """Fold one fan-out item into `state`; whether it changed. Raises ViewEnded."""
        if isinstance(item, events.Event) and self._user_deleted(item):
            raise ViewEnded
        if item is RESYNC or not isinstance(item, events.Event) or item.record is None:
            fresh = await self.load()
            if fresh == self.state:
                return False
            self.state = fresh
            return True
        new_state = self.apply(item.record)
        if new_state is self.state:
            return False
        self.state = new_state
        return True

    def _user_deleted(self, event: events.Event) -> bool:
        if self.ends_with_user is None or event.kind != "user.deleted":
            return False
        if event.record is None:
            # Too large for the backend (pg_notify), sent without its record. User events
            # travel only on their user's own channel, and a view hears only its user's.
            return True
        return event.record.get("externalId") == self.ends_with_user


async def stream(view: LiveView[T], *, on_overflow: OnOverflow = None) -> AsyncGenerator[T, None]:
    """The view's value, then each change, until it ends or its subscriber falls behind."""
    async with view.store.events.subscribe(*view.channels, on_overflow=on_overflow) as feed:
        yield await view.start()
        try:
            async for item in feed:
                if await view.advance(item):
                    yield view.state
        except (ViewEnded, SlowConsumer):
            return


class UserView(LiveView[User | None]):
    """The user; ends when the user is deleted (their own subscription, by definition)."""

    __slots__ = ("external_id",)

    def __init__(self, store: Store, external_id: str) -> None:
        super().__init__(store, events.user_channel(external_id), external_id)
        self.external_id = external_id

    async def load(self) -> User | None:
        return await users.get_by_external_id(self.store, self.external_id)

    def apply(self, record: dict[str, Any]) -> User | None:
        if record.get("externalId") != self.external_id or not _newer(self.state, record):
            return self.state
        return User.from_doc(record)


@dataclass(frozen=True, slots=True)
class UserContext:
    """A user with their billing record, when the subscriber asked for billing fields.

    `billing` is a 1-tuple so that "not followed" (None) differs from "no subscription"
    (`(None,)`).
    """

    user: User | None
    billing: tuple[BillingSubscription | None] | None = None


class UserContextView(LiveView[UserContext]):
    """Any user, for a service (or the user themselves): the `user(userId)` subscription.

    Unknown or deleted users read as None, as `users.get_unless_deleted` does; the view ends
    when the user is deleted. With `follow_billing` it also listens on the user's billing
    channel, where every Clerk Billing write publishes (`billing.channels`), so a plan
    change reaches a subscriber that shows `plan`, `billingStatus` or `hasFeature`; without
    it no billing change wakes the subscriber for a value it would send unchanged.
    """

    __slots__ = ("external_id",)

    def __init__(self, store: Store, external_id: str, *, follow_billing: bool) -> None:
        super().__init__(store, events.user_channel(external_id), external_id)
        self.external_id = external_id
        if follow_billing:
            self.channels = (*self.channels, events.billing_channel(external_id))

    @property
    def follows_billing(self) -> bool:
        return len(self.channels) > 1

    async def load(self) -> UserContext:
        user = await users.get_unless_deleted(self.store, self.external_id)
        if not self.follows_billing:
            return UserContext(user)
        return UserContext(user, (await billing.get_for_user(self.store, self.external_id),))

    def apply(self, record: dict[str, Any]) -> UserContext:
        state = self.state
        if "payerKey" in record:  # a billing record (billing.channels)
            if state.billing is None or record.get("userId") != self.external_id:
                return state
            if not _newer(state.billing[0], record):
                return state
            return UserContext(state.user, (BillingSubscription.from_doc(record),))
        if record.get("externalId") != self.external_id or not _newer(state.user, record):
            return state
        return UserContext(User.from_doc(record), state.billing)


class SessionView(LiveView[Session | None]):
    __slots__ = ("session_id",)

    def __init__(self, store: Store, session_id: str, *, ends_with_user: str | None) -> None:
        super().__init__(store, events.session_channel(session_id), ends_with_user)
        self.session_id = session_id

    async def load(self) -> Session | None:
        return await sessions.get(self.store, self.session_id)

    def apply(self, record: dict[str, Any]) -> Session | None:
        if record.get("sessionId") != self.session_id or not _newer(self.state, record):
            return self.state
        return Session.from_doc(record)


class UserSessionsView(LiveView[tuple[Session, ...]]):
    """The user's `limit` most recently active sessions, re-sorted on every change."""

    __slots__ = ("active_only", "known", "limit", "user_id")

    def __init__(
        self,
        store: Store,
        user_id: str,
        *,
        active_only: bool,
        limit: int,
        ends_with_user: str | None,
    ) -> None:
        super().__init__(store, events.user_sessions_channel(user_id), ends_with_user)
        self.user_id = user_id
        self.active_only = active_only
        self.limit = limit
        # Every session seen, not only the visible ones: a session that drops off the end
        # can come back when it is touched, and its version must still be known.
        self.known: dict[str, Session] = {}

    async def load(self) -> tuple[Session, ...]:
        page = await sessions.list_for_user(
            self.store, self.user_id, active_only=self.active_only, first=self.limit
        )
        self.known = {s.session_id: s for s in page.items}
        return tuple(page.items)

    def apply(self, record: dict[str, Any]) -> tuple[Session, ...]:
        if record.get("userId") != self.user_id:
            return self.state
        previous = self.known.get(record.get("sessionId", ""))
        if not _newer(previous, record):
            return self.state
        session = Session.from_doc(record)
        self.known[session.session_id] = session
        chosen = [s for s in self.known.values() if s.active or not self.active_only]
        chosen.sort(key=lambda s: (s.last_activity, s.session_id), reverse=True)
        visible = tuple(chosen[: self.limit])
        return self.state if visible == self.state else visible


def _later(candidate: PaymentAttempt, current: PaymentAttempt | None) -> bool:
    if current is None:
        return True
    if candidate.payment_id == current.payment_id:
        return candidate.version > current.version
    return (candidate.created_at, candidate.payment_id) > (current.created_at, current.payment_id)


class LatestPaymentView(LiveView[PaymentAttempt | None]):
    __slots__ = ("user_id",)

    def __init__(self, store: Store, user_id: str, *, ends_with_user: str | None) -> None:
        super().__init__(store, events.payments_channel(user_id), ends_with_user)
        self.user_id = user_id

    async def load(self) -> PaymentAttempt | None:
        return await payments.latest_for_user(self.store, self.user_id)

    def apply(self, record: dict[str, Any]) -> PaymentAttempt | None:
        if record.get("userId") != self.user_id:
            return self.state
        candidate = PaymentAttempt.from_doc(record)
        return candidate if _later(candidate, self.state) else self.state


class BillingView(LiveView[BillingSubscription | None]):
    """The user's Clerk Billing subscription (derive the status with `billing.derive`)."""

    __slots__ = ("user_id",)

    def __init__(self, store: Store, user_id: str, *, ends_with_user: str | None) -> None:
        super().__init__(store, events.billing_channel(user_id), ends_with_user)
        self.user_id = user_id

    async def load(self) -> BillingSubscription | None:
        return await billing.get_for_user(self.store, self.user_id)

    def apply(self, record: dict[str, Any]) -> BillingSubscription | None:
        if record.get("userId") != self.user_id or not _newer(self.state, record):
            return self.state
        return BillingSubscription.from_doc(record)
