"""The daemon's slot policy alone (consumer/slots.py): what it claims, starts and gives back."""

from __future__ import annotations

import dataclasses
import json
import uuid

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.records import Run
from consumer.sandbox import Limits
from consumer.slots import MAX_GROUP, SideHints, Slots

S1, S2 = uuid.uuid4(), uuid.uuid4()


def run(script: uuid.UUID, n: int = 0) -> Run:
    return Run(uuid.uuid4(), uuid.uuid4(), script, "function handler(){}", "v1", Limits(),
               json.dumps({"n": n}), "event", {"attempt": 1}, uuid.uuid4(), None, 0)


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_grant_is_room_to_refill_and_groups_share_the_queue_over_idle_slots() -> None:
    slots = Slots(capacity=8, reserve=4, period=10)
    slots.granted(S1, 3)
    assert (slots.held(), slots.free()) == (3, 5)
    assert slots.refill() == {S1: 12}
    for i in range(10):
        assert slots.reserved(run(S1, i))
    groups = slots.next_groups()
    # 10 runs over 3 idle slots: 4, 3, 3 - in order
    assert [len(g) for _, g in groups] == [4, 3, 3]
    assert [json.loads(r.input_json)["n"] for _, g in groups for r in g] == list(range(10))
    assert slots.busy() == 3 and slots.next_groups() == []  # one group per slot at a time


def test_groups_are_at_most_max_group_runs() -> None:
    slots = Slots(capacity=4, reserve=100, period=10)
    slots.granted(S1, 1)
    for i in range(MAX_GROUP * 2 + 1):
        slots.reserved(run(S1, i))
    [(_, group)] = slots.next_groups()
    assert len(group) == MAX_GROUP
    slots.group_done(S1)
    [(_, group)] = slots.next_groups()
    assert len(group) == MAX_GROUP


def test_a_run_for_a_script_without_slots_is_refused_for_giving_back() -> None:
    slots = Slots(capacity=4, reserve=4, period=10)
    assert not slots.reserved(run(S1))
    slots.granted(S1, 1)
    assert slots.reserved(run(S1))


def test_refill_is_wanted_when_a_queue_is_half_empty_and_its_script_not_dry() -> None:
    slots = Slots(capacity=4, reserve=4, period=10)
    slots.granted(S1, 1)  # target 4
    assert slots.wants_refill()
    for i in range(3):
        slots.reserved(run(S1, i))
    assert not slots.wants_refill()  # 3 of 4 queued
    slots.next_groups()  # all 3 in one group
    assert slots.wants_refill()
    slots.filled({S1: 4}, {S1: 1})  # asked 4, got 1: nothing more pending for now
    assert not slots.wants_refill()
    slots.hint()  # a notification: ask again
    assert slots.wants_refill()


def test_idle_slots_go_back_only_when_their_script_has_nothing_more() -> None:
    slots = Slots(capacity=4, reserve=4, period=10)
    slots.granted(S1, 2)
    slots.reserved(run(S1))
    slots.next_groups()
    # one slot idle, queue empty - but the script may have more: keep it for the refill
    assert slots.releases() == {}
    slots.filled({S1: 8}, {})
    assert slots.releases() == {S1: 1}
    assert slots.held() == 1
    slots.group_done(S1)
    assert slots.releases() == {S1: 1}
    assert slots.idle() and slots.held() == 0


def test_a_dry_lease_keeps_one_slot_for_its_linger_then_gives_it_back() -> None:
    clock = Clock()
    slots = Slots(capacity=8, reserve=4, period=10, clock=clock, linger=0.5)
    slots.granted(S1, 3)
    slots.reserved(run(S1))
    slots.next_groups()
    slots.filled({S1: 12}, {S1: 1})
    assert slots.releases() == {S1: 2}  # the busy slot is the one kept
    clock.t = 0.1
    slots.group_done(S1)
    assert slots.releases() == {} and slots.held() == 1
    assert slots.next_release() == 0.6  # its last run ended at 0.1
    # the script's next event: the claim reserves its run through the kept slot, no grant
    slots.hint()
    assert slots.refill() == {S1: 4}
    clock.t = 0.3
    assert slots.reserved(run(S1, 1))
    [(_, [again])] = slots.next_groups()
    assert json.loads(again.input_json)["n"] == 1
    slots.group_done(S1)
    slots.filled({S1: 4}, {})
    clock.t = 0.7
    slots.hint()  # a poll tick finds nothing: it does not extend the linger
    slots.filled({S1: 4}, {})
    assert slots.releases() == {}
    clock.t = 0.8
    assert slots.releases() == {S1: 1}
    assert slots.idle() and slots.next_release() is None


