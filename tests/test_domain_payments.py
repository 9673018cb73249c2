"""payments.latest_for_user and payments.list_for_user against the real database."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from datadiver_graph.domain import payments
from datadiver_graph.domain.errors import InvalidInput
from datadiver_graph.domain.store import Store


async def insert_attempt(store: Store, **fields: Any) -> payments.PaymentAttempt:
    fields.setdefault("status", "paid")
    attempt = payments.new_attempt(**fields)
    await store.db.payment_attempts.insert_one(attempt.to_doc())
    return attempt


def forged(payload: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(payload)).decode().rstrip("=")


def test_new_attempt_fills_id_and_created_at() -> None:
    one = payments.new_attempt(payment_id="p1", user_id="user_a", status="pending")
    two = payments.new_attempt(payment_id="p2", user_id="user_a", status="pending")
    assert one.id and two.id and one.id != two.id
    assert one.created_at > 0
    assert one.version == 1
    doc = one.to_doc()
    assert doc["payment_id"] == "p1"
    assert doc["userId"] == "user_a"
    assert doc["createdAt"] == one.created_at


def test_new_attempt_keeps_a_given_created_at() -> None:
    attempt = payments.new_attempt(
        payment_id="p1", user_id="user_a", status="paid", created_at=1234, amount=999
    )
    assert attempt.created_at == 1234
    assert attempt.amount == 999


async def test_latest_for_user_is_the_newest_created(store: Store) -> None:
    await insert_attempt(store, payment_id="p_old", user_id="user_a", created_at=1_000)
    newest = await insert_attempt(
        store, payment_id="p_new", user_id="user_a", created_at=3_000, status="failed"
    )
    await insert_attempt(store, payment_id="p_mid", user_id="user_a", created_at=2_000)
    await insert_attempt(store, payment_id="p_other", user_id="user_b", created_at=9_000)
    latest = await payments.latest_for_user(store, "user_a")
    assert latest == newest
    assert latest is not None and latest.status == "failed"


async def test_latest_for_user_breaks_ties_by_payment_id(store: Store) -> None:
    await insert_attempt(store, payment_id="p_a", user_id="user_a", created_at=5_000)
    await insert_attempt(store, payment_id="p_c", user_id="user_a", created_at=5_000)
    await insert_attempt(store, payment_id="p_b", user_id="user_a", created_at=5_000)
    latest = await payments.latest_for_user(store, "user_a")
    assert latest is not None and latest.payment_id == "p_c"


async def test_latest_for_user_without_attempts_is_none(store: Store) -> None:
    await insert_attempt(store, payment_id="p1", user_id="user_b")
    await insert_attempt(store, payment_id="org", user_id=None)
    assert await payments.latest_for_user(store, "user_a") is None


async def test_list_for_user_is_newest_first_and_paginates(store: Store) -> None:
    for i, created in enumerate([4_000, 1_000, 5_000, 2_000, 3_000]):
        await insert_attempt(store, payment_id=f"p{i}", user_id="user_a", created_at=created)
    await insert_attempt(store, payment_id="other", user_id="user_b", created_at=4_500)

    first = await payments.list_for_user(store, "user_a", first=2)
    assert [a.payment_id for a in first.items] == ["p2", "p0"]
    assert first.has_next_page and first.end_cursor
    second = await payments.list_for_user(store, "user_a", first=2, after=first.end_cursor)
    assert [a.payment_id for a in second.items] == ["p4", "p3"]
    assert second.has_next_page
    third = await payments.list_for_user(store, "user_a", first=2, after=second.end_cursor)
    assert [a.payment_id for a in third.items] == ["p1"]
    assert not third.has_next_page

    everything = await payments.list_for_user(store, "user_a", first=10)
    assert [a.created_at for a in everything.items] == [5_000, 4_000, 3_000, 2_000, 1_000]
    assert not everything.has_next_page


async def test_pagination_over_equal_timestamps_skips_and_repeats_nothing(store: Store) -> None:
    for i in range(5):
        await insert_attempt(store, payment_id=f"p{i}", user_id="user_a", created_at=7_000)
    seen: list[str] = []
    after = None
    for _ in range(5):
        page = await payments.list_for_user(store, "user_a", first=2, after=after)
        seen += [a.payment_id for a in page.items]
        if not page.has_next_page:
            break
        after = page.end_cursor
    assert seen == ["p4", "p3", "p2", "p1", "p0"]


async def test_list_for_user_without_attempts_is_an_empty_page(store: Store) -> None:
    page = await payments.list_for_user(store, "user_a", first=5)
    assert page.items == []
    assert not page.has_next_page
    assert page.end_cursor is None


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "!!!!",
        forged({"createdAt": 1}),
        forged([1, 2]),
        forged(["1", "p1"]),
        forged([True, "p1"]),
        forged([1, "p1", 3]),
        forged([2**63, "p1"]),
        forged([-1, "p1"]),
        forged([1, ""]),
    ],
)
async def test_list_rejects_a_forged_cursor(store: Store, cursor: str) -> None:
    await insert_attempt(store, payment_id="p1", user_id="user_a")
    with pytest.raises(InvalidInput, match="cursor"):
        await payments.list_for_user(store, "user_a", first=2, after=cursor)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 129, "{$ne:1}"])
async def test_reads_validate_the_user_id(store: Store, bad: str) -> None:
    with pytest.raises(InvalidInput):
        await payments.latest_for_user(store, bad)
    with pytest.raises(InvalidInput):
        await payments.list_for_user(store, bad, first=1)
