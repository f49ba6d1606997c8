"""Recording results: the one policy for a result the database refuses, used by every path
that finishes runs (the daemon's completer, HTTP requests, `jsrt exec`, the embedded API).

A run must never stay 'running' because its result could not be stored: it would hold its
script's slot for good. So a batch the database refuses is recorded one result at a time; a
result it refuses becomes a failure saying why (console lines kept); and when even that is
refused, a bare failure that holds nothing the script produced. StoreUnavailable is not a
refusal: it propagates, and the caller decides how long to wait for the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from consumer import log
from consumer.errors import StoreError, StoreUnavailable
from consumer.records import NO_METRICS, Finished, Outcome, Run
from consumer.sandbox.types import ExecutionResult
from consumer.store import Store

_LOG = log.get("jsrt.recording")


async def complete(store: Store, owner: str, batch: Sequence[Outcome]) -> list[Outcome]:
    """Record `batch`, each result as it is or, if the database refuses it, as a failure.
    Returns the outcomes as recorded (a refused result replaced by its failure); a run that
    is no longer this owner's (rescued meanwhile) is left out."""
    try:
        return _recorded(batch, await store.queue.complete_runs(owner, batch))
    except StoreUnavailable:
        raise
    except StoreError as exc:
        if len(batch) > 1:
            return [f for o in batch for f in await complete(store, owner, [o])]
        return await _refused(store, owner, batch[0], exc)


def _recorded(batch: Sequence[Outcome], rows: Sequence[Finished]) -> list[Outcome]:
    ids = {f.execution_id for f in rows}
    return [o for o in batch if o.run.execution_id in ids]


async def _refused(store: Store, owner: str, outcome: Outcome, exc: StoreError) -> list[Outcome]:
    reason = str(exc).splitlines()[0].removeprefix("database error: ")[:300]
    run = outcome.run
    _LOG.warning("execution_result_refused", tenant_id=str(run.tenant_id),
                 script_id=str(run.script_id), execution_id=str(run.execution_id),
                 status=outcome.result.status, reason=reason)
    r = outcome.result
    fallbacks = (
        ExecutionResult("failed", error=f"result could not be recorded: {reason}",
                        logs=r.logs, metrics=r.metrics),
        ExecutionResult("failed", error="result could not be recorded",
                        metrics=dict(NO_METRICS)),
    )
    for fallback in fallbacks:
        instead = replace(outcome, result=fallback)
        try:
            return _recorded([instead], await store.queue.complete_runs(owner, [instead]))
        except StoreUnavailable:
            raise
        except StoreError as again:
            exc = again
    _LOG.error("execution_unrecordable", execution_id=str(run.execution_id),
               error=str(exc).splitlines()[0][:300])
    return []


# ---------------------------------------------------------------- the one outcome logger
def run_fields(run: Run) -> dict[str, Any]:
    """What every log line about a run carries."""
    fields: dict[str, Any] = dict(
        tenant_id=str(run.tenant_id), script_id=str(run.script_id),
        execution_id=str(run.execution_id), trigger=run.trigger_type,
    )
    if run.script_name is not None:
        fields["script"] = run.script_name
    attempt = run.trigger_data.get("attempt")
    if attempt is not None:  # event runs only: a cron or manual run has no attempts
        fields["attempt"] = attempt
    if run.event_id:
        fields.update(event_id=str(run.event_id), event_type=run.trigger_data.get("event_type"))
    return fields


def log_outcome(run: Run, r: ExecutionResult, recorded: bool) -> None:
    """One line per recorded result, on every path (daemon, HTTP, jsrt exec, embedded)."""
    if recorded and r.status == "completed":
        if log.enabled("info"):  # the fields cost more than a filtered-out line
            _LOG.info("execution_completed", status=r.status,
                      duration_ms=r.metrics.get("duration_ms"), **run_fields(run))
    elif not recorded and r.status == "cancelled":  # recorded already, by the cancel (#19)
        _LOG.info("execution_cancelled", error=r.error, **run_fields(run))
    elif not recorded:
        _LOG.warning("execution_result_discarded", reason="run no longer owned",
                     status=r.status, **run_fields(run))
    else:
        name = "execution_timed_out" if r.status == "timeout" else "execution_failed"
        _LOG.warning(name, status=r.status, error=r.error,
                     duration_ms=r.metrics.get("duration_ms"), **run_fields(run))
