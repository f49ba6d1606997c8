"""The embedded API: run scripts from a host application, recorded like every other
execution (trigger_type 'api').

    from consumer.runtime import Runtime

    async with Runtime(dsn, workers=2) as rt:
        result = await rt.execute(script_id, {"n": 1}, tenant_id=tenant_id)
        adhoc = await rt.execute_source(tenant_id, "function handler(i) { return i }", {"x": 1})
        if result.ok:
            print(result.output)
        else:
            print(result.status, result.error, result.logs)
        await rt.cancel(execution_id)   # from another task: that caller gets 'cancelled'

The Runtime owns a connection pool, a sandbox executor (its own V8 worker processes) and a
lease in jsrt_daemons (so the daemons' rescuer never mistakes its runs for lost ones). A
script's max_concurrent_runs holds across every process: when the script is full, execute
waits (with backoff) for a slot, up to `max_wait` seconds when given (then ScriptBusy).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any
from uuid import UUID

from consumer import jsontext
from consumer.app import sandbox
from consumer.cancel import CancelWatcher, executor_stop, watching
from consumer.errors import ConfigError, ValidationError
from consumer.executions import Cancelled
from consumer.lease import Lease, memory_report
from consumer.ondemand import OnDemand, RunResult
from consumer.settings import Settings
from consumer.store import Store

__all__ = ["RunResult", "Runtime"]


class Runtime:
    def __init__(
        self, dsn: str, workers: int | None = None, *,
        fetch_allowlist: Sequence[str] = (), max_wait: float | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.dsn = dsn
        self.settings = settings or Settings(database_url=dsn)
        self.workers = workers or self.settings.worker_count
        self.fetch_allowlist = tuple(fetch_allowlist) or self.settings.fetch_allowlist
        self.max_wait = max_wait
        self._stack: AsyncExitStack | None = None
        self._ondemand: OnDemand | None = None
        self._cancels: CancelWatcher | None = None

    async def __aenter__(self) -> Runtime:
        async with AsyncExitStack() as stack:
            store = await Store.open(self.dsn, settings=self.settings)
            stack.push_async_callback(store.close)
            executor = sandbox(self.settings, store, self.workers, self.fetch_allowlist)
            await stack.enter_async_context(executor)
            lease = await stack.enter_async_context(
                Lease(store, self.settings.heartbeat_interval, kind="api",
                      memory=memory_report(executor)))
            self._cancels = await stack.enter_async_context(
                watching(store, lease.id, executor_stop(executor),
                         self.settings.heartbeat_interval))
            self._ondemand = OnDemand(store, executor, lease.id)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack, self._ondemand = self._stack, None, None
        if stack is not None:
            await stack.__aexit__(exc_type, exc, tb)

    @property
    def _runner(self) -> OnDemand:
        if self._ondemand is None:
            raise ConfigError("use the Runtime inside `async with Runtime(dsn) as rt:`")
        return self._ondemand

    async def execute(self, script_id: UUID | str, input: Any = None, *,
                      tenant_id: UUID | str, user_id: Any = None,
                      organization_id: Any = None) -> RunResult:
        """Run a stored script of `tenant_id` now (any status but disabled or archived).
        Raises NotFound when the tenant has no such script, ValidationError when the input
        is not JSON the runtime can keep (see the README's limits). `user_id` and
        `organization_id` (JSON values) are the script's `context.userId` and
        `context.organizationId`, kept in the execution's trigger_data."""
        return await self._runner.execute(
            _as_uuid(tenant_id), _as_uuid(script_id), "api",
            _trigger({"type": "api"}, user_id, organization_id), _input(input),
            max_wait=self.max_wait)

    async def execute_source(self, tenant_id: UUID | str, source: str, input: Any = None,
                             limits: Mapping[str, int] | None = None, *, user_id: Any = None,
                             organization_id: Any = None) -> RunResult:
        """Run ad-hoc source. It is kept as an 'embedded' script of the tenant named by a
        hash of the source and limits (created active on first use, reused after), so the
        execution is recorded and its limits hold like any other script's."""
        tenant = _as_uuid(tenant_id)
        runner = self._runner
        input_json = _input(input)
        script_id = await runner.store.scripts.embedded(tenant, source, limits)
        trigger = _trigger({"type": "api", "source": "execute_source"}, user_id,
                           organization_id)
        return await runner.execute(tenant, script_id, "api", trigger, input_json,
                                    max_wait=self.max_wait, expect_source=source)

    async def cancel(self, execution_id: UUID | str, *, tenant_id: UUID | str | None = None,
                     by: str = "the embedded API") -> Cancelled:
        """Cancel an execution (of `tenant_id`, when given): a pending one never starts, a
        running one is stopped - anywhere, by the process that runs it - and it ends
        'cancelled' with "cancelled by {by}" as its error; a caller waiting for it gets that
        result. `outcome` says 'cancelled', 'finished' (it had ended: `status`) or 'missing'."""
        [done] = await self._runner.store.executions.cancel(
            [_as_uuid(execution_id)], by, None if tenant_id is None else _as_uuid(tenant_id))
        if self._cancels is not None and done.owner == self._runner.owner:
            self._cancels.hint()  # ours: stopped now, not at the next heartbeat
        return done


def _trigger(base: dict[str, Any], user_id: Any, organization_id: Any) -> dict[str, Any]:
    """The trigger data of an API run: who it runs for, when the caller says (the prelude reads
    user_id and organization_id into context.userId and context.organizationId)."""
    for key, value in (("user_id", user_id), ("organization_id", organization_id)):
        if value is not None:
            try:
                jsontext.dumps(value, key)
            except jsontext.JsonRefused as exc:
                raise ValidationError(str(exc)) from None
            base[key] = value
    return base


def _input(value: Any) -> str:
    """The input as JSON text; None (no input) is `{}`, as it always was."""
    if value is None:
        return "{}"
    try:
        return jsontext.dumps(value, "input")
    except jsontext.JsonRefused as exc:
        raise ValidationError(str(exc)) from None


def _as_uuid(value: UUID | str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise ValidationError(f"not a UUID: {value!r}") from None
