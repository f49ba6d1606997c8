"""Masking secrets in what a script produced, the way CI systems mask theirs (#15).

The host remembers every secret value it handed to an execution (ctx.secrets.get); before the
result leaves the executor, each occurrence of such a value - as it is, and as it appears
inside a JSON string - becomes MASK in the output, the error and its stack, and the console
lines, sdk.log's metadata included (they are logged only after this). Longer values are
masked first, so a secret that contains another is masked whole."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from typing import Any

from consumer.jsontext import loads_stored
from consumer.sandbox.types import ExecutionResult

MASK = "[redacted]"


def forms(values: Iterable[str]) -> list[str]:
    """Each value, and its JSON-escaped form where that differs, longest first."""
    out = set()
    for v in values:
        if v:
            out.add(v)
            out.add(json.dumps(v, ensure_ascii=False)[1:-1])
            out.add(json.dumps(v)[1:-1])
    return sorted(out, key=len, reverse=True)


def text(value: str | None, masked: list[str]) -> str | None:
    if value is None:
        return None
    for v in masked:
        if v in value:
            value = value.replace(v, MASK)
    return value


def _walk(value: Any, masked: list[str]) -> Any:
    if isinstance(value, str):
        return text(value, masked)
    if isinstance(value, list):
        return [_walk(v, masked) for v in value]
    if isinstance(value, dict):
        return {text(k, masked): _walk(v, masked) for k, v in value.items()}
    return value


def output_json(raw: str | None, masked: list[str]) -> str | None:
    """The output with every string (keys too) masked; still the same JSON shape."""
    if raw is None or not any(v in raw for v in masked):
        return raw
    return json.dumps(_walk(loads_stored(raw), masked), ensure_ascii=False,
                      separators=(",", ":"))


def _line(line: Any, masked: list[str]) -> Any:
    """A console line with its message and sdk.log's metadata (every string in it) masked."""
    out = dict(line)
    if isinstance(out.get("message"), str):
        out["message"] = text(out["message"], masked)
    if "metadata" in out:
        out["metadata"] = _walk(out["metadata"], masked)
    return out


def result(r: ExecutionResult, values: Iterable[str]) -> ExecutionResult:
    masked = forms(values)
    if not masked:
        return r
    logs = tuple(_line(line, masked) for line in r.logs)
    return dataclasses.replace(
        r, output_json=output_json(r.output_json, masked), error=text(r.error, masked),
        stack=text(r.stack, masked), logs=logs)
