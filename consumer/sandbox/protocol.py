"""The parent↔worker wire format: one compact JSON array per line, over the worker's pipes.

JSON arrays (not dicts, not pickle) keep encoding cheap on both sides; the input and output
values travel as JSON *text* inside the message, so neither side builds Python objects for
them that it does not need. Messages written in the same event-loop turn are flushed in one
write, which batches requests under load without adding latency when idle.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import orjson

from consumer.sandbox.errors import ProtocolError
from consumer.sandbox.types import Status

# Parent → worker
# [RUN, seq, tenant, script, version, source, input_json, info_json, time_ms, mem, out, attempts]
RUN = "run"
RET = "ret"  # [RET, seq, call_id, ok, value | [error_name, message]]
# [REVOKE, seq]: give this run back if it has not started (its worker is stuck in a long step)
REVOKE = "revoke"
QUIT = "quit"  # [QUIT]
# Worker → parent
READY = "ready"  # [READY, pid]
DONE = "done"  # see Done
CALL = "call"  # [CALL, seq, call_id, op, args_json, remaining_ms]
REVOKED = "revoked"  # [REVOKED, seq]: the run was given back untouched; run it elsewhere

_STATUSES = ("completed", "failed", "timeout")


class Done(NamedTuple):
    """[DONE, seq, status, output_json, error, stack, logs, duration_ms, memory, calls]: an
    execution's result. `logs` travel as [level, message, ts] triples."""

    seq: int
    status: Status
    output_json: str | None
    error: str | None
    stack: str | None
    logs: Sequence[Sequence[Any]]  # [level, message, ts]
    duration_ms: int
    memory_bytes: int
    api_calls: int

    def encode(self) -> list[Any]:
        return [DONE, *self]

    def log_lines(self) -> tuple[Mapping[str, Any], ...]:
        return tuple({"level": lv, "message": msg, "ts": ts} for lv, msg, ts in self.logs)

    @classmethod
    def parse(cls, m: list[Any]) -> Done:
        """The parent's reading: every field checked, ProtocolError for anything else."""
        if len(m) != 10:
            raise ProtocolError(f"done message with {len(m)} fields")
        _, seq, status, output_json, error, stack, lines, duration, memory, calls = m
        if status not in _STATUSES:
            raise ProtocolError(f"done message with status {str(status)[:20]!r}")
        if not all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (seq, duration, memory, calls)):
            raise ProtocolError("done message with a non-integer count")
        if not all(v is None or isinstance(v, str) for v in (output_json, error, stack)):
            raise ProtocolError("done message with a non-text field")
        if not isinstance(lines, list) or not all(
                isinstance(x, list) and len(x) == 3 and isinstance(x[1], str) for x in lines):
            raise ProtocolError("done message with malformed console lines")
        return cls(seq, status, output_json, error, stack, lines, duration, memory, calls)

_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def encode(message: list[Any]) -> bytes:
    # Messages hold strings and small integers (values travel as JSON text inside them).
    # orjson frames them several times faster; the standard encoder takes what orjson
    # refuses, such as a lone surrogate that a script logged.
    try:
        return orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE)
    except TypeError:
        return (_encode(message) + "\n").encode()


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


class LineBuffer:
    """Splits a byte stream into decoded messages."""

    def __init__(self, on_message: Callable[[list[Any]], None]) -> None:
        self._partial = b""
        self._on_message = on_message

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if line:
                self._on_message(decode(line))


def decode(line: bytes) -> list[Any]:
    try:
        message = loads(line)
    except ValueError as exc:
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

    def send(self, message: list[Any]) -> None:
        if not self._buffer:
            self._loop.call_soon(self.flush)
        self._buffer.append(encode(message))

    def flush(self) -> None:
        if self._buffer:
            data = b"".join(self._buffer)
            self._buffer.clear()
            self._write(data)
