"""Group commit for callers that each wait for their own answer: what is submitted while a
batch is in flight goes together in the next one. One statement serves many callers under
load, and a lone caller waits for nobody (no timer, no batch window).

    batcher = Batcher(run_batch)        # run_batch(items) -> one result per item, in order
    result = await batcher.submit(item)

With `size`, a batch holds `max_chars` of the items at most (one larger goes alone), and the
small ones (`small` characters at most) go first, the large ones oldest first in what room is
left (always one when one waits): one tenant's 1 MiB requests neither make a statement of
hundreds of MiB nor make another tenant's small one wait behind them.

A result that is an exception is raised to its caller alone (a batch that failed as a whole
raises to every caller). A caller that is cancelled while its item is in flight stops
waiting, but the batch still happened: `on_orphan(item, result)` then gets what the caller
would have, so that whatever the statement created (a started run, say) is not left behind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R | Exception]]],
                 max_batch: int = 256,
                 on_orphan: Callable[[T, R], None] | None = None,
                 size: Callable[[T], int] | None = None, max_chars: int = 1 << 20,
                 small: int = 64 << 10) -> None:
        self._run_batch = run_batch
        self._max = max_batch
        self._on_orphan = on_orphan
        self._size = size
        self._max_chars = max_chars
        self._small = small
        self._queue: deque[tuple[T, asyncio.Future[R]]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._one(self._next())
        finally:
            self._task = None

    def _next(self) -> list[tuple[T, asyncio.Future[R]]]:
        if self._size is None:
            return [self._queue.popleft() for _ in range(min(len(self._queue), self._max))]
        sized = [(entry, self._size(entry[0])) for entry in self._queue]
        small = [e for e in sized if e[1] <= self._small]
        large = [e for e in sized if e[1] > self._small]
        # the oldest large one (never starved by small ones), the small ones (max_chars of
        # them), then more large ones while the whole stays within max_chars
        batch = [large[0][0]] if large else []
        total = large[0][1] if large else 0
        chars = 0
        for entry, size in small:
            if len(batch) >= self._max or (chars and chars + size > self._max_chars):
                break
            batch.append(entry)
            chars += size
        total += chars
        for entry, size in large[1:]:
            if len(batch) >= self._max or total + size > self._max_chars:
                break
            batch.append(entry)
            total += size
        taken = {id(e) for e in batch}
        self._queue = deque(e for e in self._queue if id(e) not in taken)
        return batch

    async def _one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for {len(batch)} items")
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:  # cancelled: the process is going away
            for _, future in batch:
                future.cancel()
            raise
        for (item, future), result in zip(batch, results, strict=True):
            self._settle(item, future, result)

    def _settle(self, item: T, future: asyncio.Future[R], result: R | Exception) -> None:
        if future.done():  # its caller went away
            if self._on_orphan is not None and not isinstance(result, Exception):
                self._on_orphan(item, result)
        elif isinstance(result, Exception):
            future.set_exception(result)
        else:
            future.set_result(result)
