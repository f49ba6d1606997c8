"""PostgreSQL restarted under a running daemon: it reconnects and loses nothing.

Uses a private embedded server (pgserver) so restarting it disturbs no other test."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Awaitable, Iterator
from pathlib import Path

import asyncpg
import pytest
from support.daemons import daemon_process
from support.factories import make_script, make_tenant, publish
from support.waiting import eventually

from consumer.migrate import Migrator
from consumer.settings import REPO_ROOT


@pytest.fixture
def private_server() -> Iterator[tuple[str, object]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # type: ignore[import-untyped]
    # pgserver runs postgres as an unprivileged user when we are root: it must reach the dir
    base = Path(tempfile.mkdtemp(prefix="jsrt-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    server = pgserver.get_server(base / "data", cleanup_mode="stop")
    try:
        yield server.get_uri(), server
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def restart(server: object) -> None:
    from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

    pg_ctl(["-w", "restart", "-m", "fast"], pgdata=server.pgdata,  # type: ignore[attr-defined]
           user=server.system_user)  # type: ignore[attr-defined]


async def completed(url: str, tenant: object) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM script_executions WHERE tenant_id = $1 AND status = 'completed'",
            tenant))
    finally:
        await conn.close()


async def _at_least(count: Awaitable[int], n: int) -> bool:
    return await count >= n


async def test_daemon_survives_a_postgres_restart(private_server: tuple[str, object]) -> None:
    url, server = private_server
    conn = await asyncpg.connect(url)
    try:
        await Migrator(conn, REPO_ROOT / "schema", REPO_ROOT / "triggers.sql").up()
        tenant = await make_tenant(conn)
        await make_script(conn, tenant)
        await publish(conn, tenant, "thing.happened", {"n": 1})
    finally:
        await conn.close()

    with daemon_process(url) as d:
        d.wait_event("execution_completed", tenant_id=str(tenant))
        restart(server)
        d.wait_event("listener_reconnected", timeout=30)
        conn = await asyncpg.connect(url)
        try:
            for n in range(2, 12):
                await publish(conn, tenant, "thing.happened", {"n": n})
        finally:
            await conn.close()
        await eventually(lambda: _at_least(completed(url, tenant), 11), timeout=30,
                         what="11 completed executions")
        assert d.stop() == 0, "".join(d.raw[-20:])
