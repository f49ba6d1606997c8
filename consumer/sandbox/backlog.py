"""The executor's backlog: runs (and serial groups) waiting for a worker, a queue per tenant,
served round-robin.

A single first-come queue let one tenant's runs stand in front of everybody: a tenant with a
backlog of its own had every other tenant's run wait behind all of it, and when that tenant
held what it may hold of the sandbox, nothing behind it could start. Here each tenant's items
keep their order; the tenants take turns, one item each; a tenant that may not place anything
now (its share of the workers is full) is passed over; and an item that waits for any worker
(nothing has room, or a re-run waits for an idle worker) stops the round, as before: nothing
overtakes it.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar


class Placement(enum.Enum):
    PLACED = "placed"  # on a worker (or nothing left of it): out of the backlog
    TENANT_WAITS = "tenant_waits"  # its tenant cannot place anything now: the others go on
    FULL = "full"  # it waits for any worker: the round stops


class Item(Protocol):
    @property
    def tenant(self) -> str: ...


T = TypeVar("T", bound=Item)


class Backlog(Generic[T]):
    def __init__(self) -> None:
        # tenants with items waiting, in the order of their turns (a dict keeps insertion order)
        self._queues: dict[str, deque[T]] = {}

    def __bool__(self) -> bool:
        return bool(self._queues)

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def __iter__(self) -> Iterator[T]:
        for queue in list(self._queues.values()):
            yield from list(queue)

    def append(self, item: T) -> None:
        self._queues.setdefault(item.tenant, deque()).append(item)

    def appendleft(self, item: T) -> None:
        """First in its tenant's line (given back, or to be re-run)."""
        self._queues.setdefault(item.tenant, deque()).appendleft(item)

    def remove(self, item: T) -> None:
        queue = self._queues.get(item.tenant)
        if queue is not None and item in queue:
            queue.remove(item)
            if not queue:
                del self._queues[item.tenant]

    def popleft(self) -> T:
        tenant, queue = next(iter(self._queues.items()))
        item = queue.popleft()
        if not queue:
            del self._queues[tenant]
        return item

    def drain(self, place: Callable[[T], Placement]) -> None:
        """Offer each tenant's first item in turn until nothing more can be placed."""
        placed = True
        while placed and self._queues:
            placed = False
            for tenant in list(self._queues):
                queue = self._queues.get(tenant)
                if not queue:
                    continue
                outcome = place(queue[0])
                if outcome is Placement.FULL:
                    return
                if outcome is Placement.PLACED:
                    queue.popleft()
                    placed = True
                    del self._queues[tenant]  # its next item: at the back of the round
                    if queue:
                        self._queues[tenant] = queue
