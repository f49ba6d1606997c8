"""The `jsrt` command line."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn

import anyio
import asyncpg

from consumer import jsontext, log
from consumer.db import connect, store_error
from consumer.errors import JsrtError, ValidationError
from consumer.http import http_address
from consumer.migrate import Migrator
from consumer.settings import Settings
from consumer.store import Store

Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]

# Exit codes: 0 done; 1 a runtime failure (the database, a script, something not found);
# 2 a usage error (the command line or its input is wrong; nothing was attempted).
EXIT_FAILURE = 1
EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse with the habits people expect: a mistyped command gets "did you mean" (never
    an internal destination name), and arguments a command does not take are reported by
    that command, with its own usage."""

    def add_subparsers(self, **kwargs: Any) -> Any:
        kwargs.setdefault("metavar", "COMMAND")
        return super().add_subparsers(**kwargs)

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            close = difflib.get_close_matches(value, list(action.choices), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise argparse.ArgumentError(
                None, f"unknown command {value!r}{hint} (commands: {', '.join(action.choices)})")
        super()._check_value(action, value)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras and not any(isinstance(a, argparse._SubParsersAction) for a in self._actions):
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"jsrt: error: {message}\n")


def _version() -> str:
    try:
        return version("jsruntime")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.commands._output import when

    # the migrator holds a session of its own (an advisory lock, DDL in transactions)
    conn = await connect(settings.require_database(), "jsrt migrate")
    try:
        migrator = Migrator(conn, settings.schema_dir, settings.triggers_file)
        if args.direction == "up":
            done = await migrator.up()
            print(f"applied {len(done)} migration(s)" + "".join(f"\n  {m}" for m in done))
        elif args.direction == "down":
            done = await migrator.down(all_=args.all)
            print(f"undid {len(done)} migration(s)" + "".join(f"\n  {m}" for m in done))
        else:
            for st in await migrator.status():
                applied = when(st.applied_at) if st.applied_at else "pending"
                print(f"{applied:<20} {st.id}")
    finally:
        await conn.close()
    return 0


async def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    try:
        payload: Any = jsontext.loads(args.payload, "payload") if args.payload else {}
    except jsontext.JsonRefused as exc:
        raise ValidationError(str(exc)) from None
    async with Store.session(settings.require_database(), "jsrt publish") as store:
        event_id = await store.queue.enqueue(args.tenant_id, args.event_type, payload, None, 0,
                                             "cli")
    print(event_id)
    return 0


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import run_daemon

    return await run_daemon(settings, until_idle=args.until_idle, http=args.http)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="jsrt", description="Multi-tenant JavaScript runtime on PostgreSQL")
    p.add_argument("--version", action="version", version=f"jsrt {_version()}")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("migrate", help="apply, undo or list schema migrations")
    m.add_argument("direction", choices=["up", "down", "status"])
    m.add_argument("--all", action="store_true", help="with down: undo every migration")
    m.set_defaults(func=cmd_migrate)

    r = sub.add_parser("run", help="run the daemon")
    r.add_argument("--until-idle", action="store_true", help="process everything due, then exit")
    r.add_argument("--http", metavar="HOST:PORT", type=http_address,
                   help="also serve HTTP triggers on this address")
    r.set_defaults(func=cmd_run)

    pub = sub.add_parser("publish", help="publish an event; prints its id")
    pub.add_argument("tenant_id")
    pub.add_argument("event_type")
    pub.add_argument("payload", nargs="?", help="JSON payload (default {})")
    pub.set_defaults(func=cmd_publish)

    from consumer.commands import register_all

    register_all(sub)
    return p


def _only_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _failed(exc: BaseException) -> int:
    """One `jsrt: error:` line per problem (a validation error may name several)."""
    if isinstance(exc, asyncpg.PostgresError):  # from a command that did not translate it
        exc = store_error(exc)
    for line in str(exc).splitlines() or [type(exc).__name__]:
        print(f"jsrt: error: {line}", file=sys.stderr)
    usage = isinstance(exc, ValidationError | json.JSONDecodeError)
    return EXIT_USAGE if usage else EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
        # people running `jsrt dev` read the logs; machines read `jsrt run`'s JSON lines
        fmt = "console" if args.command == "dev" and "JSRT_LOG_FORMAT" not in os.environ \
            else settings.log_format
        log.configure(fmt, settings.log_level,
                      stream=None if args.command in ("run", "dev", "serve") else sys.stderr)
        func: Command = args.func
        return anyio.run(func, args, settings)
    except (JsrtError, asyncpg.PostgresError, OSError, json.JSONDecodeError) as exc:
        return _failed(exc)
    except BaseExceptionGroup as group:  # raised in a task group, e.g. a port already in use
        leaf = _only_leaf(group)
        if not isinstance(leaf, JsrtError | asyncpg.PostgresError | OSError):
            raise
        return _failed(leaf)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
