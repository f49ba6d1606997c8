"""The worker's engine lock, handed out round-robin by tenant (consumer/sandbox/fairlock.py):
a tenant with many steps waiting no longer queues them all ahead of another tenant's."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.sandbox.fairlock import FairLock


async def _until_waiting(lock: FairLock, n: int) -> None:
    while sum(len(q) for q in lock._waiting.values()) < n:
        await asyncio.sleep(0)


async def test_a_tenant_arriving_behind_another_tenants_queue_goes_next() -> None:
    lock, order = FairLock(), []

    async def step(key: str, n: int) -> None:
        async with lock.holding(key):
            order.append((key, n))
            await asyncio.sleep(0)

    await lock.acquire("hog")
    hogs = [asyncio.create_task(step("hog", n)) for n in range(5)]
    await _until_waiting(lock, 5)
    quiet = asyncio.create_task(step("quiet", 0))
    await _until_waiting(lock, 6)
    lock.release()
    await asyncio.gather(*hogs, quiet)
    # the hog had the lock when the quiet step came: the quiet step is next, and the hog's
    # own steps keep their order
    assert order == [("quiet", 0)] + [("hog", n) for n in range(5)]
    assert not lock.locked()


async def test_a_cancelled_waiter_leaves_the_round_and_one_handed_the_lock_passes_it_on(
) -> None:
    lock = FairLock()
    await lock.acquire("a")
    gone = asyncio.create_task(lock.acquire("b"))
    after = asyncio.create_task(lock.acquire("c"))
    await _until_waiting(lock, 2)
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    lock.release()
    assert await after and lock.locked()
    # handed over and cancelled before it resumed: the lock goes on to the next waiter
    handed = asyncio.create_task(lock.acquire("d"))
    last = asyncio.create_task(lock.acquire("e"))
    await _until_waiting(lock, 2)
    lock.release()  # to "d"
    handed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await handed
    assert await last and lock.locked()
    lock.release()
    assert not lock.locked()
    with pytest.raises(RuntimeError):
        lock.release()


class Recording(FairLock):
    """Notes each key as the lock is decided for it (the waiter resumes later)."""

    def __init__(self) -> None:
        super().__init__()
        self.grants: list[str] = []

    async def acquire(self, key: Hashable = None) -> bool:
        if not self.locked() and not self._waiting:
            self.grants.append(str(key))
        return await super().acquire(key)

    def release(self) -> None:
        super().release()
        if self.locked():
            self.grants.append(str(self._holder))


Wait = tuple[str, int, int, int]


async def _contend(steps: list[tuple[str, int]]) -> tuple[list[str], list[Wait]]:
    """Each (key, hold) acquires in turn, a loop turn apart, and holds for `hold` loop turns.
    What came: the grants, and per acquisition (key, grants before it queued, acquisitions
    of its key ahead of it, its grant)."""
    lock = Recording()
    waits: list[Wait] = []
    queued: dict[str, int] = dict.fromkeys("abcd", 0)
    granted: dict[str, int] = dict.fromkeys("abcd", 0)
    holding = [0]

    async def one(key: str, hold: int) -> None:
        queued_at, ahead = len(lock.grants), queued[key] - granted[key]
        queued[key] += 1
        await lock.acquire(key)
        granted[key] += 1
        holding[0] += 1
        assert holding[0] == 1 and lock.grants[-1] == key
        waits.append((key, queued_at, ahead, len(lock.grants) - 1))
        for _ in range(hold):
            await asyncio.sleep(0)
        holding[0] -= 1
        lock.release()

    tasks = []
    for key, hold in steps:
        tasks.append(asyncio.create_task(one(key, hold)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert not lock.locked()
    return lock.grants, waits


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abcd"), st.integers(0, 3)), min_size=1,
                max_size=40))
def test_one_holder_at_a_time_and_every_key_in_turn(steps: list[tuple[str, int]]) -> None:
    """Whatever the keys and the hold times: never two holders, every acquisition served,
    and while an acquisition waits with n of its own key's ahead of it, every other key gets
    the lock at most n + 1 times."""
    grants, waits = asyncio.run(_contend(steps))
    assert len(grants) == len(steps)
    for key, queued_at, ahead, granted_at in waits:
        between = grants[queued_at:granted_at]  # decided after it queued
        for other in set(between) - {key}:
            assert between.count(other) <= ahead + 1, (key, grants, queued_at, granted_at)
