"""Run the real daemon from a test: in-process (drain mode or in the background), or as a
`jsrt run` subprocess whose JSON log lines the test can wait for."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import anyio

from consumer.clock import Clock
from consumer.daemon import Daemon
from consumer.sandbox import Executor
from consumer.settings import Settings
from consumer.store import Store

T = TypeVar("T")

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


class OutputProcess:
    """A subprocess (stderr merged into stdout) whose lines are collected as they come, so a
    test can block until a line it expects appears."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Any = None) -> None:
        self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.raw: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.raw.append(line)
                self._on_line(line)
                self._cond.notify_all()

    def _on_line(self, line: str) -> None:
        """Called for each line, under the lock."""

    def wait_line(self, find: Callable[[int], T | None], timeout: float, what: str) -> T:
        """Until `find(start)` finds something among the lines from index `start` on."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                found = find(seen)
                if found is not None:
                    return found
                seen = len(self.raw)
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"{what} not seen; last lines:\n"
                                         + "".join(self.raw[-30:]))
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class DaemonProcess(OutputProcess):
    """`jsrt run` (or another long-running `command`, such as `serve`) in a subprocess; its
    JSON log lines parsed as they come. An `env` value of None unsets that variable."""

    def __init__(self, db_url: str, env: dict[str, str | None] | None = None,
                 args: tuple[str, ...] = (), command: str = "run") -> None:
        merged = {**os.environ, "DATABASE_URL": db_url, "JSRT_LOG_FORMAT": "json",
                  "JSRT_POLL_INTERVAL": "0.1", "JSRT_HEARTBEAT_INTERVAL": "0.2",
                  "JSRT_HEARTBEAT_TIMEOUT": "2", "JSRT_METRICS_ADDR": "127.0.0.1:0",
                  **(env or {})}
        full_env = {k: v for k, v in merged.items() if v is not None}
        self.lines: list[dict[str, Any]] = []  # the JSON log lines
        self._parsed: list[dict[str, Any] | None] = []  # one per raw line, None if not JSON
        super().__init__([sys.executable, "-m", "consumer.cli", command, *args], full_env)

    def _on_line(self, line: str) -> None:
        parsed = None
        with contextlib.suppress(ValueError):
            parsed = json.loads(line)
            self.lines.append(parsed)
        self._parsed.append(parsed)

    def wait_for(self, pred: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
        def find(start: int) -> dict[str, Any] | None:
            return next((ln for ln in self._parsed[start:] if ln is not None and pred(ln)), None)

        return self.wait_line(find, timeout, "log line")

    def wait_event(self, name: str, timeout: float = 30, **fields: Any) -> dict[str, Any]:
        return self.wait_for(
            lambda ln: ln.get("event") == name and all(ln.get(k) == v for k, v in fields.items()),
            timeout)

    def count(self, name: str) -> int:
        with self._cond:
            return sum(1 for ln in self.lines if ln.get("event") == name)

    def stop(self, sig: int | None = None, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()


@contextmanager
def daemon_process(db_url: str, **kw: Any) -> Iterator[DaemonProcess]:
    d = DaemonProcess(db_url, **kw)
    try:
        yield d
    finally:
        d.close()
