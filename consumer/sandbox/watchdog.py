"""The worker's memory watchdog: a thread that samples RSS while a JavaScript step runs.

V8's hard limit only sees its own heap, so ArrayBuffer and WebAssembly memory is caught here:
when the worker's RSS grows past the running execution's budget, the step is cancelled (which
terminates the JavaScript). Steps never overlap in a worker, so the growth is the step's own.
The baseline is sampled when a step is armed (one read of /proc/self/statm).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from consumer.sandbox.memory import Statm

INTERVAL_S = 0.002


class MemoryWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._statm = Statm()
        self.baseline = self._statm.rss_bytes()
        self._armed: tuple[int, Callable[[], None]] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jsrt-memwatch", daemon=True)
        self._thread.start()

    def arm(self, budget: int, on_exceeded: Callable[[], None]) -> None:
        # A fresh baseline: the thread's last idle sample may predate the previous step, whose
        # memory (a bomb's, say) is not all returned yet; measured against that older, lower
        # baseline, the next, innocent step would be blamed for it.
        self.baseline = self._statm.rss_bytes()
        self._armed = (budget, on_exceeded)

    def disarm(self) -> None:
        self._armed = None

    def growth(self) -> int:
        """RSS now minus the idle baseline."""
        return self._statm.rss_bytes() - self.baseline

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            armed = self._armed
            rss = self._statm.rss_bytes()
            if armed is None:
                self.baseline = rss
            elif rss - self.baseline > armed[0]:
                self._armed = None
                self._loop.call_soon_threadsafe(armed[1])

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._statm.close()
