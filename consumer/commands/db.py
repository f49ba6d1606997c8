"""`jsrt db expose | list | hide`: which of the tenants' tables scripts reach through ctx.db
(the repository is consumer/tenant_data.py; the grants, policies and the registry are made by
the SQL functions of migration 20261202200000_tenant_data.sql)."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.commands._output import dumps, table
from consumer.errors import ValidationError
from consumer.settings import Settings
from consumer.store import Store

_LIST_COLUMNS = ("table", "writable", "columns", "exposed_at")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("db", help="tables scripts may reach through ctx.db")
    ds = p.add_subparsers(dest="db_command", required=True)

    e = ds.add_parser("expose", help="let scripts reach TABLE (rows of their own tenant only)")
    e.add_argument("table", help="a table with a tenant_id uuid column (schema.name or name)")
    e.add_argument("--write", action="store_true", help="allow INSERT, UPDATE and DELETE too")
    e.add_argument("--columns", help="only these columns, comma-separated (tenant_id is added)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_expose)

    ls = ds.add_parser("list", help="the exposed tables")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    h = ds.add_parser("hide", help="take TABLE out of scripts' reach")
    h.add_argument("table")
    h.add_argument("--json", action="store_true")
    h.set_defaults(func=cmd_hide)


async def cmd_expose(args: argparse.Namespace, settings: Settings) -> int:
    columns = None
    if args.columns is not None:
        columns = [c.strip() for c in args.columns.split(",") if c.strip()]
        if not columns:
            raise ValidationError("--columns needs at least one column name")
    async with Store.session(settings.require_database(), "jsrt db") as store:
        exposed = await store.tenant_data.expose(args.table, args.write, columns)
    name = f"{exposed.schema}.{exposed.name}"
    record = {"table": name, "writable": exposed.writable,
              "columns": list(exposed.columns) if exposed.columns else None}
    if args.json:
        print(dumps(record))
    else:
        what = "read and write" if exposed.writable else "read"
        cols = ", ".join(exposed.columns) if exposed.columns else "all columns"
        print(f"exposed {name}: scripts may {what} their own tenant's rows ({cols})")
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt db") as store:
        found = await store.tenant_data.list()
    rows: list[dict[str, Any]] = [
        {"table": f"{r['table_schema']}.{r['table_name']}", "writable": r["writable"],
         "columns": r["columns"], "exposed_at": r["exposed_at"]} for r in found]
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0


async def cmd_hide(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt db") as store:
        hidden = await store.tenant_data.hide(args.table)
    if args.json:
        print(dumps({"table": args.table, "hidden": hidden}))
    elif hidden:
        print(f"hidden {args.table}: scripts can no longer reach it")
    else:
        raise ValidationError(f"{args.table!r} is not exposed")
    return 0
