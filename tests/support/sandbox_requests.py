"""Requests for the sandbox tests (a module, not conftest: `from conftest import` resolves to
whichever conftest pytest loaded last)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Awaitable, Callable
from typing import Any

from consumer.sandbox import ExecutionRequest, ExecutionResult, Limits

FETCH_CAP = 64 * 1024
FAST = Limits(max_execution_time_ms=1000, max_memory_bytes=16 << 20)
_ids = itertools.count(1)

Run = Callable[..., Awaitable[ExecutionResult]]


def make_request(
    source: str,
    input: Any = None,
    *,
    tenant: str = "tenant-a",
    script: str | None = None,
    version: str = "v1",
    limits: Limits = FAST,
    trigger: dict[str, Any] | None = None,
    depth: int = 0,
) -> ExecutionRequest:
    n = next(_ids)
    return ExecutionRequest(
        source=source,
        version_id=version,
        input_json=json.dumps(input),
        tenant_id=tenant,
        script_id=script or f"script-{n}",
        execution_id=f"exec-{n}",
        trigger=trigger or {"type": "manual"},
        limits=limits,
        event_depth=depth,
    )
