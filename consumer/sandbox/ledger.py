"""Who holds the worker's memory: RSS growth charged to the context whose step made it.

V8 limits a context's heap exactly, but ArrayBuffer and WebAssembly memory lives outside the
heap, and the worker can only see it as its own RSS. So every piece of V8 work in a worker
takes one lock - steps, and creating and closing contexts too - and the change of RSS across a
step is charged to that step's context (`JsContext.held`). What a context holds therefore
counts from one step, one `await` and one warm run to the next, until the context is closed:
a script cannot escape its max_memory_bytes by spreading allocations over awaits, or over runs
that keep memory in globalThis.

Two corrections keep the ledger honest:
- garbage: V8 frees unreachable ArrayBuffers only when it collects, which may be long after;
  a context whose charge passes half its budget is collected (between its steps, under the
  lock) and credited with what that freed, before it can be blamed for garbage;
- drift: memory freed in the background after a step (V8's sweeper threads) lands in another
  context's step; the charges are never allowed to add up to more than the worker holds above
  its empty state (they are scaled down to that), so nobody is blamed for memory that is gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

RECLAIM_FRACTION = 2  # collect a context once it holds more than budget / 2 ...
RECLAIM_STEP = 8  # ... and more than budget / 8 above what it held after its last collection
DRIFT_SLACK = 4 << 20


class Charged(Protocol):
    held: int  # bytes of the worker's RSS this context is charged with
    reclaimed_at: int  # what it held right after its last collection


class Ledger:
    def __init__(self, rss: Callable[[], int]) -> None:
        self._rss = rss
        # RSS of the worker with no context charged: taken at start, and lowered whenever the
        # last charged context is closed with less resident.
        self.empty = rss()

    def rss(self) -> int:
        return self._rss()

    @staticmethod
    def charge(ctx: Charged, growth: int) -> None:
        ctx.held = max(0, ctx.held + growth)

    @staticmethod
    def wants_reclaim(ctx: Charged, budget: int) -> bool:
        return (ctx.held > budget // RECLAIM_FRACTION
                and ctx.held > ctx.reclaimed_at + budget // RECLAIM_STEP)

    def reclaimed(self, ctx: Charged, growth: int) -> None:
        """After a collection of `ctx` that changed RSS by `growth` (usually negative)."""
        self.charge(ctx, growth)
        ctx.reclaimed_at = ctx.held

    def correct(self, live: Iterable[Charged]) -> None:
        """Scale the charges down when they add up to more than the worker holds."""
        contexts = [c for c in live if c.held > 0]
        total = sum(c.held for c in contexts)
        actual = max(0, self._rss() - self.empty)
        if not contexts:
            return
        if total > actual + DRIFT_SLACK:
            for c in contexts:
                c.held = c.held * actual // total

    def emptied(self) -> None:
        """No context is charged now: the RSS is the worker's own. The baseline only ever
        goes down: V8 keeps a closed isolate's heap pages resident for later ones, and a
        baseline raised by them would shrink every later charge."""
        self.empty = min(self.empty, self._rss())
