"""Cron schedules as pure functions: validation, next tick, missed ticks, and the plan.

Every function takes the clock as an argument (no ``datetime.now()`` here), accepts aware
datetimes and returns aware UTC datetimes. croniter is used only to enumerate *local wall-clock*
times matching the expression (naive datetimes, so no time-zone arithmetic happens inside it);
mapping those wall times to real instants, through DST gaps and folds, is done here with
:mod:`zoneinfo`.

Syntax: the standard five fields ``minute hour day-of-month month day-of-week`` (names such as
``jan`` and ``mon`` allowed, day-of-week 0 or 7 = Sunday, day-of-month and day-of-week OR-ed when
both are restricted), and the aliases ``@yearly @annually @monthly @weekly @daily @midnight
@hourly``. croniter's ``L``, ``#`` and ``W`` extensions are accepted as croniter defines them.
Rejected: six- and seven-field forms (seconds, year), croniter's random/hashed ``R``/``H``
fields, reversed ranges such as ``5-1``, and expressions that never match a date (``0 0 30 2 *``).

Time zones and DST. A schedule is one of two kinds, decided by its hour field:

* **Wall-clock schedules** (the hour field does not start with ``*``: ``30 2 * * *``,
  ``*/20 2 * * *``, ``@daily``) are about local times. Each matching local time fires exactly
  once. A local time that does not exist (spring-forward gap) fires at the first valid instant
  after it, i.e. at the end of the gap: ``30 2 * * *`` in America/New_York on 2026-03-08 fires at
  03:00 EDT = 07:00 UTC. Several gap times collapse into that single instant (which also absorbs
  a tick scheduled exactly at the gap's end), so nothing fires twice. A local time that occurs
  twice (fall-back fold) fires once, at its first occurrence. A daily schedule therefore fires
  once on every local day, never twice and never zero times.
* **Interval schedules** (the hour field starts with ``*``: ``* * * * *``, ``0 * * * *``,
  ``*/15 */2 * * *``, ``@hourly``) are about elapsed time, like Vixie cron's wildcard jobs. They
  fire at every real instant whose local wall time matches: local times inside a gap do not
  exist and are skipped (the next real hour follows, e.g. 01:00 EST then 03:00 EDT, one real
  hour apart), and local times inside a fold fire at both occurrences because they are distinct
  instants (01:00 EDT and 01:00 EST both fire for ``0 * * * *``). Each distinct UTC hour thus
  fires once for an hourly schedule.

In both kinds the ticks are strictly increasing instants, so no two firings share a UTC instant.

Bounds assumed of the tz database (checked against tzdata for 1970 onwards): a fall-back is at
most 7 hours (Antarctica/Vostok, 1994) -- :data:`_MAX_FOLD` is 8 -- and two offset changes of one
zone are at least 6.9 days apart, which the fast path of :func:`next_tick` relies on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, CroniterError, croniter

from consumer.errors import JsrtError

__all__ = [
    "ALIASES",
    "CronError",
    "Plan",
    "missed_ticks",
    "next_tick",
    "plan",
    "prev_tick",
    "validate",
]

ALIASES: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or jan-dec"),
    ("day-of-week", "0-7 or sun-sat"),
)
_FIELD_NAMES = " ".join(name for name, _ in _FIELDS)
_RANDOM_ITEM = re.compile(r"^[hr](?:$|[(/])")
_NUMERIC_RANGE = re.compile(r"^(\d+)-(\d+)$")
# A fixed naive start for the "does it ever fire" check, so validation is deterministic.
_PROBE_START = datetime(2000, 1, 1)
# Longer than any fall-back in tzdata (7 h, Antarctica/Vostok 1994).
_MAX_FOLD = timedelta(hours=8)
# Offset changes of one zone are >= 6.9 days apart, so within this span a single check of the
# offsets at both ends proves there is no transition in between.
_FAST_SPAN = timedelta(days=1)
# Time zone keys that exist on disk but depend on the host rather than naming an IANA zone.
_HOST_ZONES = frozenset({"localtime", "posixrules"})
_SECOND = timedelta(seconds=1)
# croniter gives up after 50 years without a match; look no further back than that.
_PREV_HORIZON = timedelta(days=366 * 50)


class CronError(JsrtError, ValueError):
    """Invalid cron expression or time zone."""


@dataclass(frozen=True, slots=True)
class Plan:
    """What the scheduler does for a due job: one run now, and when to run next.

    ``scheduled_for`` is the latest due tick (the run's identity for deduplication),
    ``missed`` how many earlier due ticks are folded into this one run (0 when on time; at most
    the ``cap`` given to :func:`plan`), ``next_run_at`` the first tick after ``now``.
    """

    scheduled_for: datetime
    missed: int
    next_run_at: datetime


@dataclass(frozen=True, slots=True)
class _Spec:
    expression: str  # five croniter fields, aliases expanded
    interval: bool  # hour field starts with "*": fires at both passes of a fold, skips gaps


def validate(expression: str, timezone: str) -> None:
    """Raise :class:`CronError` with a one-line reason unless both are usable."""
    _spec(expression)
    _zone(timezone)


def next_tick(expression: str, timezone: str, after: datetime) -> datetime:
    """The first scheduled instant strictly after ``after``, in UTC (see the module docstring
    for the DST rules)."""
    return _next(_spec(expression), _zone(timezone), _utc(after, "after"))


def prev_tick(expression: str, timezone: str, at: datetime) -> datetime | None:
    """The latest scheduled instant at or before ``at``, in UTC; None if there is none within
    croniter's search horizon."""
    return _prev(_spec(expression), _zone(timezone), _utc(at, "at"))


def missed_ticks(
    expression: str,
    timezone: str,
    last_scheduled: datetime,
    now: datetime,
    cap: int = 10_000,
) -> tuple[int, datetime | None]:
    """Count the ticks in ``(last_scheduled, now]`` and return ``(count, latest)``.

    ``count`` stops at ``cap`` (so ``count == cap`` means "at least cap"); ``latest`` is exact
    even then. ``(0, None)`` when no tick fell in the interval.
    """
    spec, zone = _spec(expression), _zone(timezone)
    start, end = _utc(last_scheduled, "last_scheduled"), _utc(now, "now")
    count, latest, _ = _count(spec, zone, start, end, cap)
    return count, latest


def plan(
    expression: str,
    timezone: str,
    next_run_at: datetime,
    now: datetime,
    cap: int = 10_000,
) -> Plan:
    """The single call the scheduler makes for a due job.

    ``next_run_at`` (the stored due tick) counts as due even if the expression changed since it
    was stored. Every tick in ``(next_run_at, now]`` is also due; all of them are folded into ONE
    run for the latest, and ``missed`` says how many were folded (3 for an hourly job whose
    daemons were down from 11:00 to 14:00:30: it runs once for 14:00 and resumes at 15:00).
    A ``now`` earlier than ``next_run_at`` (clock skew between claimer and caller) is treated as
    ``next_run_at``. Raises :class:`CronError` for an invalid expression or time zone.
    """
    spec, zone = _spec(expression), _zone(timezone)
    due = _utc(next_run_at, "next_run_at")
    clock = max(_utc(now, "now"), due)
    missed, latest, following = _count(spec, zone, due, clock, cap)
    scheduled_for = latest if latest is not None else due
    return Plan(scheduled_for, missed, following or _next(spec, zone, clock))


# -- parsing ---------------------------------------------------------------------------------


def _invalid(expression: str, reason: str) -> CronError:
    return CronError(f"invalid cron expression '{expression}': {reason}")


@lru_cache(maxsize=4096)
def _spec(expression: str) -> _Spec:
    if not isinstance(expression, str):
        raise CronError(f"invalid cron expression {expression!r}: expected a string")
    written = expression.split()
    if len(written) == 1 and written[0].startswith("@"):
        alias = written[0].lower()
        if alias not in ALIASES:
            raise _invalid(expression, f"unknown alias (known: {', '.join(ALIASES)})")
        written = ALIASES[alias].split()
    if len(written) != 5:
        extra = "; seconds and year fields are not supported" if len(written) in (6, 7) else ""
        raise _invalid(expression, f"expected 5 fields ({_FIELD_NAMES}), got {len(written)}{extra}")
    fields = [field.lower() for field in written]
    for position, (name, allowed) in enumerate(_FIELDS):
        reason = _field_problem(fields[position], position)
        if reason:
            shown = written[position]
            raise _invalid(expression, f"{name} field '{shown}' {reason.format(allowed=allowed)}")
    text = " ".join(fields)
    try:
        croniter(text, _PROBE_START).get_next(datetime)
    except CroniterBadDateError:
        raise _invalid(expression, "it never matches a date") from None
    except CroniterError as exc:  # the per-field checks normally catch these first
        raise _invalid(expression, str(exc)) from None
    return _Spec(text, interval=fields[1].startswith("*"))


def _field_problem(field: str, position: int) -> str | None:
    items = field.split(",")
    for item in items:
        if _RANDOM_ITEM.match(item):
            return "uses croniter's random/hashed values (R, H), which are not supported"
        match = _NUMERIC_RANGE.match(item.split("/", 1)[0])
        if match and int(match.group(1)) > int(match.group(2)):
            return "has a reversed range (low-high expected)"
    probe = ["*"] * 5
    probe[position] = field
    try:
        croniter(" ".join(probe), _PROBE_START)
    except CroniterError:
        return "is not valid (allowed: {allowed})"
    return None


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or name in _HOST_ZONES:
        raise CronError(f"unknown timezone {name!r}")
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        raise CronError(f"unknown timezone '{name}'") from None


def _utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


# -- wall time <-> instants ------------------------------------------------------------------


def _wall(instant: datetime, zone: ZoneInfo) -> datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _instants(spec: _Spec, zone: ZoneInfo, wall: datetime) -> tuple[datetime, ...]:
    """The UTC instants at which the matching local time ``wall`` fires (0, 1 or 2)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first == second:
        return (first,)
    if _wall(first, zone) == wall:  # a fold: fold=0 is the earlier instant
        early, late = min(first, second), max(first, second)
        return (early, late) if spec.interval else (early,)
    if spec.interval:  # a gap: this local time never happens
        return ()
    return (_transition(zone, min(first, second), max(first, second)),)


def _transition(zone: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The instant in ``(before, after]`` where the offset changes: the end of a gap.

    Both ends are whole seconds (whole-minute wall times minus whole-second offsets), as are
    tzdata transitions, so bisecting on seconds finds it exactly.
    """
    target = after.astimezone(zone).utcoffset()
    low, high = before, after
    while high - low > _SECOND:
        middle = low + _SECOND * ((high - low) // _SECOND // 2)
        if middle.astimezone(zone).utcoffset() == target:
            high = middle
        else:
            low = middle
    return high


# -- searching -------------------------------------------------------------------------------


def _next(spec: _Spec, zone: ZoneInfo, after: datetime) -> datetime:
    wall = _wall(after, zone)
    try:
        candidate = croniter(spec.expression, wall).get_next(datetime)
        # Fast path: the first matching wall time after ``after``'s wall time is the answer when
        # no offset change lies between the two instants (the wall clock then runs in step with
        # UTC). Equal offsets at both ends of a span shorter than the minimum distance between
        # two transitions prove that.
        later = [tick for tick in _instants(spec, zone, candidate) if tick > after]
        if later:
            tick = min(later)
            if tick - after <= _FAST_SPAN and _offset(tick, zone) == _offset(after, zone):
                return tick
        return _next_slow(spec, zone, after, wall)
    except CroniterBadDateError:
        raise CronError(
            f"cron expression '{spec.expression}' has no tick after {after.isoformat()}"
        ) from None


def _next_slow(spec: _Spec, zone: ZoneInfo, after: datetime, wall: datetime) -> datetime:
    """Scan every matching wall time from ``_MAX_FOLD`` before ``after``'s wall time (a fold can
    put an instant after ``after`` on an earlier wall time) until ``_MAX_FOLD`` past the best
    instant found (a later wall time can no longer map to an earlier instant)."""
    walls = croniter(spec.expression, wall - _MAX_FOLD)
    best: datetime | None = None
    best_wall = wall
    while True:
        candidate = walls.get_next(datetime)
        if best is not None and candidate > best_wall + _MAX_FOLD:
            return best
        for tick in _instants(spec, zone, candidate):
            if tick > after and (best is None or tick < best):
                best, best_wall = tick, _wall(tick, zone)


def _count(
    spec: _Spec, zone: ZoneInfo, start: datetime, end: datetime, cap: int
) -> tuple[int, datetime | None, datetime | None]:
    """(ticks in ``(start, end]`` up to ``cap``, the latest of them, the first tick after
    ``end`` when it was met on the way)."""
    if cap < 1:
        raise ValueError(f"cap must be >= 1, got {cap}")
    count, latest = 0, None
    tick = _next(spec, zone, start)
    while tick <= end:
        count, latest = count + 1, tick
        if count == cap:
            return count, _prev(spec, zone, end), None
        tick = _next(spec, zone, tick)
    return count, latest, tick


def _prev(spec: _Spec, zone: ZoneInfo, at: datetime) -> datetime | None:
    """The latest tick <= ``at``, found with :func:`_next` only: widen a window backwards until
    it holds a tick, then halve the distance between that tick and ``at``."""
    span = timedelta(hours=1)
    while True:
        try:
            low = _next(spec, zone, at - span)
        except CronError:
            return None
        if low <= at:
            break
        if span > _PREV_HORIZON:
            return None
        span *= 2
    high = at  # invariant: low is a tick <= high, and no tick lies in (high, at]
    while True:
        following = _next(spec, zone, low)
        if following > high:
            return low
        low = following
        middle = low + (high - low) / 2
        probe = _next(spec, zone, middle)
        if probe <= high:
            low = probe
        else:
            high = middle


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta | None:
    return instant.astimezone(zone).utcoffset()
