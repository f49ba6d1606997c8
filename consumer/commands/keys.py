"""`jsrt keys create | list | revoke`: API keys for what comes over HTTP (consumer/keys.py).
A new key is printed once, as the last line of stdout; only its hash is kept."""

from __future__ import annotations

import argparse
from typing import Any

from consumer import scripts
from consumer.commands._output import cut, dumps, table
from consumer.errors import ValidationError
from consumer.keys import DEFAULT_SCOPES, SCOPES
from consumer.settings import Settings
from consumer.store import Store

_LIST_COLUMNS = ("id", "tenant_id", "name", "scopes", "created_at", "last_used_at", "revoked_at")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("keys", help="create, list and revoke API keys")
    ks = p.add_subparsers(dest="keys_command", required=True)

    c = ks.add_parser("create", help="make a key; prints it once (the last line)")
    who = c.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant the key is for")
    who.add_argument("--operator", action="store_true", help="a key for every tenant")
    c.add_argument("--name", required=True, help="what the key is for (shown by list)")
    c.add_argument("--scopes", default=",".join(DEFAULT_SCOPES),
                   help=f"comma-separated, of {', '.join(SCOPES)} (default invoke)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_create)

    ls = ks.add_parser("list", help="keys (never the keys themselves), newest first")
    ls.add_argument("--tenant", help="this tenant's keys (and the operator keys)")
    ls.add_argument("--limit", type=int, default=500)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    r = ks.add_parser("revoke", help="revoke a key (by the id that list shows)")
    r.add_argument("id")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_revoke)


async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    tenant = None if args.operator else scripts.parse_uuid(args.tenant, "--tenant")
    scopes = [s for s in args.scopes.split(",")]
    async with Store.session(settings.require_database(), "jsrt keys",
                             settings=settings) as store:
        new = await store.keys.create(tenant, args.name, scopes)
    if args.json:
        print(dumps({"id": new.id, "tenant_id": new.tenant_id or "operator", "name": new.name,
                     "scopes": list(new.scopes), "created_at": new.created_at,
                     "key": new.key}))
    else:
        print(f"created key {new.id} ({', '.join(new.scopes)}) for "
              f"{new.tenant_id or 'every tenant'}; it is shown only now:")
        print(new.key)
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    async with Store.session(settings.require_database(), "jsrt keys",
                             settings=settings) as store:
        found = await store.keys.search(tenant, args.limit + 1)
    rows: list[dict[str, Any]] = list(cut(found, args.limit))
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0


async def cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt keys",
                             settings=settings) as store:
        row = await store.keys.revoke(args.id)
    print(dumps(row) if args.json else f"revoked {row['id']} ({row['name']})")
    return 0
