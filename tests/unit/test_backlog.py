"""The executor's backlog (consumer/sandbox/backlog.py): a queue per tenant, served in turn."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st

from consumer.sandbox.backlog import Backlog, Placement


@dataclass(eq=False)
class It:
    tenant: str
    n: int


def _names(items: list[It]) -> list[str]:
    return [f"{i.tenant}{i.n}" for i in items]


def test_tenants_take_turns_and_each_keeps_its_order() -> None:
    backlog: Backlog[It] = Backlog()
    for n in range(4):
        backlog.append(It("a", n))
    backlog.append(It("b", 0))
    backlog.appendleft(It("a", -1))  # given back: first in its tenant's line
    placed: list[It] = []

    def place(item: It) -> Placement:
        placed.append(item)
        return Placement.PLACED

    backlog.drain(place)
    assert _names(placed) == ["a-1", "b0", "a0", "a1", "a2", "a3"]
    assert not backlog and len(backlog) == 0


def test_a_tenant_that_must_wait_is_passed_and_a_full_sandbox_stops_the_round() -> None:
    backlog: Backlog[It] = Backlog()
    for tenant in "abc":
        for n in range(2):
            backlog.append(It(tenant, n))
    placed: list[It] = []

    def place(item: It) -> Placement:
        if item.tenant == "a":
            return Placement.TENANT_WAITS
        if len(placed) == 3:
            return Placement.FULL
        placed.append(item)
        return Placement.PLACED

    backlog.drain(place)
    assert _names(placed) == ["b0", "c0", "b1"]
    assert _names(list(backlog)) == ["a0", "a1", "c1"]
    backlog.remove(next(i for i in backlog if i.tenant == "c"))
    assert backlog.popleft().n == 0 and len(backlog) == 1


@given(st.lists(st.tuples(st.sampled_from("abc"), st.booleans()), max_size=30),
       st.integers(0, 30))
def test_every_item_once_in_its_tenants_order(adds: list[tuple[str, bool]], room: int) -> None:
    """Whatever is added (at the back, or first in its tenant's line) and however much room
    there is: what is placed is each tenant's items in their order, each once, and what is
    left is the rest."""
    backlog: Backlog[It] = Backlog()
    expected: dict[str, list[It]] = {}
    for n, (tenant, front) in enumerate(adds):
        item = It(tenant, n)
        if front:
            backlog.appendleft(item)
            expected.setdefault(tenant, []).insert(0, item)
        else:
            backlog.append(item)
            expected.setdefault(tenant, []).append(item)
    placed: list[It] = []

    def place(item: It) -> Placement:
        if len(placed) >= room:
            return Placement.FULL
        placed.append(item)
        return Placement.PLACED

    backlog.drain(place)
    assert len(placed) == min(room, len(adds))
    for tenant, items in expected.items():
        mine = [i for i in placed if i.tenant == tenant]
        assert mine == items[:len(mine)]
    assert sorted(id(i) for i in [*placed, *backlog]) == sorted(
        id(i) for items in expected.values() for i in items)
