"""The HTTP baseline of bench/compare.py: a bare Starlette + asyncpg endpoint that keeps the
same history as a jsrt HTTP trigger - it inserts a `script_executions` row per request and
updates it with the response - but runs no sandbox, checks no limit and looks up no route.

    DATABASE_URL=... SCRIPT_ID=... TENANT_ID=... uvicorn http_baseline:app --port P
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_pool: asyncpg.Pool | None = None
SCRIPT = os.environ.get("SCRIPT_ID", "")
TENANT = os.environ.get("TENANT_ID", "")


@asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    global _pool
    _pool = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=4, max_size=12)
    yield
    await _pool.close()


async def echo(request: Request) -> Response:
    assert _pool is not None
    inp = json.dumps({"method": request.method, "path": request.url.path,
                      "query": dict(request.query_params)})
    async with _pool.acquire() as conn:
        execution = await conn.fetchval(
            "INSERT INTO script_executions (script_id, tenant_id, status, trigger_type,"
            " trigger_data, input) VALUES ($1, $2, 'running', 'http', '{\"type\": \"http\"}',"
            " $3::jsonb) RETURNING id", SCRIPT, TENANT, inp)
        body = json.dumps({"ok": True, "n": request.query_params.get("n")})
        await conn.execute(
            "UPDATE script_executions SET status = 'completed', output = $2::jsonb,"
            " completed_at = NOW() WHERE id = $1", execution, body)
    return Response(body, headers={"content-type": "application/json",
                                   "x-execution-id": str(execution)})


app = Starlette(routes=[Route("/echo", echo)], lifespan=lifespan)
