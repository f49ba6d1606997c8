"""`jsrt executions list | show | cancel | replay`: execution history with input, output,
error, console logs and metrics; run control (#19): cancel unfinished executions, replay
finished ones."""

from __future__ import annotations

import argparse
import getpass
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer import replay, scripts
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

    c = es.add_parser("cancel", help="cancel unfinished executions: a pending one never "
                                     "starts, a running one is stopped")
    c.add_argument("ids", nargs="*", metavar="ID")
    c.add_argument("--script", help="every unfinished execution of this script instead")
    c.add_argument("--status", choices=("pending", "running"),
                   help="with --script: only those pending, or only those running")
    c.add_argument("--tenant")
    c.add_argument("--by", help="who cancels, kept in the error (default: your user name)")
    c.add_argument("--limit", type=int, default=10000, help="with --script: at most this many")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cancel)

    r = es.add_parser("replay", help="run finished executions again, as new executions "
                                     "linked to them (trigger_data.replay_of)")
    r.add_argument("ids", nargs="*", metavar="ID")
    r.add_argument("--script", help="the executions of this script instead (see --status)")
    r.add_argument("--status", action="append", choices=replay.REPLAYABLE,
                   help="with --script: of this status (repeatable; default failed and timeout)")
    r.add_argument("--since", help="with --script: started since (ISO time, or an age: 24h)")
    r.add_argument("--until", help="with --script: started before (ISO time, or an age)")
    r.add_argument("--version", choices=replay.VERSIONS, default="current",
                   help="the script's current source (default), or the version that ran "
                        "the original")
    r.add_argument("--tenant")
    r.add_argument("--limit", type=int, default=1000, help="at most this many")
    r.add_argument("--dry-run", action="store_true", help="say how many and which; run none")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_replay)


def parse_since(text: str | None, now: datetime | None = None,
                what: str = "--since") -> datetime | None:
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
            f"{what} must be an ISO time or an age like 30m, 2h, 7d (got {text!r})") from None
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


def _ids_or_script(args: argparse.Namespace) -> list[Any]:
    if bool(args.ids) == bool(args.script):
        raise ValidationError("give execution ids, or --script")
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    found = [scripts.parse_uuid(i, "execution id") for i in args.ids]
    return list(dict.fromkeys(found))


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    ids = _ids_or_script(args)
    if args.status and not args.script:
        raise ValidationError("--status goes with --script")
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    by = args.by or getpass.getuser()
    async with Store.session(settings.require_database(), "jsrt executions") as store:
        if args.script:
            ref = await store.scripts.resolve(args.script, tenant)
            ids = await store.executions.unfinished(ref.id, ref.tenant_id, args.status,
                                                    args.limit)
        done = await store.executions.cancel(ids, by, tenant) if ids else []
    rows = [{"execution_id": d.execution_id, "outcome": d.outcome, "status": d.status,
             "was": d.was, "script_id": d.script_id, "tenant_id": d.tenant_id} for d in done]
    if args.json:
        print(dumps(rows))
    elif not rows:
        print("nothing to cancel")
    else:
        for d in done:
            what = {"cancelled": f"cancelled (was {d.was})",
                    "finished": f"not cancelled: already {d.status}",
                    "missing": "not cancelled: no such execution"}[d.outcome]
            print(f"{d.execution_id} {what}")
    # ids given that could not be cancelled are a failure to do what was asked
    return 0 if args.script or all(d.outcome == "cancelled" for d in done) else 1


async def cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    ids = _ids_or_script(args)
    if not args.script and (args.status or args.since or args.until):
        raise ValidationError("--status, --since and --until go with --script")
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    async with Store.session(settings.require_database(), "jsrt executions") as store:
        ref = await store.scripts.resolve(args.script, tenant) if args.script else None
        selection = replay.Selection(
            tuple(ids), ref.id if ref else None, ref.tenant_id if ref else None,
            tuple(args.status or replay.DEFAULT_STATUSES), parse_since(args.since),
            parse_since(args.until, what="--until"), args.limit)
        planned = await replay.replay(store, selection, args.version, args.dry_run)
    rows = [{"original": p.original["id"], "execution_id": p.execution_id,
             "script_id": p.original["script_id"], "script_name": p.original["script_name"],
             "status": p.original["status"], "started_at": p.original["started_at"],
             "version": p.version if p.version is not None else p.original["current_version"],
             "dry_run": args.dry_run} for p in planned]
    if args.json:
        print(dumps(rows))
        return 0
    verb = "would replay" if args.dry_run else "replayed"
    print(f"{verb} {len(rows)} execution(s)")
    if rows:
        cols = ("original", "script_name", "status", "started_at", "version") + \
            (() if args.dry_run else ("execution_id",))
        print(table(rows, cols))
    return 0
