"""`jsrt dev`: what `make run` starts. The daemon on DATABASE_URL, or on an embedded
PostgreSQL kept under .jsrt/pgdata when none is set; migrations applied; a demo tenant with
example scripts (on the embedded server, or with --demo: never unasked in a database of the
user's own, where its every-minute cron job would run); human-readable logs."""

from __future__ import annotations

import argparse
import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from consumer import log
from consumer.db import Db, connect
from consumer.errors import ConfigError, ValidationError
from consumer.http import http_address
from consumer.migrate import Migrator
from consumer.settings import Settings
from consumer.sql import q

DEMO_TENANT = "00000000-0000-4000-8000-00000000de70"

DEMO_SCRIPTS: list[dict[str, Any]] = [
    {
        "name": "demo-welcome",
        "type": "event",
        "event_types": ["user.signed_up"],
        "source": """\
// Runs for every user.signed_up event of the demo tenant.
export default async function handler(input, ctx) {
  console.log(`welcome, ${input.name ?? 'stranger'}!`);
  await ctx.events.publish('welcome.sent', {name: input.name ?? null});
  return {greeted: input.name ?? null};
}
""",
    },
    {
        "name": "demo-audit",
        "type": "event",
        "event_types": ["welcome.sent"],
        "source": """\
// Reacts to the event the welcome script publishes: a chain of two scripts.
async function handler(input, ctx) {
  return {audited: input.name, depth: ctx.trigger.depth};
}
""",
    },
    {
        "name": "demo-heartbeat",
        "type": "scheduled",
        "cron_expression": "* * * * *",
        "source": """\
// A cron script: runs every minute (UTC).
async function handler(input) {
  return {beat: input.scheduled_for};
}
""",
    },
    {
        "name": "demo-hello",
        "type": "http",
        "http_path": "/hello",
        "http_methods": ["GET"],
        "source": """\
// An HTTP endpoint: GET /t/<tenant>/hello?name=Ada, with an API key of the tenant
// (metadata.auth is "key" by default; `jsrt keys create` makes one)
async function handler(req) {
  return {status: 200, body: {hello: req.query.name ?? 'world'}};
}
""",
    },
]


def embedded_database(data_dir: Path) -> str:
    """Start (or reuse) the embedded server; it stops when this process exits."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pgserver
        except ImportError:
            raise ConfigError(
                "DATABASE_URL is not set and the embedded server is not installed "
                "(pip install 'jsruntime[embedded]')") from None
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        data_dir.parent.chmod(0o755)  # pgserver runs postgres as another user when root
        server = pgserver.get_server(  # type: ignore[attr-defined]
            data_dir.resolve(), cleanup_mode="stop")
    return str(server.get_uri())


async def seed_demo(db: Db) -> None:
    await db.execute(q("demo_tenant"), DEMO_TENANT)
    for script in DEMO_SCRIPTS:
        await db.execute(
            q("demo_script"), DEMO_TENANT, script["name"], script["source"], script["type"],
            script.get("event_types", []), script.get("cron_expression"),
            script.get("http_path"), script.get("http_methods", []),
        )


def banner(dsn: str, http: str | None, metrics: str = "", demo: bool = True) -> str:
    payload = json.dumps({"name": "Ada"})
    lines = [
        "",
        "jsruntime is running. In another terminal:",
        f"  export DATABASE_URL='{dsn}'",
    ]
    if demo:
        lines += [
            f"  .venv/bin/jsrt publish {DEMO_TENANT} user.signed_up '{payload}'",
            "  .venv/bin/jsrt executions list --tenant " + DEMO_TENANT,
            "or with SQL: psql \"$DATABASE_URL\" -c \"SELECT jsrt_publish('"
            + DEMO_TENANT + "', 'user.signed_up', '{\\\"name\\\": \\\"Ada\\\"}')\"",
        ]
    else:
        lines += [
            "  .venv/bin/jsrt tenants create --name me        # prints the tenant id",
            "  .venv/bin/jsrt scripts create --tenant ID --name hello --type event "
            "--event-types hello --file handler.js --activate",
            "(no demo tenant in this database; `jsrt dev --demo` adds one)",
        ]
    if http and demo:
        lines += [
            f"  KEY=$(.venv/bin/jsrt keys create --tenant {DEMO_TENANT} --name demo | tail -1)",
            f"  curl -H \"Authorization: Bearer $KEY\" 'http://{http}/t/{DEMO_TENANT}/hello"
            "?name=Ada'",
        ]
    if http:
        lines += console_lines(http, DEMO_TENANT if demo else None)
    if metrics:
        lines.append(f"  curl http://{metrics}/metrics   (and /healthz, /readyz)")
    lines += ["Stop with Ctrl-C.", ""]
    return "\n".join(lines)


CONSOLE_SCOPES = ("scripts:read", "scripts:write", "scripts:execute", "executions:read",
                  "dead-letters:manage", "keys:manage")


def console_lines(http: str, tenant: str | None) -> list[str]:
    """Where the web console is and the command that makes a key to sign in with (a key of
    the demo tenant, or an operator key where there is no demo)."""
    who = f"--tenant {tenant}" if tenant else "--operator"
    return [
        f"Web console: http://{http}/console/ - sign in with the key this prints (once):",
        f"  .venv/bin/jsrt keys create {who} --name console --scopes "
        f"{','.join(CONSOLE_SCOPES)} | tail -1",
    ]


async def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from consumer.app import run_daemon

    if args.demo and args.no_demo:
        raise ValidationError("--demo and --no-demo exclude each other")
    dsn = settings.database_url or embedded_database(Path(args.data_dir))
    # the demo only where it cannot surprise anyone: our own embedded server, or when asked
    demo = args.demo or (not settings.database_url and not args.no_demo)
    conn = await connect(dsn, "jsrt dev")
    try:
        await Migrator(conn, settings.schema_dir, settings.triggers_file).up()
        if demo:
            await seed_demo(Db(conn))
    finally:
        await conn.close()
    settings = dataclasses.replace(settings, database_url=dsn)

    def ready(http: str | None, metrics: str | None) -> None:
        log.get("jsrt.dev").info("dev_ready", database=dsn,
                                 demo_tenant=DEMO_TENANT if demo else None)
        print(banner(dsn, http, metrics or "", demo), flush=True)

    return await run_daemon(settings, http=args.http, ready=ready)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("dev", help="run locally: embedded PostgreSQL if needed, demo scripts")
    p.add_argument("--data-dir", default=".jsrt/pgdata",
                   help="embedded server data directory (when DATABASE_URL is unset)")
    p.add_argument("--demo", action="store_true",
                   help="create the demo tenant and scripts also in DATABASE_URL's database "
                        "(by default only on the embedded server)")
    p.add_argument("--no-demo", action="store_true",
                   help="do not create the demo tenant on the embedded server either")
    p.add_argument("--http", default=None, metavar="HOST:PORT", type=http_address,
                   help="also serve HTTP endpoints (e.g. 127.0.0.1:8080)")
    p.set_defaults(func=cmd_dev)
