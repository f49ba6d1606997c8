"""A process's lease in jsrt_daemons, and the one heartbeat of every process: registered on
entry, beaten by a background task, removed on exit. Runs owned by a live lease are never
rescued as "worker lost"; runs owned by a lease whose heartbeat stops are, by any process
that rescues (the daemons, and a server running without any daemon).

    Leases  the repository (register, beat, unregister)
    Lease   the service: `async with Lease(store, interval, ...) as lease:` - lease.id owns
            the runs started inside; with `rescue_after`, each beat also closes the runs of
            processes silent that long, retried exactly as a failed run is (retry.py); with
            `memory`, each beat records the process's memory (the console's overview shows it)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio

from consumer import log
from consumer.clock import Clock, SystemClock
from consumer.db import Db
from consumer.errors import StoreError, StoreUnavailable
from consumer.records import Finished
from consumer.retry import retry_at_after
from consumer.sandbox.memory import PAGE
from consumer.sql import q

if TYPE_CHECKING:
    from consumer.sandbox import Executor
    from consumer.store import Store

Memory = Mapping[str, Any]

_LOG = log.get("jsrt.lease")


def new_owner_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def register(self, owner: str, hostname: str, pid: int,
                       memory: Memory | None = None) -> None:
        """An upsert: a lease forgotten after a long stall is taken again. `memory` (see
        memory_report) replaces what the last beat recorded; None keeps it."""
        await self._db.execute(q("register_daemon"), owner, hostname, pid, memory)

    async def unregister(self, owner: str) -> None:
        await self._db.execute(q("unregister_daemon"), owner)


class Lease:
    """The heartbeat is a plain asyncio task (the sandbox executor is asyncio too), not a task
    group: a host may enter and leave the lease from different tasks (fixtures, lifespans).
    `on_beat` runs after every beat (and rescue): the daemon takes over raw ingestion there
    and wakes its claim loop when runs were rescued."""

    def __init__(self, store: Store, interval: float, kind: str = "ondemand",
                 rescue_after: float | None = None, retry_base: float = 30.0,
                 owner: str | None = None, clock: Clock | None = None,
                 on_beat: Callable[[Sequence[Finished]], object] | None = None,
                 memory: Callable[[], Memory | None] | None = None) -> None:
        self.store = store
        self.interval = interval
        self.id = owner or new_owner_id(kind)
        self.rescue_after = rescue_after
        self.retry_base = retry_base
        self.clock = clock or SystemClock()
        self.rescued = 0
        self._on_beat = on_beat
        self._memory = memory
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        await self.store.leases.register(self.id, socket.gethostname(), os.getpid(),
                                         self._measure())
        self._task = asyncio.create_task(self._run(), name=f"lease {self.id}")
        _LOG.debug("lease_taken", owner=self.id)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with anyio.CancelScope(shield=True):
            try:
                await self.store.leases.unregister(self.id)
            except StoreUnavailable as err:
                _LOG.warning("lease_release_failed", owner=self.id, error=str(err)[:200])
        _LOG.debug("lease_released", owner=self.id)

    async def _run(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            await self.beat()

    async def beat(self) -> list[Finished]:
        """One heartbeat (and rescue); a database that does not answer is logged and the
        next beat tries again."""
        try:
            await self.store.leases.register(self.id, socket.gethostname(), os.getpid(),
                                             self._measure())
            lost = await self._rescue() if self.rescue_after is not None else []
        except StoreError as exc:  # unavailable, or e.g. a deadlock between rescuers
            _LOG.warning("heartbeat_failed", owner=self.id, error=str(exc).splitlines()[0][:200])
            return []
        if self._on_beat is not None:
            result = self._on_beat(lost)
            if asyncio.iscoroutine(result):
                await result
        return lost

    def _measure(self) -> Memory | None:
        if self._memory is None:
            return None
        try:
            return self._memory()
        except Exception as exc:  # a report that fails never costs the heartbeat
            _LOG.warning("memory_report_failed", owner=self.id, error=str(exc)[:200])
            return None

    async def _rescue(self) -> list[Finished]:
        assert self.rescue_after is not None
        lost = await self.store.queue.rescue_lost_runs(self.rescue_after, self._retry_at)
        for f in lost:
            _LOG.warning("execution_worker_lost", tenant_id=str(f.tenant_id),
                         script_id=str(f.script_id), execution_id=str(f.execution_id))
        self.rescued += len(lost)
        return lost

    def _retry_at(self, f: Finished) -> datetime:
        # a lost attempt counts as a failed one and backs off like one
        return retry_at_after(f.trigger_data, self.clock.now(), self.retry_base)


def memory_report(executor: Executor) -> Callable[[], Memory]:
    """What a process with a sandbox records with its heartbeat: its own resident memory and
    each sandbox worker's (jsrt_daemons.memory, shown by the console's overview)."""
    stats = getattr(executor, "stats", None)  # test doubles of the executor may have none

    def report() -> Memory:
        workers = [{"index": w.index, "pid": w.pid, "rss_bytes": w.rss_bytes,
                    "inflight": w.inflight} for w in (stats().workers if stats else ())]
        return {"rss_bytes": own_rss_bytes(), "workers": workers,
                "at": datetime.now(UTC).isoformat()}

    return report


def own_rss_bytes() -> int | None:
    """This process's resident memory (read afresh: once a heartbeat, no file kept open)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, ValueError, IndexError):  # not Linux
        return None
