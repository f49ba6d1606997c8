"""The daemon as PID 1, as a container's entrypoint is without `docker run --init`: its sandbox
workers are children of PID 1 from birth, which must not read as "the parent died"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from support.factories import executions, make_script, make_tenant, publish


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True,
                           timeout=30)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(),
                                reason="needs unshare --pid (root, or user namespaces)")


async def test_a_daemon_that_is_pid_1_runs_executions(conn: asyncpg.Connection,
                                                      db_url: str) -> None:
    tenant = await make_tenant(conn)
    await make_script(conn, tenant)
    await publish(conn, tenant, "thing.happened", {"n": 1})
    jsrt = Path(sys.executable).parent / "jsrt"
    env = {**os.environ, "DATABASE_URL": db_url, "JSRT_WORKERS": "1", "JSRT_METRICS_ADDR": ""}
    # a new PID namespace whose PID 1 is jsrt itself (--kill-child: a timeout kills it too)
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--kill-child", str(jsrt), "run", "--until-idle"],
        env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [e["status"] for e in await executions(conn, tenant)] == ["completed"]