def test_a_lease_lingers_within_its_period_only() -> None:
    clock = Clock()
    slots = Slots(capacity=8, reserve=4, period=1.0, clock=clock, linger=5.0)
    slots.granted(S1, 1)
    slots.filled({S1: 4}, {})
    assert slots.releases() == {} and slots.next_release() == 1.0
    clock.t = 1.0
    assert slots.releases() == {S1: 1}


def test_nothing_lingers_while_the_daemon_holds_more_than_half_its_capacity() -> None:
    slots = Slots(capacity=4, reserve=4, period=10, linger=5.0)
    slots.granted(S1, 1)
    slots.granted(S2, 2)
    for script in (S1, S2):
        slots.reserved(run(script))
    slots.next_groups()
    for script in (S1, S2):
        slots.group_done(script)
    slots.filled({S1: 4, S2: 8}, {})
    assert slots.releases() == {S1: 1, S2: 2}  # 3 of 4 held: all of it goes back


def test_without_linger_a_dry_lease_gives_everything_back() -> None:
    slots = Slots(capacity=8, reserve=4, period=10, linger=0.0)
    slots.granted(S1, 2)
    slots.filled({S1: 8}, {})
    assert slots.releases() == {S1: 2} and slots.next_release() is None


def test_a_lease_past_its_period_is_drained_never_refilled_then_granted_afresh() -> None:
    clock = Clock()
    slots = Slots(capacity=4, reserve=2, period=1.0, clock=clock)
    slots.granted(S1, 1)
    slots.reserved(run(S1))
    clock.t = 1.5
    assert slots.refill() == {} and not slots.wants_refill()
    assert len(slots.next_groups()) == 1  # what is queued still runs
    slots.group_done(S1)
    assert slots.releases() == {S1: 1}  # then its slot goes back to the round
    slots.granted(S1, 1)  # taken again: a new period
    assert slots.refill() == {S1: 2}


def test_lost_leases_are_forgotten_with_their_queue() -> None:
    slots = Slots(capacity=4, reserve=2, period=10)
    slots.granted(S1, 1)
    slots.granted(S2, 1)
    slots.reserved(run(S1))
    assert len(slots.lost([S1])) == 1
    assert slots.scripts() == [S2]


def test_a_group_of_a_lost_lease_ending_never_frees_a_slot_of_the_new_lease() -> None:
    slots = Slots(capacity=4, reserve=2, period=10)
    slots.granted(S1, 1)
    slots.reserved(run(S1))
    assert len(slots.next_groups()) == 1  # the one slot runs a group
    slots.lost([S1])  # the lease went (a rescue), the group still runs
    slots.granted(S1, 1)  # a new lease of one slot
    slots.reserved(run(S1, 1))
    assert len(slots.next_groups()) == 1  # its slot is busy now
    slots.group_done(S1)  # the old group ends: the new lease's slot is still busy
    slots.reserved(run(S1, 2))
    assert slots.next_groups() == []
    slots.group_done(S1)  # the new group ends
    assert len(slots.next_groups()) == 1


def test_drain_takes_every_queued_run_and_stops_refills() -> None:
    slots = Slots(capacity=4, reserve=4, period=10)
    slots.granted(S1, 1)
    runs = [run(S1, i) for i in range(3)]
    for r in runs:
        slots.reserved(r)
    assert slots.drain() == runs
    assert slots.refill() == {} and slots.next_groups() == []


def test_reserve_per_slot_keeps_local_queues_bounded() -> None:
    slots = Slots(capacity=256, reserve=16, period=10)
    assert slots.reserve_per_slot(4) == 16
    assert slots.reserve_per_slot(256) == 4  # 1024 runs at most for one claim's slots
    assert slots.reserve_per_slot(0) == 16


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["grant", "reserve", "start", "done", "release",
                                            "dry", "drain"]),
                          st.integers(0, 1), st.integers(1, 5)), max_size=60))
def test_never_more_groups_in_progress_than_slots_held(  # noqa: C901 - one branch per step
        steps: list[tuple[str, int, int]]) -> None:
    """Whatever the order of events, a script never has more groups in progress than the
    slots held of it, and the daemon never holds more than its capacity."""
    scripts = (S1, S2)
    slots = Slots(capacity=6, reserve=3, period=10)
    busy = {S1: 0, S2: 0}
    for op, which, n in steps:
        s = scripts[which]
        if op == "grant":
            n = min(n, slots.free())
            if n:
                slots.granted(s, n)
        elif op == "reserve":
            for _ in range(n):
                slots.reserved(run(s))
        elif op == "start":
            for script_id, _ in slots.next_groups():
                busy[script_id] += 1
        elif op == "done" and busy[s]:
            busy[s] -= 1
            slots.group_done(s)
        elif op == "release":
            slots.releases()
        elif op == "dry":
            slots.filled({s: 100}, {})
        elif op == "drain":
            slots.drain()
        for script_id in scripts:
            held = slots.of(script_id)
            assert busy[script_id] <= (held.slots if held else 0)
        assert slots.held() <= slots.capacity


