"""Waiting for something to become true, with a deadline: the one place tests wait.

Log lines of a daemon subprocess are real signals (`DaemonProcess.wait_event` blocks on them);
rows, counters and HTTP status codes cannot notify a test, so `eventually` re-checks them
(briefly, at most every `POLL_S`) until they hold or the deadline fails the test."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import asyncpg

T = TypeVar("T")
POLL_S = 0.02


async def eventually(check: Callable[[], T | Awaitable[T]], *, timeout: float = 30,
                     what: str = "condition") -> T:
    """Return the first truthy result of `check()` (sync or async) within `timeout` seconds."""
    try:
        with anyio.fail_after(timeout):
            while True:
                result = check()
                if inspect.isawaitable(result):
                    result = await result
                if result:
                    return result  # type: ignore[return-value]
                await anyio.sleep(POLL_S)
    except TimeoutError:
        raise AssertionError(f"{what} not reached within {timeout} s") from None


async def row_becomes(conn: asyncpg.Connection, sql: str, *args: Any, expect: Any = True,
                      timeout: float = 60) -> None:
    """Until `sql` (one value) returns `expect`."""
    async def check() -> bool:
        return bool(await conn.fetchval(sql, *args) == expect)

    await eventually(check, timeout=timeout, what=f"{sql.split()[0:6]} = {expect!r}")
