"""`jsrt executions list | show`: execution history with input, output, error, console logs
and metrics."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer import scripts
from consumer.commands._output import cut, dumps, fields, table
from consumer.errors import ValidationError
from consumer.settings import Settings
from consumer.store import Store

EXEC_STATUSES = ("pending", "running", "completed", "failed", "timeout", "cancelled")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_LIST_COLUMNS = ("id", "script_name", "status", "trigger_type", "started_at", "duration_ms",
                 "error")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("executions", help="execution history")
    es = p.add_subparsers(dest="executions_command", required=True)

    ls = es.add_parser("list", help="recent executions, newest first")
    ls.add_argument("--tenant")
    ls.add_argument("--script", help="script id, tenant_id/name, or a name (in every tenant "
                                     "unless --tenant)")
    ls.add_argument("--status", choices=EXEC_STATUSES)
    ls.add_argument("--since", help="ISO time, or an age such as 30m, 2h, 7d")
    ls.add_argument("--limit", type=int, default=50)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    sh = es.add_parser("show", help="one execution: input, output, error, logs, metrics")
    sh.add_argument("id")
    sh.add_argument("--tenant")
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    if text is None:
        return None
    match = _RELATIVE.match(text.strip())
    if match:
        delta = timedelta(**{_UNITS[match[2]]: int(match[1])})
        return (now or datetime.now(UTC)) - delta
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(
            f"--since must be an ISO time or an age like 30m, 2h, 7d (got {text!r})") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    since = parse_since(args.since)
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    # a bare name without --tenant means that name in every tenant, as dead-letters has it
    by_name = args.script if args.script and tenant is None and scripts.is_bare_name(
        args.script) else None
    async with Store.session(settings.require_database(), "jsrt executions") as store:
        script = await store.scripts.resolve(args.script, tenant) \
            if args.script and by_name is None else None
        rows = await store.executions.search(tenant, script.id if script else None, args.status,
                                           since, args.limit + 1,  # one more: were there more?
                                           by_name)
    records = list(cut(rows, args.limit))
    print(dumps(records) if args.json else table(records, _LIST_COLUMNS))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    execution_id = scripts.parse_uuid(args.id, "execution id")
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    assert execution_id is not None  # args.id is required
    async with Store.session(settings.require_database(), "jsrt executions") as store:
        record = await store.executions.show(execution_id, tenant)
    print(dumps(record) if args.json else _readable(record))
    return 0


def _readable(r: dict[str, Any]) -> str:
    head = fields(r, ("id", "tenant_id", "script_id", "script_name", "status", "trigger_type",
                      "started_at", "completed_at"))
    parts = [head,
             "\ntrigger_data\n" + dumps(r["trigger_data"]),
             "\ninput\n" + dumps(r["input"]),
             "\noutput\n" + dumps(r["output"])]
    if r["error"]:
        parts.append("\nerror\n" + r["error"])
    parts.append("\nlogs" + ("".join(f"\n  [{line.get('level', 'log')}] {line.get('message')}"
                                     for line in r["logs"]) or "\n  (none)"))
    parts.append("\nmetrics\n" + dumps(r["metrics"]))
    return "\n".join(parts)
