"""The `make run` path on a machine with no DATABASE_URL: `jsrt dev` starts an embedded
PostgreSQL under a fresh directory, seeds the demo tenant, runs the daemon; the event its
banner tells a newcomer to publish is executed; Ctrl-C stops the daemon and the embedded
server; a second start reuses the data."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from support.daemons import OutputProcess, daemon_process

from consumer.commands.dev import DEMO_TENANT
from consumer.settings import REPO_ROOT


def jsrt() -> list[str]:
    """The venv's `jsrt` script, as the Makefile runs it (`python -m` when there is none)."""
    script = Path(sys.executable).parent / "jsrt"
    return [str(script)] if script.exists() else [sys.executable, "-m", "consumer.cli"]


class Dev(OutputProcess):
    """`jsrt dev` in a subprocess, its output lines collected as they come."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        super().__init__(
            [*jsrt(), "dev", "--data-dir", str(workdir / "pgdata"), "--http", "127.0.0.1:0"],
            env, cwd=workdir)

    @property
    def lines(self) -> list[str]:
        return self.raw

    def wait_for(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        rx = re.compile(pattern)
        return self.wait_line(
            lambda start: next((m for ln in self.raw[start:] if (m := rx.search(ln))), None),
            timeout, repr(pattern))

    def interrupt(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()



@pytest.fixture
def workdir() -> Iterator[Path]:
    # pgserver runs postgres as an unprivileged user when we are root: it must reach the dir
    base = Path(tempfile.mkdtemp(prefix="jsrt-dev-", dir="/tmp"))
    os.chmod(base, 0o755)
    try:
        yield base
    finally:
        stop_leftover_server(base / "pgdata")
        shutil.rmtree(base, ignore_errors=True)


def stop_leftover_server(pgdata: Path) -> None:
    pid = postmaster_pid(pgdata)
    if pid is not None and running(pid):
        psutil.Process(pid).terminate()


def postmaster_pid(pgdata: Path) -> int | None:
    try:
        return int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent (or an init) to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def env() -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    e["JSRT_METRICS_ADDR"] = "127.0.0.1:0"  # never the default port another daemon may hold
    e.pop("JSRT_LOG_FORMAT", None)  # the readable console lines a newcomer sees
    return e


def test_the_makefile_run_target_is_jsrt_dev() -> None:
    recipe = (REPO_ROOT / "Makefile").read_text().split("\nrun:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/jsrt dev" in recipe


async def test_make_run_path_executes_the_demo_event_and_stops_cleanly(
        workdir: Path, env: dict[str, str]) -> None:
    dev = Dev(workdir, env)
    try:
        dsn = dev.wait_for(r"export DATABASE_URL='([^']+)'").group(1)
        http_port = dev.wait_for(r"http_listening.*port=(\d+)").group(1)
        metrics_port = dev.wait_for(r"metrics_listening.*port=(\d+)").group(1)
        dev.wait_for(r"daemon_started")
        postmaster = postmaster_pid(workdir / "pgdata")
        assert postmaster is not None and running(postmaster)

        # the command the banner prints
        published = subprocess.run(
            [*jsrt(), "publish", DEMO_TENANT, "user.signed_up", '{"name": "Ada"}'],
            env={**env, "DATABASE_URL": dsn}, cwd=workdir, capture_output=True, text=True,
            timeout=60)
        assert published.returncode == 0, published.stderr
        dev.wait_for(r"execution_completed.*event_type=user\.signed_up")
        dev.wait_for(r"execution_completed.*event_type=welcome\.sent")  # the chained script

        # the key the banner tells how to make: the demo endpoint asks for one
        made = subprocess.run(
            [*jsrt(), "keys", "create", "--tenant", DEMO_TENANT, "--name", "demo"],
            env={**env, "DATABASE_URL": dsn}, cwd=workdir, capture_output=True, text=True,
            timeout=60)
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        async with httpx.AsyncClient(timeout=10) as client:
            anonymous = await client.get(f"http://127.0.0.1:{http_port}/t/{DEMO_TENANT}/hello")
            hello = await client.get(f"http://127.0.0.1:{http_port}/t/{DEMO_TENANT}/hello",
                                     params={"name": "Ada"},
                                     headers={"authorization": f"Bearer {key}"})
            assert anonymous.status_code == 401
            health = await client.get(f"http://127.0.0.1:{metrics_port}/healthz")
            ready = await client.get(f"http://127.0.0.1:{metrics_port}/readyz")
            metrics = await client.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert (hello.status_code, hello.json()) == (200, {"hello": "Ada"})
        assert (health.status_code, ready.status_code) == (200, 200)
        assert 'jsrt_events_received_total{source="cli"} 1.0' in metrics.text

        assert dev.interrupt() == 0, "".join(dev.lines[-20:])
        assert "daemon_stopped" in "".join(dev.lines)
        assert not running(postmaster), "the embedded server outlived jsrt dev"
        assert not (workdir / "pgdata" / "postmaster.pid").exists()  # a clean shutdown
    finally:
        dev.close()

    # a second start reuses the data: the first run's executions are still there
    again = Dev(workdir, env)
    try:
        assert again.wait_for(r"export DATABASE_URL='([^']+)'").group(1) == dsn
        again.wait_for(r"daemon_started")
        conn = await asyncpg.connect(dsn)
        try:
            scripts = await conn.fetchval(
                "SELECT count(*) FROM scripts WHERE tenant_id = $1", DEMO_TENANT)
            completed = await conn.fetchval(
                """SELECT count(*) FROM script_executions
                   WHERE tenant_id = $1 AND trigger_type = 'event' AND status = 'completed'""",
                DEMO_TENANT)
        finally:
            await conn.close()
        assert (scripts, completed) == (4, 2)
        assert again.interrupt() == 0
    finally:
        again.close()


async def test_jsrt_dev_on_a_database_of_ones_own_adds_the_demo_only_when_asked(
        conn: asyncpg.Connection, db_url: str) -> None:
    """`make run` with DATABASE_URL set: no demo tenant and every-minute cron job unasked."""
    for extra, demo in (((), False), (("--demo",), True)):
        with daemon_process(db_url, command="dev", args=("--http", "127.0.0.1:0", *extra)) as d:
            d.wait_event("daemon_started")
            shown = "".join(d.raw)
            assert "jsruntime is running" in shown
            assert (f"jsrt publish {DEMO_TENANT}" in shown) == demo, shown
            assert ("jsrt tenants create" in shown) == (not demo)
            assert await conn.fetchval("SELECT count(*) FROM scripts WHERE tenant_id = $1",
                                       DEMO_TENANT) == (4 if demo else 0)
            # the web console: its address, and the command for a key to sign in with
            console = re.search(r"Web console: (http://127\.0\.0\.1:\d+/console/)", shown)
            assert console, shown
            assert ("--tenant " + DEMO_TENANT if demo else "--operator") + " --name console" \
                in shown
            login = httpx.get(console[1] + "login", timeout=10)
            assert login.status_code == 200 and 'for="key"' in login.text
            assert d.stop(signal.SIGINT) == 0, "".join(d.raw[-20:])
