"""The completer: records the results of a process's runs in batches - one statement when
nothing else is due, and whatever arrived meanwhile in the next - so that a result costs a
fraction of a round trip under load and none of its own when idle. With the results go, in
one more statement, the starts of runs that have been running a while (so that operators see
long runs as 'running' while they run; a short run is written once, when it ends) and the
slots the daemon gives back. A result the database refuses becomes a failure saying why
(recording.py); an unreachable database is waited out, shielded from cancellation, so that
a result is never lost to a shutdown."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import ParamSpec, TypeVar
from uuid import UUID

import anyio

from consumer import log, recording
from consumer.backoff import Backoff
from consumer.errors import StoreUnavailable
from consumer.records import Outcome
from consumer.store import Store

_LOG = log.get("jsrt.completer")

BATCH = 256
# What one statement carries at most, in characters of outputs, errors and console lines (an
# outcome larger than this goes alone): 256 outputs of 1 MiB were one 256 MiB statement.
BATCH_CHARS = 1 << 20
# A script whose unrecorded outcomes hold more than this starts no new runs until they are
# written (Completer.heavy): a script returning 1 MiB outputs ran faster than PostgreSQL
# stores them, and its results piled up in the daemon (529 MB after 3 s, without bound).
HELD_PER_SCRIPT = 4 << 20
# Slots a claim was taking at the moment they were to go back (jsrt_release_slots_v3 passes
# such a script over rather than wait): given back again after this long.
RELEASE_AGAIN_S = 0.02
# Called after each batch: the batch, and the outcomes as recorded (by execution id; a run no
# longer ours - rescued meanwhile - is missing).
OnRecorded = Callable[[Sequence[Outcome], Sequence[Outcome]], None]
P = ParamSpec("P")
T = TypeVar("T")


class Completer:
    def __init__(self, store: Store, owner: str, on_recorded: OnRecorded,
                 on_released: Callable[[], None] | None = None,
                 on_room: Callable[[], None] | None = None) -> None:
        self.store = store
        self.owner = owner
        self._on_recorded = on_recorded
        self._on_released = on_released  # after slots given back are written
        self._on_room = on_room  # after a heavy script's outcomes are written (heavy())
        self._outcomes: deque[Outcome] = deque()
        self._sizes: deque[int] = deque()  # each outcome's size (Outcome.chars), in step
        self._held: dict[UUID, int] = {}  # unrecorded characters, by script
        self._starts: dict[UUID, datetime] = {}  # runs to show as started, by execution
        self._releases: dict[UUID, int] = {}  # slots to give back, by script
        self._later: dict[UUID, int] = {}  # ... passed over by the last release: soon again
        self._later_due = 0.0  # (monotonic) when those go back
        self._arrived = anyio.Event()
        self._idle = anyio.Event()
        self._idle.set()
        self.unrecorded = 0  # outcomes given and not yet recorded

    def add(self, outcome: Outcome) -> None:
        size = outcome.chars()
        self._outcomes.append(outcome)
        self._sizes.append(size)
        script_id = outcome.run.script_id
        self._held[script_id] = self._held.get(script_id, 0) + size
        self.unrecorded += 1
        # its result says when it started: a start not yet written need not be
        self._starts.pop(outcome.run.execution_id, None)
        self._due()

    def heavy(self, script_id: UUID) -> bool:
        """The script's unrecorded outcomes hold more than HELD_PER_SCRIPT: start none of its
        runs until they are written (on_room says when)."""
        return self._held.get(script_id, 0) > HELD_PER_SCRIPT

    def started(self, execution_id: UUID, at: datetime) -> None:
        """Show a run of a local queue as started (it has been running a while)."""
        self._starts[execution_id] = at
        self._due()

    def release(self, script_id: UUID, slots: int) -> None:
        """Give `slots` of a script's lease back."""
        self._releases[script_id] = self._releases.get(script_id, 0) + slots
        self._due()

    def _due(self) -> None:
        self._idle = anyio.Event() if self._idle.is_set() else self._idle
        self._arrived.set()

    def _pending(self) -> bool:
        return bool(self._outcomes or self._starts or self._releases)

    async def run(self) -> None:
        while True:
            while not self._pending():
                if self._later:
                    with anyio.move_on_after(self._later_due - time.monotonic()):
                        await self._arrived.wait()
                else:
                    await self._arrived.wait()
                self._arrived = anyio.Event()
                self._again_if_due()
            if self._outcomes:
                await self._record_batch()
            self._again_if_due()  # (results arriving without a pause must not hold them back)
            if self._starts or self._releases:
                await self._mark_and_release()
            if not self._pending() and not self._later:
                self._idle.set()

    def _again_if_due(self) -> None:
        """Slots a release passed over go back with the next one, once RELEASE_AGAIN_S on."""
        if self._later and time.monotonic() >= self._later_due:
            for script_id, n in self._later.items():
                self._releases[script_id] = self._releases.get(script_id, 0) + n
            self._later.clear()

    async def flushed(self) -> None:
        """Until every outcome, start and release given so far is written."""
        await self._idle.wait()

    async def _record_batch(self) -> None:
        batch, sizes = self._take()
        try:
            recorded = await self._shielded(recording.complete, self.store, self.owner, batch)
        except Exception as exc:  # a bug in recording must not stop the process
            _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300],
                       executions=len(batch))
            recorded = []
        self.unrecorded -= len(batch)
        self._written(batch, sizes)
        try:
            self._on_recorded(batch, recorded)
        except Exception as exc:  # an observer's bug must not stop the recording
            _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300],
                       executions=len(batch))

    def _take(self) -> tuple[list[Outcome], list[int]]:
        """The next statement's outcomes: BATCH of them, BATCH_CHARS at most (one larger goes
        alone); those of scripts not held back (heavy) first, oldest first - a script whose
        results are slow to write never makes another script's result wait behind them."""
        batch: list[Outcome] = []
        sizes: list[int] = []
        chars = 0
        if not any(held > HELD_PER_SCRIPT for held in self._held.values()):  # the usual case
            while self._outcomes and len(batch) < BATCH and (
                    not batch or chars + self._sizes[0] <= BATCH_CHARS):
                chars += self._sizes[0]
                sizes.append(self._sizes.popleft())
                batch.append(self._outcomes.popleft())
            return batch, sizes
        rest: deque[tuple[Outcome, int]] = deque()
        for light in (True, False):
            queue = deque(zip(self._outcomes, self._sizes, strict=True)) if light else rest
            if not light:
                rest = deque()
            while queue:
                outcome, size = queue.popleft()
                fits = len(batch) < BATCH and (not batch or chars + size <= BATCH_CHARS)
                if fits and (not light or not self.heavy(outcome.run.script_id)):
                    batch.append(outcome)
                    sizes.append(size)
                    chars += size
                else:
                    rest.append((outcome, size))
        self._outcomes = deque(o for o, _ in rest)
        self._sizes = deque(n for _, n in rest)
        return batch, sizes

    def _written(self, batch: Sequence[Outcome], sizes: Sequence[int]) -> None:
        roomier = False
        for outcome, size in zip(batch, sizes, strict=True):
            script_id = outcome.run.script_id
            held = self._held[script_id]
            roomier = roomier or held > HELD_PER_SCRIPT >= held - size
            if held == size:
                del self._held[script_id]
            else:
                self._held[script_id] = held - size
        if roomier and self._on_room is not None:
            try:
                self._on_room()
            except Exception as exc:  # an observer's bug must not stop the recording
                _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300])

    async def _mark_and_release(self) -> None:
        starts, self._starts = self._starts, {}
        releases, self._releases = self._releases, {}
        try:
            later = await self._shielded(self.store.queue.mark_and_release, self.owner, starts,
                                         releases)
            if later and not self._later:
                self._later_due = time.monotonic() + RELEASE_AGAIN_S
            for script_id in later:
                self._later[script_id] = self._later.get(script_id, 0) + releases[script_id]
            if len(later) < len(releases) and self._on_released is not None:
                self._on_released()
        except Exception as exc:
            # Slots must go back, or the script keeps them while this process lives: they are
            # tried again (after a pause). Starts are only shown: they may be dropped.
            _LOG.error("completer_error", error=f"{type(exc).__name__}: {exc}"[:300],
                       starts=len(starts), releases=len(releases))
            for script_id, n in releases.items():
                self._releases[script_id] = self._releases.get(script_id, 0) + n
            await anyio.sleep(1.0)

    async def _shielded(self, call: Callable[P, Awaitable[T]], *args: P.args,
                        **kwargs: P.kwargs) -> T:
        backoff = Backoff()
        while True:
            try:
                with anyio.CancelScope(shield=True):
                    return await call(*args, **kwargs)
            except StoreUnavailable as exc:
                delay = backoff.next()
                _LOG.warning("database_unavailable", error=str(exc)[:200], retry_in_s=delay)
                await anyio.sleep(delay)

