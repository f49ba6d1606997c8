"""The daemon's slots: the leases it holds on scripts' max_concurrent_runs slots, each such
script's local queue of reserved runs, and the groups of runs it pushes through the slots.

A slot runs one group at a time, and a group's runs one after another (the executor's
serial groups), so a script never has more runs in progress here than the slots this daemon
holds of it, and the database counts those slots against the script's limit for every other
starter (jsrt_free_slots). Between two runs of a slot there is no round trip: the next group
starts when the last one ends, from the local queue, which claims refill in the background
once it is half empty.

Pure bookkeeping - no I/O, a monotonic clock injected - so that the policy is tested alone:
the daemon asks what to claim (`free`, `refill`), what to start (`next_groups`) and what to
give back (`releases`, `drain`).

Fairness: a lease is refilled for `period` seconds from its grant, then only drained; its
slots go back as they free, and the script competes for slots again, in the claim's random
round, with every other script that has pending runs.

Lingering: a lease whose queue ran dry gives back its idle slots but one, which it keeps for
`linger` seconds after its last run (within its period, and while the daemon holds no more
than half of what it may): a script whose events come one at a time then has its next run
reserved by the claim that fans the event out, without a grant in that claim and two
releases after it - about a millisecond of a lone event's latency on a small host, and three
writes of the lease per event.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from uuid import UUID

from consumer.records import Run

MAX_GROUP = 16  # runs per group: long enough to share steps, short enough to stay fair
MAX_QUEUE = 1024  # runs queued locally for one script, whatever its slots
SIDE_SLOTS = 4  # slots kept back from a claim fanning out a backlog, for the side claim
SIDE_HINTS = 64  # tenants remembered for side claims (more: the claims' random round)
SIDE_BUSY_RUNS = 8  # runs of one tenant in a claim that say it has a backlog of its own


@dataclass(eq=False)
class Held:
    """One script's lease on this daemon."""

    script_id: UUID
    since: float  # when it was granted (the period counts from here)
    slots: int = 0  # held in the database
    busy: int = 0  # slots running a group now
    queue: deque[Run] = field(default_factory=deque)
    dry: bool = False  # the last claim found fewer runs than there was room for
    worked_at: float = 0.0  # when a run was last queued or ended here (the linger counts from it)
    closing: bool = False  # past its period: drained, never refilled

    @property
    def idle(self) -> int:
        return self.slots - self.busy


