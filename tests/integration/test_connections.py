"""Connections are closed on every path, also when their setup is interrupted: a connection
dropped half set up stays open until the garbage collector finds it, and the ResourceWarning
it then raises fails whichever test happens to be running (warnings are errors here)."""

from __future__ import annotations

import gc
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator

import anyio
import asyncpg
import pytest
from support.waiting import eventually

from consumer.db import connect
from consumer.listener import Listener
from consumer.store import Store

STEPS = 60


@pytest.fixture
def no_collector() -> Iterator[None]:
    """A leaked connection then stays leaked (and open on the server) until we look."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def interrupted_everywhere(start: Callable[[], Awaitable[object]],
                                 set_up: Callable[[], Awaitable[object]]) -> None:
    """Time `set_up()` (start() up to the point where it is set up), then run `start()` again
    and again, cancelled a little later each time, so that some cancellations land inside
    every step of its setup."""
    began = time.perf_counter()
    with anyio.fail_after(10):
        await set_up()
    took = time.perf_counter() - began
    for step in range(STEPS):
        with anyio.move_on_after(took * 1.5 * step / STEPS):
            await start()


async def backends(admin: asyncpg.Connection, application_name: str) -> int:
    return int(await admin.fetchval(
        """SELECT count(*) FROM pg_stat_activity
           WHERE datname = current_database() AND application_name = $1""", application_name))


def unclosed_after_collection() -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    return [str(w.message) for w in caught if "unclosed connection" in str(w.message)]


async def test_a_listener_stopped_while_it_connects_leaves_no_connection_open(
        db_url: str, conn: asyncpg.Connection, no_collector: None) -> None:
    store = await Store.open(db_url, min_size=1, max_size=2)
    try:
        async def listen() -> None:
            await Listener(db_url, store, lambda _tenant: None).run()

        async def until_connected() -> None:
            listener = Listener(db_url, store, lambda _tenant: None)
            async with anyio.create_task_group() as tg:
                tg.start_soon(listener.run)
                await listener.connected.wait()
                tg.cancel_scope.cancel()

        await interrupted_everywhere(listen, until_connected)
        await eventually(lambda: _none_left(conn, "jsrt-listener"), timeout=10,
                         what="no listener connection left on the server")
    finally:
        await store.close()
    assert unclosed_after_collection() == []


async def test_a_connection_whose_set_up_is_interrupted_is_closed(
        db_url: str, conn: asyncpg.Connection, no_collector: None) -> None:
    async def open_and_close() -> None:
        conn = await connect(db_url, "jsrt-interrupted")
        await conn.close()

    await interrupted_everywhere(open_and_close, open_and_close)
    await eventually(lambda: _none_left(conn, "jsrt-interrupted"), timeout=10,
                     what="no connection left on the server")
    assert unclosed_after_collection() == []


async def _none_left(conn: asyncpg.Connection, application_name: str) -> bool:
    return await backends(conn, application_name) == 0
