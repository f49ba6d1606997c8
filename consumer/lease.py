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
from types import TracebackType

import anyio

from consumer import log
from consumer.store import Store, StoreUnavailable

_LOG = log.get("jsrt.lease")


def new_owner_id(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """`async with Lease(store, interval) as lease:` - lease.id owns the runs started inside.

    The heartbeat is a plain asyncio task (the sandbox executor is asyncio too), not a task
    group: a host may enter and leave the lease from different tasks (fixtures, lifespans)."""

    def __init__(self, store: Store, interval: float, kind: str = "ondemand") -> None:
        self.store = store
        self.interval = interval
        self.id = new_owner_id(kind)
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
            except StoreUnavailable as err:
                _LOG.warning("heartbeat_failed", owner=self.id, error=str(err)[:200])
