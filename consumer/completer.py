"""The completer: records the results of a process's runs in batches - one statement when
nothing else is due, and whatever arrived meanwhile in the next - so that a result costs a
fraction of a round trip under load and none of its own when idle. A result the database
refuses becomes a failure saying why (recording.py); an unreachable database is waited out,
shielded from cancellation, so that a result is never lost to a shutdown."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import anyio

from consumer import log, recording
from consumer.backoff import Backoff
from consumer.errors import StoreUnavailable
from consumer.records import Outcome
from consumer.store import Store

_LOG = log.get("jsrt.completer")

BATCH = 256
# Called after each batch: the batch, and the outcomes as recorded (by execution id; a run no
# longer ours - rescued meanwhile - is missing).
OnRecorded = Callable[[Sequence[Outcome], Sequence[Outcome]], None]


class Completer:
    def __init__(self, store: Store, owner: str, on_recorded: OnRecorded) -> None:
        self.store = store
        self.owner = owner
        self._on_recorded = on_recorded
        self._outcomes: deque[Outcome] = deque()
        self._arrived = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self.unrecorded = 0  # outcomes given and not yet recorded (their slots are held)

    def add(self, outcome: Outcome) -> None:
        self._outcomes.append(outcome)
        self.unrecorded += 1
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._arrived.set()

    async def run(self) -> None:
        while True:
            while not self._outcomes:
                await self._arrived.wait()
                self._arrived = anyio.Event()
            batch = [self._outcomes.popleft() for _ in range(min(len(self._outcomes), BATCH))]
            try:
                recorded = await self._record(batch)
            except Exception as exc:  # a bug in recording must not stop the process
                _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300],
                           executions=len(batch))
                recorded = []
            self.unrecorded -= len(batch)
            try:
                self._on_recorded(batch, recorded)
            finally:
                if not self.unrecorded:
                    self._idle.set()

    async def flushed(self) -> None:
        """Until every outcome given so far is recorded."""
        await self._idle.wait()

    async def _record(self, batch: list[Outcome]) -> list[Outcome]:
        backoff = Backoff()
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    return await recording.complete(self.store, self.owner, batch)
            except StoreUnavailable as exc:
                delay = backoff.next()
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=delay)
                await anyio.sleep(delay)
