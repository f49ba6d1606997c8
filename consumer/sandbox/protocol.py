"""The parent↔worker wire format: one compact JSON array per line, over the worker's pipes.

Each message is a NamedTuple below: `encode()` gives its array (the tag first, then its fields
in order), `parse()` reads one back and checks every field, raising ProtocolError for anything
else; `to_worker`/`from_worker` pick the class by tag. JSON arrays (not dicts, not pickle) keep
encoding cheap on both sides; the input and output values travel as JSON *text* inside the
message, so neither side builds Python objects for them that it does not need. Messages
written in the same event-loop turn are flushed in one write, which batches requests under
load without adding latency when idle.
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, Self, TypeVar

import orjson

from consumer.sandbox.errors import ProtocolError
from consumer.sandbox.types import Status

# The tags, first in every message on the wire.
RUN = "run"
RET = "ret"
REVOKE = "revoke"
QUIT = "quit"
CANCEL = "cancel"
WARM = "warm"
READY = "ready"
DONE = "done"
CALL = "call"
REVOKED = "revoked"

_STATUSES = ("completed", "failed", "timeout")


def _arity(m: list[Any], tag: str, count: int) -> None:
    """The message has its tag and `count` fields after it, or it is a ProtocolError."""
    if len(m) != count + 1:
        raise ProtocolError(f"{tag} message with {len(m) - 1} fields, not {count}")


def _ints(tag: str, *values: Any) -> None:
    # `type(v) is int`: a bool is no count, and JSON parsers return no other int subclass.
    for v in values:
        if type(v) is not int:
            raise ProtocolError(f"{tag} message with a non-integer where one is needed")


def _texts(tag: str, *values: Any) -> None:
    for v in values:
        if type(v) is not str:
            raise ProtocolError(f"{tag} message with a non-text field")


def _shown(value: Any) -> str:
    """A field for an error message: never str() of a value that may be nested deep."""
    return repr(value[:20]) if type(value) is str else f"a {type(value).__name__}"


class Sources:
    """The sources a worker holds, kept by the worker and mirrored by its parent, so that a
    RUN brings a version's source only the first time (a 1 MiB source encoded, piped and
    decoded for every run cost milliseconds of each side's CPU outside any run's deadline).
    Both sides take the same steps for every RUN, in the order the pipe carries them - the
    parent `outgoing` as it writes one, the worker `incoming` as it reads one, whatever then
    becomes of the run - so the parent knows exactly what the worker holds. Small sources
    (under `min_chars`) always travel; `capacity` characters at most are held, the least
    recently used going first. A version is (tenant, script, digest): never a source of
    another script, nor one found by digest alone."""

    def __init__(self, keep: bool, capacity: int = 16 << 20, min_chars: int = 4096) -> None:
        self._keep = keep  # the worker keeps the texts; the parent only their sizes
        self._capacity = capacity
        self._min = min_chars
        self._held: OrderedDict[tuple[str, str, str], str | int] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._held)

    def outgoing(self, version: tuple[str, str, str], source: str) -> str | None:
        """(Parent) what a RUN of this version carries: None when the worker holds it."""
        if version in self._held:
            self._held.move_to_end(version)
            return None
        self._add(version, source)
        return source

    def incoming(self, version: tuple[str, str, str], source: str | None) -> str | None:
        """(Worker) the source of a RUN that arrived; None: the parent broke its promise."""
        if source is not None:
            self._add(version, source)
            return source
        held = self._held.get(version)
        if held is None:
            return None
        self._held.move_to_end(version)
        return held if isinstance(held, str) else None

    def _add(self, version: tuple[str, str, str], source: str) -> None:
        size = len(source)
        if size < self._min or size > self._capacity:
            return
        old = self._held.pop(version, None)
        if old is not None:
            self._chars -= old if isinstance(old, int) else len(old)
        self._held[version] = source if self._keep else size
        self._chars += size
        while self._chars > self._capacity:
            _, gone = self._held.popitem(last=False)
            self._chars -= gone if isinstance(gone, int) else len(gone)


# Parent → worker. The worker trusts its parent, but reads these through the same classes:
# one definition of each message, and a parent bug fails loudly in the worker, not silently.


class Run(NamedTuple):
    """[RUN, seq, tenant, script, version, source, input_json, info_json, time_ms, memory,
    output, attempts, chain]: run one execution. `attempts` > 0 is a re-run, which runs alone.
    `chain` > 0 names a serial group: the worker runs the runs of one chain strictly one after
    another, in the order they arrived (and may batch them); 0: no chain. `source` null: the
    worker holds that version's source (Sources, below)."""

    seq: int
    tenant_id: str
    script_id: str
    version_id: str
    source: str | None
    input_json: str
    info_json: str
    time_ms: int
    memory_bytes: int
    output_bytes: int
    attempts: int
    chain: int = 0

    def encode(self) -> list[Any]:
        return [RUN, *self]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, RUN, 12)
        _, seq, tenant, script, version, source, input_json, info_json, time_ms, memory, \
            output, attempts, chain = m
        _ints(RUN, seq, time_ms, memory, output, attempts, chain)
        _texts(RUN, tenant, script, version, input_json, info_json)
        if source is not None:
            _texts(RUN, source)
        return cls(seq, tenant, script, version, source, input_json, info_json, time_ms, memory,
                   output, attempts, chain)


