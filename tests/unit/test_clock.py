"""The one conversion of the sandbox's monotonic readings to wall time."""

from __future__ import annotations

from datetime import UTC, datetime

from consumer.clock import WallAnchor


class Clocks:
    """A wall clock and a monotonic clock that move only when told to."""

    def __init__(self) -> None:
        self.wall, self.mono = 1_800_000_000.0, 100.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_readings_convert_with_one_offset_while_the_clocks_agree() -> None:
    c = Clocks()
    anchor = WallAnchor(lambda: c.wall, lambda: c.mono)
    ended = c.mono + 1.0
    c.tick(5.0)
    c.wall += 0.0004  # read jitter (or a slew): below a step, the offset stays
    started = ended + 0.000_01  # the next run in the slot, 10 microseconds later
    assert anchor.wall(ended) == at(1_800_000_001.0)
    assert anchor.wall(started) > anchor.wall(ended)


def test_a_stepped_wall_clock_is_followed() -> None:
    """A daemon started before NTP set the clock must not write times from before the step
    for the rest of its life (its runs would sort before rows the database stamped NOW())."""
    c = Clocks()
    anchor = WallAnchor(lambda: c.wall, lambda: c.mono)
    c.tick(60.0)
    c.wall += 2.5  # the wall clock is stepped forward
    assert anchor.wall(c.mono) == at(c.wall)
    c.wall -= 1.0  # and back
    assert anchor.wall(c.mono) == at(c.wall)