def test_a_cancelled_run_is_dropped_from_its_local_queue() -> None:
    slots = Slots(capacity=4, reserve=4, period=10)
    slots.granted(S1, 1)
    queued = [run(S1, i) for i in range(3)]
    for r in queued:
        slots.reserved(r)
    assert slots.drop(queued[1].execution_id)
    assert not slots.drop(queued[1].execution_id)  # once
    assert not slots.drop(uuid.uuid4())
    [(_, group)] = slots.next_groups()
    assert [json.loads(r.input_json)["n"] for r in group] == [0, 2]


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(1, 300), held=st.integers(0, 300), backlog=st.booleans(),
       later=st.booleans())
def test_the_claim_and_the_side_claim_beside_it_never_ask_more_than_is_free(
        capacity: int, held: int, backlog: bool, later: bool) -> None:
    slots = Slots(capacity=capacity, reserve=4, period=10)
    if held:
        slots.granted(S1, held)
    asked = slots.claim_ask(backlog)
    side = slots.side_ask(asked)
    assert asked >= 0 and side >= 0
    assert asked + side <= slots.free()
    if later:  # the claim ended; the next one starts while that side claim is in flight
        assert slots.claim_ask(not backlog, side) + side <= slots.free()
    if not backlog:
        assert asked == slots.free()  # nothing kept back without a backlog in sight
    elif slots.free() > 0 and capacity >= 4:
        assert side > 0  # a quiet tenant's event gets a slot beside the backlog's claim


def test_a_side_claim_beside_one_that_asked_for_everything_takes_no_slot() -> None:
    slots = Slots(capacity=64, reserve=4, period=10)
    slots.granted(S1, 5)
    assert slots.claim_ask(backlog=True) == 55 and slots.side_ask(55) == 4
    assert slots.side_ask(slots.claim_ask(backlog=False)) == 0


def test_a_side_claims_lease_is_one_shot_never_refilled_and_back_when_its_run_ends() -> None:
    clock = Clock()
    slots = Slots(capacity=64, reserve=4, period=10, clock=clock, linger=0.5)
    slots.granted(S1, 1, one_shot=True)
    assert slots.refill() == {}  # never refilled
    assert slots.reserved(run(S1))
    [(script, group)] = slots.next_groups()
    assert script == S1 and len(group) == 1
    assert slots.releases() == {}  # still running
    slots.group_done(S1)
    assert slots.releases() == {S1: 1}  # at once: no linger, no period
    assert slots.idle()
    # a one-shot grant beside a lease of the main claim adds slots, and leaves it open
    slots.granted(S2, 2)
    slots.granted(S2, 1, one_shot=True)
    assert slots.refill() == {S2: 12}


T1, T2, T3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def tenant_run(tenant: uuid.UUID) -> Run:
    return dataclasses.replace(run(S1), tenant_id=tenant)


def test_side_hints_serve_quiet_tenants_in_order_never_a_busy_one_nor_without_a_backlog(
) -> None:
    hints = SideHints(most=3, busy_runs=8)
    assert not hints.woke(T1)  # no backlog in sight: the claims take everything
    # a claim left a backlog: T1 had 8 runs in it (its own backlog), T2 one
    hints.claimed([*(tenant_run(T1) for _ in range(8)), tenant_run(T2)], True, 128)
    assert not hints.woke(T1) and not hints.woke(None)
    assert hints.woke(T2) and hints.woke(T3) and hints.woke(T2)  # (once in the set)
    assert [hints.next(), hints.next(), hints.next()] == [T2, T3, None]
    for t in (T2, T3, uuid.uuid4()):
        hints.woke(t)
    assert not hints.woke(uuid.uuid4())  # at most three remembered
    hints.claimed([], False, 128)  # no backlog left: the next claim takes what is due
    assert not hints and hints.next() is None


def test_a_tenant_is_busy_by_the_claims_per_tenant_share_when_it_is_small() -> None:
    hints = SideHints(busy_runs=8)
    hints.claimed([tenant_run(T1), tenant_run(T1)], True, 2)
    assert not hints.woke(T1)
