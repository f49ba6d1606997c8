"""One LISTEN connection. Notifications only wake the claim loop; raw events from other
services are stored in the queue at once. The connection reconnects with backoff, and every
(re)connect wakes the loop so it catches up from the table.

Only one daemon at a time (the holder of an advisory lock) stores raw events, so that
several daemons receiving the same notification store it once."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any
from uuid import UUID

import anyio
import asyncpg

from consumer import events, log
from consumer.backoff import Backoff
from consumer.db import connect
from consumer.errors import InvalidEvent, StoreError, StoreUnavailable
from consumer.sql import q
from consumer.store import Store

EVENTS_CHANNEL = "jsrt_events"
SCRIPTS_CHANNEL = "jsrt_scripts"
CANCEL_CHANNEL = "jsrt_cancel"  # a run a process had taken was cancelled (cancel.py)
RAW_INGEST_LOCK = 7_358_201_146

_LOG = log.get("jsrt.listener")


class Listener:
    def __init__(
        self, dsn: str, store: Store, wake: Callable[[UUID | None], None],
        extra_channels: tuple[str, ...] = (), on_script_change: Callable[[Any], None] | None = None,
        on_cancel: Callable[[str], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._store = store
        self._wake = wake  # with the tenant a wake-up names, when it names one
        self._channels = (EVENTS_CHANNEL, *extra_channels)
        self._on_script_change = on_script_change
        self._on_cancel = on_cancel  # jsrt_cancel hints (their payload names a process)
        self._conn: asyncpg.Connection | None = None
        self._lost = anyio.Event()
        self._leader = False
        self.connected = anyio.Event()
        self.rejected = 0
        self.received = 0
        self.reconnects = 0
        self._pending: set[Any] = set()

    @property
    def leader(self) -> bool:
        return self._leader

    async def run(self) -> None:
        backoff = Backoff()
        while True:
            try:
                await self._connect()
                backoff.reset()
                await self._lost.wait()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError,
                    StoreUnavailable) as exc:
                _LOG.warning("listener_disconnected", error=str(exc)[:200],
                             retry_in_s=backoff.peek())
            finally:
                await self._close()
            await anyio.sleep(backoff.next())

    async def _connect(self) -> None:
        self._lost = anyio.Event()
        conn = await connect(self._dsn, "jsrt-listener")
        try:
            conn.add_termination_listener(lambda _c: self._lost.set())
            for ch in self._channels:
                await conn.add_listener(ch, self._notified)
            await conn.add_listener(SCRIPTS_CHANNEL, self._script_changed)
            if self._on_cancel is not None:
                await conn.add_listener(CANCEL_CHANNEL, self._cancelled)
            leader = bool(await conn.fetchval(q("raw_ingest_try_lock"), RAW_INGEST_LOCK))
        except BaseException:
            # Not yet ours to close in run(): a LISTEN or the lock query that failed, or a
            # cancellation (shutdown) in the middle, would otherwise leave it open until the
            # garbage collector finds it.
            conn.terminate()
            raise
        self._conn, self._leader = conn, leader
        if self.connected.is_set():
            self.reconnects += 1
            _LOG.info("listener_reconnected", leader=self._leader, reconnects=self.reconnects)
        else:
            _LOG.info("listener_connected", leader=self._leader, channels=list(self._channels))
        self.connected.set()
        self._wake(None)  # catch up on whatever arrived while we were not listening

    async def try_lead(self) -> None:
        """Called on poll ticks: take over raw ingestion if its holder went away."""
        conn = self._conn
        if conn is None or self._leader or conn.is_closed():
            return
        try:
            self._leader = bool(
            await conn.fetchval(q("raw_ingest_try_lock"), RAW_INGEST_LOCK))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return
        if self._leader:
            _LOG.info("raw_ingest_leader")

    async def _close(self) -> None:
        conn, self._conn, self._leader = self._conn, None, False
        if conn is not None and not conn.is_closed():
            conn.terminate()

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        _LOG.debug("notification_received", channel=channel)
        if not self._leader and channel == EVENTS_CHANNEL:  # (the leader stores raw events)
            self._wake(events.wakeup_tenant(payload))
            return
        try:
            message = events.decode(payload)
        except InvalidEvent as exc:
            self._wake(None)
            self._reject(channel, payload, str(exc))
            return
        self._wake(events.wakeup_tenant_of(message))  # (a raw event's tenant: once stored)
        if events.is_wakeup(message):
            return
        try:
            raw = events.parse_raw(message)
        except InvalidEvent as exc:
            self._reject(channel, payload, str(exc))
            return
        self.received += 1
        # asyncpg calls us synchronously; store the event from a task of the loop.
        import asyncio

        task = asyncio.get_running_loop().create_task(self._store_raw(channel, payload, raw))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _store_raw(self, channel: str, payload: str, raw: Any) -> None:
        try:
            event_id = await self._store.queue.enqueue(
                raw.tenant_id, raw.event_type, raw.payload, raw.dedup_key, 0, "notify"
            )
        except StoreUnavailable as exc:
            # NOTIFY is not durable: say so loudly, the publisher should use jsrt_publish.
            _LOG.error("event_lost", channel=channel, reason=str(exc)[:200],
                       payload=events.truncate(payload))
            return
        except StoreError as exc:
            reason = str(exc)
            if "unknown tenant" in reason:
                reason = f"unknown tenant {raw.tenant_id}"
            self._reject(channel, payload, reason)
            return
        _LOG.info("event_received", channel=channel, event_id=str(event_id),
                  tenant_id=str(raw.tenant_id), event_type=raw.event_type)
        self._wake(raw.tenant_id)

    def _reject(self, channel: str, payload: str, reason: str) -> None:
        self.rejected += 1
        _LOG.warning("event_rejected", channel=channel, reason=reason,
                     payload=events.truncate(payload))

    def _script_changed(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self._wake(None)
        if self._on_script_change is not None:
            with contextlib.suppress(ValueError):
                self._on_script_change(json.loads(payload))

    def _cancelled(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if self._on_cancel is not None:
            self._on_cancel(payload)
