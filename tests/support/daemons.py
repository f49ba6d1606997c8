"""Run the real daemon from a test: in-process (drain mode or in the background), or as a
`jsrt run` subprocess whose JSON log lines the test can wait for."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import anyio

from consumer.clock import Clock
from consumer.daemon import Daemon
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

FAST = dict(poll_interval=0.05, heartbeat_interval=0.2, heartbeat_timeout=2.0,
            retry_base_seconds=30.0)


def settings_for(db_url: str, **overrides: Any) -> Settings:
    return Settings.from_env(env={"DATABASE_URL": db_url}, **{**FAST, **overrides})


@asynccontextmanager
async def daemon_for(db_url: str, executor: Executor, clock: Clock | None = None,
                     **overrides: Any) -> AsyncIterator[Daemon]:
    store = await Store.open(db_url)
    try:
        yield Daemon(settings_for(db_url, **overrides), store, executor, clock=clock)
    finally:
        await store.close()


async def drain(db_url: str, executor: Executor, clock: Clock | None = None,
                **overrides: Any) -> Daemon:
    """Process everything due, then return (procrastinate's wait=False, arq's burst)."""
    async with daemon_for(db_url, executor, clock, **overrides) as d:
        with anyio.fail_after(60):
            await d.run(until_idle=True)
    return d


class DaemonProcess:
    """`jsrt run` in a subprocess, its JSON log lines collected as they come."""

    def __init__(self, db_url: str, env: dict[str, str] | None = None,
                 args: tuple[str, ...] = ()) -> None:
        full_env = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "json",
                    "JSRT_POLL_INTERVAL": "0.1", "JSRT_HEARTBEAT_INTERVAL": "0.2",
                    "JSRT_HEARTBEAT_TIMEOUT": "2", "JSRT_METRICS_ADDR": "127.0.0.1:0",
                    **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run", *args],
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.raw.append(line)
                with contextlib.suppress(ValueError):
                    self.lines.append(json.loads(line))
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    if pred(line):
                        return line
                seen = len(self.lines)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(
                        "log line not seen; last lines:\n" + "".join(self.raw[-30:]))
                self._cond.wait(min(left, 0.5))

    def wait_event(self, name: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        return self.wait_for(
            lambda ln: ln.get("event") == name and all(ln.get(k) == v for k, v in fields.items()),
            timeout)

    def count(self, name: str) -> int:
        with self._cond:
            return sum(1 for ln in self.lines if ln.get("event") == name)

    def stop(self, sig: int | None = None, timeout: float = 30) -> int:
        import signal as _signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or _signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@contextmanager
def daemon_process(db_url: str, **kw: Any) -> Iterator[DaemonProcess]:
    d = DaemonProcess(db_url, **kw)
    try:
        yield d
    finally:
        d.close()
