"""users.get_by_external_id and users.update against the real database, rejects included."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from datadiver_graph.domain import events, users
from datadiver_graph.domain.errors import InvalidInput, NotFound
from datadiver_graph.domain.records import new_id
from datadiver_graph.domain.store import Store


async def insert_user(store: Store, external_id: str = "user_a", **fields: Any) -> users.User:
    user = users.User(
        id=new_id(),
        external_id=external_id,
        name=fields.pop("name", "Ada"),
        email=fields.pop("email", "ada@example.com"),
        preferences=fields.pop("preferences", {}),
        created_at=fields.pop("created_at", 1_000),
        updated_at=fields.pop("updated_at", 1_000),
        **fields,
    )
    await store.db.users.insert_one(user.to_doc())
    return user


async def stored(store: Store, external_id: str = "user_a") -> dict[str, Any]:
    doc = await store.db.users.find_one({"externalId": external_id})
    assert doc is not None
    return doc


async def test_get_by_external_id_returns_the_stored_user(store: Store) -> None:
    user = await insert_user(store, preferences={"theme": "dark"})
    await insert_user(store, "user_b", name="Bob")
    found = await users.get_by_external_id(store, "user_a")
    assert found == user
    assert found is not None and found.preferences == {"theme": "dark"}


async def test_get_by_external_id_of_unknown_user_is_none(store: Store) -> None:
    await insert_user(store)
    assert await users.get_by_external_id(store, "user_zzz") is None


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "{$ne:1}"])
async def test_get_by_external_id_validates_the_id(store: Store, bad: str) -> None:
    with pytest.raises(InvalidInput):
        await users.get_by_external_id(store, bad)


async def test_update_merges_preferences_by_top_level_key_and_null_removes(store: Store) -> None:
    await insert_user(store, preferences={"theme": "dark", "layout": {"a": 1}, "lang": "en"})
    updated = await users.update(
        store, "user_a", preferences={"layout": {"b": 2}, "lang": None, "new": [1, 2]}
    )
    expected = {"theme": "dark", "layout": {"b": 2}, "new": [1, 2]}
    assert updated.preferences == expected
    assert (await stored(store))["preferences"] == expected


async def test_update_removing_an_absent_key_is_harmless(store: Store) -> None:
    await insert_user(store, preferences={"theme": "dark"})
    updated = await users.update(store, "user_a", preferences={"missing": None})
    assert updated.preferences == {"theme": "dark"}


async def test_update_bumps_version_and_updated_at_and_keeps_other_fields(store: Store) -> None:
    user = await insert_user(store)
    first = await users.update(store, "user_a", preferences={"a": 1})
    second = await users.update(store, "user_a", name="Ada L.")
    assert (first.version, second.version) == (2, 3)
    assert first.updated_at > user.updated_at
    doc = await stored(store)
    assert doc["version"] == 3
    assert doc["name"] == "Ada L."
    assert doc["preferences"] == {"a": 1}
    assert doc["email"] == user.email
    assert doc["createdAt"] == user.created_at
    assert doc["_id"] == user.id


async def test_update_trims_the_name(store: Store) -> None:
    await insert_user(store)
    updated = await users.update(store, "user_a", name="  Grace Hopper \n")
    assert updated.name == "Grace Hopper"
    assert (await stored(store))["name"] == "Grace Hopper"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("   \t ", "must not be empty"),
        ("x" * 201, "at most 200"),
        ("bad\x00name", "control characters"),
        ("line\nbreak", "control characters"),
        ("del\x7fchar", "control characters"),
        ("c1\x85char", "control characters"),
    ],
)
async def test_update_rejects_a_bad_name_and_writes_nothing(
    store: Store, name: str, message: str
) -> None:
    await insert_user(store)
    with pytest.raises(InvalidInput, match=re.escape(message)):
        await users.update(store, "user_a", name=name)
    doc = await stored(store)
    assert doc["name"] == "Ada"
    assert doc["version"] == 1


async def test_update_accepts_a_name_of_exactly_the_limit(store: Store) -> None:
    await insert_user(store)
    updated = await users.update(store, "user_a", name="x" * 200)
    assert updated.name == "x" * 200


@pytest.mark.parametrize(
    ("preferences", "message"),
    [
        ({"$set": {"admin": True}}, "must not start with '$'"),
        ({"nested": {"$gt": 1}}, "must not start with '$'"),
        ({"a.b": 1}, "must not contain '.'"),
        ({"a\x00b": 1}, "NUL"),
        ({"big": "x" * (16 * 1024)}, "limit is 16384"),
        ({"1": {"2": {"3": {"4": {"5": {"6": {"7": {"8": {}}}}}}}}}, "deeper than 8"),
        ({"l": [[[[[[[[1]]]]]]]]}, "deeper than 8"),
        ({"n": float("inf")}, "finite"),
    ],
)
async def test_update_rejects_bad_preferences_and_writes_nothing(
    store: Store, preferences: dict[str, Any], message: str
) -> None:
    await insert_user(store, preferences={"theme": "dark"})
    with pytest.raises(InvalidInput, match=re.escape(message)):
        await users.update(store, "user_a", preferences=preferences)
    doc = await stored(store)
    assert doc["preferences"] == {"theme": "dark"}
    assert doc["version"] == 1


async def test_preferences_nested_exactly_eight_deep_are_accepted(store: Store) -> None:
    await insert_user(store)
    deep = {"1": {"2": {"3": {"4": {"5": {"6": {"7": {}}}}}}}}
    updated = await users.update(store, "user_a", preferences=deep)
    assert updated.preferences == deep
    assert (await stored(store))["preferences"] == deep


async def test_update_rejects_a_merge_that_grows_past_the_limit(store: Store) -> None:
    await insert_user(store, preferences={"a": "x" * 9000})
    with pytest.raises(InvalidInput, match="limit"):
        await users.update(store, "user_a", preferences={"b": "y" * 9000})
    doc = await stored(store)
    assert set(doc["preferences"]) == {"a"}
    assert doc["version"] == 1


async def test_preferences_must_be_an_object(store: Store) -> None:
    await insert_user(store)
    with pytest.raises(InvalidInput, match="JSON object"):
        await users.update(store, "user_a", preferences=["not", "an", "object"])  # type: ignore[arg-type]


async def test_update_unknown_user_is_not_found_and_creates_nothing(store: Store) -> None:
    await insert_user(store)
    with pytest.raises(NotFound):
        await users.update(store, "user_missing", preferences={"a": 1})
    with pytest.raises(NotFound):
        await users.update(store, "user_missing", name="Nobody")
    assert await store.db.users.count_documents({}) == 1


async def test_update_validates_the_user_id(store: Store) -> None:
    with pytest.raises(InvalidInput):
        await users.update(store, "bad id", name="x")


async def test_concurrent_preference_updates_lose_no_key(store: Store) -> None:
    await insert_user(store)
    await asyncio.gather(
        *(users.update(store, "user_a", preferences={f"k{i}": i}) for i in range(6))
    )
    doc = await stored(store)
    assert doc["preferences"] == {f"k{i}": i for i in range(6)}
    assert doc["version"] == 7


async def test_update_publishes_user_updated_on_the_user_channel(store: Store) -> None:
    await insert_user(store)
    await insert_user(store, "user_b")
    async with (
        store.events.subscribe(events.user_channel("user_a")) as mine,
        store.events.subscribe(events.user_channel("user_b")) as theirs,
    ):
        await users.update(store, "user_a", preferences={"theme": "light"}, name="Ada")
        event = await asyncio.wait_for(anext(mine), 2)
        assert event.kind == "user.updated"
        assert event.record["externalId"] == "user_a"
        assert event.record["preferences"] == {"theme": "light"}
        assert event.record["version"] == 2
        # user_b's subscribers hear nothing about user_a.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(theirs), 0.2)


async def test_a_rejected_update_publishes_nothing(store: Store) -> None:
    await insert_user(store)
    async with store.events.subscribe(events.user_channel("user_a")) as stream:
        with pytest.raises(InvalidInput):
            await users.update(store, "user_a", preferences={"$bad": 1})
        await users.update(store, "user_a", name="After")
        event = await asyncio.wait_for(anext(stream), 2)
        assert (event.record["name"], event.record["version"]) == ("After", 2)
