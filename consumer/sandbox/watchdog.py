"""The worker's memory watchdog: a thread that samples RSS while a JavaScript step runs.

V8's hard limit only sees its own heap, so ArrayBuffer and WebAssembly memory is caught here:
when the worker's RSS grows past the running execution's budget, the step is cancelled (which
terminates the JavaScript). Steps never overlap in a worker, so the growth is the step's own.
The baseline is sampled when a step is armed (one read of /proc/self/statm). The thread is
woken only once a step has run INTERVAL_S (a timer on the worker's loop, which is free while
V8 runs the step on its own thread), and sleeps again when the step ends: most steps take well
under INTERVAL_S, and waking a thread for each of them (two wake-ups and two hand-overs of
the GIL per step) cost a worker more than the step's own Python. Its first sample is at
INTERVAL_S either way; a short step's growth is measured when it ends (growth()).
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
        self._stepping = threading.Event()  # set while a step armed INTERVAL_S ago runs
        self._wake: asyncio.TimerHandle | None = None
        self._fired = False  # this step's growth was blamed already
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jsrt-memwatch", daemon=True)
        self._thread.start()

    def arm(self, budget: int, on_exceeded: Callable[[], None]) -> None:
        # A fresh baseline at every step: memory an earlier step (a bomb's, say) has not
        # returned yet is not this step's, and an older, lower baseline would blame it on it.
        self.baseline = self._statm.rss_bytes()
        self._fired = False
        self._armed = (budget, on_exceeded)
        if self._wake is not None:
            self._wake.cancel()
        self._wake = self._loop.call_later(INTERVAL_S, self._stepping.set)

    def disarm(self) -> None:
        self._armed = None
        if self._wake is not None:
            self._wake.cancel()
            self._wake = None
        self._stepping.clear()
        if self._fired:
            # The step's memory is blamed already: what the terminated script still holds
            # (until its context is freed) must not also count as a batch's other runs' growth.
            self.baseline = self._statm.rss_bytes()

    def growth(self) -> int:
        """RSS now minus the baseline sampled when the step was armed."""
        return self._statm.rss_bytes() - self.baseline

    def _run(self) -> None:
        while not self._stop.is_set():
            self._stepping.wait()
            # the step has run INTERVAL_S: a sample now, then one every INTERVAL_S
            while self._stepping.is_set() and not self._stop.is_set():
                armed = self._armed
                rss = self._statm.rss_bytes()
                if armed is None:
                    # fired: the rest of the step's growth counts from here (its memory is
                    # already blamed, and a batch's other runs must not inherit it)
                    self.baseline = rss
                elif rss - self.baseline > armed[0]:
                    self._armed = None
                    self._fired = True
                    self._loop.call_soon_threadsafe(armed[1])
                self._stop.wait(INTERVAL_S)

    def close(self) -> None:
        self._stop.set()
        self._stepping.set()
        self._thread.join()
        self._statm.close()
