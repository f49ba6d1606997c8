"""`jsrt tenants create | list`: tenants without hand-written SQL. Inside an IOTA SDK database
the tenants table is the host's; a create that its schema refuses (a NOT NULL column the
runtime does not know) says so in one line."""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

import asyncpg

from consumer.commands._output import cut, dumps, table
from consumer.errors import StoreError, ValidationError
from consumer.settings import Settings
from consumer.sql import q
from consumer.store import connection, translated
from consumer.validation import MAX_NAME

_LIST_COLUMNS = ("id", "name", "scripts", "created_at")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tenants", help="create and list tenants")
    ts = p.add_subparsers(dest="tenants_command", required=True)

    c = ts.add_parser("create", help="create a tenant; prints its id")
    c.add_argument("--name", help="the tenant's name (required where the table needs one)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_create)

    ls = ts.add_parser("list", help="tenants, newest first")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)


async def create(conn: asyncpg.Connection, name: str | None) -> UUID:
    if name is not None and (not name.strip() or len(name) > MAX_NAME):
        raise ValidationError(f"--name must be 1 to {MAX_NAME} characters")
    async with translated():
        try:
            tenant_id: UUID = await conn.fetchval(q("tenant_create"), name)
        except asyncpg.UniqueViolationError:
            raise ValidationError(f"a tenant named {name!r} exists") from None
        except asyncpg.NotNullViolationError as exc:
            if exc.column_name == "name":
                raise ValidationError("this database's tenants need a name: give --name") from None
            raise StoreError(
                f"cannot create a tenant here: this database's tenants table requires "
                f"{exc.column_name!r} (NOT NULL, no default), which jsrt does not know; create "
                "the tenant with the application that owns the table") from None
    return tenant_id


async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    async with connection(settings.require_database(), "jsrt tenants") as conn:
        tenant_id = await create(conn, args.name)
    print(dumps({"id": tenant_id, "name": args.name}) if args.json else tenant_id)
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    async with connection(settings.require_database(), "jsrt tenants") as conn, translated():
        found = await conn.fetch(q("tenant_list"), args.limit + 1)  # one more: were there more?
    rows: list[dict[str, Any]] = [dict(r) for r in cut(found, args.limit)]
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0
