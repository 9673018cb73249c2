"""Group commit: concurrent callers of one write share its database round trips.

A MongoDB round trip costs the client about as much CPU whether it carries one document or
many, so a burst of webhook deliveries is cheaper written together. `Batcher.submit(item)`
queues an item and waits for that item's own result. While a batch is in flight new items
queue, and the next batch takes all of them; a lone caller's batch starts at once. Under
steady load the callers of the last batch come back soon with their next item, so the next
batch lingers up to LINGER_S for as many items as the last one had plus those that queued
meanwhile: without that, stragglers arriving during a batch make a small batch of their
own, and big and small batches take turns for ever. (Measurements: bench/RESULTS.md.)

Each caller is answered only after its batch's `run` returned, that is after its write was
acknowledged; when `run` raises, every caller of that batch gets the exception.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_BATCH = 100
# Long enough for answered senders to come back on a busy machine, short against a batch's
# own database time (the figures behind it are in bench/RESULTS.md).
LINGER_S = 0.005


class Batcher(Generic[T, R]):
    """Runs `run(items) -> results` (one result per item, in order), one batch at a time.

    Items with the same `key` never share a batch: each goes in the next one, so `run`
    may assume one item per key (e.g. one write per user, each with its own outcome).
    """

    __slots__ = ("_filled", "_key", "_max_size", "_queue", "_run", "_task", "_wanted")

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[R]]],
        *,
        key: Callable[[T], Hashable] | None = None,
        max_size: int = MAX_BATCH,
    ) -> None:
        self._run = run
        self._key = key
        self._max_size = max_size
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._wanted = 0  # how many items the next batch waits for (up to LINGER_S)
        self._filled: asyncio.Event | None = None  # set when a lingering batch has enough

    async def submit(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if self._task is None:
            # A context of its own: the batch serves many requests, not the first one's.
            self._task = loop.create_task(self._drain(), context=contextvars.Context())
        elif self._filled is not None and len(self._queue) >= self._wanted:
            self._filled.set()
        # A caller that gives up (a timeout) leaves the batch running for the others.
        return await future

    def _take(self) -> list[tuple[T, asyncio.Future[R]]]:
        batch: list[tuple[T, asyncio.Future[R]]] = []
        keys: set[Hashable] = set()
        later: deque[tuple[T, asyncio.Future[R]]] = deque()
        for entry in self._queue:
            if entry[1].done():  # its caller was cancelled before the batch started
                continue
            key = self._key(entry[0]) if self._key is not None else None
            if len(batch) >= self._max_size or (key is not None and key in keys):
                later.append(entry)
                continue
            keys.add(key)
            batch.append(entry)
        self._queue = later
        return batch

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = self._take()
                if batch:
                    await self._run_batch(batch)
                    # Its callers and those queued meanwhile: batching them apart would
                    # settle into two half-size batches taking turns for ever.
                    self._wanted = min(len(batch) + len(self._queue), self._max_size)
                if len(self._queue) < self._wanted:
                    await self._linger()
        except BaseException as exc:  # cancelled (shutdown): no caller is left waiting
            _fail(self._queue, exc)
            self._queue.clear()
            raise
        finally:
            self._task = None

    async def _linger(self) -> None:
        """Wait up to LINGER_S for `_wanted` items."""
        self._filled = asyncio.Event()
        try:
            async with asyncio.timeout(LINGER_S):
                await self._filled.wait()
        except TimeoutError:
            pass
        finally:
            self._filled = None

    async def _run_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self._run!r} answered {len(results)} of {len(batch)}")
        except Exception as exc:
            _fail(batch, exc)
            return
        except BaseException as exc:
            _fail(batch, exc)
            raise
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(entries: Iterable[tuple[object, asyncio.Future[R]]], exc: BaseException) -> None:
    for _, future in entries:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
