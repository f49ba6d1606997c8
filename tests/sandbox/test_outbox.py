"""The prelude's outbox read into typed values: what prelude.js writes parses, and anything else
(a script that reached the prelude's machinery can make collect() say anything) raises
RuntimeCorrupted, never an exception the runner does not expect."""

from __future__ import annotations

import json
from typing import Any

import pytest

from consumer.sandbox.errors import RuntimeCorrupted
from consumer.sandbox.outbox import (
    BatchState,
    HostCall,
    Outbox,
    Returned,
    Threw,
    TooLarge,
)

SETTLED = [1, [1, '{"ok":true}'], [], [["log", "hi", 1700000000000]], -1, 0]
WAITING = [0, None, [[1, "publish", '["t",null]'], [2, "fetch", "[{}]"]], [], 12.5, 2]


def test_what_the_prelude_writes_parses():
    done = Outbox.from_json(json.dumps(SETTLED))
    assert done == Outbox(True, Returned('{"ok":true}'), [], [["log", "hi", 1700000000000]],
                          -1, 0)
    assert done.quick() and not done.leftover()
    waiting = Outbox.parse(WAITING)
    assert waiting.calls == [HostCall(1, "publish", '["t",null]'), HostCall(2, "fetch", "[{}]")]
    assert not waiting.settled and waiting.result is None
    assert not waiting.quick() and waiting.leftover()
    assert Outbox.parse([1, [2, 5000], [], [], -1, 0]).result == TooLarge(5000)
    assert Outbox.parse([1, [0, ["TypeError", "x", "at y"]], [], [], -1, 0]).result == Threw(
        "TypeError", "x", "at y")
    timer_left = Outbox.parse([1, [1, "1"], [], [], 0, 0])
    assert not timer_left.quick() and timer_left.leftover()


def _with(index: int, value: Any) -> list[Any]:
    raw = list(SETTLED)
    raw[index] = value
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        5,
        None,
        {"settled": 1},
        SETTLED[:5],
        [*SETTLED, 0],
        _with(0, True),
        _with(0, 2),
        _with(0, 0),  # a result, yet not settled
        _with(1, None),  # settled without a result
        _with(1, [1]),
        _with(1, [1, 5]),  # the output is JSON *text*
        _with(1, [2, "5000"]),
        _with(1, [0, ["TypeError", "x"]]),
        _with(1, [0, ["TypeError", "x", None]]),
        _with(1, [3, "x"]),
        _with(1, ["1", "x"]),
        _with(2, None),
        _with(2, [[1, "fetch"]]),
        _with(2, [[1, 2, "[]"]]),  # an op that is no text never reaches the parent
        _with(2, [[1, "fetch", {}]]),
        _with(2, [["1", "fetch", "[]"]]),
        _with(3, "logs"),
        _with(4, None),  # what JSON.stringify makes of Infinity
        _with(4, "1"),
        _with(5, 0.5),
        _with(5, None),
    ],
)
def test_a_malformed_outbox_is_a_corrupted_runtime(raw):
    with pytest.raises(RuntimeCorrupted) as caught:
        Outbox.parse(raw)
    assert str(caught.value) == "sandbox runtime corrupted by the script"


@pytest.mark.parametrize("text", ["", "undefined", "[1,", "[" * 5000 + "]" * 5000])
def test_text_that_is_no_outbox_is_a_corrupted_runtime(text):
    with pytest.raises(RuntimeCorrupted):
        Outbox.from_json(text)


def test_a_batch_state_accounts_for_every_run_in_order():
    raw = [[[1, SETTLED], [2, SETTLED], [3, WAITING]], [4, 5]]
    state = BatchState.from_json(json.dumps(raw), [1, 2, 3, 4, 5])
    assert [seq for seq, _ in state.finished] == [1, 2]
    assert state.current == (3, Outbox.parse(WAITING))
    assert state.not_started == [4, 5]
    alone = BatchState.parse([[[1, WAITING]], []], [1])
    assert (alone.finished, alone.current[0], alone.not_started) == ([], 1, [])


@pytest.mark.parametrize(
    "raw",
    [
        5,
        [[], [1, 2]],  # no run ran at all
        [[[1, SETTLED]]],
        [[[1, SETTLED], [2, SETTLED]], [3]],  # seq 3 of [1, 2] is not in the batch
        [[[2, SETTLED], [1, SETTLED]], []],  # out of order
        [[[1, SETTLED]], [2, 2]],
        [[[1, SETTLED]], []],  # seq 2 is missing
        [[[1, WAITING], [2, SETTLED]], []],  # the chain went on after a run that had not ended
        [[[1, SETTLED], [2, [0]]], []],
        [[[1, SETTLED, 0], [2, SETTLED]], []],
        [[["1", SETTLED], [2, SETTLED]], []],
        [[[1, SETTLED], [2, SETTLED]], "rest"],
    ],
)
def test_a_malformed_batch_state_is_a_corrupted_runtime(raw):
    with pytest.raises(RuntimeCorrupted):
        BatchState.parse(raw, [1, 2])
