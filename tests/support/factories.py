"""Rows for tests, inserted the way a user would (plain SQL against the seed tables)."""

from __future__ import annotations

import json
import uuid
from typing import Any
from uuid import UUID

import asyncpg

DEFAULT_LIMITS = {
    "max_execution_time_ms": 30000,
    "max_memory_bytes": 67108864,
    "max_concurrent_runs": 5,
    "max_api_calls_per_minute": 60,
    "max_output_size_bytes": 1048576,
}

TRIVIAL = "function handler(input, ctx) { return {echo: input, tenant: ctx.tenantId}; }"


async def make_tenant(conn: asyncpg.Connection, name: str = "t") -> UUID:
    tenant_id = uuid.uuid4()
    await conn.execute("INSERT INTO tenants (id, name) VALUES ($1, $2)", tenant_id, name)
    return tenant_id


async def make_script(
    conn: asyncpg.Connection,
    tenant_id: UUID,
    source: str = TRIVIAL,
    *,
    name: str | None = None,
    type: str = "event",
    status: str = "active",
    event_types: list[str] | None = None,
    limits: dict[str, Any] | None = None,
    cron: str | None = None,
    http_path: str | None = None,
    http_methods: list[str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> UUID:
    if type == "event" and event_types is None:
        event_types = ["thing.happened"]
    script_id: UUID = await conn.fetchval(
        """INSERT INTO scripts (tenant_id, name, source, type, status, event_types,
                                cron_expression, http_path, http_methods, metadata, resource_limits)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb, $11::jsonb || $12::jsonb)
           RETURNING id""",
        tenant_id, name or f"s-{uuid.uuid4().hex[:8]}", source, type, status,
        event_types or [], cron, http_path, http_methods or [],
        json.dumps(metadata or {}), json.dumps(DEFAULT_LIMITS), json.dumps(limits or {}),
    )
    return script_id


async def publish(conn: asyncpg.Connection, tenant_id: UUID, event_type: str,
                  payload: Any = None) -> UUID:
    event_id: UUID = await conn.fetchval(
        "SELECT jsrt_publish($1, $2, $3::jsonb)", tenant_id, event_type,
        json.dumps(payload if payload is not None else {}),
    )
    return event_id


async def executions(conn: asyncpg.Connection,
                     tenant_id: UUID | None = None) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, script_id, tenant_id, status, trigger_type, trigger_data::text AS td,
                  input::text AS inp, output::text AS out, error, metrics::text AS met,
                  started_at, completed_at
           FROM script_executions WHERE ($1::uuid IS NULL OR tenant_id = $1)
           ORDER BY started_at""",
        tenant_id,
    )
    out = []
    for r in rows:
        d = dict(r)
        d["trigger_data"] = json.loads(d.pop("td")) if r["td"] else None
        d["input"] = json.loads(d.pop("inp")) if r["inp"] else None
        d["output"] = json.loads(d.pop("out")) if r["out"] else None
        d["metrics"] = json.loads(d.pop("met")) if r["met"] else None
        out.append(d)
    return out
