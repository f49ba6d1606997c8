"""The host API a script reaches through `ctx`: served on the daemon's event loop.

Everything here trusts only the request the daemon itself dispatched: the tenant a script
publishes into and the depth of its event chain come from the request, never from the script.
Any failure reaches JavaScript as a clean one-line message (HostCallError), never a traceback.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

import structlog

from consumer import jsontext
from consumer.errors import JsrtError, StoreUnavailable
from consumer.sandbox import redact
from consumer.sandbox.errors import HostCallError, RateLimited
from consumer.sandbox.fetch import Fetcher, FetchRequest
from consumer.sandbox.ratelimit import SlidingWindowLimiter
from consumer.sandbox.types import (
    ApiLimiter,
    DataHost,
    ExecutionRequest,
    ExecutionResult,
    Publisher,
    PublishRequest,
    SecretReader,
)

MAX_EVENT_DEPTH = 8
# ctx.db's transaction bookkeeping: not counted as API calls (a rollback is never refused)
_UNCOUNTED = frozenset({"db.begin", "db.commit", "db.rollback"})
log = structlog.get_logger("jsrt.sandbox")


def in_process_limiter() -> ApiLimiter:
    """max_api_calls_per_minute kept in this process alone: for an executor without a
    database (tests, benchmarks); jsrt processes count in the database (consumer/ratelimit.py)."""
    window = SlidingWindowLimiter()

    async def acquire(request: ExecutionRequest, limit: int) -> bool:
        return window.try_acquire((request.tenant_id, request.script_id), limit)

    return acquire


def _hmac_sha256(key: Any, message: Any) -> str:
    if not isinstance(key, str) or not isinstance(message, str):
        raise HostCallError("crypto.hmacSha256: key and message must be strings")
    if len(message) > 8 << 20:
        raise HostCallError("crypto.hmacSha256: message larger than 8 MiB")
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


class HostApi:
    def __init__(
        self,
        publisher: Publisher | None,
        fetcher: Fetcher,
        limiter: ApiLimiter | None = None,
        data: DataHost | None = None,
        secrets: SecretReader | None = None,
    ) -> None:
        self._publisher = publisher
        self._data = data
        self._fetcher = fetcher
        self._limiter = limiter or in_process_limiter()
        self._secrets = secrets
        # execution id -> the secret values handed to it, masked in its result (redact.py)
        self._handed: dict[str, set[str]] = {}

    def redacted(self, request: ExecutionRequest, result: ExecutionResult,
                 *, done: bool = False) -> ExecutionResult:
        """The result with every secret handed to this execution masked; `done`: the
        execution is over, its values are forgotten."""
        values = (self._handed.pop(request.execution_id, None) if done
                  else self._handed.get(request.execution_id))
        return redact.result(result, values) if values else result

    async def call(
        self, request: ExecutionRequest, op: str, args: Sequence[Any], remaining_s: float
    ) -> Any:
        if op == "hmac" and len(args) == 2:  # pure computation: not an outside effect
            return _hmac_sha256(args[0], args[1])
        if op not in _UNCOUNTED:
            await self._count(request, op)
        if op.startswith(("db.", "cache.")):
            if self._data is None:
                raise HostCallError(f"ctx.{op.split('.', 1)[0]} is not available here")
            return await self._data.call(request, op, args, remaining_s)
        if op == "publish" and len(args) == 2:
            return await self._publish(request, args[0], args[1])
        if op == "secret" and len(args) == 1:
            return await self._secret(request, args[0])
        if op == "fetch" and len(args) == 1 and isinstance(args[0], dict):
            fetch = FetchRequest.from_js(args[0], self._fetcher.default_timeout_s, remaining_s)
            return await self._fetcher.fetch(fetch, request.tenant_id)
        raise HostCallError(f"unknown host call {op[:32]}")

    def end(self, request: ExecutionRequest) -> None:
        """The execution ended, whichever way: what it still holds is released."""
        if self._data is not None:
            self._data.end(request.execution_id)

    async def _count(self, request: ExecutionRequest, op: str) -> None:
        limit = request.limits.max_api_calls_per_minute
        try:
            allowed = await self._limiter(request, limit)
        except StoreUnavailable:  # fail closed: a limit that cannot be checked holds
            raise HostCallError(
                f"{op[:32]} refused: the rate limit cannot be checked (database unavailable)"
            ) from None
        if not allowed:
            raise RateLimited(f"rate limit exceeded: max_api_calls_per_minute={limit}")

    async def _secret(self, request: ExecutionRequest, name: Any) -> str:
        """A secret of the execution's own tenant (never one the script names)."""
        from consumer.secrets import SecretUnavailable  # the sandbox package stays store-free

        if self._secrets is None:
            raise HostCallError("secrets.get is not available: no secret store is configured")
        if not isinstance(name, str):
            raise HostCallError("secrets.get: the name must be a string")
        try:
            value = await self._secrets(request.tenant_id, name)
        except SecretUnavailable as exc:
            raise HostCallError(str(exc)) from None
        except StoreUnavailable:
            raise HostCallError("secrets.get failed: the database is unavailable") from None
        self._handed.setdefault(request.execution_id, set()).add(value)
        return value

    async def _publish(self, request: ExecutionRequest, event_type: Any, payload: Any) -> str:
        if self._publisher is None:
            raise HostCallError("events.publish is not available: no publisher is configured")
        if not isinstance(event_type, str) or not 0 < len(event_type) <= 255:
            raise HostCallError(
                "events.publish: type must be a non-empty string of at most 255 characters"
            )
        depth = request.event_depth + 1
        if depth > MAX_EVENT_DEPTH:
            raise HostCallError(
                f"events.publish: event chain depth limit ({MAX_EVENT_DEPTH}) exceeded"
            )
        try:
            jsontext.dumps(payload, "payload")  # what the database would refuse, said plainly
        except jsontext.JsonRefused as exc:
            raise HostCallError(f"events.publish: {exc}") from None
        publish = PublishRequest(
            tenant_id=request.tenant_id,
            event_type=event_type,
            payload=payload,
            depth=depth,
            source_execution_id=request.execution_id,
        )
        try:
            return await self._publisher(publish)
        except StoreUnavailable:
            raise HostCallError("events.publish failed: the database is unavailable") from None
        except JsrtError as exc:
            # the database's own words are for the operator's log, not for the script
            log.warning("publish_refused", tenant_id=request.tenant_id,
                        script_id=request.script_id, execution_id=request.execution_id,
                        error=str(exc).splitlines()[0][:300])
            own = _publish_refusal(str(exc))
            raise HostCallError(f"events.publish failed: {own or 'the event was refused'}") \
                from None
        except Exception:
            log.exception(
                "publish_failed",
                tenant_id=request.tenant_id,
                script_id=request.script_id,
                execution_id=request.execution_id,
            )
            raise HostCallError("events.publish failed") from None


def _publish_refusal(message: str) -> str | None:
    """jsrt_publish's own words about the event (its size, say: the database's cap), which
    the script may read; None for anything else the database said."""
    first = message.splitlines()[0] if message else ""
    _, found, said = first.partition("jsrt_publish: payload ")
    return f"payload {said}"[:200] if found else None
