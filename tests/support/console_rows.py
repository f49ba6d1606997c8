"""Rows for the console's executions, dead-letter and overview tests (#18), written with plain
SQL as the runtime would have left them: executions at chosen times, dead letters in every
state, pending events, runs in progress, live processes with their memory.

`world(conn)` builds the same picture in two tenants, so that a test can check that one
tenant's view holds exactly its own rows."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from support.factories import make_script, make_tenant

LETTER_STATES = ("scheduled", "waiting_for_script", "in_flight", "exhausted", "succeeded",
                 "discarded")


async def make_execution(conn: asyncpg.Connection, tenant: UUID, script: UUID, *,
                         status: str = "completed", trigger: str = "event",
                         started_at: datetime | None = None,
                         trigger_data: dict[str, Any] | None = None,
                         input: Any = None, output: Any = None, error: str | None = None,
                         logs: list[dict[str, Any]] | None = None,
                         metrics: dict[str, Any] | None = None) -> UUID:
    started = started_at or datetime.now(UTC)
    done = started + timedelta(milliseconds=5) if status not in ("pending", "running") else None
    execution_id: UUID = await conn.fetchval(
        """INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,
                                          trigger_data, input, output, error, metrics,
                                          started_at, completed_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7::jsonb, $8,
                   coalesce($9::jsonb, '{"duration_ms": 5}'::jsonb), $10, $11)
           RETURNING id""",
        script, tenant, status, trigger, json.dumps(trigger_data or {}),
        json.dumps(input if input is not None else {}),
        json.dumps(output) if output is not None else None, error,
        json.dumps(metrics) if metrics is not None else None, started, done)
    if logs is not None:
        await conn.execute("INSERT INTO jsrt_execution_logs (execution_id, tenant_id, lines) "
                           "VALUES ($1, $2, $3::jsonb)", execution_id, tenant, json.dumps(logs))
    return execution_id


async def make_letter(conn: asyncpg.Connection, tenant: UUID, script: UUID, execution: UUID, *,
                      state: str = "scheduled", event_type: str = "thing.happened",
                      error: str = "Error: boom", created_at: datetime | None = None,
                      event_id: UUID | None = None, payload: Any = None) -> UUID:
    """A letter in `state` (waiting_for_script needs a script that is not active)."""
    retry_count = 3 if state == "exhausted" else 0
    letter: UUID = await conn.fetchval(
        """INSERT INTO script_event_dead_letters (script_id, tenant_id, execution_id, event_type,
                                                  event_data, error, retry_count, created_at)
           VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8) RETURNING id""",
        script, tenant, execution, event_type, json.dumps(payload or {"n": 1}), error,
        retry_count, created_at or datetime.now(UTC))
    resolution = state if state in ("succeeded", "discarded") else None
    await conn.execute(
        """INSERT INTO jsrt_dead_letter_state (dead_letter_id, tenant_id, event_id, script_version,
                                               next_retry_at, in_flight, resolved_at, resolution)
           VALUES ($1, $2, $3, 1, $4, $5, $6, $7)""",
        letter, tenant, event_id, None if resolution or state == "exhausted"
        else datetime.now(UTC) + timedelta(minutes=5),
        state == "in_flight", datetime.now(UTC) if resolution else None, resolution)
    return letter


async def make_event(conn: asyncpg.Connection, tenant: UUID, *, dispatched: bool = False,
                     published_at: datetime | None = None) -> UUID:
    event_id: UUID = await conn.fetchval(
        """INSERT INTO jsrt_events (tenant_id, event_type, payload, published_at, dispatched_at)
           VALUES ($1, 'thing.happened', '{}', $2, $3) RETURNING id""",
        tenant, published_at or datetime.now(UTC), datetime.now(UTC) if dispatched else None)
    return event_id


async def make_daemon(conn: asyncpg.Connection, owner: str, hostname: str, pid: int,
                      memory: dict[str, Any] | None = None,
                      heartbeat_at: datetime | None = None) -> None:
    await conn.execute(
        """INSERT INTO jsrt_daemons (id, hostname, pid, memory, heartbeat_at)
           VALUES ($1, $2, $3, $4::jsonb, $5)""",
        owner, hostname, pid, json.dumps(memory) if memory is not None else None,
        heartbeat_at or datetime.now(UTC))


async def make_run(conn: asyncpg.Connection, tenant: UUID, script: UUID, execution: UUID,
                   daemon: str | None, state: str = "running") -> None:
    await conn.execute(
        """INSERT INTO jsrt_runs (execution_id, tenant_id, script_id, state, daemon_id, started_at)
           VALUES ($1, $2, $3, $4::text, $5, CASE WHEN $4::text = 'running' THEN NOW() END)""",
        execution, tenant, script, state, daemon)


@dataclass
class TenantRows:
    """One tenant's share of the world: ids by what they are."""

    tenant: UUID
    active: UUID  # script "alpha" (active, event)
    paused: UUID  # script "beta" (paused, event)
    executions: list[UUID] = field(default_factory=list)
    failed: list[UUID] = field(default_factory=list)
    letters: dict[str, UUID] = field(default_factory=dict)  # by state
    running: UUID | None = None
    daemon: str = ""


