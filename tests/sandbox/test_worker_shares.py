"""How tenants share the sandbox's workers (real workers, real V8).

- Burst workers: a tenant whose runs burn CPU within their limits (max_execution_time_ms
  30 s by default, five at once) held every worker, and every other tenant's run waited for
  its steps to end (4-24 s measured through the daemon). While every worker is in a long step
  the executor starts a burst worker; it takes no run of a tenant that has a step running
  long, and stops once idle.
- The engine lock goes round the tenants (fairlock.py); a tenant holds at most its share of
  the workers' places (ExecutorOptions.tenant_places), and the backlog serves the tenants in
  turn (backlog.py)."""

from __future__ import annotations

import asyncio
import time

from support.sandbox_requests import make_request
from support.waiting import eventually

from consumer.sandbox import ExecutionResult, Executor, Limits, PublishRequest

HOG = ("function handler(ms) { const end = Date.now() + ms; let x = 0;"
       " while (Date.now() < end) { x++ } return 'hog'; }")
QUICK = "function handler(i) { return i; }"
LONG = Limits(max_execution_time_ms=30_000)


def hog(ex: Executor, ms: int, tenant: str = "hog", script: str = "hog-script"
        ) -> asyncio.Future[ExecutionResult]:
    return ex.submit(make_request(HOG, ms, tenant=tenant, script=script, limits=LONG))


async def long_steps(ex: Executor, n: int) -> None:
    await eventually(lambda: sum(w.step_ms > 300 for w in ex.stats().workers) >= n,
                     timeout=20, what=f"{n} long steps")


async def test_a_tenant_in_every_worker_leaves_a_burst_worker_to_the_others() -> None:
    async with Executor(workers=2, burst_workers=1, burst_idle_s=0.3) as ex:
        hogs = [hog(ex, 6000) for _ in range(3)]
        await long_steps(ex, 2)
        quick = [ex.submit(make_request(QUICK, n, tenant="quiet", script=f"q-{n % 2}"))
                 for n in range(10)]
        results = await asyncio.wait_for(asyncio.gather(*quick), timeout=20)
        assert [r.output for r in results] == list(range(10))
        assert not any(h.done() for h in hogs)  # the quiet tenant did not wait for them
        assert ex.bursts == 1
        done = await asyncio.wait_for(asyncio.gather(*hogs), timeout=60)
        assert [r.output for r in done] == ["hog"] * 3
        # the hog's third run never took the burst worker: it waited for one of its own
        first, second, third = sorted(done, key=lambda r: r.started or 0)
        assert third.started is not None and first.finished is not None
        assert third.started >= min(first.finished, second.finished or 0) - 0.01
        # idle, and no regular worker in a long step: the burst worker goes
        await eventually(lambda: len(ex.stats().workers) == 2, timeout=20,
                         what="the burst worker stopped")
        assert (await ex.execute(make_request(QUICK, 7, tenant="quiet"))).output == 7


async def test_each_tenant_in_a_long_step_leaves_room_for_one_more() -> None:
    """Two tenants hog the regular workers, a third takes the first burst worker with a
    long step of its own: a second burst worker serves the quiet tenant."""
    async with Executor(workers=2, burst_workers=2, burst_idle_s=0.3) as ex:
        hogs = [hog(ex, 8000, tenant="hog-a", script="a"), hog(ex, 8000, tenant="hog-b",
                                                              script="b")]
        await long_steps(ex, 2)
        await eventually(lambda: ex.bursts == 1, timeout=20, what="a burst worker")
        hogs.append(hog(ex, 8000, tenant="hog-c", script="c"))
        await long_steps(ex, 3)
        quick = await asyncio.wait_for(ex.execute(make_request(QUICK, 1, tenant="quiet")),
                                       timeout=20)
        assert quick.output == 1
        assert not any(h.done() for h in hogs)
        assert ex.bursts == 2
        assert [r.output for r in await asyncio.gather(*hogs)] == ["hog"] * 3


async def test_without_burst_workers_the_others_wait() -> None:
    """What burst workers are for: with none, a run of another tenant waits for the steps."""
    async with Executor(workers=1) as ex:
        long = hog(ex, 1500)
        await long_steps(ex, 1)
        quick = await ex.execute(make_request(QUICK, 1, tenant="quiet"))
        assert long.done() and quick.output == 1
        assert ex.bursts == 0 and len(ex.stats().workers) == 1


YIELDING = """async function handler(n, ctx) {
    await ctx.events.publish('looping', {});  // (the test's signal that this run is under way)
    const starts = [];
    for (let i = 0; i < n; i++) {
        starts.push(Date.now());
        const end = Date.now() + 40;
        while (Date.now() < end) {}
        await new Promise((r) => setTimeout(r, 0));
    }
    return starts;
}"""


async def test_steps_of_a_tenant_that_yields_often_do_not_queue_ahead_of_another_tenant(
) -> None:
    """Eight runs of one tenant each take 40 ms steps with an `await` between (no step is
    long, nothing moves): another tenant's run waits for the step in progress, not for one
    step of each of the eight (the worker's engine lock goes round the tenants)."""
    looping: list[PublishRequest] = []

    async def publish(request: PublishRequest) -> str:
        looping.append(request)
        return f"event-{len(looping)}"

    async with Executor(workers=1, publisher=publish) as ex:
        hogs = [ex.submit(make_request(YIELDING, 12, tenant="hog", script=f"y-{n}",
                                       limits=LONG)) for n in range(8)]
        await eventually(lambda: len(looping) == 8, timeout=20,
                         what="all eight of the hog's runs in their loops")
        asked = time.time() * 1000
        quiet = await ex.execute(make_request("function handler() { return Date.now(); }",
                                              None, tenant="quiet"))
        starts = [t for h in await asyncio.gather(*hogs) for t in h.output]
        overtook = [t for t in starts if asked < t < quiet.output]
        assert len(overtook) <= 2, (len(overtook), quiet.output - asked)


SLEEPS = ("async function handler(ms) { await new Promise((r) => setTimeout(r, ms));"
          " return 'slept'; }")


async def test_runs_that_wait_hold_at_most_their_tenants_share_of_the_places() -> None:
    """A tenant's runs that wait on timers hold their places as long as they last: with
    places for 8 runs, one tenant's 12 sleeping runs took all of them and another tenant's
    run waited for them. Alone it may hold half: the rest of its runs wait, the others go
    first."""
    async with Executor(workers=2, max_inflight_per_worker=4) as ex:
        sleepers = [ex.submit(make_request(SLEEPS, 3000, tenant="sleepy", script=f"s-{n}",
                                           limits=LONG)) for n in range(12)]
        await eventually(lambda: sum(w.inflight for w in ex.stats().workers) == 4,
                         timeout=10, what="the sleepers' share on the workers")
        quick = await asyncio.wait_for(ex.execute(make_request(QUICK, 5, tenant="quiet")),
                                       timeout=10)
        assert quick.output == 5 and not any(s.done() for s in sleepers)
        assert sum(w.inflight for w in ex.stats().workers) == 4
        assert [r.output for r in await asyncio.gather(*sleepers)] == ["slept"] * 12
