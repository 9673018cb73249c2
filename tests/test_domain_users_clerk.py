"""users.upsert_many_from_clerk against the real database: order, tombstones, and the races
between its read and its write (forced by handing it rows read before another writer ran)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from datadiver_graph.domain import events, users
from datadiver_graph.domain.store import Store

T0 = 1_754_000_000_000


def profile(external_id: str, updated_at: int | None = T0, name: str = "Ada") -> users.ClerkProfile:
    return users.ClerkProfile(
        external_id=external_id,
        name=name,
        email=f"{external_id}@example.com",
        image_url=None,
        created_at=T0,
        updated_at=updated_at,
    )


async def read_rows(store: Store, *external_ids: str) -> list[dict[str, Any]]:
    """What upsert_many_from_clerk reads first, as a caller reading it early would pass it."""
    names = [{"externalId": external_id} for external_id in external_ids]
    return await store.db.look_up(names, *users.stored_lookups("externalId"))


async def stored(store: Store, external_id: str) -> dict[str, Any] | None:
    return await store.db.users.find_one({"externalId": external_id})


async def drain(stream: AsyncIterator[events.Event]) -> list[events.Event]:
    found = []
    while True:
        try:
            found.append(await asyncio.wait_for(anext(stream), 0.2))
        except TimeoutError:
            return found


async def test_one_call_creates_updates_and_ignores_each_user_as_it_should(store: Store) -> None:
    channels = [events.user_channel(name) for name in ("user_new", "user_upd", "user_old")]
    async with store.events.subscribe(*channels) as stream:
        await users.upsert_from_clerk(store, profile("user_old", T0 + 10))
        await users.upsert_from_clerk(store, profile("user_upd", T0))
        await users.delete_from_clerk(store, "user_gone")
        await drain(stream)
        result = await users.upsert_many_from_clerk(
            store,
            [
                profile("user_new"),
                profile("user_upd", T0 + 1, name="Newer"),
                profile("user_old", T0 + 5),  # older than stored
                profile("user_gone", T0 + 99),  # deleted in Clerk
            ],
        )
        published = await drain(stream)
    assert [user.external_id if user else None for user in result] == [
        "user_new",
        "user_upd",
        None,
        None,
    ]
    # Each change published once, with exactly the stored document.
    assert [(event.kind, event.record["externalId"]) for event in published] == [
        ("user.created", "user_new"),
        ("user.updated", "user_upd"),
    ]
    for event in published:
        assert event.record == await stored(store, event.record["externalId"])
    updated = await stored(store, "user_upd")
    assert updated is not None
    assert (updated["name"], updated["version"], updated["clerkUpdatedAt"]) == ("Newer", 2, T0 + 1)
    assert await stored(store, "user_gone") is None


async def test_the_same_clerk_timestamp_again_is_stale(store: Store) -> None:
    await users.upsert_from_clerk(store, profile("user_a", T0))
    assert await users.upsert_from_clerk(store, profile("user_a", T0, name="Again")) is None
    doc = await stored(store, "user_a")
    assert doc is not None and (doc["name"], doc["version"]) == ("Ada", 1)


async def test_a_profile_without_a_clerk_timestamp_always_applies(store: Store) -> None:
    await users.upsert_from_clerk(store, profile("user_a", T0))
    user = await users.upsert_from_clerk(store, profile("user_a", None, name="Untimed"))
    assert user is not None and (user.name, user.version) == ("Untimed", 2)


async def test_a_change_made_between_read_and_write_is_kept_and_the_write_retried(
    store: Store,
) -> None:
    async with store.events.subscribe(events.user_channel("user_a")) as stream:
        await users.upsert_from_clerk(store, profile("user_a", T0))
        rows = await read_rows(store, "user_a")
        # Another writer changes the user after the read: the write must not undo it.
        await users.update(store, "user_a", preferences={"theme": "dark"})
        await drain(stream)
        [user] = await users.upsert_many_from_clerk(store, [profile("user_a", T0 + 1, "B")], rows)
        [event] = await drain(stream)
    assert user is not None
    assert (user.name, user.preferences, user.version) == ("B", {"theme": "dark"}, 3)
    assert event.record == await stored(store, "user_a")


async def test_a_user_created_by_another_writer_between_read_and_write_is_updated(
    store: Store,
) -> None:
    rows = await read_rows(store, "user_a")  # not there yet
    await users.upsert_from_clerk(store, profile("user_a", T0))
    [user] = await users.upsert_many_from_clerk(store, [profile("user_a", T0 + 1, "B")], rows)
    assert user is not None and (user.name, user.version) == ("B", 2)
    assert await store.db.users.count_documents({"externalId": "user_a"}) == 1


@pytest.mark.parametrize("existed", [True, False], ids=["existing", "new"])
async def test_a_delete_between_read_and_write_keeps_the_user_away(
    store: Store, existed: bool
) -> None:
    async with store.events.subscribe(events.user_channel("user_a")) as stream:
        if existed:
            await users.upsert_from_clerk(store, profile("user_a", T0))
        rows = await read_rows(store, "user_a")  # no tombstone yet
        await users.delete_from_clerk(store, "user_a")
        await drain(stream)
        result = await users.upsert_many_from_clerk(store, [profile("user_a", T0 + 99)], rows)
        assert await drain(stream) == []
    assert result == [None]
    assert await store.db.users.count_documents({}) == 0


async def test_a_user_changed_between_read_and_write_is_updated_without_a_conflict(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What Clerk says does not depend on what is stored: a preference merge landing
    between the batch's read and its write neither fails the delivery nor is lost."""
    await users.upsert_from_clerk(store, profile("user_a", T0))
    rows = await read_rows(store, "user_a")
    await users.update(store, "user_a", preferences={"theme": "dark"})
    monkeypatch.setattr(users, "ATTEMPTS", 1)  # no second read: it is written at once
    async with store.events.subscribe(events.user_channel("user_a")) as stream:
        [user] = await users.upsert_many_from_clerk(store, [profile("user_a", T0 + 1, "B")], rows)
        [event] = await drain(stream)
    assert user is not None
    assert (user.name, user.preferences, user.version) == ("B", {"theme": "dark"}, 3)
    assert event.record == await stored(store, "user_a")


async def test_a_newer_profile_stored_between_read_and_write_wins(store: Store) -> None:
    await users.upsert_from_clerk(store, profile("user_a", T0))
    rows = await read_rows(store, "user_a")
    await users.upsert_from_clerk(store, profile("user_a", T0 + 5, "Newer"))
    assert await users.upsert_many_from_clerk(store, [profile("user_a", T0 + 1, "B")], rows) == [
        None
    ]
    doc = await stored(store, "user_a")
    assert doc is not None and doc["name"] == "Newer"


async def test_one_profile_per_user(store: Store) -> None:
    with pytest.raises(ValueError):
        await users.upsert_many_from_clerk(store, [profile("user_a"), profile("user_a")])
