"""An injectable clock, so retry and cron logic are tested without sleeping; and the one
conversion of the sandbox's monotonic readings to wall time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        self._now = when


# When a run really started and ended is a measurement, on the real clock (an injected clock
# decides what is due, never what happened). The sandbox measures on time.monotonic(), one
# clock for a process and its workers; this is the one conversion to wall time, with one
# offset for the process's life: readings converted at different moments keep their order
# and their distance (two reads of two clocks differ by the time between the reads, and a run
# that follows another in a slot could seem to start before it ended).
_EPOCH = datetime.now(UTC) - timedelta(seconds=time.monotonic())


def wall(monotonic: float) -> datetime:
    """A time.monotonic() reading as wall time."""
    return _EPOCH + timedelta(seconds=monotonic)
