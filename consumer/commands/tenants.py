"""`jsrt tenants create | list`: tenants without hand-written SQL (the repository is
consumer/tenants.py)."""

from __future__ import annotations

import argparse
from typing import Any

from consumer.commands._output import cut, dumps, table
from consumer.errors import ValidationError
from consumer.settings import Settings
from consumer.store import Store

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


async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt tenants") as store:
        tenant_id = await store.tenants.create(args.name)
    print(dumps({"id": tenant_id, "name": args.name}) if args.json else tenant_id)
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    async with Store.session(settings.require_database(), "jsrt tenants") as store:
        found = await store.tenants.search(args.limit + 1)  # one more: were there more?
    rows: list[dict[str, Any]] = list(cut(found, args.limit))
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0
