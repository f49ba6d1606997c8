"""Test harness: a real PostgreSQL, a template database migrated once per session, and a
fresh database cloned from it for every test (NOTIFY needs real commits, so no
rolled-back-transaction tricks).

Server selection: DATABASE_URL when set; otherwise a testcontainers PostgreSQL (image
JSRT_TEST_PG_IMAGE, default postgres:16-alpine) when a Docker engine answers; otherwise, or when
the container does not start, an embedded server from the `pgserver` package."""

from __future__ import annotations

import asyncio
import contextlib
import os
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from support.databases import create_database, drop_database, with_database
from support.private_pg import private_server

from consumer.migrate import Migrator, fingerprint
from consumer.settings import REPO_ROOT

SCHEMA_DIR = REPO_ROOT / "schema"
TRIGGERS = REPO_ROOT / "triggers.sql"
PG_IMAGE = os.environ.get("JSRT_TEST_PG_IMAGE", "postgres:16-alpine")


def _docker_answers() -> bool:
    if not (os.path.exists("/var/run/docker.sock") or os.environ.get("DOCKER_HOST")):
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=2)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except Exception:
            return False


@contextlib.contextmanager
def _container(image: str) -> Iterator[str]:
    with warnings.catch_warnings():
        # testcontainers 4.15 moved the module and warns on the old path, which older
        # releases alone have; the suite turns warnings into errors
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:
            from testcontainers.postgres import PostgresContainer
    with PostgresContainer(image, driver=None) as pg:
        yield pg.get_connection_url()


def _say(config: pytest.Config, line: str) -> None:
    """One line on the terminal, past output capturing (a warning would fail the run)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(line)


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """An admin DSN for a PostgreSQL server the tests may create databases on."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
        return
    with contextlib.ExitStack() as stack:
        if _docker_answers():
            try:
                dsn = stack.enter_context(_container(PG_IMAGE))
            except Exception as exc:  # any failure to start: pull refused, no wait, no socket
                reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                _say(request.config, f"tests: the PostgreSQL container ({PG_IMAGE}) did not "
                                     f"start, using the embedded server instead ({reason})")
            else:
                yield dsn
                return
        # Under /tmp, not pytest's tmp dir: pgserver opens that dir's parents to the unprivileged
        # user it runs postgres as when we are root, and any pytest session starting meanwhile
        # closes /tmp/pytest-of-<user> again (0700), which made the server panic mid-run.
        yield stack.enter_context(private_server()).uri


async def _build_template(admin_dsn: str, name: str) -> None:
    admin = await asyncpg.connect(admin_dsn)
    try:
        # One builder at a time across concurrent pytest runs on the same server.
        await admin.execute("SELECT pg_advisory_lock(7358201145)")
        exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            building = name + "_building"
            await admin.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
            await admin.execute(f'CREATE DATABASE "{building}"')
            conn = await asyncpg.connect(with_database(admin_dsn, building))
            try:
                await Migrator(conn, SCHEMA_DIR, TRIGGERS).up()
            finally:
                await conn.close()
            await admin.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        await admin.execute("SELECT pg_advisory_unlock(7358201145)")
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def template_db(pg_server: str) -> str:
    name = "jsrt_tpl_" + fingerprint(SCHEMA_DIR, TRIGGERS)
    asyncio.run(_build_template(pg_server, name))
    return name


@pytest.fixture
async def empty_db_url(pg_server: str) -> AsyncIterator[str]:
    """A fresh database with nothing in it (for migration tests)."""
    name = await create_database(pg_server)
    yield with_database(pg_server, name)
    await drop_database(pg_server, name)


@pytest.fixture
async def db_url(pg_server: str, template_db: str) -> AsyncIterator[str]:
    """A fresh, fully migrated database for this test alone."""
    name = await create_database(pg_server, template_db)
    yield with_database(pg_server, name)
    await drop_database(pg_server, name)


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[asyncpg.Connection]:
    c = await asyncpg.connect(db_url)
    yield c
    await c.close()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT
