"""What a step hands back from the context: the prelude's outbox, read once into typed values.

After every step the worker evaluates `collect()` (or `collectMany()` after a batch), whose JSON
text is written by prelude.js (`outbox()`):

    outbox  [settled, result, calls, logs, next_timer_ms, pending_calls]
    result  null (not settled) | [1, output_json] | [2, output_bytes] | [0, [name, message, stack]]
    calls   [[call_id, op, args_json], ...]: host calls the step started
    batch   [[[seq, outbox], ...], [seq, ...]]: the runs that ran, then those never started

That text comes out of the script's own context, and a script that reaches the prelude's
machinery (`Array.prototype.toJSON`, say) can make it say anything. So it is checked here, and
anything but that shape raises RuntimeCorrupted: the execution fails with that error's message,
and its context is closed. Nothing a corrupted context says reaches the parent unchecked.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from consumer.sandbox.errors import RuntimeCorrupted
from consumer.sandbox.protocol import loads


class Returned(NamedTuple):
    """[1, output_json]: the handler's value as JSON text (its size and storability are
    checked again by the worker: see runner.output_problem)."""

    output_json: str


class TooLarge(NamedTuple):
    """[2, size]: the output's size in UTF-8 bytes, over the run's limit (its text stays in
    the context)."""

    size: int


class Threw(NamedTuple):
    """[0, [name, message, stack]]: the handler threw, or its promise rejected; `name` and
    `stack` are "" for a thrown value that is not an Error."""

    name: str
    message: str
    stack: str


Result = Returned | TooLarge | Threw


class HostCall(NamedTuple):
    """[call_id, op, args_json]: a host call the step started (sent on as a protocol.Call)."""

    call_id: int
    op: str
    args_json: str


class Outbox(NamedTuple):
    """What one run has to say after a step."""

    settled: bool
    result: Result | None  # None until settled
    calls: list[HostCall]
    logs: list[Any]  # console lines as the context wrote them: Job.add_logs caps and cleans
    next_timer_ms: float  # until the earliest timer is due; -1: no timer
    pending_calls: int  # host calls not answered yet

    @classmethod
    def from_json(cls, text: str) -> Outbox:
        return cls.parse(_loads(text))

    @classmethod
    def parse(cls, raw: Any) -> Outbox:
        if type(raw) is not list or len(raw) != 6:
            raise RuntimeCorrupted
        settled, result, calls, logs, next_timer_ms, pending_calls = raw
        if type(settled) is not int or settled not in (0, 1):
            raise RuntimeCorrupted
        # A run has a result exactly when it has settled.
        if (result is None) == bool(settled):
            raise RuntimeCorrupted
        if type(next_timer_ms) not in (int, float) or type(pending_calls) is not int:
            raise RuntimeCorrupted
        if type(calls) is not list or type(logs) is not list:
            raise RuntimeCorrupted
        return cls(bool(settled), None if result is None else _result(result),
                   [_host_call(c) for c in calls], logs, next_timer_ms, pending_calls)

    def quick(self) -> bool:
        """Did the run end within this step, cleanly, with nothing left pending?"""
        return (type(self.result) is Returned and not self.calls and self.next_timer_ms < 0
                and not self.pending_calls)

    def leftover(self) -> bool:
        """A timer or a host call is still pending: the context is not reused after it."""
        return self.next_timer_ms >= 0 or self.pending_calls > 0


class BatchState(NamedTuple):
    """What a batch step (`runMany`, then `collectMany`) says of its runs, in batch order."""

    finished: list[tuple[int, Outbox]]  # (seq, outbox): ended cleanly within the step
    current: tuple[int, Outbox]  # the run in progress when the step ended (or that broke it)
    not_started: list[int]  # seqs of the runs the step never reached
    # when each finished run ended, in the engine clock's milliseconds since the step began
    # (integers: Date.now()); the next run began then
    ends_ms: Sequence[float] = ()

    @classmethod
    def from_json(cls, text: str, seqs: Sequence[int]) -> BatchState:
        return cls.parse(_loads(text), seqs)

    @classmethod
    def parse(cls, raw: Any, seqs: Sequence[int]) -> BatchState:
        """`seqs`: the batch's runs, in the order they were given; the state must account for
        each of them once, in that order."""
        if type(raw) is not list or len(raw) not in (2, 3):
            raise RuntimeCorrupted
        ran, not_started = raw[0], raw[1]
        ends = raw[2] if len(raw) == 3 else None
        if type(ran) is not list or not ran or type(not_started) is not list:
            raise RuntimeCorrupted
        runs = []
        for item in ran:
            if type(item) is not list or len(item) != 2 or type(item[0]) is not int:
                raise RuntimeCorrupted
            runs.append((item[0], Outbox.parse(item[1])))
        if [seq for seq, _ in runs] + not_started != list(seqs):
            raise RuntimeCorrupted
        if not all(outbox.settled for _, outbox in runs[:-1]):  # the chain goes on only then
            raise RuntimeCorrupted
        if ends is None:
            ends = [0] * (len(runs) - 1)
        elif type(ends) is not list or len(ends) != len(runs) - 1 or not all(
                type(x) in (int, float) and x >= 0 for x in ends):
            raise RuntimeCorrupted
        return cls(runs[:-1], runs[-1], not_started, ends)


def _loads(text: str) -> Any:
    try:
        return loads(text)
    except (ValueError, RecursionError):  # not JSON, or nested past what Python parses
        raise RuntimeCorrupted from None


def _result(raw: Any) -> Result:
    if type(raw) is list and len(raw) == 2 and type(raw[0]) is int:
        kind, value = raw
        if kind == 1 and type(value) is str:
            return Returned(value)
        if kind == 2 and type(value) is int:
            return TooLarge(value)
        if (kind == 0 and type(value) is list and len(value) == 3
                and all(type(v) is str for v in value)):
            return Threw(*value)
    raise RuntimeCorrupted


def _host_call(raw: Any) -> HostCall:
    if (type(raw) is list and len(raw) == 3 and type(raw[0]) is int and type(raw[1]) is str
            and type(raw[2]) is str):
        return HostCall(*raw)
    raise RuntimeCorrupted
