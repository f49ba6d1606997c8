"""The worker's warm contexts: reused only by later runs of the same tenant, script and version.

A context is checked out by one execution at a time and comes back only if that run was
clean; after an error, a timeout, a memory event, a left-over timer or host call, or
`max_runs` runs, it is closed instead (see README, "Writing scripts").
"""

from __future__ import annotations

from collections import OrderedDict

from consumer.sandbox.engine import JsContext

Key = tuple[str, str, str]  # (tenant_id, script_id, version_id)


class ContextPool:
    def __init__(self, max_idle: int = 32, max_runs: int = 1000) -> None:
        self.max_idle = max_idle
        self.max_runs = max_runs
        self._idle: OrderedDict[Key, list[JsContext]] = OrderedDict()
        self._count = 0

    def take(self, key: Key, source: str) -> JsContext | None:
        contexts = self._idle.get(key)
        if not contexts:
            return None
        ctx = contexts.pop()
        self._count -= 1
        if not contexts:
            del self._idle[key]
        if ctx.source != source:  # the same version id with another text: never trust the cache
            ctx.close()
            return None
        return ctx

    def give(self, ctx: JsContext) -> None:
        if ctx.runs >= self.max_runs:
            ctx.close()
            return
        self._idle.setdefault(ctx.key, []).append(ctx)
        self._idle.move_to_end(ctx.key)
        self._count += 1
        while self._count > self.max_idle:
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        key, contexts = next(iter(self._idle.items()))
        contexts.pop(0).close()
        self._count -= 1
        if not contexts:
            del self._idle[key]

    def close(self) -> None:
        while self._count:
            self._evict_oldest()
