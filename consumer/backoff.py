"""One backoff for every loop that waits out a database or a busy script: the delay doubles
from `first` up to `cap`, and `reset()` starts over after a success."""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, first: float = 0.1, cap: float = 5.0, jitter: float = 0.0) -> None:
        self.first = first
        self.cap = cap
        self.jitter = jitter  # ±fraction, so that many waiters do not come back in step
        self._delay = first

    def next(self) -> float:
        """The delay to wait now (the following one is twice as long, up to the cap)."""
        delay = self._delay
        self._delay = min(self._delay * 2, self.cap)
        if self.jitter:
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
        return delay

    def peek(self) -> float:
        return self._delay

    def reset(self) -> None:
        self._delay = self.first
