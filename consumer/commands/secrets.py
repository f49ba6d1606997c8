"""`jsrt secrets set | list | delete | rotate | keygen`: tenant secrets (consumer/secrets.py).
A value comes from stdin or --from-file, never from the command line (where `ps` and shell
history would keep it), and is never printed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from consumer import scripts
from consumer.commands._output import dumps, table
from consumer.errors import ValidationError
from consumer.secrets import check_name, keygen
from consumer.settings import Settings
from consumer.store import Store

_LIST_COLUMNS = ("tenant_id", "name", "created_at", "updated_at")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("secrets", help="tenant secrets, read by scripts as ctx.secrets.get(NAME)")
    ss = p.add_subparsers(dest="secrets_command", required=True)

    s = ss.add_parser("set", help="set a secret (value from stdin, or --from-file)")
    s.add_argument("--tenant", required=True)
    s.add_argument("name")
    s.add_argument("--from-file", help="read the value from this file")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_set)

    ls = ss.add_parser("list", help="names and dates (never the values)")
    ls.add_argument("--tenant")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    d = ss.add_parser("delete", help="delete a secret")
    d.add_argument("--tenant", required=True)
    d.add_argument("name")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_delete)

    r = ss.add_parser("rotate", help="re-encrypt every secret under the first JSRT_SECRETS_KEY")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rotate)

    k = ss.add_parser("keygen", help="print a new key for JSRT_SECRETS_KEY")
    k.set_defaults(func=cmd_keygen)


def _value(args: argparse.Namespace) -> str:
    if args.from_file is not None:
        try:
            raw = Path(args.from_file).read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"cannot read --from-file {args.from_file}: {exc}") from None
    else:
        if sys.stdin.isatty():
            print("value (then Ctrl-D):", file=sys.stderr)
        raw = sys.stdin.read()
    # one trailing newline is how files and `echo` end a value, not part of it
    return raw[:-1] if raw.endswith("\n") else raw


async def cmd_set(args: argparse.Namespace, settings: Settings) -> int:
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    assert tenant is not None
    name = check_name(args.name)
    value = _value(args)
    async with Store.session(settings.require_database(), "jsrt secrets",
                             settings=settings) as store:
        created = await store.secrets.set(tenant, name, value)
    what = "created" if created else "updated"
    print(dumps({"tenant_id": tenant, "name": name, what: True}) if args.json
          else f"{what} secret {name}")
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    async with Store.session(settings.require_database(), "jsrt secrets",
                             settings=settings) as store:
        rows = await store.secrets.search(tenant)
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0


async def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    assert tenant is not None
    async with Store.session(settings.require_database(), "jsrt secrets",
                             settings=settings) as store:
        await store.secrets.delete(tenant, args.name)
    print(dumps({"deleted": args.name}) if args.json else f"deleted secret {args.name}")
    return 0


async def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt secrets",
                             settings=settings) as store:
        done, failed = await store.secrets.rotate()
    if args.json:
        print(dumps({"reencrypted": done, "failed": failed}))
    else:
        print(f"re-encrypted {done} secret(s) under the first key")
        for name in failed:
            print(f"jsrt: cannot decrypt {name} with any key of JSRT_SECRETS_KEY",
                  file=sys.stderr)
    return 1 if failed else 0


async def cmd_keygen(args: argparse.Namespace, settings: Settings) -> int:
    print(keygen())
    return 0