async def tenant_world(conn: asyncpg.Connection, name: str, now: datetime) -> TenantRows:
    tenant = await make_tenant(conn, name)
    active = await make_script(conn, tenant, name="alpha")
    paused = await make_script(conn, tenant, name="beta", status="paused")
    rows = TenantRows(tenant, active, paused)
    # 25 completed event runs over the last 50 minutes (two pages), 3 failed, 2 cron timeouts
    for i in range(25):
        rows.executions.append(await make_execution(
            conn, tenant, active, started_at=now - timedelta(minutes=2 * i, seconds=1)))
    for i in range(3):
        failed = await make_execution(
            conn, tenant, active, status="failed", started_at=now - timedelta(minutes=i + 1),
            error=f"TypeError: {name} broke\n    at handler (script.js:1:1)",
            trigger_data={"type": "event", "event_id": str(uuid.uuid4()), "attempt": 1})
        rows.failed.append(failed)
        rows.executions.append(failed)
    for i in range(2):
        rows.executions.append(await make_execution(
            conn, tenant, paused, status="timeout", trigger="cron",
            started_at=now - timedelta(minutes=30 + i)))
    for state in LETTER_STATES:
        script = paused if state == "waiting_for_script" else active
        execution = await make_execution(conn, tenant, script, status="failed",
                                         started_at=now - timedelta(hours=2),
                                         error=f"Error: {state} in {name}")
        rows.executions.append(execution)
        rows.letters[state] = await make_letter(
            conn, tenant, script, execution, state=state, error=f"Error: {state} in {name}",
            created_at=now - timedelta(hours=2))
    rows.running = await make_execution(conn, tenant, active, status="running",
                                        started_at=now - timedelta(seconds=30))
    rows.executions.append(rows.running)
    rows.daemon = f"daemon:host-{name}:1{len(name)}:abcd{name}"
    await make_daemon(conn, rows.daemon, f"host-{name}", 100 + len(rows.daemon),
                      {"rss_bytes": 50 << 20, "workers": [{"index": 0, "pid": 7,
                                                           "rss_bytes": 90 << 20,
                                                           "inflight": 1}]})
    await make_run(conn, tenant, active, rows.running, rows.daemon)
    for _ in range(4):
        await make_event(conn, tenant, published_at=now - timedelta(seconds=90))
    await make_event(conn, tenant, dispatched=True)
    return rows


async def world(conn: asyncpg.Connection,
                now: datetime | None = None) -> tuple[TenantRows, TenantRows]:
    """The same picture in tenants A and B (scripts of the same names)."""
    now = now or datetime.now(UTC)
    return await tenant_world(conn, "A", now), await tenant_world(conn, "B", now)
