"""consumer.cron: next tick, missed ticks and the scheduler's plan, with the clock injected.

Three kinds of evidence, none of them croniter's own DST handling:
* hand-computed tables of consecutive ticks (UTC) around both 2026 DST transitions of
  America/New_York, Europe/Berlin, Australia/Sydney and Asia/Kolkata (plus harder zones);
* a brute-force reference that walks every UTC minute of a window and applies the documented
  rules with its own field matcher, compared with next_tick / prev_tick / missed_ticks;
* tables of invalid expressions and time zones, each with the readable reason expected.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.cron import (
    ALIASES,
    CronError,
    Plan,
    missed_ticks,
    next_tick,
    plan,
    prev_tick,
    validate,
)
from consumer.errors import JsrtError

NY, BERLIN, SYDNEY, KOLKATA = (
    "America/New_York",
    "Europe/Berlin",
    "Australia/Sydney",
    "Asia/Kolkata",
)
MINUTE = timedelta(minutes=1)


def z(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    """An aware UTC instant."""
    return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC)


# --- hand-computed tables ---------------------------------------------------------------------
# (name, expression, timezone, after, [the next ticks in UTC, in order]). Each tick is checked
# as next_tick(previous) where previous is `after` for the first one. The comments give the local
# wall time of each tick.
#
# 2026 transitions: New York Mar 8 07:00Z (02:00 EST -> 03:00 EDT) and Nov 1 06:00Z (02:00 EDT ->
# 01:00 EST); Berlin Mar 29 01:00Z (02:00 CET -> 03:00 CEST) and Oct 25 01:00Z (03:00 CEST ->
# 02:00 CET); Sydney Apr 4 16:00Z (03:00 AEDT -> 02:00 AEST, DST ends) and Oct 3 16:00Z
# (02:00 AEST -> 03:00 AEDT, DST starts); Kolkata is +05:30 all year.
SEQUENCES: list[tuple[str, str, str, datetime, list[datetime]]] = [
    # every minute
    ("minute-utc", "* * * * *", "UTC", z(2026, 1, 1), [z(2026, 1, 1, 0, 1), z(2026, 1, 1, 0, 2)]),
    ("minute-mid-second", "* * * * *", "UTC", z(2026, 1, 1, 0, 0, 30, 500), [z(2026, 1, 1, 0, 1)]),
    ("minute-last-us", "* * * * *", "UTC", z(2026, 1, 1, 0, 0, 59, 999999), [z(2026, 1, 1, 0, 1)]),
    ("minute-year-end", "* * * * *", "UTC", z(2026, 12, 31, 23, 59), [z(2027, 1, 1)]),
    (
        "minute-kolkata",
        "* * * * *",
        KOLKATA,
        z(2026, 3, 8, 6, 58),
        [z(2026, 3, 8, 6, 59), z(2026, 3, 8, 7), z(2026, 3, 8, 7, 1)],
    ),
    (
        "minute-ny-spring",  # 01:58 EST, 01:59 EST, 03:00 EDT, 03:01 EDT
        "* * * * *",
        NY,
        z(2026, 3, 8, 6, 58),
        [z(2026, 3, 8, 6, 59), z(2026, 3, 8, 7), z(2026, 3, 8, 7, 1)],
    ),
    (
        "minute-ny-fall",  # 01:59 EDT, then 01:00 EST: the repeated minutes fire again
        "* * * * *",
        NY,
        z(2026, 11, 1, 5, 58),
        [z(2026, 11, 1, 5, 59), z(2026, 11, 1, 6), z(2026, 11, 1, 6, 1)],
    ),
    (
        "5min-berlin-spring",  # 01:55 CET, 03:00 CEST, 03:05 CEST
        "*/5 * * * *",
        BERLIN,
        z(2026, 3, 29, 0, 50),
        [z(2026, 3, 29, 0, 55), z(2026, 3, 29, 1), z(2026, 3, 29, 1, 5)],
    ),
    (
        "15min-sydney-fall",  # 02:45 AEDT, 02:00 AEST, 02:15 AEST
        "*/15 * * * *",
        SYDNEY,
        z(2026, 4, 4, 15, 40),
        [z(2026, 4, 4, 15, 45), z(2026, 4, 4, 16), z(2026, 4, 4, 16, 15)],
    ),
    # hourly: each distinct UTC hour fires exactly once through both transitions
    (
        "hourly-utc",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1),
        [z(2026, 1, 1, 1), z(2026, 1, 1, 2), z(2026, 1, 1, 3)],
    ),
    (
        "hourly-kolkata",  # 06:00, 07:00, 08:00 IST
        "0 * * * *",
        KOLKATA,
        z(2026, 1, 1),
        [z(2026, 1, 1, 0, 30), z(2026, 1, 1, 1, 30), z(2026, 1, 1, 2, 30)],
    ),
    (
        "hourly-kolkata-on-ny-spring-day",
        "0 * * * *",
        KOLKATA,
        z(2026, 3, 8, 4),
        [z(2026, 3, 8, 4, 30), z(2026, 3, 8, 5, 30), z(2026, 3, 8, 6, 30), z(2026, 3, 8, 7, 30)],
    ),
    (
        "hourly-kolkata-on-ny-fall-day",
        "0 * * * *",
        KOLKATA,
        z(2026, 11, 1, 4),
        [z(2026, 11, 1, 4, 30), z(2026, 11, 1, 5, 30), z(2026, 11, 1, 6, 30)],
    ),
    (
        "hourly-ny-spring",  # 00:00 EST, 01:00 EST, (02:00 does not exist), 03:00 EDT, 04:00 EDT
        "0 * * * *",
        NY,
        z(2026, 3, 8, 4, 30),
        [z(2026, 3, 8, 5), z(2026, 3, 8, 6), z(2026, 3, 8, 7), z(2026, 3, 8, 8)],
    ),
    (
        "hourly-ny-fall",  # 00:00 EDT, 01:00 EDT, 01:00 EST, 02:00 EST, 03:00 EST
        "0 * * * *",
        NY,
        z(2026, 11, 1, 3, 30),
        [z(2026, 11, 1, 4), z(2026, 11, 1, 5), z(2026, 11, 1, 6), z(2026, 11, 1, 7)],
    ),
    (
        "hourly-berlin-spring",  # 00:00 CET, 01:00 CET, (02:00 does not exist), 03:00 CEST
        "0 * * * *",
        BERLIN,
        z(2026, 3, 28, 22, 30),
        [z(2026, 3, 28, 23), z(2026, 3, 29, 0), z(2026, 3, 29, 1), z(2026, 3, 29, 2)],
    ),
    (
        "hourly-berlin-fall",  # 01:00 CEST, 02:00 CEST, 02:00 CET, 03:00 CET
        "0 * * * *",
        BERLIN,
        z(2026, 10, 24, 22, 30),
        [z(2026, 10, 24, 23), z(2026, 10, 25, 0), z(2026, 10, 25, 1), z(2026, 10, 25, 2)],
    ),
    (
        "hourly-alias-berlin-fall",
        "@hourly",
        BERLIN,
        z(2026, 10, 24, 23, 30),
        [z(2026, 10, 25, 0), z(2026, 10, 25, 1), z(2026, 10, 25, 2)],
    ),
    (
        "hourly-sydney-fall-april",  # 01:00 AEDT, 02:00 AEDT, 02:00 AEST, 03:00 AEST
        "0 * * * *",
        SYDNEY,
        z(2026, 4, 4, 13, 30),
        [z(2026, 4, 4, 14), z(2026, 4, 4, 15), z(2026, 4, 4, 16), z(2026, 4, 4, 17)],
    ),
    (
        "hourly-sydney-spring-october",  # 01:00 AEST, (02:00 does not exist), 03:00 AEDT
        "0 * * * *",
        SYDNEY,
        z(2026, 10, 3, 14, 30),
        [z(2026, 10, 3, 15), z(2026, 10, 3, 16), z(2026, 10, 3, 17)],
    ),
    (
        "half-past-ny-spring",  # 00:30 EST, 01:30 EST, (02:30 skipped), 03:30 EDT
        "30 * * * *",
        NY,
        z(2026, 3, 8, 5),
        [z(2026, 3, 8, 5, 30), z(2026, 3, 8, 6, 30), z(2026, 3, 8, 7, 30), z(2026, 3, 8, 8, 30)],
    ),
    (
        "half-past-ny-fall",  # 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST
        "30 * * * *",
        NY,
        z(2026, 11, 1, 4),
        [
            z(2026, 11, 1, 4, 30),
            z(2026, 11, 1, 5, 30),
            z(2026, 11, 1, 6, 30),
            z(2026, 11, 1, 7, 30),
        ],
    ),
    (
        "two-hourly-berlin-fall",  # 00:00 CEST, 02:00 CEST, 02:00 CET, 04:00 CET
        "0 */2 * * *",
        BERLIN,
        z(2026, 10, 24, 21, 30),
        [z(2026, 10, 24, 22), z(2026, 10, 25, 0), z(2026, 10, 25, 1), z(2026, 10, 25, 3)],
    ),
    # daily 02:30: a nonexistent 02:30 fires once at the end of the gap; a repeated one once, first
    (
        "daily-0230-ny-spring",  # Mar 7 02:30 EST, Mar 8 03:00 EDT (gap end), Mar 9 02:30 EDT
        "30 2 * * *",
        NY,
        z(2026, 3, 6, 8),
        [z(2026, 3, 7, 7, 30), z(2026, 3, 8, 7), z(2026, 3, 9, 6, 30), z(2026, 3, 10, 6, 30)],
    ),
    (
        "daily-0230-ny-fall",  # 02:30 is not repeated in New York (01:xx is)
        "30 2 * * *",
        NY,
        z(2026, 10, 30, 8),
        [z(2026, 10, 31, 6, 30), z(2026, 11, 1, 7, 30), z(2026, 11, 2, 7, 30)],
    ),
    (
        "daily-0130-ny-fall",  # Nov 1 01:30 happens twice: fires at the first (EDT) only
        "30 1 * * *",
        NY,
        z(2026, 10, 30, 8),
        [z(2026, 10, 31, 5, 30), z(2026, 11, 1, 5, 30), z(2026, 11, 2, 6, 30)],
    ),
    (
        "daily-0230-berlin-spring",  # Mar 28 02:30 CET, Mar 29 03:00 CEST, Mar 30 02:30 CEST
        "30 2 * * *",
        BERLIN,
        z(2026, 3, 27, 3),
        [z(2026, 3, 28, 1, 30), z(2026, 3, 29, 1), z(2026, 3, 30, 0, 30)],
    ),
    (
        "daily-0230-berlin-fall",  # Oct 25 02:30 twice: first (CEST) only
        "30 2 * * *",
        BERLIN,
        z(2026, 10, 23, 3),
        [z(2026, 10, 24, 0, 30), z(2026, 10, 25, 0, 30), z(2026, 10, 26, 1, 30)],
    ),
    (
        "daily-0230-sydney-fall-april",  # Apr 5 02:30 twice: first (AEDT, +11) only
        "30 2 * * *",
        SYDNEY,
        z(2026, 4, 2, 16),
        [z(2026, 4, 3, 15, 30), z(2026, 4, 4, 15, 30), z(2026, 4, 5, 16, 30)],
    ),
    (
        "daily-0230-sydney-spring-october",  # Oct 4 02:30 missing: 03:00 AEDT
        "30 2 * * *",
        SYDNEY,
        z(2026, 10, 2, 12),
        [z(2026, 10, 2, 16, 30), z(2026, 10, 3, 16), z(2026, 10, 4, 15, 30)],
    ),
    (
        "daily-0230-kolkata-march",  # 02:30 IST = 21:00Z the day before
        "30 2 * * *",
        KOLKATA,
        z(2026, 3, 6, 22),
        [z(2026, 3, 7, 21), z(2026, 3, 8, 21), z(2026, 3, 9, 21)],
    ),
    (
        "daily-0230-kolkata-november",
        "30 2 * * *",
        KOLKATA,
        z(2026, 10, 30, 22),
        [z(2026, 10, 31, 21), z(2026, 11, 1, 21)],
    ),
    (
        "daily-0200-ny-spring",  # 02:00 is the gap's first minute: 03:00 EDT
        "0 2 * * *",
        NY,
        z(2026, 3, 6, 8),
        [z(2026, 3, 7, 7), z(2026, 3, 8, 7), z(2026, 3, 9, 6)],
    ),
    (
        "every-20-in-hour-2-ny-spring",  # 02:00/02:20/02:40 all missing: one firing at 03:00 EDT
        "*/20 2 * * *",
        NY,
        z(2026, 3, 7, 6, 50),
        [
            z(2026, 3, 7, 7),
            z(2026, 3, 7, 7, 20),
            z(2026, 3, 7, 7, 40),
            z(2026, 3, 8, 7),
            z(2026, 3, 9, 6),
        ],
    ),
    (
        "gap-tick-merges-with-0300-ny",  # 02:00 -> 03:00 EDT, the same instant as the 03:00 tick
        "0 2,3 * * *",
        NY,
        z(2026, 3, 7, 12),
        [z(2026, 3, 8, 7), z(2026, 3, 9, 6), z(2026, 3, 9, 7)],
    ),
    (
        "hours-1-to-3-ny-fall",  # 01:00 EDT (not 01:00 EST), 02:00 EST, 03:00 EST
        "0 1-3 * * *",
        NY,
        z(2026, 11, 1, 4),
        [z(2026, 11, 1, 5), z(2026, 11, 1, 7), z(2026, 11, 1, 8), z(2026, 11, 2, 6)],
    ),
    (
        "weekly-sunday-0300-berlin",  # 03:00 exists on Mar 29 (it is the gap's end)
        "0 3 * * 0",
        BERLIN,
        z(2026, 3, 20),
        [z(2026, 3, 22, 2), z(2026, 3, 29, 1), z(2026, 4, 5, 1)],
    ),
    (
        "weekly-sunday-0230-sydney-april",  # Apr 5 02:30 repeated: first; Apr 12 AEST
        "30 2 * * sun",
        SYDNEY,
        z(2026, 3, 28),
        [z(2026, 3, 28, 15, 30), z(2026, 4, 4, 15, 30), z(2026, 4, 11, 16, 30)],
    ),
    (
        "monthly-kolkata",  # 00:00 IST on the 1st = 18:30Z the day before
        "@monthly",
        KOLKATA,
        z(2026, 1, 15),
        [z(2026, 1, 31, 18, 30), z(2026, 2, 28, 18, 30), z(2026, 3, 31, 18, 30)],
    ),
    (
        "leap-day",
        "0 12 29 2 *",
        "UTC",
        z(2026, 1, 1),
        [z(2028, 2, 29, 12), z(2032, 2, 29, 12)],
    ),
    # harder zones
    (
        "midnight-havana-spring",  # Cuba springs forward at 00:00: midnight fires at 01:00 CDT
        "@daily",
        "America/Havana",
        z(2026, 3, 6, 6),
        [z(2026, 3, 7, 5), z(2026, 3, 8, 5), z(2026, 3, 9, 4)],
    ),
    (
        "midnight-havana-fall",  # Nov 1 00:00 happens twice (CDT, then CST): first only
        "0 0 * * *",
        "America/Havana",
        z(2026, 10, 30, 6),
        [z(2026, 10, 31, 4), z(2026, 11, 1, 4), z(2026, 11, 2, 5)],
    ),
    (
        "half-hour-dst-lord-howe",  # Oct 4: 02:00-02:29 missing (+10:30 -> +11): 02:30 +11
        "15 2 * * *",
        "Australia/Lord_Howe",
        z(2026, 10, 2),
        [z(2026, 10, 2, 15, 45), z(2026, 10, 3, 15, 30), z(2026, 10, 4, 15, 15)],
    ),
    (
        "two-hour-dst-troll-spring",  # Mar 29: 01:00-02:59 missing (+00 -> +02): 03:00 +02
        "30 2 * * *",
        "Antarctica/Troll",
        z(2026, 3, 27, 12),
        [z(2026, 3, 28, 2, 30), z(2026, 3, 29, 1), z(2026, 3, 30, 0, 30)],
    ),
    (
        "two-hour-dst-troll-fall-hourly",  # 01:00 +02, 02:00 +02, 01:00 +00, 02:00 +00, 03:00
        "0 * * * *",
        "Antarctica/Troll",
        z(2026, 10, 24, 22, 30),
        [
            z(2026, 10, 24, 23),
            z(2026, 10, 25, 0),
            z(2026, 10, 25, 1),
            z(2026, 10, 25, 2),
            z(2026, 10, 25, 3),
        ],
    ),
    (
        "apia-skipped-day-2011",  # Dec 30 2011 never happened in Samoa: its noon fires at 00:00 +14
        "0 12 * * *",
        "Pacific/Apia",
        z(2011, 12, 28),
        [z(2011, 12, 28, 22), z(2011, 12, 29, 22), z(2011, 12, 30, 10), z(2011, 12, 30, 22)],
    ),
]

NEXT_TICK_CASES = [
    pytest.param(expression, tz, after, expected, id=f"{name}-{index}")
    for name, expression, tz, start, ticks in SEQUENCES
    for index, (after, expected) in enumerate(pairwise([start, *ticks]))
]


@pytest.mark.parametrize(("expression", "tz", "after", "expected"), NEXT_TICK_CASES)
def test_next_tick_table(expression: str, tz: str, after: datetime, expected: datetime) -> None:
    tick = next_tick(expression, tz, after)
    assert tick == expected, (
        f"{tick.astimezone(ZoneInfo(tz))} != {expected.astimezone(ZoneInfo(tz))}"
    )
    assert tick.tzinfo is UTC


@pytest.mark.parametrize(("expression", "tz", "after", "expected"), NEXT_TICK_CASES)
def test_prev_tick_table(expression: str, tz: str, after: datetime, expected: datetime) -> None:
    assert prev_tick(expression, tz, expected) == expected
    earlier = prev_tick(expression, tz, expected - timedelta(microseconds=1))
    assert earlier is not None and earlier <= after


@pytest.mark.parametrize(
    ("name", "expression", "tz", "start", "ticks"), [pytest.param(*s, id=s[0]) for s in SEQUENCES]
)
def test_table_sequences_are_strictly_increasing(
    name: str, expression: str, tz: str, start: datetime, ticks: list[datetime]
) -> None:
    assert all(a < b for a, b in pairwise([start, *ticks])), name


def test_non_utc_aware_input_gives_utc_output() -> None:
    after = datetime(2026, 3, 8, 1, 59, tzinfo=ZoneInfo(NY))  # 06:59Z
    assert next_tick("* * * * *", NY, after) == z(2026, 3, 8, 7)
    assert next_tick("* * * * *", NY, after).tzinfo is UTC
    india = timezone(timedelta(hours=5, minutes=30))
    assert next_tick("0 * * * *", "UTC", datetime(2026, 1, 1, 5, 30, tzinfo=india)) == z(
        2026, 1, 1, 1
    )


@pytest.mark.parametrize("call", ["next_tick", "prev_tick", "missed_ticks", "plan"])
def test_naive_datetimes_are_refused(call: str) -> None:
    naive = datetime(2026, 1, 1)
    with pytest.raises(ValueError, match="timezone-aware"):
        if call == "next_tick":
            next_tick("* * * * *", "UTC", naive)
        elif call == "prev_tick":
            prev_tick("* * * * *", "UTC", naive)
        elif call == "missed_ticks":
            missed_ticks("* * * * *", "UTC", naive, z(2026, 1, 1))
        else:
            plan("* * * * *", "UTC", z(2026, 1, 1), naive)


@pytest.mark.parametrize("alias", sorted(ALIASES))
@pytest.mark.parametrize(
    "after", [z(2026, 3, 8, 6, 30), z(2026, 10, 25, 0, 30), z(2026, 12, 31, 23, 59)]
)
def test_aliases_equal_their_expansion(alias: str, after: datetime) -> None:
    for tz in (NY, BERLIN, SYDNEY, KOLKATA):
        assert next_tick(alias, tz, after) == next_tick(ALIASES[alias], tz, after)
        assert next_tick(alias.upper(), tz, after) == next_tick(ALIASES[alias], tz, after)


# --- brute-force reference --------------------------------------------------------------------
# An independent implementation of the documented rules at minute resolution: its own field
# matcher (numbers, names-free lists, ranges, steps), and a walk over every UTC minute.

_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _expand(field: str, low: int, high: int) -> set[int]:
    values: set[int] = set()
    for item in field.split(","):
        body, _, step = item.partition("/")
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            start, stop = (int(part) for part in body.split("-"))
        else:
            start = stop = int(body)
            if step:
                stop = high
        values.update(range(start, stop + 1, int(step or 1)))
    return values


class Reference:
    def __init__(self, expression: str, tz: str) -> None:
        fields = ALIASES.get(expression, expression).split()
        self.minutes, self.hours, self.days, self.months, dows = (
            _expand(field, *bounds) for field, bounds in zip(fields, _BOUNDS, strict=True)
        )
        self.dows = {d % 7 for d in dows}
        self.dom_star, self.dow_star = fields[2] == "*", fields[4] == "*"
        self.interval = fields[1].startswith("*")
        self.zone = ZoneInfo(tz)

    def matches(self, wall: datetime) -> bool:
        if wall.minute not in self.minutes or wall.hour not in self.hours:
            return False
        if wall.month not in self.months:
            return False
        dom, dow = wall.day in self.days, (wall.weekday() + 1) % 7 in self.dows
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow

    def fires(self, instant: datetime) -> bool:
        local = instant.astimezone(self.zone)
        wall = local.replace(tzinfo=None, fold=0)
        if self.matches(wall) and (self.interval or local.fold == 0):
            return True
        if self.interval:
            return False
        before = (instant - MINUTE).astimezone(self.zone)
        jump = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        missing = int(jump / MINUTE)  # a gap ending at this instant: its wall times fire here
        return any(self.matches(wall - MINUTE * k) for k in range(1, missing + 1))

    def ticks(self, after: datetime) -> Iterator[datetime]:
        instant = after.replace(second=0, microsecond=0) + MINUTE
        while True:
            if self.fires(instant):
                yield instant
            instant += MINUTE


# (zone, transitions checked to be real offset changes, by hand above)
ZONES = [
    (NY, [z(2026, 3, 8, 7), z(2026, 11, 1, 6)]),
    (BERLIN, [z(2026, 3, 29, 1), z(2026, 10, 25, 1)]),
    (SYDNEY, [z(2026, 4, 4, 16), z(2026, 10, 3, 16)]),
    (KOLKATA, [z(2026, 3, 8, 7), z(2026, 11, 1, 6)]),  # no DST: New York's dates as controls
    ("Australia/Lord_Howe", [z(2026, 4, 4, 15), z(2026, 10, 3, 15, 30)]),
    ("Antarctica/Troll", [z(2026, 3, 29, 1), z(2026, 10, 25, 1)]),
    ("America/Havana", [z(2026, 3, 8, 5), z(2026, 11, 1, 5)]),
    ("Pacific/Chatham", [z(2026, 4, 4, 14), z(2026, 9, 26, 14)]),
    ("Pacific/Apia", [z(2011, 12, 30, 10)]),
    ("UTC", [z(2026, 3, 8, 7)]),
]

# (expression, hours either side of the transition to compare)
EXPRESSIONS = [
    ("* * * * *", 3),
    ("*/7 * * * *", 6),
    ("0 * * * *", 8),
    ("30 * * * *", 8),
    ("45 */2 * * *", 12),
    ("0,15,30,45 * * * *", 6),
    ("30 2 * * *", 30),
    ("0 2 * * *", 30),
    ("0 0 * * *", 30),
    ("59 1 * * *", 30),
    ("*/20 2 * * *", 30),
    ("0 1-3 * * *", 30),
    ("0 2,3 * * *", 30),
    ("15 1,2,3 * * 0", 30),
    ("* 2 * * *", 40),
]


@pytest.mark.parametrize(("tz", "transitions"), ZONES, ids=[zone for zone, _ in ZONES])
def test_reference_transitions_are_real(tz: str, transitions: list[datetime]) -> None:
    zone = ZoneInfo(tz)
    for moment in transitions:
        changed = (moment - timedelta(seconds=1)).astimezone(zone).utcoffset() != moment.astimezone(
            zone
        ).utcoffset()
        assert changed == (tz not in (KOLKATA, "UTC")), moment


REFERENCE_CASES = [
    pytest.param(tz, moment, expression, hours, id=f"{tz}-{moment:%Y%m%d}-{expression}")
    for tz, transitions in ZONES
    for moment in transitions
    for expression, hours in EXPRESSIONS
]


@pytest.mark.parametrize(("tz", "moment", "expression", "hours"), REFERENCE_CASES)
def test_matches_brute_force_reference(
    tz: str, moment: datetime, expression: str, hours: int
) -> None:
    start, end = moment - timedelta(hours=hours), moment + timedelta(hours=hours)
    expected = []
    for tick in Reference(expression, tz).ticks(start):
        if tick > end:
            break
        expected.append(tick)
    actual, tick = [], next_tick(expression, tz, start)
    while tick <= end:
        actual.append(tick)
        tick = next_tick(expression, tz, tick)
    assert actual == expected
    assert len(set(actual)) == len(actual)
    assert missed_ticks(expression, tz, start, end) == (
        len(expected),
        expected[-1] if expected else None,
    )
    for sample in expected[:: max(1, len(expected) // 4)]:
        assert prev_tick(expression, tz, sample) == sample
        assert prev_tick(expression, tz, sample + timedelta(seconds=59)) == sample


@pytest.mark.parametrize(
    "tz", [NY, BERLIN, SYDNEY, KOLKATA, "Antarctica/Troll", "Australia/Lord_Howe"]
)
@pytest.mark.parametrize("expression", ["30 2 * * *", "0 2 * * *", "59 1 * * *", "0 0 * * *"])
def test_daily_fires_exactly_once_every_local_day_of_2026(tz: str, expression: str) -> None:
    zone = ZoneInfo(tz)
    tick, days = z(2025, 12, 31), []
    while tick < z(2027, 1, 1):
        tick = next_tick(expression, tz, tick)
        days.append(tick.astimezone(zone).date())
    local_days = [day for day in days if day.year == 2026]
    assert len(local_days) == 365
    assert len(set(local_days)) == 365


@pytest.mark.parametrize("tz", [NY, BERLIN, SYDNEY, KOLKATA])
def test_hourly_fires_once_per_distinct_utc_hour_all_2026(tz: str) -> None:
    tick, hours = z(2025, 12, 31, 23), []
    while tick < z(2026, 12, 31, 23):
        tick = next_tick("0 * * * *", tz, tick)
        hours.append(tick)
    offsets = {hour - hours[0] for hour in hours}
    assert len(offsets) == len(hours)  # no duplicates
    gaps = {b - a for a, b in pairwise(hours)}
    assert gaps == {timedelta(hours=1)}  # and none missing: every real hour, DST or not


transition_moments = st.sampled_from(
    [(tz, moment) for tz, transitions in ZONES for moment in transitions]
)


@settings(max_examples=300, deadline=None)
@given(
    where=transition_moments,
    shift=st.integers(min_value=-30 * 3600 * 10**6, max_value=30 * 3600 * 10**6),
    expression=st.sampled_from([expression for expression, _ in EXPRESSIONS]),
)
def test_next_tick_agrees_with_reference_at_any_instant(
    where: tuple[str, datetime], shift: int, expression: str
) -> None:
    tz, moment = where
    after = moment + timedelta(microseconds=shift)
    expected = next(Reference(expression, tz).ticks(after))
    assert next_tick(expression, tz, after) == expected


# --- missed ticks and the plan ----------------------------------------------------------------

# (name, expression, timezone, next_run_at, now, expected plan)
PLANS = [
    (
        "on-time",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10),
        z(2026, 1, 1, 10),
        Plan(z(2026, 1, 1, 10), 0, z(2026, 1, 1, 11)),
    ),
    (
        "late-within-period",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10),
        z(2026, 1, 1, 10, 59, 59),
        Plan(z(2026, 1, 1, 10), 0, z(2026, 1, 1, 11)),
    ),
    (
        "down-3h-hourly",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 14, 0, 30),
        Plan(z(2026, 1, 1, 14), 3, z(2026, 1, 1, 15)),
    ),
    (
        "down-just-under-3h",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 13, 59),
        Plan(z(2026, 1, 1, 13), 2, z(2026, 1, 1, 14)),
    ),
    (
        "down-3h-every-minute",
        "* * * * *",
        "UTC",
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 14),
        Plan(z(2026, 1, 1, 14), 180, z(2026, 1, 1, 14, 1)),
    ),
    (
        "down-3h-kolkata-hourly",
        "0 * * * *",
        KOLKATA,
        z(2026, 1, 1, 0, 30),
        z(2026, 1, 1, 3, 45),
        Plan(z(2026, 1, 1, 3, 30), 3, z(2026, 1, 1, 4, 30)),
    ),
    (
        "down-3h-ny-spring-hourly",
        "0 * * * *",
        NY,
        z(2026, 3, 8, 5),
        z(2026, 3, 8, 8),
        Plan(z(2026, 3, 8, 8), 3, z(2026, 3, 8, 9)),
    ),
    (
        "down-3h-ny-fall-hourly",
        "0 * * * *",
        NY,
        z(2026, 11, 1, 4),
        z(2026, 11, 1, 7),
        Plan(z(2026, 11, 1, 7), 3, z(2026, 11, 1, 8)),
    ),
    (
        "down-3h-berlin-fall-hourly",
        "0 * * * *",
        BERLIN,
        z(2026, 10, 24, 23),
        z(2026, 10, 25, 2, 10),
        Plan(z(2026, 10, 25, 2), 3, z(2026, 10, 25, 3)),
    ),
    (
        "down-3h-sydney-spring-hourly",
        "0 * * * *",
        SYDNEY,
        z(2026, 10, 3, 14),
        z(2026, 10, 3, 17),
        Plan(z(2026, 10, 3, 17), 3, z(2026, 10, 3, 18)),
    ),
    (
        "down-2-days-ny-spring-daily",
        "30 2 * * *",
        NY,
        z(2026, 3, 7, 7, 30),
        z(2026, 3, 9, 12),
        Plan(z(2026, 3, 9, 6, 30), 2, z(2026, 3, 10, 6, 30)),
    ),
    (
        "down-2-days-sydney-fall-daily",
        "30 2 * * *",
        SYDNEY,
        z(2026, 4, 3, 15, 30),
        z(2026, 4, 5, 17),
        Plan(z(2026, 4, 5, 16, 30), 2, z(2026, 4, 6, 16, 30)),
    ),
    (
        "clock-skew-early",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 11),
        z(2026, 1, 1, 10, 59, 58),
        Plan(z(2026, 1, 1, 11), 0, z(2026, 1, 1, 12)),
    ),
    (
        "off-schedule-next-run-at",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10, 17),
        z(2026, 1, 1, 10, 20),
        Plan(z(2026, 1, 1, 10, 17), 0, z(2026, 1, 1, 11)),
    ),
    (
        "off-schedule-then-down",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10, 17),
        z(2026, 1, 1, 12, 5),
        Plan(z(2026, 1, 1, 12), 2, z(2026, 1, 1, 13)),
    ),
    (
        "non-utc-input",
        "0 * * * *",
        "UTC",
        datetime(2026, 1, 1, 6, tzinfo=ZoneInfo(NY)),
        datetime(2026, 1, 1, 9, 0, 1, tzinfo=ZoneInfo(NY)),
        Plan(z(2026, 1, 1, 14), 3, z(2026, 1, 1, 15)),
    ),
]


@pytest.mark.parametrize(
    ("expression", "tz", "next_run_at", "now", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in PLANS],
)
def test_plan_table(
    expression: str, tz: str, next_run_at: datetime, now: datetime, expected: Plan
) -> None:
    result = plan(expression, tz, next_run_at, now)
    assert result == expected
    assert result.scheduled_for <= max(now, next_run_at) < result.next_run_at
    assert result.next_run_at == next_tick(expression, tz, max(now, next_run_at))
    assert result.scheduled_for.tzinfo is UTC and result.next_run_at.tzinfo is UTC


def test_plan_is_frozen() -> None:
    result = plan("0 * * * *", "UTC", z(2026, 1, 1, 10), z(2026, 1, 1, 10))
    with pytest.raises(AttributeError):
        result.missed = 5  # type: ignore[misc]


def test_plan_cap_counts_at_most_cap_but_lands_on_the_latest_tick() -> None:
    result = plan("* * * * *", "UTC", z(2026, 1, 1, 11), z(2026, 2, 1, 14, 0, 30), cap=100)
    assert result == Plan(z(2026, 2, 1, 14), 100, z(2026, 2, 1, 14, 1))


def test_a_month_down_counts_every_tick_under_the_default_cap() -> None:
    # 30 real days of 5-minute ticks: the lost local hour of Mar 8 loses no real time
    missed, latest = missed_ticks("*/5 * * * *", NY, z(2026, 3, 1), z(2026, 3, 31))
    assert (missed, latest) == (30 * 24 * 12, z(2026, 3, 31))


# (name, expression, timezone, last_scheduled, now, count, latest)
MISSED = [
    ("none-yet", "0 * * * *", "UTC", z(2026, 1, 1, 10), z(2026, 1, 1, 10, 59), 0, None),
    ("now-equals-last", "0 * * * *", "UTC", z(2026, 1, 1, 10), z(2026, 1, 1, 10), 0, None),
    ("now-before-last", "0 * * * *", "UTC", z(2026, 1, 1, 10), z(2026, 1, 1, 9), 0, None),
    (
        "boundary-included",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10),
        z(2026, 1, 1, 11),
        1,
        z(2026, 1, 1, 11),
    ),
    (
        "three-hours",
        "0 * * * *",
        "UTC",
        z(2026, 1, 1, 10),
        z(2026, 1, 1, 13, 30),
        3,
        z(2026, 1, 1, 13),
    ),
    ("ny-fall-hourly", "0 * * * *", NY, z(2026, 11, 1, 3), z(2026, 11, 1, 8), 5, z(2026, 11, 1, 8)),
    ("ny-spring-hourly", "0 * * * *", NY, z(2026, 3, 8, 3), z(2026, 3, 8, 8), 5, z(2026, 3, 8, 8)),
    (
        "ny-spring-daily",
        "30 2 * * *",
        NY,
        z(2026, 3, 7, 7, 30),
        z(2026, 3, 9, 6, 30),
        2,
        z(2026, 3, 9, 6, 30),
    ),
    (
        "ny-fall-daily-0130",
        "30 1 * * *",
        NY,
        z(2026, 10, 31, 5, 30),
        z(2026, 11, 2, 6, 30),
        2,
        z(2026, 11, 2, 6, 30),
    ),
    (
        "berlin-fall-every-minute",
        "* * * * *",
        BERLIN,
        z(2026, 10, 24, 23),
        z(2026, 10, 25, 2),
        180,
        z(2026, 10, 25, 2),
    ),
    (
        "berlin-spring-every-minute",
        "* * * * *",
        BERLIN,
        z(2026, 3, 28, 23),
        z(2026, 3, 29, 2),
        180,
        z(2026, 3, 29, 2),
    ),
    (
        "sydney-year-daily",
        "30 2 * * *",
        SYDNEY,
        z(2025, 12, 31),
        z(2026, 12, 31),
        365,
        z(2026, 12, 30, 15, 30),
    ),
    (
        "kolkata-day-hourly",
        "0 * * * *",
        KOLKATA,
        z(2026, 6, 1),
        z(2026, 6, 2),
        24,
        z(2026, 6, 1, 23, 30),
    ),
]


@pytest.mark.parametrize(
    ("expression", "tz", "last", "now", "count", "latest"),
    [pytest.param(*case[1:], id=case[0]) for case in MISSED],
)
def test_missed_ticks_table(
    expression: str, tz: str, last: datetime, now: datetime, count: int, latest: datetime | None
) -> None:
    assert missed_ticks(expression, tz, last, now) == (count, latest)


@pytest.mark.parametrize("cap", [1, 2, 10, 179])
def test_missed_ticks_cap(cap: int) -> None:
    assert missed_ticks("* * * * *", BERLIN, z(2026, 10, 24, 23), z(2026, 10, 25, 2), cap=cap) == (
        cap,
        z(2026, 10, 25, 2),
    )


@pytest.mark.parametrize("cap", [0, -1])
def test_missed_ticks_rejects_a_non_positive_cap(cap: int) -> None:
    with pytest.raises(ValueError, match="cap"):
        missed_ticks("* * * * *", "UTC", z(2026, 1, 1), z(2026, 1, 2), cap=cap)


# --- validation ---------------------------------------------------------------------------------

VALID = [
    "* * * * *",
    "0 * * * *",
    "30 2 * * *",
    "  30   2 * *  *  ",
    "\t0 9 * * 1-5",
    "*/15 9-17 * * mon-fri",
    "0 0 1 jan *",
    "0 0 * * SUN",
    "0 0 * * 0",
    "0 0 * * 7",
    "0 12 29 2 *",
    "0 0 L * *",
    "0 0 * * 1#2",
    "59 23 31 12 *",
    "0,30 0-23/2 1-31 1-12 0-7",
    "0 0 13 * 5",
    *ALIASES,
    "@HOURLY",
    "@Daily",
]

VALID_ZONES = [
    "UTC",
    NY,
    BERLIN,
    SYDNEY,
    KOLKATA,
    "Australia/Lord_Howe",
    "Etc/GMT+5",
    "Europe/Kyiv",
]


@pytest.mark.parametrize("expression", VALID)
@pytest.mark.parametrize("tz", VALID_ZONES)
def test_valid(expression: str, tz: str) -> None:
    validate(expression, tz)
    assert next_tick(expression, tz, z(2026, 1, 1)) > z(2026, 1, 1)


# (expression, words the message must contain)
INVALID = [
    ("", "expected 5 fields (minute hour day-of-month month day-of-week), got 0"),
    ("   ", "got 0"),
    ("garbage", "expected 5 fields"),
    ("every day at noon", "got 4"),
    ("* * * *", "got 4"),
    ("0 0 1 1", "got 4"),
    ("* * * * * *", "got 6; seconds and year fields are not supported"),
    ("0 0 0 1 1 * 2026", "got 7; seconds and year fields are not supported"),
    ("* * * * * * * *", "got 8"),
    ("a b c d e", "minute field 'a' is not valid (allowed: 0-59)"),
    ("60 * * * *", "minute field '60' is not valid (allowed: 0-59)"),
    ("-1 * * * *", "minute field '-1' is not valid"),
    ("1.5 * * * *", "minute field '1.5' is not valid"),
    ("0-60 * * * *", "minute field '0-60' is not valid"),
    ("1,,2 * * * *", "minute field '1,,2' is not valid"),
    ("*/0 * * * *", "minute field '*/0' is not valid"),
    ("5-1 * * * *", "minute field '5-1' has a reversed range"),
    ("0 23-1 * * *", "hour field '23-1' has a reversed range"),
    ("* 24 * * *", "hour field '24' is not valid (allowed: 0-23)"),
    ("* noon * * *", "hour field 'noon' is not valid"),
    ("* * 0 * *", "day-of-month field '0' is not valid (allowed: 1-31)"),
    ("* * 32 * *", "day-of-month field '32' is not valid"),
    ("* * * 0 *", "month field '0' is not valid (allowed: 1-12 or jan-dec)"),
    ("* * * 13 *", "month field '13' is not valid"),
    ("* * * foo *", "month field 'foo' is not valid"),
    ("* * * * 8", "day-of-week field '8' is not valid (allowed: 0-7 or sun-sat)"),
    ("* * * * funday", "day-of-week field 'funday' is not valid"),
    ("0 0 30 2 *", "it never matches a date"),
    ("0 0 31 4 *", "it never matches a date"),
    ("0 0 31 2,4,6,9,11 *", "it never matches a date"),
    ("R * * * *", "minute field 'R' uses croniter's random/hashed values (R, H), which are not"),
    ("H * * * *", "random/hashed"),
    ("0 H(0-3) * * *", "hour field 'H(0-3)' uses croniter's random/hashed"),
    ("@reboot", "unknown alias (known: @yearly, @annually, @monthly, @weekly, @daily, @midnight"),
    ("@every 5m", "expected 5 fields"),
    ("@", "unknown alias"),
]


@pytest.mark.parametrize(("expression", "reason"), INVALID)
def test_invalid_expression(expression: str, reason: str) -> None:
    with pytest.raises(CronError) as caught:
        validate(expression, "UTC")
    message = str(caught.value)
    assert message.startswith(f"invalid cron expression '{expression}': ")
    assert reason in message
    assert "\n" not in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, JsrtError)


INVALID_ZONES = [
    "Mars/Olympus_Mons",
    "",
    "America/NewYork",
    "Europe/Kiev/",
    "localtime",
    "posixrules",
    "../../etc/passwd",
    "/etc/localtime",
    "+05:30",
    "GMT+25",
]


@pytest.mark.parametrize("tz", INVALID_ZONES)
def test_unknown_timezone(tz: str) -> None:
    with pytest.raises(CronError) as caught:
        validate("* * * * *", tz)
    assert str(caught.value) == f"unknown timezone '{tz}'"


def test_non_string_inputs_give_readable_errors() -> None:
    with pytest.raises(CronError, match="invalid cron expression None: expected a string"):
        validate(None, "UTC")  # type: ignore[arg-type]
    with pytest.raises(CronError, match="unknown timezone None"):
        validate("* * * * *", None)  # type: ignore[arg-type]


def test_expression_is_reported_before_timezone() -> None:
    with pytest.raises(CronError, match="invalid cron expression"):
        validate("nope", "Nowhere/Special")


@pytest.mark.parametrize(
    ("expression", "tz", "message"),
    [
        ("61 * * * *", "UTC", "invalid cron expression '61 * * * *'"),
        ("* * * * *", "Nowhere/Special", "unknown timezone"),
    ],
)
@pytest.mark.parametrize("call", ["next_tick", "prev_tick", "missed_ticks", "plan"])
def test_every_entry_point_raises_cron_error(
    expression: str, tz: str, message: str, call: str
) -> None:
    when = z(2026, 1, 1)
    with pytest.raises(CronError, match=message.replace("*", r"\*")):
        if call == "next_tick":
            next_tick(expression, tz, when)
        elif call == "prev_tick":
            prev_tick(expression, tz, when)
        elif call == "missed_ticks":
            missed_ticks(expression, tz, when, when + timedelta(hours=1))
        else:
            plan(expression, tz, when, when)


def test_cron_error_default_message() -> None:
    assert str(CronError()) == "Invalid cron expression or time zone."
