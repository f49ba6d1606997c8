"""Serial groups (Executor.submit_serial): a slot of a script's max_concurrent_runs pushes its
local queue through the sandbox without a round trip per run. Whatever happens to the runs
(batched, waiting for host calls or timers, given back by a worker stuck in another tenant's
long step, re-run after a worker was lost), two runs of one group never overlap, they run in
their order, and each result carries the true times of its own run."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal

import pytest
from support.sandbox_requests import make_request
from support.waiting import eventually

from consumer.sandbox import ExecutionResult, Executor, Limits

pytestmark = pytest.mark.asyncio(loop_scope="session")

LIMITS = Limits(max_execution_time_ms=2000, max_memory_bytes=16 << 20)
QUICK = "function handler(i) { return i; }"
# every third run waits for a timer: it leaves its step, and the group must wait for it
MIXED = """async function handler(i) {
  if (i % 3 === 1) await new Promise((resolve) => setTimeout(resolve, 3));
  return i;
}"""


def group(source: str, n: int, script: str, tenant: str = "tenant-a") -> list:
    return [make_request(source, i, script=script, tenant=tenant, limits=LIMITS)
            for i in range(n)]


def assert_serial(results: list[ExecutionResult], n: int) -> None:
    """Completed, in order, each with its own times, none overlapping the one before it."""
    assert [(r.status, r.output) for r in results] == [("completed", i) for i in range(n)]
    for before, after in itertools.pairwise(results):
        assert 0 < before.started <= before.finished <= after.started <= after.finished


async def test_a_group_of_quick_runs_runs_in_order_one_after_another(executor: Executor):
    results = await asyncio.gather(*executor.submit_serial(group(QUICK, 60, "serial-quick")))
    assert_serial(results, 60)


async def test_runs_that_leave_their_step_still_never_overlap(executor: Executor):
    results = await asyncio.gather(*executor.submit_serial(group(MIXED, 30, "serial-mixed")))
    assert_serial(results, 30)
    waited = results[1]
    assert waited.finished - waited.started >= 0.003  # its timer's wait is its own time


async def test_many_groups_at_once_each_stay_serial(executor: Executor):
    # five slots of one script and three of another, on two workers: the groups interleave
    # with each other (batched together when they can), never within themselves
    groups = [group(MIXED if k % 2 else QUICK, 25, f"serial-many-{k % 2}", f"tenant-{k % 3}")
              for k in range(8)]
    futures = [executor.submit_serial(g) for g in groups]
    for k, fs in enumerate(futures):
        assert_serial(await asyncio.gather(*fs), 25), k


async def test_a_group_behind_another_tenants_long_step_moves_to_another_worker(
    executor: Executor,
):
    long = make_request("function handler() { const t = Date.now(); while (Date.now() - t < 600)"
                        " {} return 'long'; }", tenant="tenant-long", limits=LIMITS)
    # more than one worker's worth of groups, so that some land behind the long step
    hog = executor.submit(long)
    # the long step has begun (a worker reports a step in progress) before the groups come
    await eventually(lambda: any(w.step_ms > 0 for w in executor.stats().workers),
                     timeout=10, what="the long step started")
    futures = [executor.submit_serial(group(MIXED, 12, f"serial-behind-{k}", "tenant-b"))
               for k in range(4)]
    done = [await asyncio.gather(*fs) for fs in futures]
    for results in done:
        assert_serial(results, 12)
    hogged = await hog
    assert hogged.output == "long"
    # none of tenant B's groups waited for the long step to end
    assert max(r.finished for results in done for r in results) < hogged.finished


async def test_a_worker_lost_mid_group_loses_no_run_and_breaks_no_order():
    async with Executor(workers=2) as executor:
        slow = """async function handler(i) {
          await new Promise((resolve) => setTimeout(resolve, 20));
          return i;
        }"""
        futures = executor.submit_serial(group(slow, 20, "serial-lost"))
        await futures[3]  # the group is under way
        victim = next(w for w in executor.stats().workers if w.inflight)
        os.kill(victim.pid, signal.SIGKILL)
        results = await asyncio.gather(*futures)
        # the run that was running is re-run (the crash is not pinned on it): nothing lost
        assert_serial(results, 20)
        assert victim.pid not in {w.pid for w in executor.stats().workers}


async def test_a_run_that_fails_or_times_out_ends_only_itself(executor: Executor):
    source = """function handler(i) {
      if (i === 2) throw new Error('two');
      if (i === 4) { while (true) {} }
      return i;
    }"""
    limits = Limits(max_execution_time_ms=300, max_memory_bytes=16 << 20)
    requests = [make_request(source, i, script="serial-bad", limits=limits) for i in range(8)]
    results = await asyncio.gather(*executor.submit_serial(requests))
    assert [r.status for r in results] == ["completed", "completed", "failed", "completed",
                                           "timeout", "completed", "completed", "completed"]
    assert results[2].error == "Error: two"
    assert [r.output for r in results if r.status == "completed"] == [0, 1, 3, 5, 6, 7]
    for before, after in itertools.pairwise(results):
        assert before.finished <= after.started


async def test_a_cancelled_future_of_a_group_is_skipped():
    async with Executor(workers=1) as executor:
        slow = "async function handler(i) { await new Promise((r) => setTimeout(r, 5)); return i; }"
        futures = executor.submit_serial(group(slow, 40, "serial-cancel"))
        for f in futures[20:]:
            f.cancel()
        results = await asyncio.gather(*futures[:20])
        assert_serial(results, 20)
        # the executor holds nothing of the group any more
        await eventually(lambda: not any(w.inflight for w in executor.stats().workers),
                         timeout=10, what="nothing of the group left on a worker")


async def test_cancelling_runs_of_a_group_keeps_the_rest_serial():
    """A cancelled run, on a worker or still queued, leaves the group's count of runs on a
    worker exact: the rest still run one after another (#19's cancel)."""
    async with Executor(workers=2) as executor:
        slow = "async function handler(i) { await new Promise((r) => setTimeout(r, 5)); return i; }"
        requests = group(slow, 30, "serial-cancelled")
        futures = executor.submit_serial(requests)
        assert executor.cancel(requests[25].execution_id)  # still queued (16 go out at once)
        assert executor.cancel(requests[3].execution_id)  # on a worker
        results = await asyncio.gather(*futures)
        assert (results[3].status, results[25].status) == ("cancelled", "cancelled")
        kept = [r for i, r in enumerate(results) if i not in (3, 25)]
        assert [r.output for r in kept] == [i for i in range(30) if i not in (3, 25)]
        for before, after in itertools.pairwise(kept):
            assert before.finished <= after.started
