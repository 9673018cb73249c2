"""Session domain functions against the real database, including the rejects."""

from __future__ import annotations

import asyncio
import re

import pytest

from datadiver_graph.domain import events, sessions
from datadiver_graph.domain.errors import Conflict, InvalidInput, NotFound
from datadiver_graph.domain.store import Store
from tests.clock import ManualClock


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> ManualClock:
    """The sessions' clock, moved by the test: one write after another is then later by
    exactly what the test says, not by however long a sleep took."""
    clock = ManualClock()
    monkeypatch.setattr(sessions, "now_ms", clock.ms)
    return clock


async def test_create_stores_and_returns_the_session(store: Store) -> None:
    created = await sessions.create(store, "user_a", {"doc": "report.pdf"})
    assert created.user_id == "user_a"
    assert created.active is True
    assert created.version == 1
    stored = await store.db.sessions.find_one({"sessionId": created.session_id})
    assert stored is not None
    assert stored["metadata"] == {"doc": "report.pdf"}
    assert stored["createdAt"] == stored["lastActivity"] == created.created_at
    assert await sessions.get(store, created.session_id) == created


async def test_create_with_an_existing_session_id_conflicts(store: Store) -> None:
    await sessions.create(store, "user_a", session_id="s-1")
    with pytest.raises(Conflict):
        await sessions.create(store, "user_b", session_id="s-1")
    assert await store.db.sessions.count_documents({}) == 1


async def test_get_unknown_session_is_none(store: Store) -> None:
    assert await sessions.get(store, "nope") is None


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"$where": 1}, "must not start with '$'"),
        ({"a.b": 1}, "must not contain '.'"),
        ({"a\x00": 1}, "NUL"),
        ({"deep": {"er": {"than": {"eight": {"l": {"e": {"v": {"e": {"l": {}}}}}}}}}}, "deeper"),
        ({"big": "x" * 17_000}, "limit is 16384"),
        ({"nested": {"$set": 1}}, "must not start with '$'"),
        ({"n": float("nan")}, "finite"),
        ({"n": 2**70}, "64 bits"),
    ],
)
async def test_create_rejects_bad_metadata(store: Store, metadata: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(message)):
        await sessions.create(store, "user_a", metadata)
    assert await store.db.sessions.count_documents({}) == 0


async def test_metadata_nested_exactly_eight_deep_is_accepted(store: Store) -> None:
    metadata = {"1": {"2": {"3": {"4": {"5": {"6": {"7": {}}}}}}}}
    created = await sessions.create(store, "user_a", metadata)
    assert created.metadata == metadata


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "semi;colon", "{$ne:1}"])
async def test_ids_are_validated(store: Store, bad: str) -> None:
    with pytest.raises(InvalidInput):
        await sessions.create(store, bad)
    with pytest.raises(InvalidInput):
        await sessions.get(store, bad)


async def test_update_merges_metadata_by_key_and_null_removes(store: Store) -> None:
    created = await sessions.create(store, "user_a", {"a": 1, "b": {"x": 1}, "c": 3})
    updated = await sessions.update(store, created.session_id, metadata={"b": {"y": 2}, "c": None})
    assert updated.metadata == {"a": 1, "b": {"y": 2}}
    assert updated.version == 2
    stored = await store.db.sessions.find_one({"sessionId": created.session_id})
    assert stored is not None and stored["metadata"] == {"a": 1, "b": {"y": 2}}


async def test_update_rejects_a_merge_that_grows_past_the_limit(store: Store) -> None:
    created = await sessions.create(store, "user_a", {"a": "x" * 9000})
    with pytest.raises(InvalidInput, match="limit"):
        await sessions.update(store, created.session_id, metadata={"b": "y" * 9000})
    stored = await store.db.sessions.find_one({"sessionId": created.session_id})
    assert stored is not None and set(stored["metadata"]) == {"a"}


async def test_concurrent_updates_lose_no_key(store: Store) -> None:
    created = await sessions.create(store, "user_a")
    await asyncio.gather(
        *(sessions.update(store, created.session_id, metadata={f"k{i}": i}) for i in range(6))
    )
    final = await sessions.get(store, created.session_id)
    assert final is not None
    assert final.metadata == {f"k{i}": i for i in range(6)}
    assert final.version == 7


async def test_update_active_false_sets_ended_at_and_true_clears_it(store: Store) -> None:
    created = await sessions.create(store, "user_a")
    ended = await sessions.update(store, created.session_id, active=False)
    assert ended.active is False and ended.ended_at is not None
    reopened = await sessions.update(store, created.session_id, active=True)
    assert reopened.active is True and reopened.ended_at is None


async def test_update_unknown_session_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await sessions.update(store, "missing", metadata={"a": 1})


async def test_touch_bumps_last_activity(store: Store, clock: ManualClock) -> None:
    created = await sessions.create(store, "user_a")
    assert created.last_activity == clock.ms()
    clock.advance(0.005)
    touched = await sessions.touch(store, created.session_id)
    assert touched.last_activity == touched.updated_at == created.last_activity + 5
    assert touched.version == 2
    with pytest.raises(NotFound):
        await sessions.touch(store, "missing")


async def test_end_is_idempotent(store: Store) -> None:
    created = await sessions.create(store, "user_a")
    ended = await sessions.end(store, created.session_id)
    again = await sessions.end(store, created.session_id)
    assert ended.active is False
    assert again.ended_at == ended.ended_at and again.version == ended.version
    with pytest.raises(NotFound):
        await sessions.end(store, "missing")


async def test_list_for_user_is_newest_activity_first_and_paginates(
    store: Store, clock: ManualClock
) -> None:
    for i in range(5):
        await sessions.create(store, "user_a", session_id=f"s{i}")
        clock.advance(0.002)
    await sessions.create(store, "user_b", session_id="other")
    await sessions.touch(store, "s1")
    await sessions.end(store, "s3")

    first = await sessions.list_for_user(store, "user_a", first=2)
    assert [s.session_id for s in first.items] == ["s1", "s4"]
    assert first.has_next_page
    second = await sessions.list_for_user(store, "user_a", first=2, after=first.end_cursor)
    assert [s.session_id for s in second.items] == ["s3", "s2"]
    third = await sessions.list_for_user(store, "user_a", first=2, after=second.end_cursor)
    assert [s.session_id for s in third.items] == ["s0"]
    assert not third.has_next_page

    active = await sessions.list_for_user(store, "user_a", active_only=True, first=10)
    assert [s.session_id for s in active.items] == ["s1", "s4", "s2", "s0"]


async def test_list_rejects_a_forged_cursor(store: Store) -> None:
    with pytest.raises(InvalidInput, match="cursor"):
        await sessions.list_for_user(store, "user_a", first=2, after="not-a-cursor")


async def test_every_write_publishes_on_both_channels(store: Store) -> None:
    async with (
        store.events.subscribe(events.session_channel("s1")) as by_session,
        store.events.subscribe(events.user_sessions_channel("user_a")) as by_user,
    ):
        await sessions.create(store, "user_a", session_id="s1")
        await sessions.update(store, "s1", metadata={"a": 1})
        await sessions.touch(store, "s1")
        await sessions.end(store, "s1")
        for stream in (by_session, by_user):
            kinds = []
            for _ in range(4):
                event = await asyncio.wait_for(anext(stream), 2)
                kinds.append((event.kind, event.record["version"]))
            assert kinds == [
                ("session.created", 1),
                ("session.updated", 2),
                ("session.updated", 3),
                ("session.ended", 4),
            ]
