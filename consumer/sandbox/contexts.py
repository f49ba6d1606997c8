"""The worker's warm contexts: reused only by later runs of the same tenant, script and version.

A context is checked out by one execution at a time and comes back only if that run was
clean; after an error, a timeout, a memory event, a left-over timer or host call, or
`max_runs` runs, it is closed instead (see README, "Writing scripts").

Every context is created and closed under the worker's engine lock, the lock its steps take,
so that the RSS change of a step is the step's own (ledger.py). Idle contexts hold memory that
nobody's step is using: they are closed, least recently used first, when together they hold
more than `max_idle_bytes`, and whenever a step needs room under the worker's memory ceiling.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable

from consumer.sandbox.engine import JsContext
from consumer.sandbox.fairlock import FairLock
from consumer.sandbox.ledger import Ledger

Key = tuple[str, str, str]  # (tenant_id, script_id, version_id)
BOOT_TIMEOUT_S = 10.0
SPARES = 2  # booted, unassigned contexts kept ready for cold starts
MAX_IDLE_BYTES = 256 << 20


class ContextPool:
    def __init__(self, lock: FairLock, ledger: Ledger, max_idle: int = 32,
                 max_runs: int = 1000, max_idle_bytes: int = MAX_IDLE_BYTES) -> None:
        self.max_idle = max_idle
        self.max_runs = max_runs
        self.max_idle_bytes = max_idle_bytes
        self._lock = lock  # the engine lock: steps, creation and closing never overlap
        self._ledger = ledger
        self._idle: OrderedDict[Key, list[JsContext]] = OrderedDict()
        self._count = 0
        self._spares: list[JsContext] = []
        self._live: set[JsContext] = set()  # assigned and not closed: in use or idle
        self._refill: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------ spares
    def has_idle(self, key: Key) -> bool:
        return key in self._idle

    async def spare(self, turn: Hashable = None) -> JsContext:
        """A booted context nobody owns yet (takes the engine lock to create one, in the turn
        of `turn`: the tenant it is for)."""
        if self._spares:
            ctx = self._spares.pop()
        else:
            async with self._lock.holding(turn):
                ctx = await self._create()
        self._schedule_refill()
        return ctx

    async def spare_locked(self) -> JsContext:
        """`spare`, for a caller that holds the engine lock already."""
        ctx = self._spares.pop() if self._spares else await self._create()
        self._schedule_refill()
        return ctx

    async def _create(self) -> JsContext:
        """With the lock held. What creation adds to RSS is nobody's charge."""
        return await JsContext.create(BOOT_TIMEOUT_S)

    def _schedule_refill(self) -> None:
        if self._refill is None and len(self._spares) < SPARES:
            self._refill = asyncio.get_running_loop().create_task(self._make_spares())

    def unused(self, ctx: JsContext) -> None:
        """A spare that was not needed after all."""
        if len(self._spares) < SPARES:
            self._spares.append(ctx)
        else:
            self._retire(ctx)

    async def _make_spares(self) -> None:
        try:
            while len(self._spares) < SPARES:
                async with self._lock:
                    self._spares.append(await self._create())
        finally:
            self._refill = None

    # ------------------------------------------------------------ warm contexts
    def assign(self, ctx: JsContext, key: Key, source: str) -> None:
        ctx.assign(key, source)
        self._live.add(ctx)

    def take(self, key: Key, source: str) -> JsContext | None:
        if not self._idle.get(key):
            return None
        ctx = self._unlist(key, -1)
        if ctx.source != source:  # the same version id with another text: never trust the cache
            self._retire(ctx)
            return None
        return ctx

    def newest_idle(self) -> JsContext | None:
        """The idle context given back last (None: none is idle)."""
        if not self._idle:
            return None
        return next(reversed(self._idle.values()))[-1]

    def drop_idle(self, ctx: JsContext) -> bool:
        """Take an idle context out of the pool, for the caller to close; False: it is not
        idle here."""
        key = ctx.key
        contexts = self._idle.get(key) if key is not None else None
        if key is None or not contexts or ctx not in contexts:
            return False
        self._unlist(key, contexts.index(ctx))
        return True

    def give(self, ctx: JsContext) -> None:
        if ctx.runs >= self.max_runs or ctx.key is None:
            self._retire(ctx)
            return
        self._idle.setdefault(ctx.key, []).append(ctx)
        self._idle.move_to_end(ctx.key)
        self._count += 1
        while self._count > self.max_idle or (
                self._count and self.idle_bytes() > self.max_idle_bytes):
            self._retire(self._pop_oldest())

    def idle_bytes(self) -> int:
        return sum(c.held for contexts in self._idle.values() for c in contexts)

    def live(self) -> set[JsContext]:
        return self._live

    async def make_room_locked(self, needed: int, ceiling: int) -> None:
        """With the lock held: close idle contexts, oldest first, until the worker's memory
        above its empty state plus `needed` fits under `ceiling` (or none is left)."""
        while self._count and self._ledger.rss() - self._ledger.empty + needed > ceiling:
            await self.close_locked(self._pop_oldest())

    def _pop_oldest(self) -> JsContext:
        return self._unlist(next(iter(self._idle)), 0)

    def _unlist(self, key: Key, index: int) -> JsContext:
        """Take the idle context at `index` of `key`'s out of the pool."""
        contexts = self._idle[key]
        ctx = contexts.pop(index)
        self._count -= 1
        if not contexts:
            del self._idle[key]
        return ctx

    # ------------------------------------------------------------ closing
    async def close_locked(self, ctx: JsContext) -> None:
        """Close a context; the caller holds the engine lock."""
        try:
            await ctx.aclose()
        finally:
            self._forget(ctx)

    def _retire(self, ctx: JsContext) -> None:
        """Close a context in the background (under the lock)."""
        task = asyncio.get_running_loop().create_task(self._close(ctx))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _close(self, ctx: JsContext) -> None:
        async with self._lock:
            await self.close_locked(ctx)

    def _forget(self, ctx: JsContext) -> None:
        self._live.discard(ctx)
        if not self._live:
            self._ledger.emptied()

    def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        while self._count:
            self._pop_oldest().close()
        while self._spares:
            self._spares.pop().close()
