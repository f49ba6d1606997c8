"""max_api_calls_per_minute: a sliding window per script, kept in the daemon."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable

WINDOW_S = 60.0


class SlidingWindowLimiter:
    def __init__(
        self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = window_s
        self._clock = clock
        self._calls: dict[Hashable, deque[float]] = {}

    def try_acquire(self, key: Hashable, limit: int) -> bool:
        """Record one call unless `limit` calls already happened within the window."""
        now = self._clock()
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] <= now - self._window:
            calls.popleft()
        if len(calls) >= limit:
            return False
        calls.append(now)
        if len(self._calls) > 10_000:
            self._forget_idle(now)
        return True

    def _forget_idle(self, now: float) -> None:
        for key in [
            k for k, calls in self._calls.items() if not calls or calls[-1] <= now - self._window
        ]:
            del self._calls[key]
