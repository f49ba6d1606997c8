"""Cancel (#19): stopping the cancelled runs a process had taken.

`jsrt executions cancel` (Executions.cancel → jsrt_cancel) ends an unfinished execution
'cancelled' in the database at once and removes its run, so that nobody starts it from the
queue and a late result finds nothing of its own to record. A run that a process had taken
already - in a daemon's local queue, or running in its sandbox - is named in jsrt_cancels for
that process, with a NOTIFY hint on jsrt_cancel. The CancelWatcher of each process (daemon,
HTTP server, embedded Runtime) takes its rows on the hint or, since NOTIFY is only a hint, at
least every heartbeat interval, and stops each run: dropped from the local queue, or its V8
step terminated by the executor (the worker kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from uuid import UUID

import anyio

from consumer import log
from consumer.errors import StoreError
from consumer.store import Store

_LOG = log.get("jsrt.cancel")

# Stop one run: (execution id, the error it ends with, e.g. "cancelled by alice").
Stop = Callable[[UUID, str], None]


class CancelWatcher:
    """A service: `await watcher.run()` until cancelled; `hint()` from a notification."""

    def __init__(self, store: Store, owner: str, stop: Stop, interval: float) -> None:
        self._store = store
        self._owner = owner
        self._stop = stop
        self._interval = interval
        self._hint = anyio.Event()

    def hint(self) -> None:
        self._hint.set()

    def notified(self, payload: str) -> None:
        """A jsrt_cancel notification: it names the process that must look."""
        if payload == self._owner:
            self.hint()

    async def run(self) -> None:
        while True:
            with anyio.move_on_after(self._interval * random.uniform(0.8, 1.2)):
                await self._hint.wait()
            self._hint = anyio.Event()
            await self.once()

    async def once(self) -> int:
        """Take this process's cancelled runs and stop each; how many."""
        try:
            taken = await self._store.executions.take_cancels(self._owner)
        except StoreError as exc:  # unavailable, say: the next look finds them still there
            _LOG.warning("cancel_check_failed", owner=self._owner,
                         error=str(exc).splitlines()[0][:200])
            return 0
        for execution_id, by in taken:
            _LOG.info("execution_cancel_applied", owner=self._owner,
                      execution_id=str(execution_id), cancelled_by=by)
            try:
                self._stop(execution_id, f"cancelled by {by}")
            except Exception as exc:  # one run's stop must not keep the others running
                _LOG.error("execution_cancel_failed", execution_id=str(execution_id),
                           error=f"{type(exc).__name__}: {exc}"[:300])
        return len(taken)


def executor_stop(executor: object) -> Stop:
    """Stop a run held by an executor (HTTP servers and the embedded Runtime: they hold no
    local queue): its caller gets the 'cancelled' result."""
    def stop(execution_id: UUID, error: str) -> None:
        cancel = getattr(executor, "cancel", None)
        if cancel is not None:
            cancel(str(execution_id), error)
    return stop


@asynccontextmanager
async def watching(store: Store, owner: str, stop: Stop,
                   interval: float) -> AsyncIterator[CancelWatcher]:
    """A CancelWatcher running beside a block (for hosts without a task group: the HTTP
    server, the embedded Runtime)."""
    watcher = CancelWatcher(store, owner, stop, interval)
    task = asyncio.create_task(watcher.run(), name=f"cancels {owner}")
    try:
        yield watcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
