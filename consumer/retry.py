"""Dead-letter retry policy as pure functions: exponential backoff with jitter, and exhaustion.

A letter with ``retry_count`` failed retries behind it waits ``base × 2^retry_count`` seconds
(30 s, 60 s, 120 s with the default base of 30 s, ``JSRT_RETRY_BASE_SECONDS``), spread by ±10 %
so that letters failing together are not retried together. After :data:`MAX_RETRIES` failed
retries (four executions in all, counting the original) the letter is exhausted and stays for
review. The clock and the random source are arguments; ``jitter=0`` gives the exact schedule.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "DEFAULT_BASE_SECONDS",
    "DEFAULT_JITTER",
    "MAX_RETRIES",
    "backoff_seconds",
    "is_exhausted",
    "next_retry_at",
    "retry_at_after",
]

MAX_RETRIES = 3
DEFAULT_BASE_SECONDS = 30.0
DEFAULT_JITTER = 0.1


def backoff_seconds(
    retry_count: int,
    base: float = DEFAULT_BASE_SECONDS,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``retry_count + 1``: ``base × 2^retry_count``, scaled
    by a factor in ``[1 - jitter, 1 + jitter]`` (``rand() == 0`` gives the low end, ``1`` the
    high end, ``0.5`` the exact value). ``rand`` is not called when ``jitter`` is 0."""
    if retry_count < 0:
        raise ValueError(f"retry_count must be >= 0, got {retry_count}")
    if not base > 0:
        raise ValueError(f"base must be > 0 seconds, got {base}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    delay = base * 2.0**retry_count
    if jitter == 0:
        return delay
    spread = min(max(rand(), 0.0), 1.0) * 2 - 1  # in [-1, 1]
    return delay * (1 + jitter * spread)


def next_retry_at(
    now: datetime,
    retry_count: int,
    base: float = DEFAULT_BASE_SECONDS,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> datetime:
    """When a letter with ``retry_count`` failed retries should next be retried."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    return now + timedelta(seconds=backoff_seconds(retry_count, base, jitter, rand))


def retry_at_after(trigger_data: Mapping[str, Any], now: datetime,
                   base: float = DEFAULT_BASE_SECONDS) -> datetime:
    """When to retry an event run whose attempt failed or was lost: its trigger_data says
    how many retries came before it (`retry`). The one rule every path uses - the daemon's
    results, and the rescue of lost runs by any process."""
    count = trigger_data.get("retry", 0)
    return next_retry_at(now, count if isinstance(count, int) and count >= 0 else 0, base=base)


def is_exhausted(retry_count: int) -> bool:
    """True once a letter has used all :data:`MAX_RETRIES` retries."""
    return retry_count >= MAX_RETRIES
