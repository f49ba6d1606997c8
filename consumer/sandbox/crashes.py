"""Script versions that crashed the engine, and what that costs them.

A crash is pinned on an execution only when it crashed running alone (executor.py): then the
version's later runs also run alone, on a worker nothing else shares, for ALONE_FOR_S - a
second crash kills no other tenant's run. After REFUSE_AFTER pinned crashes within
WINDOW_S, its runs are refused for REFUSE_FOR_S without reaching a worker: each crash costs a
worker's respawn (a new process and V8, about 0.4 s of a core), and a flood of events for a
crashing script must not spend the host on respawns while other tenants wait. Refused runs
fail with one line and take the dead-letter path as any failure; a new version of the script
starts clean. Per process: it protects this process's workers (each daemon, server or
embedded runtime has its own). Pure policy over an injected clock; the memory is bounded
(the least recently crashed versions are forgotten first).
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

Key = tuple[str, str, str]  # (tenant_id, script_id, version_id)

ALONE_FOR_S = 120.0
WINDOW_S = 60.0
REFUSE_AFTER = 3
REFUSE_FOR_S = 60.0
REMEMBERED = 1024


@dataclass
class _Record:
    last: float  # when it last crashed
    crashes: deque[float] = field(default_factory=lambda: deque(maxlen=REFUSE_AFTER))
    refused_until: float = 0.0


class Crashes:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._records: OrderedDict[Key, _Record] = OrderedDict()

    def pinned(self, key: Key) -> bool:
        """A run of `key` crashed the engine, running alone. True when its runs are refused
        from now on (this crash was the REFUSE_AFTER-th within WINDOW_S)."""
        now = self._clock()
        record = self._records.pop(key, None) or _Record(now)
        self._records[key] = record  # most recent last
        while len(self._records) > REMEMBERED:
            self._records.popitem(last=False)
        record.last = now
        record.crashes.append(now)
        if len(record.crashes) == REFUSE_AFTER and now - record.crashes[0] <= WINDOW_S:
            record.refused_until = now + REFUSE_FOR_S
            record.crashes.clear()  # after the pause, a fresh count
            return True
        return False

    def alone(self, key: Key) -> bool:
        """Its runs go alone to a worker: it crashed the engine within ALONE_FOR_S."""
        record = self._records.get(key)
        return record is not None and self._clock() - record.last <= ALONE_FOR_S

    def refused_for(self, key: Key) -> float:
        """Seconds its runs are still refused (0: they run)."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.refused_until - self._clock())