class Slots:
    def __init__(self, capacity: int, reserve: int, period: float,
                 clock: Callable[[], float] = time.monotonic, max_group: int = MAX_GROUP,
                 max_queue: int = MAX_QUEUE, linger: float = 0.0) -> None:
        self.capacity = capacity  # slots this daemon may hold in all (JSRT_CONCURRENCY)
        self.reserve = reserve  # runs queued locally per slot held
        self.period = period
        self.linger = linger  # seconds a dry lease keeps one slot (0: none)
        self._clock = clock
        self._max_group = max_group
        self._max_queue = max_queue
        self._held: dict[UUID, Held] = {}
        # groups still running under a lease that was lost: their ends must not count off a
        # newer lease of the same script (it would seem to have a slot free that it has not)
        self._stale: dict[UUID, int] = {}

    # ------------------------------------------------------------ what is held
    def held(self) -> int:
        return sum(h.slots for h in self._held.values())

    def free(self) -> int:
        return max(self.capacity - self.held(), 0)

    def side_share(self) -> int:
        """Slots the side claim may take while a claim fans out a backlog: a new event of
        another script is run at once, not behind the backlog's next claim. None on a daemon
        too small to spare them (its side claim then only fans events out)."""
        return min(SIDE_SLOTS, self.capacity // 4)

    def claim_ask(self, backlog: bool, side: int = 0) -> int:
        """Free slots a claim may take: all of them, or with a backlog in sight (the side
        claim may run beside it) all but the side claim's share - and never those a side
        claim still in flight asked for (`side`)."""
        free = max(self.free() - side, 0)
        return max(free - self.side_share(), 0) if backlog else free

    def side_ask(self, claiming: int) -> int:
        """Free slots the side claim may take beside a claim that asked for `claiming`: the
        two never hold more than the daemon may."""
        return max(min(self.side_share(), self.free() - claiming), 0)

    def busy(self) -> int:
        return sum(h.busy for h in self._held.values())

    def queued(self) -> int:
        return sum(len(h.queue) for h in self._held.values())

    def idle(self) -> bool:
        """Nothing held: no slot, no queued run."""
        return not self._held

    def scripts(self) -> list[UUID]:
        return list(self._held)

    def of(self, script_id: UUID) -> Held | None:
        return self._held.get(script_id)

    # ------------------------------------------------------------ claiming
    def reserve_per_slot(self, slot_limit: int) -> int:
        """Runs to reserve for each slot a claim takes, within the local queue's bound."""
        return max(1, min(self.reserve, self._max_queue // max(slot_limit, 1)))

    def refill(self) -> dict[UUID, int]:
        """Room in the local queue of each script held and still in its period (what a claim
        may reserve for it, from its pending runs or from new events)."""
        self._close_expired()
        return {h.script_id: room for h in self._held.values()
                if not h.closing and (room := self._target(h) - len(h.queue)) > 0}

    def wants_refill(self) -> bool:
        """Whether a claim is worth its round trip for the local queues alone: one of them is
        half empty, and its script may have pending runs."""
        self._close_expired()
        return any(not h.closing and not h.dry and 2 * len(h.queue) <= self._target(h)
                   for h in self._held.values())

    def hint(self) -> None:
        """Something may have been queued (a notification, a poll tick): ask again."""
        for h in self._held.values():
            h.dry = False

    def granted(self, script_id: UUID, slots: int, one_shot: bool = False) -> None:
        """Slots a claim took. One-shot (a side claim's, for the events it fanned out): a new
        lease is never refilled and goes back as its runs end, so that the side claim's share
        is only lent to a quiet tenant's event, never held for a period."""
        h = self._held.get(script_id)
        if h is None:
            h = self._held[script_id] = Held(script_id, self._clock(), closing=one_shot)
        elif h.closing and not one_shot:  # granted again in the claim's round: a new period
            h.closing, h.since = False, self._clock()
        h.slots += slots
        h.worked_at = self._clock()

    def reserved(self, run: Run) -> bool:
        """Queue a run the claim reserved; False when this daemon holds no slot of its script
        (its lease was given back while the claim ran): the run must be given back too."""
        h = self._held.get(run.script_id)
        if h is None or h.slots <= 0:
            return False
        h.queue.append(run)
        h.worked_at = self._clock()
        return True

    def filled(self, asked: Mapping[UUID, int], got: Mapping[UUID, int],
               more: bool = False) -> None:
        """After a claim: a script that got less than its room has no more pending runs
        for now (until a hint) - unless the claim left due events behind (`more`: it was
        cut short by its own bounds, and the next claim may bring the script's)."""
        if more:
            return
        for script_id, room in asked.items():
            h = self._held.get(script_id)
            if h is not None and got.get(script_id, 0) < room:
                h.dry = True

    def lost(self, scripts: Iterable[UUID]) -> list[Run]:
        """Leases the database no longer has (a rescue took them, or the script is gone):
        forgotten, their queued runs too (no longer this daemon's to run or to give back)."""
        dropped: list[Run] = []
        for script_id in scripts:
            h = self._held.pop(script_id, None)
            if h is not None:
                dropped.extend(h.queue)
                if h.busy:
                    self._stale[script_id] = self._stale.get(script_id, 0) + h.busy
        return dropped

    # ------------------------------------------------------------ running
    def next_groups(self, held_back: Callable[[UUID], bool] | None = None
                    ) -> list[tuple[UUID, list[Run]]]:
        """Groups to start now, one per idle slot with queued runs: the queue is shared out
        evenly over the idle slots, at most MAX_GROUP runs a group; none of the scripts
        `held_back` says must wait (their results are still being written)."""
        out: list[tuple[UUID, list[Run]]] = []
        for h in self._held.values():
            if held_back is not None and h.queue and held_back(h.script_id):
                continue
            while h.idle > 0 and h.queue:
                size = min(-(-len(h.queue) // h.idle), self._max_group)
                out.append((h.script_id, [h.queue.popleft() for _ in range(size)]))
                h.busy += 1
        return out

    def group_done(self, script_id: UUID) -> None:
        stale = self._stale.get(script_id, 0)
        if stale:  # (an end counted off the old lease first: never a slot seen free too soon)
            if stale == 1:
                del self._stale[script_id]
            else:
                self._stale[script_id] = stale - 1
            return
        h = self._held.get(script_id)
        if h is not None and h.busy > 0:
            h.busy -= 1
            h.worked_at = self._clock()

    def releases(self) -> dict[UUID, int]:
        """Slots to give back now: idle ones of scripts with nothing queued and nothing more
        to reserve (the last claim found none, or the lease's period is over). A script with
        no slot left is forgotten (a later grant starts a new period)."""
        out: dict[UUID, int] = {}
        self._close_expired()
        now = self._clock()
        may_linger = 2 * self.held() <= self.capacity
        for script_id, h in list(self._held.items()):
            # A queue that ran empty while its script may have more is refilled by the next
            # claim: its slots wait for that (giving them back would only take them again).
            if h.queue or h.idle <= 0 or not (h.dry or h.closing):
                continue
            lingers = (not h.closing and may_linger and now - h.worked_at < self.linger)
            give = h.idle - max(0, 1 - h.busy) if lingers else h.idle
            if give <= 0:
                continue
            out[script_id] = give
            h.slots -= give
            if h.slots == 0:
                del self._held[script_id]
        return out

    def next_release(self) -> float | None:
        """When a lingering lease's slot is next due back (a monotonic time), if any: the
        daemon wakes then to give it back."""
        if self.linger <= 0:
            return None
        due = [min(h.worked_at + self.linger, h.since + self.period)
               for h in self._held.values()
               if h.dry and not h.closing and not h.queue and h.idle > 0]
        return min(due) if due else None

    def drop(self, execution_id: UUID) -> bool:
        """Take a queued run out of its local queue (it was cancelled): True if it was there."""
        for h in self._held.values():
            for run in h.queue:
                if run.execution_id == execution_id:
                    h.queue.remove(run)
                    return True
        return False

    def drain(self) -> list[Run]:
        """Stopping: every queued run (to give back), and no refill from now on."""
        runs: list[Run] = []
        for h in self._held.values():
            runs.extend(h.queue)
            h.queue.clear()
            h.closing = True
        return runs

    # ------------------------------------------------------------ policy
    def _target(self, h: Held) -> int:
        return min(h.slots * self.reserve, self._max_queue)

    def _close_expired(self) -> None:
        now = self._clock()
        for h in self._held.values():
            if not h.closing and now - h.since >= self.period:
                h.closing = True


class SideHints:
    """Which tenants side claims serve: those whose notifications came while the claims fan
    out a backlog, in the order they came (an ordered set, bounded), except tenants with a
    backlog of their own (as many runs in the last claim as a busy tenant has: the claims
    serve them). A notification that names no tenant asks for nothing. Pure bookkeeping."""

    def __init__(self, most: int = SIDE_HINTS, busy_runs: int = SIDE_BUSY_RUNS) -> None:
        self.backlog = False  # the last claim left due events behind
        self._most = most
        self._busy_runs = busy_runs
        self._tenants: dict[UUID, None] = {}
        self._busy: frozenset[UUID] = frozenset()

    def __bool__(self) -> bool:
        return bool(self._tenants)

    def claimed(self, runs: Iterable[Run], more: bool, per_tenant: int) -> None:
        """After a claim (not a side claim): its runs, and whether it left due events."""
        self.backlog = more
        busy = max(1, min(self._busy_runs, per_tenant))
        counts = Counter(run.tenant_id for run in runs)
        self._busy = frozenset(t for t, n in counts.items() if n >= busy)
        if not more:  # the next claim takes whatever is due
            self._tenants.clear()

    def woke(self, tenant: UUID | None) -> bool:
        """A notification of this tenant's event: True when it wants a side claim."""
        if (not self.backlog or tenant is None or tenant in self._busy
                or len(self._tenants) >= self._most):
            return False
        self._tenants[tenant] = None
        return True

    def next(self) -> UUID | None:
        """The tenant the next side claim serves (taken off the set)."""
        tenant = next(iter(self._tenants), None)
        if tenant is not None:
            del self._tenants[tenant]
        return tenant