class Ret(NamedTuple):
    """[RET, seq, call_id, ok, value]: a host call's answer. `ok` (1 or 0 on the wire): value
    is the call's result; otherwise value is [error_name, message], thrown into the script."""

    seq: int
    call_id: int
    ok: bool
    value: Any

    def encode(self) -> list[Any]:
        return [RET, self.seq, self.call_id, 1 if self.ok else 0, self.value]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, RET, 4)
        _, seq, call_id, ok, value = m
        _ints(RET, seq, call_id, ok)
        if ok not in (0, 1):
            raise ProtocolError(f"ret message with ok={ok}")
        if not ok:
            if type(value) is not list or len(value) != 2:
                raise ProtocolError("ret message with a malformed error")
            _texts(RET, *value)
        return cls(seq, call_id, ok == 1, value)


class Revoke(NamedTuple):
    """[REVOKE, seq]: give this run back if it has not started (its worker is stuck in a
    long step)."""

    seq: int

    def encode(self) -> list[Any]:
        return [REVOKE, self.seq]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, REVOKE, 1)
        _ints(REVOKE, m[1])
        return cls(m[1])


class Cancel(NamedTuple):
    """[CANCEL, seq]: the run was cancelled (#19): drop it if it has not begun, else terminate
    its step; the parent has its verdict already and ignores what comes of it."""

    seq: int

    def encode(self) -> list[Any]:
        return [CANCEL, self.seq]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, CANCEL, 1)
        _ints(CANCEL, m[1])
        return cls(m[1])


class Warm(NamedTuple):
    """[WARM]: a run is likely soon (the parent was woken while this worker was idle): wake
    the engine's thread now, while the claim is still in the database, rather than on the
    run's own path (an idle process and thread cost the first step after a pause hundreds
    of microseconds: bench/compare.py's latency)."""

    def encode(self) -> list[Any]:
        return [WARM]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, WARM, 0)
        return cls()


class Quit(NamedTuple):
    """[QUIT]: finish and exit."""

    def encode(self) -> list[Any]:
        return [QUIT]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, QUIT, 0)
        return cls()


# Worker → parent. The parent trusts nothing here: a worker runs tenants' code, and a
# malformed message gets it killed (process.py), never an exception in the daemon.


class Ready(NamedTuple):
    """[READY, pid]: started, and V8 with it."""

    pid: int

    def encode(self) -> list[Any]:
        return [READY, self.pid]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, READY, 1)
        _ints(READY, m[1])
        return cls(m[1])


class Done(NamedTuple):
    """[DONE, seq, status, output_json, error, stack, logs, duration_ms, memory, calls,
    started, finished]: an execution's result. `logs` travel as [level, message, ts] triples,
    with sdk.log's metadata (a JSON value the worker checked) as a fourth item when there is
    some; `started`/`finished`: when the run really began (its first step) and ended, in
    time.monotonic() seconds (one clock for every process of a host); 0.0 when it never ran."""

    seq: int
    status: Status
    output_json: str | None
    error: str | None
    stack: str | None
    logs: Sequence[Sequence[Any]]  # [level, message, ts] or [level, message, ts, metadata]
    duration_ms: int
    memory_bytes: int
    api_calls: int
    started: float = 0.0
    finished: float = 0.0

    def encode(self) -> list[Any]:
        return [DONE, *self]

    def log_lines(self) -> tuple[Mapping[str, Any], ...]:
        return tuple(
            {"level": x[0], "message": x[1], "ts": x[2]} if len(x) == 3
            else {"level": x[0], "message": x[1], "ts": x[2], "metadata": x[3]}
            for x in self.logs
        )

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        """The parent's reading: every field checked, ProtocolError for anything else."""
        _arity(m, DONE, 11)
        _, seq, status, output_json, error, stack, lines, duration, memory, calls, started, \
            finished = m
        if status not in _STATUSES:
            raise ProtocolError(f"done message with status {_shown(status)}")
        _ints(DONE, seq, duration, memory, calls)
        _texts(DONE, *(v for v in (output_json, error, stack) if v is not None))
        if type(lines) is not list or not all(_log_line(x) for x in lines):
            raise ProtocolError("done message with malformed console lines")
        if type(started) not in (int, float) or type(finished) not in (int, float):
            raise ProtocolError("done message with a malformed time")
        return cls(seq, status, output_json, error, stack, lines, duration, memory, calls,
                   float(started), float(finished))


def _log_line(x: Any) -> bool:
    """[level, message, ts] or [level, message, ts, metadata]: what the daemon logs and
    stores for a console line."""
    return (type(x) is list and len(x) in (3, 4) and type(x[0]) is str and type(x[1]) is str
            and type(x[2]) in (int, float))


