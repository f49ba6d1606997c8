"""A process's lease in jsrt_daemons: registered on entry, heartbeated by a background task,
removed on exit. Runs owned by a live lease are never rescued as "worker lost"; runs owned
by a lease whose heartbeat stops are (by any daemon's rescuer).

The daemon keeps its own loop (it also rescues); processes that only start runs now (the
HTTP server, `jsrt exec`, the embedded Runtime) hold one of these."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from types import TracebackType

import anyio

from consumer import log
from consumer.errors import StoreUnavailable
from consumer.store import Store

_LOG = log.get("jsrt.lease")


def new_owner_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """`async with Lease(store, interval) as lease:` - lease.id owns the runs started inside.

    The heartbeat is a plain asyncio task (the sandbox executor is asyncio too), not a task
    group: a host may enter and leave the lease from different tasks (fixtures, lifespans)."""

    def __init__(self, store: Store, interval: float, kind: str = "ondemand",
                 rescue_after: float | None = None, retry_base: float = 30.0) -> None:
        """With `rescue_after` (the heartbeat timeout), each beat also rescues runs of
        processes silent that long - as the daemon does - so a server running without any
        daemon does not keep a crashed predecessor's runs counted against the limits."""
        self.store = store
        self.interval = interval
        self.id = new_owner_id(kind)
        self.rescue_after = rescue_after
        self.retry_base = retry_base
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Lease:
        await self.store.register_daemon(self.id, socket.gethostname(), os.getpid())
        self._task = asyncio.create_task(self._beat(), name=f"lease {self.id}")
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
                await self.store.unregister_daemon(self.id)
            except StoreUnavailable as err:
                _LOG.warning("lease_release_failed", owner=self.id, error=str(err)[:200])
        _LOG.debug("lease_released", owner=self.id)

    async def _beat(self) -> None:
        while True:
            await anyio.sleep(self.interval)
            try:
                # An upsert: a lease forgotten after a long stall is taken again.
                await self.store.register_daemon(self.id, socket.gethostname(), os.getpid())
                if self.rescue_after is not None:
                    await self._rescue(self.rescue_after)
            except StoreUnavailable as err:
                _LOG.warning("heartbeat_failed", owner=self.id, error=str(err)[:200])

    async def _rescue(self, timeout: float) -> None:
        retry_at = datetime.now(UTC) + timedelta(seconds=self.retry_base)
        for f in await self.store.rescue_lost_runs(timeout, retry_at):
            _LOG.warning("execution_worker_lost", tenant_id=str(f.tenant_id),
                         script_id=str(f.script_id), execution_id=str(f.execution_id))
