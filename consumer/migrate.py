"""sql-migrate compatible migrations: files `{timestamp}_{name}.sql` in schema/, applied in
name order, recorded in gorp_migrations exactly as the Go sql-migrate tool records them,
so both tools agree on what is applied. After the migrations, the routines are applied:
triggers.sql, then schema/functions/*.sql (the run path's versioned functions) in name order,
again whenever any of them changes."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from consumer import log
from consumer.db import connect
from consumer.errors import MigrationError
from consumer.sql import q

# Any constant works; it only has to be the same for every jsrt process.
MIGRATION_LOCK = 7_358_201_144

_DIRECTIVE = re.compile(r"^\s*--\s*\+migrate\s+(\w+)", re.MULTILINE)

_LOG = log.get("jsrt.migrate")


@dataclass(frozen=True, slots=True)
class Migration:
    id: str  # the file name, as sql-migrate uses it
    up: str
    down: str
    transactional: bool


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    id: str
    applied_at: datetime | None


def parse(name: str, text: str) -> Migration:
    """Split a file into its Up and Down sections (sql-migrate's directives)."""
    sections: dict[str, list[str]] = {"up": [], "down": []}
    current: str | None = None
    transactional = True
    for line in text.splitlines():
        m = _DIRECTIVE.match(line)
        if m:
            word = m.group(1).lower()
            if word in sections:
                current = word
            elif word == "notransaction":
                transactional = False
            continue  # StatementBegin/End: the whole section runs as one script anyway
        if current:
            sections[current].append(line)
    if not "".join(sections["up"]).strip():
        raise MigrationError(f"{name}: no '-- +migrate Up' section")
    return Migration(name, "\n".join(sections["up"]), "\n".join(sections["down"]), transactional)


def load(schema_dir: Path) -> list[Migration]:
    files = sorted(p for p in schema_dir.glob("*.sql") if p.is_file())
    return [parse(p.name, p.read_text()) for p in files]


class Migrator:
    def __init__(self, conn: asyncpg.Connection, schema_dir: Path, triggers_file: Path) -> None:
        self._conn = conn
        self._migrations = load(schema_dir)
        self._routines = routines(schema_dir, triggers_file)

    async def _ensure_table(self) -> None:
        await self._conn.execute(q("migrate_bookkeeping"))

    async def _applied(self) -> dict[str, datetime | None]:
        rows = await self._conn.fetch(q("migrate_applied"))
        return {r["id"]: r["applied_at"] for r in rows}

    async def status(self) -> list[MigrationStatus]:
        async with self._locked():
            applied = await self._applied()
        return [MigrationStatus(m.id, applied.get(m.id)) for m in self._migrations] + [
            MigrationStatus(i, at) for i, at in sorted(applied.items())
            if i not in {m.id for m in self._migrations}
        ]

    async def up(self) -> list[str]:
        async with self._locked():
            applied = await self._applied()
            done = [m.id for m in self._migrations if m.id not in applied]
            for m in self._migrations:
                if m.id not in applied:
                    await self._run(m, m.up, record=True)
            await self._apply_triggers(force=bool(done))
        return done

    async def down(self, all_: bool = False) -> list[str]:
        async with self._locked():
            applied = await self._applied()
            todo = [m for m in reversed(self._migrations) if m.id in applied]
            todo = todo if all_ else todo[:1]
            for m in todo:
                await self._run(m, m.down, record=False)
            if todo:
                # The triggers may have gone with the tables: re-apply on the next `up`.
                await self._conn.execute(q("triggers_digest_clear"))
        return [m.id for m in todo]

    async def _run(self, m: Migration, sql: str, record: bool) -> None:
        direction = "up" if record else "down"
        try:
            if m.transactional:
                async with self._conn.transaction():
                    await self._execute(m, sql, record)
            else:
                await self._execute(m, sql, record)
        except asyncpg.PostgresError as exc:
            raise MigrationError(f"{m.id} ({direction}) failed: {exc}") from exc
        _LOG.info("migration_applied", migration=m.id, direction=direction)

    async def _execute(self, m: Migration, sql: str, record: bool) -> None:
        if sql.strip():
            await self._conn.execute(sql)
        if record:
            await self._conn.execute(q("migrate_record"), m.id)
        else:
            await self._conn.execute(q("migrate_forget"), m.id)

    async def _apply_triggers(self, force: bool) -> None:
        texts = [(p.name, p.read_text()) for p in self._routines]
        digest = routines_digest(self._routines)
        current = await self._conn.fetchval(q("triggers_digest"))
        if current == digest and not force:
            return
        async with self._conn.transaction():
            for name, text in texts:
                try:
                    await self._conn.execute(text)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"{name} failed: {exc}") from exc
            await self._conn.execute(q("triggers_digest_save"), digest)
        _LOG.info("triggers_applied", sha256=digest[:12], files=len(texts))

    def _locked(self) -> _AdvisoryLock:
        return _AdvisoryLock(self._conn, self._ensure_table)


class _AdvisoryLock:
    """Serialises concurrent `jsrt migrate` runs on one database."""

    def __init__(self, conn: asyncpg.Connection, then: object) -> None:
        self._conn = conn
        self._then = then

    async def __aenter__(self) -> None:
        await self._conn.execute(q("migrate_lock"), MIGRATION_LOCK)
        await self._then()  # type: ignore[operator]

    async def __aexit__(self, *exc: object) -> None:
        await self._conn.execute(q("migrate_unlock"), MIGRATION_LOCK)


async def migrate_up(dsn: str, schema_dir: Path, triggers_file: Path) -> list[str]:
    conn = await connect(dsn, "jsrt migrate")
    try:
        return await Migrator(conn, schema_dir, triggers_file).up()
    finally:
        await conn.close()


def routines(schema_dir: Path, triggers_file: Path) -> list[Path]:
    """What is applied after the migrations, in order: triggers.sql, then the functions."""
    return [triggers_file, *sorted(p for p in (schema_dir / "functions").glob("*.sql")
                                   if p.is_file())]


def routines_digest(paths: list[Path]) -> str:
    """What jsrt_schema_state keeps of the routines applied last: a change re-applies them."""
    return hashlib.sha256(b"".join(
        p.name.encode() + b"\0" + p.read_bytes() + b"\0" for p in paths)).hexdigest()


def fingerprint(schema_dir: Path, triggers_file: Path) -> str:
    """Changes whenever a migration or a routine changes (test template cache key)."""
    h = hashlib.sha256()
    for p in [*sorted(schema_dir.glob("*.sql")), *routines(schema_dir, triggers_file)]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]
