"""The worker pipe's messages: each one round-trips through the wire, and each kind's parse()
refuses what is not that message (the parent reads what a worker that runs tenants' code
wrote; a malformed message must get that worker killed, never raise into the daemon)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.sandbox import protocol
from consumer.sandbox.errors import ProtocolError
from consumer.sandbox.process import WorkerProcess
from consumer.sandbox.slot import Slot

RUN = protocol.Run(7, "tenant", "script", "v1", "function handler() {}", '{"a":1}',
                   '{"depth":0}', 1000, 1 << 20, 1 << 16, 0)
MESSAGES = [
    RUN,
    protocol.Ret(7, 3, True, {"status": 200, "body": "é\ud800"}),
    protocol.Ret(7, 4, False, ["RateLimitError", "rate limit exceeded"]),
    protocol.Revoke(7),
    protocol.Quit(),
    protocol.Ready(4242),
    protocol.Done(7, "completed", '{"ok":true}', None, None, [["log", "hi \ud800", 1.5]], 3,
                  4096, 1),
    protocol.Done(7, "failed", None, "TypeError: x", "at <anonymous>", [], 0, 0, 0),
    protocol.Call(7, 3, "fetch", '[{"url":"http://x"}]', 950),
    protocol.Revoked(7),
    protocol.Warm(),
]


def wire(message: protocol.Message) -> list[Any]:
    """What the other side decodes from the line `message` is sent as."""
    line = protocol.frame(message.encode())
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    return protocol.decode(line[:-1])


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_as_a_compact_array_tagged_first(message):
    fields = wire(message)
    assert isinstance(fields[0], str)
    side = protocol.to_worker if isinstance(message, protocol.ToWorker) else protocol.from_worker
    assert side(fields) == message
    assert type(side(fields)) is type(message)


def test_the_wire_shape_is_unchanged():
    assert RUN.encode() == ["run", 7, "tenant", "script", "v1", "function handler() {}",
                            '{"a":1}', '{"depth":0}', 1000, 1 << 20, 1 << 16, 0, 0]
    assert protocol.Done(1, "completed", "1", None, None, [], 2, 3, 4, 5.5, 6.0).encode() == [
        "done", 1, "completed", "1", None, None, [], 2, 3, 4, 5.5, 6.0]
    assert protocol.Ret(1, 2, True, "e").encode() == ["ret", 1, 2, 1, "e"]
    assert protocol.Ret(1, 2, False, ["Error", "m"]).encode() == ["ret", 1, 2, 0, ["Error", "m"]]
    assert protocol.Call(1, 2, "publish", "[]", 5).encode() == ["call", 1, 2, "publish", "[]", 5]
    assert protocol.Quit().encode() == ["quit"]
    assert protocol.Warm().encode() == ["warm"]
    assert protocol.frame(protocol.Revoke(9).encode()) == b'["revoke",9]\n'


def _run(**changes: Any) -> list[Any]:
    fields = RUN.encode()
    for name, value in changes.items():
        fields[protocol.Run._fields.index(name) + 1] = value
    return fields


@pytest.mark.parametrize(
    ("parse", "message"),
    [
        # RUN
        (protocol.Run.parse, RUN.encode()[:-1]),  # no chain
        (protocol.Run.parse, _run(chain="1")),
        (protocol.Run.parse, [*RUN.encode(), 0]),
        (protocol.Run.parse, _run(seq="7")),
        (protocol.Run.parse, _run(seq=True)),
        (protocol.Run.parse, _run(tenant_id=None)),
        (protocol.Run.parse, _run(source=["function handler() {}"])),
        (protocol.Run.parse, _run(time_ms=1000.0)),
        (protocol.Run.parse, _run(attempts=None)),
        # RET
        (protocol.Ret.parse, ["ret", 1, 2, 1]),
        (protocol.Ret.parse, ["ret", 1, 2, 1, "v", "extra"]),
        (protocol.Ret.parse, ["ret", 1, "2", 1, "v"]),
        (protocol.Ret.parse, ["ret", 1, 2, 2, "v"]),
        (protocol.Ret.parse, ["ret", 1, 2, True, "v"]),
        (protocol.Ret.parse, ["ret", 1, 2, 0, "boom"]),
        (protocol.Ret.parse, ["ret", 1, 2, 0, ["Error"]]),
        (protocol.Ret.parse, ["ret", 1, 2, 0, ["Error", 5]]),
        # REVOKE, QUIT, WARM
        (protocol.Revoke.parse, ["revoke"]),
        (protocol.Revoke.parse, ["revoke", "7"]),
        (protocol.Revoke.parse, ["revoke", 7, 8]),
        (protocol.Quit.parse, ["quit", 1]),
        (protocol.Warm.parse, ["warm", 1]),
        # READY
        (protocol.Ready.parse, ["ready"]),
        (protocol.Ready.parse, ["ready", 12.5]),
        (protocol.Ready.parse, ["ready", 1, 2]),
        # DONE (more in test_units.py)
        (protocol.Done.parse, ["done", 1, "completed", "1", None, None, [["log", "m"]], 1, 2, 3,
                               0.0, 0.0]),
        (protocol.Done.parse, ["done", 1, "completed", "1", None, None, [[5, "m", 1]], 1, 2, 3,
                               0.0, 0.0]),
        (protocol.Done.parse, ["done", 1, "completed", "1", None, None, [["log", "m", "1"]], 1, 2,
                               3, 0.0, 0.0]),
        (protocol.Done.parse, ["done", 1, ["completed"], "1", None, None, [], 1, 2, 3, 0.0, 0.0]),
        (protocol.Done.parse, ["done", 1, "failed", None, ["e"], None, [], 1, 2, 3, 0.0, 0.0]),
        # CALL
        (protocol.Call.parse, ["call", 1, 2, "fetch", "[]"]),
        (protocol.Call.parse, ["call", 1, 2, "fetch", "[]", 5, 6]),
        (protocol.Call.parse, ["call", 1, 2, 3, "[]", 5]),
        (protocol.Call.parse, ["call", 1, 2, "fetch", [], 5]),
        (protocol.Call.parse, ["call", 1, 2, "fetch", "[]", 5.5]),
        (protocol.Call.parse, ["call", None, 2, "fetch", "[]", 5]),
        # REVOKED
        (protocol.Revoked.parse, ["revoked"]),
        (protocol.Revoked.parse, ["revoked", None]),
    ],
)
def test_a_malformed_message_of_each_kind_is_a_protocol_error(parse, message):
    with pytest.raises(ProtocolError):
        parse(message)


@pytest.mark.parametrize(
    "message",
    [
        ["run", *RUN.encode()[1:]],  # the parent's message, coming from a worker
        ["quit"],
        ["nonsense", 1],
        [1, 2],
        [["done"], 1],
        ["done", 1, "completed"],
        ["call", 1, 2, "fetch", "[]", {"deep": [[[[]]]]}],
    ],
)
def test_the_parent_reads_only_worker_messages(message):
    with pytest.raises(ProtocolError):
        protocol.from_worker(message)


@pytest.mark.parametrize("message", [["done", *MESSAGES[6].encode()[1:]], ["ready", 1], ["x"]])
def test_the_worker_reads_only_parent_messages(message):
    with pytest.raises(ProtocolError):
        protocol.to_worker(message)


def test_a_deeply_nested_message_is_still_a_protocol_error():
    # Nested deeper than Python can print or parse: never a RecursionError into the daemon.
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(ProtocolError):
        protocol.from_worker(["done", 1, deep, None, None, None, [], 1, 2, 3, 0.0, 0.0])
    with pytest.raises(ProtocolError):
        protocol.from_worker([deep])
    with pytest.raises(ProtocolError):
        protocol.decode(b"[" * 5000 + b"]" * 5000)


def test_the_line_buffer_hands_over_parsed_messages_across_reads():
    got: list[protocol.FromWorker] = []
    lines = protocol.LineBuffer(protocol.from_worker, got.append)
    data = b"".join(protocol.frame(m.encode()) for m in MESSAGES[5:-1])
    lines.feed(data[:7])
    lines.feed(data[7:])
    assert got == MESSAGES[5:-1]
    with pytest.raises(ProtocolError):
        lines.feed(b'["done",1]\n')
    with pytest.raises(ProtocolError):
        lines.feed(b"not json\n")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=400), max_size=12), st.integers(1, 4))
def test_messages_come_out_whole_however_the_stream_is_cut(cuts: list[int], copies: int) -> None:
    """Reads of any sizes - a line in many pieces (a long output), many lines in one, a cut
    just before or after a newline - give every message once, whole, in order."""
    got: list[Any] = []
    lines = protocol.LineBuffer(protocol.from_worker, got.append)
    messages = MESSAGES[5:-1] * copies
    data = b"".join(protocol.frame(m.encode()) for m in messages)
    at = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        lines.feed(data[at:max(at, cut)])
        at = max(at, cut)
    lines.feed(data[at:])
    assert got == messages


async def test_a_worker_that_breaks_the_protocol_is_killed_and_nothing_is_delivered():
    delivered: list[Any] = []
    worker = WorkerProcess(0, Slot.create(), lambda w, m: delivered.append(m), lambda w: None)
    try:
        worker.pipe_data_received(1, protocol.frame(protocol.Ready(1).encode()))
        assert worker.ready.done()
        done = MESSAGES[6]
        worker.pipe_data_received(1, protocol.frame(done.encode()))
        assert delivered == [done] and worker.kill_reason is None
        worker.pipe_data_received(1, b'["done",7,"completed","1",null,null,[],1,2]\n')
        assert worker.kill_reason is not None and worker.kill_reason.kind == "protocol"
        assert delivered == [done]
    finally:
        worker.slot.close(unlink=True)
        await asyncio.sleep(0)
