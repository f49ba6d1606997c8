"""The engine lock of a worker, handed out round-robin by tenant.

One piece of V8 work runs at a time in a worker. With a plain FIFO lock, a tenant whose runs
yield every 90 ms (`await` between busy loops, no step ever long) queued a step per run ahead
of everybody: another tenant's step waited for all of them (0.6-0.9 s measured behind 20 such
runs on two workers, and more with more runs). Here the lock goes to the waiting keys in turn,
one acquisition each, so that a step waits for at most one step of each other tenant that
has one waiting. Waiters of one key keep their order. Ownership passes directly to the waiter
chosen: nobody barges in between.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from types import TracebackType


class FairLock:
    def __init__(self) -> None:
        self._held = False
        self._holder: Hashable = None  # the key of the acquisition holding it now
        # keys with waiters, in the order of their turns (a dict keeps insertion order)
        self._waiting: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def locked(self) -> bool:
        return self._held

    async def acquire(self, key: Hashable = None) -> bool:
        if not self._held and not self._waiting:
            self._held, self._holder = True, key
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, deque()).append(future)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # it was handed over as the waiter was cancelled: pass it on
            else:
                self._forget(key, future)
            raise
        return True

    def release(self) -> None:
        if not self._held:
            raise RuntimeError("FairLock released while not held")
        while self._waiting:
            keys = iter(self._waiting)
            key = next(keys)
            if key == self._holder and len(self._waiting) > 1:
                key = next(keys)  # the key that had it waits for the others' turns first
            queue = self._waiting.pop(key)
            future = queue.popleft()
            if queue:
                self._waiting[key] = queue  # its next waiter: at the back of the round
            if not future.done():
                self._holder = key
                future.set_result(None)  # held still, now by that waiter
                return
        self._held = False

    def _forget(self, key: Hashable, future: asyncio.Future[None]) -> None:
        queue = self._waiting.get(key)
        if queue is not None and future in queue:
            queue.remove(future)
            if not queue:
                del self._waiting[key]

    @asynccontextmanager
    async def holding(self, key: Hashable) -> AsyncIterator[None]:
        """`async with lock.holding(tenant):` - the lock, in that key's turn."""
        await self.acquire(key)
        try:
            yield
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
