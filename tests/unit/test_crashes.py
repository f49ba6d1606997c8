"""The policy for script versions that cost a worker (consumer/sandbox/crashes.py), over an
injected clock: alone after a crash, refused a while after repeated ones, memory bounded."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.sandbox import crashes
from consumer.sandbox.crashes import ALONE_FOR_S, REFUSE_AFTER, REFUSE_FOR_S, WINDOW_S, Crashes

KEY = ("tenant", "script", "v1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_crash_makes_a_version_run_alone_for_a_while():
    clock = Clock()
    c = Crashes(clock)
    assert not c.alone(KEY) and c.refused_for(KEY) == 0
    assert c.pinned(KEY) is False
    assert c.alone(KEY) and c.refused_for(KEY) == 0
    assert not c.alone(("tenant", "script", "v2"))  # a new version starts clean
    assert not c.alone(("other", "script", "v1"))
    clock.now += ALONE_FOR_S + 1
    assert not c.alone(KEY)


def test_repeated_crashes_within_the_window_refuse_the_version_then_count_afresh():
    clock = Clock()
    c = Crashes(clock)
    for i in range(REFUSE_AFTER):
        assert c.pinned(KEY) is (i == REFUSE_AFTER - 1)
        clock.now += 1
    assert REFUSE_FOR_S - 3 <= c.refused_for(KEY) <= REFUSE_FOR_S
    clock.now += REFUSE_FOR_S
    assert c.refused_for(KEY) == 0 and c.alone(KEY)
    assert c.pinned(KEY) is False  # one more crash after the pause: not refused at once


def test_crashes_spread_wider_than_the_window_refuse_nothing():
    clock = Clock()
    c = Crashes(clock)
    for _ in range(REFUSE_AFTER * 3):
        assert c.pinned(KEY) is False
        clock.now += WINDOW_S / (REFUSE_AFTER - 1) + 1
    assert c.refused_for(KEY) == 0


@given(st.lists(st.integers(min_value=0, max_value=3000), max_size=3000))
def test_what_is_remembered_stays_bounded(keys: list[int]):
    c = Crashes(Clock())
    for k in keys:
        c.pinned(("t", str(k), "v"))
    assert len(c._records) <= crashes.REMEMBERED
