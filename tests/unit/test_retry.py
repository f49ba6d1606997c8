"""consumer.retry: exponential backoff with jitter and exhaustion, clock and randomness injected."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.retry import (
    DEFAULT_BASE_SECONDS,
    MAX_RETRIES,
    backoff_seconds,
    is_exhausted,
    next_retry_at,
)

NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


def fixed(value: float) -> float:
    return value


def never() -> float:
    raise AssertionError("rand must not be called without jitter")


# (retry_count, base, seconds) with no jitter: base × 2^retry_count
EXACT = [
    (0, 30.0, 30.0),
    (1, 30.0, 60.0),
    (2, 30.0, 120.0),
    (3, 30.0, 240.0),
    (4, 30.0, 480.0),
    (10, 30.0, 30720.0),
    (0, 1.0, 1.0),
    (1, 1.0, 2.0),
    (5, 1.0, 32.0),
    (0, 0.5, 0.5),
    (3, 0.5, 4.0),
    (2, 10.0, 40.0),
    (1, 45.0, 90.0),
    (0, 3600.0, 3600.0),
]


@pytest.mark.parametrize(("retry_count", "base", "seconds"), EXACT)
def test_backoff_without_jitter(retry_count: int, base: float, seconds: float) -> None:
    assert backoff_seconds(retry_count, base, jitter=0, rand=never) == seconds


@pytest.mark.parametrize(("retry_count", "seconds"), [(0, 30.0), (1, 60.0), (2, 120.0)])
def test_default_base_is_30_seconds(retry_count: int, seconds: float) -> None:
    assert DEFAULT_BASE_SECONDS == 30.0
    assert backoff_seconds(retry_count, jitter=0) == seconds


# (rand() value, retry_count, seconds) with base 30 and the default ±10% jitter
JITTERED = [
    (0.0, 0, 27.0),
    (0.0, 1, 54.0),
    (0.0, 2, 108.0),
    (1.0, 0, 33.0),
    (1.0, 1, 66.0),
    (1.0, 2, 132.0),
    (0.5, 0, 30.0),
    (0.5, 1, 60.0),
    (0.5, 2, 120.0),
    (0.25, 0, 28.5),
    (0.75, 2, 126.0),
    (-5.0, 1, 54.0),  # a misbehaving rand is clamped to [0, 1]
    (7.0, 1, 66.0),
]


@pytest.mark.parametrize(("value", "retry_count", "seconds"), JITTERED)
def test_backoff_with_stubbed_jitter(value: float, retry_count: int, seconds: float) -> None:
    assert math.isclose(backoff_seconds(retry_count, 30.0, 0.1, lambda: fixed(value)), seconds)


@pytest.mark.parametrize(
    ("jitter", "low", "high"), [(0.2, 24.0, 36.0), (0.5, 15.0, 45.0), (0.0, 30.0, 30.0)]
)
def test_jitter_width(jitter: float, low: float, high: float) -> None:
    assert math.isclose(backoff_seconds(0, 30.0, jitter, lambda: 0.0), low)
    assert math.isclose(backoff_seconds(0, 30.0, jitter, lambda: 1.0), high)


@given(
    retry_count=st.integers(min_value=0, max_value=20),
    base=st.floats(min_value=0.001, max_value=86_400),
    value=st.floats(min_value=0, max_value=1),
)
def test_jitter_stays_within_ten_percent(retry_count: int, base: float, value: float) -> None:
    exact = base * 2**retry_count
    seconds = backoff_seconds(retry_count, base, 0.1, lambda: value)
    assert exact * 0.9 * (1 - 1e-12) <= seconds <= exact * 1.1 * (1 + 1e-12)


def test_default_random_source_stays_within_bounds() -> None:
    for retry_count in range(MAX_RETRIES):
        exact = 30.0 * 2**retry_count
        assert all(exact * 0.9 <= backoff_seconds(retry_count) <= exact * 1.1 for _ in range(500))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"retry_count": -1}, "retry_count must be >= 0"),
        ({"retry_count": 0, "base": 0.0}, "base must be > 0"),
        ({"retry_count": 0, "base": -30.0}, "base must be > 0"),
        ({"retry_count": 0, "base": float("nan")}, "base must be > 0"),
        ({"retry_count": 0, "jitter": -0.1}, "jitter must be in"),
        ({"retry_count": 0, "jitter": 1.0}, "jitter must be in"),
        ({"retry_count": 0, "jitter": float("nan")}, "jitter must be in"),
    ],
)
def test_backoff_rejects_bad_arguments(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        backoff_seconds(**kwargs)  # type: ignore[arg-type]


# (retry_count, rand value, expected retry time)
RETRY_AT = [
    (0, 0.5, NOW + timedelta(seconds=30)),
    (1, 0.5, NOW + timedelta(seconds=60)),
    (2, 0.5, NOW + timedelta(seconds=120)),
    (0, 0.0, NOW + timedelta(seconds=27)),
    (2, 1.0, NOW + timedelta(seconds=132)),
]


@pytest.mark.parametrize(("retry_count", "value", "expected"), RETRY_AT)
def test_next_retry_at(retry_count: int, value: float, expected: datetime) -> None:
    assert next_retry_at(NOW, retry_count, rand=lambda: value) == expected


def test_next_retry_at_without_jitter_and_custom_base() -> None:
    assert next_retry_at(NOW, 2, base=5.0, jitter=0, rand=never) == NOW + timedelta(seconds=20)


def test_next_retry_at_keeps_the_callers_time_zone() -> None:
    local = datetime(2026, 3, 8, 1, 59, 50, tzinfo=ZoneInfo("America/New_York"))
    at = next_retry_at(local, 0, jitter=0)
    assert at - local == timedelta(seconds=30)
    assert at.astimezone(UTC) == datetime(2026, 3, 8, 7, 0, 20, tzinfo=UTC)


def test_next_retry_at_refuses_naive_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_retry_at(datetime(2026, 1, 1), 0)


@pytest.mark.parametrize(
    ("retry_count", "exhausted"),
    [(0, False), (1, False), (2, False), (3, True), (4, True), (100, True)],
)
def test_exhaustion(retry_count: int, exhausted: bool) -> None:
    assert MAX_RETRIES == 3
    assert is_exhausted(retry_count) is exhausted


def test_a_letter_that_always_fails_runs_four_times_then_waits_for_review() -> None:
    """The original execution, then one retry per backoff step: 30 s, 60 s, 120 s."""
    now, retry_count, executions, waits = NOW, 0, 1, []
    while not is_exhausted(retry_count):
        at = next_retry_at(now, retry_count, jitter=0)
        waits.append((at - now).total_seconds())
        now, retry_count, executions = at, retry_count + 1, executions + 1
    assert executions == 4
    assert waits == [30.0, 60.0, 120.0]
    assert now == NOW + timedelta(seconds=210)
