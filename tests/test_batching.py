"""domain.batching.Batcher: group commit of concurrent callers (no database needed)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from datadiver_graph.domain import batching
from datadiver_graph.domain.batching import Batcher


class Recorder:
    """A `run` that records each batch and answers each item doubled.

    A gated recorder holds every batch at `gate` until the test opens it, so the test can
    queue callers while a batch is known to be in flight (`in_flight`) instead of guessing
    how long a sleep that takes.
    """

    def __init__(self, *, gated: bool = False, fail: set[int] | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail = fail or set()
        self.in_flight = asyncio.Event()
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        self.in_flight.set()
        await self.gate.wait()
        if self.fail & set(items):
            raise RuntimeError(f"batch {items} failed")
        return [item * 2 for item in items]


async def queued() -> None:
    """Let tasks just created run up to their first wait: each submit queues its item then."""
    for _ in range(3):
        await asyncio.sleep(0)


@pytest.fixture
def linger_for_an_hour(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A linger no test could sit out: a caller that lingered would trip its deadline."""
    monkeypatch.setattr(batching, "LINGER_S", 3600.0)
    yield


async def test_concurrent_callers_share_one_batch_and_get_their_own_result() -> None:
    run = Recorder()
    batcher = Batcher(run)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(10))) == [
        i * 2 for i in range(10)
    ]
    assert run.batches == [list(range(10))]


@pytest.mark.usefixtures("linger_for_an_hour")
async def test_a_lone_caller_does_not_wait_for_company() -> None:
    run = Recorder()
    batcher = Batcher(run)
    # The loop is shared by the whole session: only the tasks this test starts are its own.
    before = asyncio.all_tasks()
    try:
        assert await asyncio.wait_for(batcher.submit(1), timeout=10) == 2
        assert run.batches == [[1]]
    finally:
        # The batcher now lingers (an hour) for a next caller; end that wait.
        for task in asyncio.all_tasks() - before - {asyncio.current_task()}:
            task.cancel()


async def test_callers_arriving_during_a_batch_go_together_in_the_next() -> None:
    run = Recorder(gated=True)
    batcher = Batcher(run)
    first = asyncio.create_task(batcher.submit(0))
    await run.in_flight.wait()
    later = [asyncio.create_task(batcher.submit(i)) for i in range(1, 6)]
    await queued()
    run.gate.set()
    assert await asyncio.gather(first, *later) == [0, 2, 4, 6, 8, 10]
    assert run.batches == [[0], [1, 2, 3, 4, 5]]


async def test_items_with_the_same_key_never_share_a_batch() -> None:
    run = Recorder()
    batcher = Batcher(run, key=lambda item: item % 3)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert results == [i * 2 for i in range(7)]
    assert run.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    run = Recorder(gated=True, fail={1})
    batcher = Batcher(run)
    doomed = [asyncio.create_task(batcher.submit(i)) for i in (1, 2)]
    await run.in_flight.wait()
    fine = asyncio.create_task(batcher.submit(3))
    await queued()
    run.gate.set()
    for task in doomed:
        with pytest.raises(RuntimeError, match="failed"):
            await task
    assert await fine == 6
    assert run.batches == [[1, 2], [3]]


async def test_a_caller_that_gives_up_leaves_the_others_answered() -> None:
    run = Recorder(gated=True)
    batcher = Batcher(run)
    impatient = asyncio.create_task(batcher.submit(1))
    patient = asyncio.create_task(batcher.submit(2))
    await run.in_flight.wait()
    impatient.cancel()
    queued_then_cancelled = asyncio.create_task(batcher.submit(3))
    await queued()
    queued_then_cancelled.cancel()
    await queued()
    run.gate.set()
    assert await patient == 4
    assert await batcher.submit(4) == 8
    # Item 1 was in flight and completed anyway; item 3 was dropped before its batch.
    assert run.batches == [[1, 2], [4]]


async def test_a_run_that_answers_the_wrong_number_of_results_fails_its_callers() -> None:
    async def short(items: list[int]) -> list[int]:
        return items[:-1]

    batcher = Batcher(short)
    with pytest.raises(RuntimeError, match="answered 1 of 2"):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
