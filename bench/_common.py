"""Shared helpers for the benchmarks: a fresh migrated database and process memory."""

from __future__ import annotations

import os
import platform
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from consumer.migrate import Migrator
from consumer.settings import REPO_ROOT


def admin_url() -> str:
    return os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def fresh_database(prefix: str = "jsrt_bench", admin_dsn: str | None = None) -> str:
    """A new, migrated database next to `admin_dsn` (default: DATABASE_URL); its URL."""
    admin_dsn = admin_dsn or admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(admin_dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = with_database(admin_dsn, name)
    conn = await asyncpg.connect(url)
    try:
        await Migrator(conn, REPO_ROOT / "schema", REPO_ROOT / "triggers.sql").up()
    finally:
        await conn.close()
    return url


async def drop_database(url: str, admin_dsn: str | None = None) -> None:
    name = urlsplit(url).path.lstrip("/")
    admin = await asyncpg.connect(admin_dsn or admin_url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except OSError:
        return []
    return [int(p) for p in out.split()]


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {system}"
