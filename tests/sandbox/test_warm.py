"""Warm-ups (Executor.warm, protocol.Warm): on a wake-up, an idle worker wakes its engine
before the run comes. A warm-up evaluates "0" in the idle context used last: it runs nothing
of the script, changes nothing a run sees, and is never sent to a worker that has work."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from support.sandbox_requests import make_request

from consumer.sandbox import Executor
from consumer.sandbox import executor as executor_module

pytestmark = pytest.mark.asyncio(loop_scope="session")

COUNTING = "let n = 0; function handler() { n += 1; return n; }"
SLOW = "async function handler() { await new Promise((r) => setTimeout(r, 300)); return 1; }"


@pytest.fixture
def always_warm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(executor_module, "WARM_AFTER_S", 0.0)  # every wake-up warms


async def test_a_warm_up_runs_nothing_of_the_script(executor: Executor, always_warm: None):
    sent = executor.warmups
    outputs = []
    for _ in range(8):
        result = await executor.execute(make_request(COUNTING, script="warm-counting"))
        assert result.status == "completed", result
        outputs.append(result.output)
        for _ in range(3):
            executor.warm()
    assert executor.warmups > sent
    # each run counts once in its context (a new context starts again at 1): a warm-up that
    # ran the handler, or any of the script, would have counted too
    assert all(b in (a + 1, 1) for a, b in itertools.pairwise(outputs)), outputs
    assert outputs[-1] > 1  # the context was reused across the warm-ups


async def test_no_warm_up_goes_to_a_worker_that_has_work(always_warm: None):
    async with Executor(workers=2) as ex:  # its own: the shared one may be mid-respawn
        slow = [ex.submit(make_request(SLOW, script=f"warm-slow-{i}")) for i in range(2)]
        assert all(w.inflight for w in ex._workers if w is not None)  # both busy
        for _ in range(5):
            ex.warm()
        assert ex.warmups == 0
        assert [r.status for r in await asyncio.gather(*slow)] == ["completed"] * 2
        ex.warm()  # idle again: now it goes
        assert ex.warmups == 1


async def test_a_warm_up_before_any_context_or_after_close_is_harmless(always_warm: None):
    async with Executor(workers=1) as ex:
        ex.warm()  # nothing idle in the worker yet
        result = await ex.execute(make_request("function handler(i) { return i * 2 }", 21))
        assert (result.status, result.output) == ("completed", 42)
    ex.warm()  # closed: nothing is sent, nothing raises
