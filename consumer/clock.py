"""An injectable clock, so retry and cron logic are tested without sleeping; and the one
conversion of the sandbox's monotonic readings to wall time."""

from __future__ import annotations

import time
from collections.abc import Callable
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
# clock for a process and its workers; this is the one conversion to wall time. It keeps one
# offset between the two clocks while they agree, so readings converted at different moments
# keep their order and their distance (two reads of two clocks differ by the time between the
# reads, and a run that follows another in a slot could seem to start before it ended). When
# the wall clock is stepped (NTP or a VM's clock set after boot, a resumed snapshot) the offset
# follows it: a daemon keeping its start-up offset for weeks would write times seconds apart
# from the database's NOW(), on the wrong side of the versions and attempts it is compared to.
_STEP = 0.001  # seconds between the clocks' offsets that count as a step, not read jitter


class WallAnchor:
    """Converts time.monotonic() readings to wall time, following steps of the wall clock."""

    def __init__(self, wall_now: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self._wall_now, self._monotonic = wall_now, monotonic
        self._offset = wall_now() - monotonic()

    def wall(self, monotonic: float) -> datetime:
        offset = self._wall_now() - self._monotonic()
        if abs(offset - self._offset) > _STEP:
            self._offset = offset
        return datetime.fromtimestamp(monotonic + self._offset, UTC)


_ANCHOR = WallAnchor()


def wall(monotonic: float) -> datetime:
    """A time.monotonic() reading as wall time (the wall clock's, as it reads now)."""
    return _ANCHOR.wall(monotonic)