class Call(NamedTuple):
    """[CALL, seq, call_id, op, args_json, remaining_ms]: a host call by a running execution;
    answered with a Ret of the same seq and call_id."""

    seq: int
    call_id: int
    op: str
    args_json: str
    remaining_ms: int

    def encode(self) -> list[Any]:
        return [CALL, *self]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, CALL, 5)
        _, seq, call_id, op, args_json, remaining_ms = m
        _ints(CALL, seq, call_id, remaining_ms)
        _texts(CALL, op, args_json)
        return cls(seq, call_id, op, args_json, remaining_ms)


class Revoked(NamedTuple):
    """[REVOKED, seq]: the run was given back untouched; run it elsewhere."""

    seq: int

    def encode(self) -> list[Any]:
        return [REVOKED, self.seq]

    @classmethod
    def parse(cls, m: list[Any]) -> Self:
        _arity(m, REVOKED, 1)
        _ints(REVOKED, m[1])
        return cls(m[1])


ToWorker = Run | Ret | Revoke | Cancel | Warm | Quit
FromWorker = Ready | Done | Call | Revoked
Message = ToWorker | FromWorker
M = TypeVar("M")

_TO_WORKER: Mapping[str, Callable[[list[Any]], ToWorker]] = {
    RUN: Run.parse, RET: Ret.parse, REVOKE: Revoke.parse, CANCEL: Cancel.parse,
    WARM: Warm.parse, QUIT: Quit.parse,
}
_FROM_WORKER: Mapping[str, Callable[[list[Any]], FromWorker]] = {
    READY: Ready.parse, DONE: Done.parse, CALL: Call.parse, REVOKED: Revoked.parse,
}


def to_worker(m: list[Any]) -> ToWorker:
    """A decoded line read by the worker, as its message; ProtocolError if it is none."""
    return _parse(_TO_WORKER, m)


def from_worker(m: list[Any]) -> FromWorker:
    """A decoded line read by the parent, as its message; ProtocolError if it is none."""
    return _parse(_FROM_WORKER, m)


def _parse(table: Mapping[str, Callable[[list[Any]], M]], m: list[Any]) -> M:
    tag = m[0]
    parse = table.get(tag) if type(tag) is str else None
    if parse is None:
        raise ProtocolError(f"unknown message {_shown(tag)}")
    try:
        return parse(m)
    except ProtocolError:
        raise
    except Exception as exc:  # a field so odd that checking it failed: still malformed
        raise ProtocolError(f"{tag} message that cannot be read ({type(exc).__name__})") from exc


_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def frame(fields: list[Any]) -> bytes:
    """A message's fields (its encode()) as one line on the wire."""
    # Messages hold strings and small integers (values travel as JSON text inside them).
    # orjson frames them several times faster; the standard encoder takes what orjson
    # refuses, such as a lone surrogate that a script logged.
    try:
        return orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (_encode(fields) + "\n").encode()


def loads(text: str | bytes) -> Any:
    """Parse JSON that V8 or the other side wrote: orjson, or the standard parser for what
    orjson refuses (lone surrogates, which JSON.stringify escapes but orjson rejects).
    Never used for values whose integers may exceed 64 bits (orjson reads them as floats)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def to_json_text(value: Any) -> str:
    """A value as compact JSON text; ValueError/TypeError if it is not JSON."""
    return _encode(value)


class LineBuffer(Generic[M]):
    """Splits a byte stream into messages: each line decoded, then read by `parse`
    (to_worker or from_worker). Anything malformed raises ProtocolError."""

    def __init__(self, parse: Callable[[list[Any]], M], on_message: Callable[[M], None]) -> None:
        # the pieces of the line not ended yet: a long line (a 1 MiB output) comes in many
        # reads, and is joined once, at its end, not copied again with each read
        self._partial: list[bytes] = []
        self._parse = parse
        self._on_message = on_message

    def feed(self, data: bytes) -> None:
        ended, newline, rest = data.rpartition(b"\n")
        if not newline:
            self._partial.append(data)
            return
        if self._partial:
            self._partial.append(ended)
            ended = b"".join(self._partial)
        self._partial = [rest] if rest else []
        for line in ended.split(b"\n"):
            if line:
                self._on_message(self._parse(decode(line)))


def decode(line: bytes) -> list[Any]:
    try:
        message = loads(line)
    except (ValueError, RecursionError) as exc:  # not JSON, or nested past Python's parser
        raise ProtocolError(f"undecodable message: {line[:80]!r}") from exc
    if not isinstance(message, list) or not message:
        raise ProtocolError(f"malformed message: {line[:80]!r}")
    return message


class BatchWriter:
    """Coalesces the messages of one loop turn into a single write."""

    def __init__(self, loop: asyncio.AbstractEventLoop, write: Callable[[bytes], None]) -> None:
        self._loop = loop
        self._write = write
        self._buffer: list[bytes] = []

    def send(self, message: Message) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(frame(message.encode()))

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._write(data)
