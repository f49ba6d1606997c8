"""The worker's warm contexts: reused only by later runs of the same tenant, script and version.

A context is checked out by one execution at a time and comes back only if that run was
clean; after an error, a timeout, a memory event, a left-over timer or host call, or
`max_runs` runs, it is closed instead (see README, "Writing scripts").
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from consumer.sandbox.engine import JsContext

Key = tuple[str, str, str]  # (tenant_id, script_id, version_id)
BOOT_TIMEOUT_S = 10.0


SPARES = 2  # booted, unassigned contexts kept ready for cold starts
CONCURRENT_CREATIONS = 2


class ContextPool:
    def __init__(self, max_idle: int = 32, max_runs: int = 1000) -> None:
        self.max_idle = max_idle
        self.max_runs = max_runs
        self._idle: OrderedDict[Key, list[JsContext]] = OrderedDict()
        self._count = 0
        self._spares: list[JsContext] = []
        self._refill: asyncio.Task[None] | None = None
        # Contexts are created outside the step lock; a creation adds a megabyte or two of RSS
        # to whatever step is running, so only a couple at a time (well within its margin).
        self._creating = asyncio.Semaphore(CONCURRENT_CREATIONS)
        self._closing: set[asyncio.Task[None]] = set()

    def has_idle(self, key: Key) -> bool:
        return key in self._idle

    async def spare(self) -> JsContext:
        """A booted context nobody owns yet."""
        if self._spares:
            ctx = self._spares.pop()
        else:
            async with self._creating:
                ctx = await JsContext.create(BOOT_TIMEOUT_S)
        if self._refill is None and len(self._spares) < SPARES:
            self._refill = asyncio.get_running_loop().create_task(self._make_spares())
        return ctx

    def unused(self, ctx: JsContext) -> None:
        """A spare that was not needed after all."""
        if len(self._spares) < SPARES:
            self._spares.append(ctx)
        else:
            self._retire(ctx)

    async def _make_spares(self) -> None:
        try:
            while len(self._spares) < SPARES:
                async with self._creating:
                    self._spares.append(await JsContext.create(BOOT_TIMEOUT_S))
        finally:
            self._refill = None

    def take(self, key: Key, source: str) -> JsContext | None:
        contexts = self._idle.get(key)
        if not contexts:
            return None
        ctx = contexts.pop()
        self._count -= 1
        if not contexts:
            del self._idle[key]
        if ctx.source != source:  # the same version id with another text: never trust the cache
            self._retire(ctx)
            return None
        return ctx

    def give(self, ctx: JsContext) -> None:
        if ctx.runs >= self.max_runs or ctx.key is None:
            self._retire(ctx)
            return
        self._idle.setdefault(ctx.key, []).append(ctx)
        self._idle.move_to_end(ctx.key)
        self._count += 1
        while self._count > self.max_idle:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        key, contexts = next(iter(self._idle.items()))
        self._retire(contexts.pop(0))
        self._count -= 1
        if not contexts:
            del self._idle[key]

    def _retire(self, ctx: JsContext) -> None:
        """Close a clean context in the background."""
        task = asyncio.get_running_loop().create_task(ctx.aclose())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def close(self) -> None:
        if self._refill is not None:
            self._refill.cancel()
        while self._count:
            self._evict_oldest()
        while self._spares:
            self._spares.pop().close()
