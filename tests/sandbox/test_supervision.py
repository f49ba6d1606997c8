# ruff: noqa: E501 - JavaScript one-liners read better unbroken.
"""The daemon's backstops: a worker that freezes or outgrows its memory is killed and replaced;
the execution it was running gets the verdict, the others are re-run."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest
from support.sandbox_requests import make_request
from support.waiting import eventually

from consumer.sandbox import Executor, Limits, PublishRequest

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_worker_frozen_mid_step_is_killed_and_its_other_work_rerun():
    published = asyncio.Event()

    async def publish(request: PublishRequest) -> str:
        published.set()
        return "event-1"

    async with Executor(workers=1, publisher=publish, kill_grace_s=0.2) as ex:
        worker = ex._workers[0]
        assert worker is not None
        guilty = make_request(
            "async function handler(i, ctx) { await ctx.events.publish('x', {}); const t = Date.now(); while (Date.now() - t < 5000) {} }",
            limits=Limits(max_execution_time_ms=300),
        )
        first = asyncio.ensure_future(ex.execute(guilty))
        await published.wait()
        # until the spinning step has begun
        await eventually(lambda: worker.slot.read().seq != 0, what="the step to begin")
        os.kill(worker.pid, signal.SIGSTOP)  # now the worker can enforce nothing itself
        bystander = make_request("async function handler(i) { return i }", 7, script="bystander")
        result, other = await asyncio.gather(first, ex.execute(bystander))
        assert (result.status, result.error) == (
            "timeout",
            "timeout: exceeded max_execution_time_ms=300",
        )
        assert (other.status, other.output) == ("completed", 7)
        assert ex.restarts == 1 and ex.stats().workers[0].pid != worker.pid


async def test_a_worker_frozen_between_steps_is_killed_and_everything_rerun():
    froze: list[int] = []
    holder: dict[str, Executor] = {}

    async def publish(request: PublishRequest) -> str:
        if not froze:  # freeze the first worker once; the re-run must then succeed
            froze.append(holder["ex"].stats().workers[0].pid)
            os.kill(froze[0], signal.SIGSTOP)
        return "event-1"

    async with Executor(workers=1, publisher=publish, heartbeat_timeout_s=1.0) as ex:
        holder["ex"] = ex
        source = "async function handler(i, ctx) { await ctx.events.publish('x', {}); return 'published' }"
        result = await ex.execute(make_request(source, limits=Limits(max_execution_time_ms=5000)))
        assert (result.status, result.output) == ("completed", "published")
        assert ex.restarts == 1 and ex.stats().workers[0].pid != froze[0]


async def test_a_worker_over_its_memory_budget_is_killed():
    async with Executor(workers=1, max_worker_rss_bytes=400 << 20) as ex:
        hog = make_request(
            "async function handler() { const a = []; for (let i = 0; i < 40; i++) { a.push(new Uint8Array(25 << 20).fill(1)); } const t = Date.now(); while (Date.now() - t < 3000) {} }",
            limits=Limits(max_execution_time_ms=5000, max_memory_bytes=2 << 30),
        )
        result = await ex.execute(hog)
        assert (result.status, result.error) == (
            "failed",
            f"memory limit exceeded (max_memory_bytes={2 << 30})",
        ), result
        after = await ex.execute(make_request("async function handler() { return 'fine' }"))
        assert after.output == "fine"
        assert ex.restarts == 1


async def test_stats_report_workers(executor, healthy):
    await healthy()
    stats = executor.stats()
    assert len(stats.workers) == 2
    assert all(w.pid > 0 and w.rss_bytes > 10 << 20 for w in stats.workers)
    assert stats.executions > 0


async def test_execute_after_close_is_refused():
    ex = Executor(workers=1)
    await ex.start()
    await ex.aclose()
    from consumer.sandbox import ExecutorClosed

    with pytest.raises(ExecutorClosed):
        await ex.execute(make_request("function handler() {}"))


async def test_a_killed_process_leaves_no_slot_file_behind(tmp_path):
    # The worker maps its slot before it says ready; the file's name goes then, so a daemon
    # killed with SIGKILL (no clean shutdown) leaves nothing in /dev/shm.
    code = (
        "import asyncio, sys\n"
        "from consumer.sandbox import Executor\n"
        "async def main():\n"
        "    ex = Executor(workers=1)\n"
        "    await ex.start()\n"
        "    print(ex._workers[0].slot.path, flush=True)\n"
        "    await asyncio.Event().wait()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        path = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert path and not os.path.exists(path)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert not os.path.exists(path)


@pytest.mark.parametrize("how", ["cancelled", "failed"])
async def test_a_start_cut_short_leaves_no_slot_file_behind(monkeypatch, how):
    from consumer.sandbox import process
    from consumer.sandbox.errors import WorkerStartError
    from consumer.sandbox.slot import Slot

    made: list[str] = []
    create = Slot.create

    def recorded() -> Slot:
        slot = create()
        made.append(slot.path)
        return slot

    monkeypatch.setattr(process.Slot, "create", staticmethod(recorded))
    settings = process.WorkerSettings(2 << 30, 4, 100,
                                      start_timeout_s=0.0 if how == "failed" else 30.0)
    spawn = asyncio.ensure_future(process.WorkerProcess.spawn(
        0, settings, lambda *_: None, lambda *_: None))
    if how == "cancelled":
        await eventually(lambda: bool(made), timeout=10, what="the slot made")
        spawn.cancel()
        with pytest.raises(asyncio.CancelledError):
            await spawn
    else:
        with pytest.raises(WorkerStartError):
            await spawn
    assert made and not os.path.exists(made[0])
