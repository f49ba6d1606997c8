"""`jsrt scripts create | update | list | show | activate | pause | archive | versions |
rollback | delete`: script management without hand-written SQL. Everything given is validated
before anything is written."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from consumer import jsontext, scripts
from consumer.commands._output import cut, dumps, fields, table
from consumer.errors import ValidationError
from consumer.policy import KEYS, MODES
from consumer.settings import Settings
from consumer.store import Store
from consumer.validation import (
    STATUSES,
    TYPES,
    ScriptSpec,
    lines,
    normalize_methods,
    parse_limits,
    problems,
)

_LIST_COLUMNS = ("id", "tenant_id", "name", "type", "status", "trigger", "version", "updated_at")
_SHOW_KEYS = ("id", "tenant_id", "name", "description", "type", "status", "version",
              "cron_expression", "timezone", "next_run_at", "last_run_at", "last_run_status",
              "http_path", "http_methods", "event_types", "resource_limits", "metadata",
              "created_at", "updated_at")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("scripts", help="create, change and inspect scripts")
    ss = p.add_subparsers(dest="scripts_command", required=True)

    c = ss.add_parser("create", help="create a script (draft unless --activate)")
    c.add_argument("--tenant", required=True, help="tenant id")
    c.add_argument("--name", required=True)
    c.add_argument("--type", required=True, choices=TYPES)
    c.add_argument("--file", required=True, help="the handler's source (.js)")
    _trigger_options(c)
    c.add_argument("--activate", action="store_true", help="create it active")
    c.set_defaults(func=cmd_create)

    u = ss.add_parser("update", help="change a script (a new source becomes a new version)")
    _script_arg(u)
    u.add_argument("--name")
    u.add_argument("--type", choices=TYPES)
    u.add_argument("--file", help="new source (.js)")
    _trigger_options(u)
    u.set_defaults(func=cmd_update)

    ls = ss.add_parser("list", help="list scripts")
    ls.add_argument("--tenant")
    ls.add_argument("--type", choices=TYPES)
    ls.add_argument("--status", choices=STATUSES)
    ls.add_argument("--limit", type=int, default=500, help="at most this many (default 500)")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_list)

    sh = ss.add_parser("show", help="one script: configuration, schedule, source")
    _script_arg(sh)
    sh.add_argument("--json", action="store_true")
    sh.set_defaults(func=cmd_show)

    for name, status in (("activate", "active"), ("pause", "paused"), ("archive", "archived")):
        st = ss.add_parser(name, help=f"set the script's status to {status}")
        _script_arg(st)
        st.add_argument("--json", action="store_true")
        st.set_defaults(func=cmd_status, status=status)

    v = ss.add_parser("versions", help="the script's source versions")
    _script_arg(v)
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_versions)

    r = ss.add_parser("rollback", help="make an earlier version's source current again")
    _script_arg(r)
    r.add_argument("version", type=int)
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_rollback)

    d = ss.add_parser("delete", help="delete a script with its versions, executions and dead "
                                     "letters (says what would go unless --yes)")
    _script_arg(d)
    d.add_argument("--yes", action="store_true", help="really delete")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_delete)


def _script_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("script", metavar="SCRIPT", help="script id, or tenant_id/name")
    p.add_argument("--tenant", help="tenant id (to name the script by its name alone)")


def _trigger_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--description")
    p.add_argument("--cron", help="cron expression (scheduled scripts)")
    p.add_argument("--timezone", help="IANA time zone of the cron expression (default UTC)")
    p.add_argument("--http-path", help="endpoint path, e.g. /hooks/order (http scripts)")
    p.add_argument("--methods", help="allowed methods, e.g. GET,POST (http; default GET)")
    p.add_argument("--event-types", help="comma-separated event types (event scripts)")
    p.add_argument("--limits", help='resource limits as JSON, e.g. {"max_concurrent_runs": 2}')
    p.add_argument("--auth", choices=MODES,
                   help="who may call an http script (default key: an API key with invoke)")
    p.add_argument("--access", metavar="JSON",
                   help='access policy keys merged into the metadata, e.g. {"auth": "hmac", '
                        '"auth_secret": "HOOK_KEY", "rate_limit_per_minute": 60, '
                        '"cors": {"origins": ["https://app.example"]}}')
    p.add_argument("--message", help="change description kept with the new version")
    p.add_argument("--json", action="store_true")


# ------------------------------------------------------------------ parsing
def _read_source(path: str) -> str:
    try:
        return Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"cannot read --file {path}: {exc}") from None


def _split(text: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in text.split(",")) if text is not None else ()


def _changes(args: argparse.Namespace, base_limits: Any = None,
             base_access: Any = None) -> tuple[dict[str, Any], list[str]]:
    """ScriptSpec fields given on the command line, and the problems of those the spec's own
    check does not see (methods, limits); everything else is checked with the whole spec, so
    that every problem is reported at once."""
    out: dict[str, Any] = {}
    found: list[str] = []
    for arg, key in (("name", "name"), ("type", "type"), ("description", "description"),
                     ("cron", "cron"), ("timezone", "timezone"), ("http_path", "http_path")):
        if getattr(args, arg, None) is not None:
            out[key] = getattr(args, arg)
    if getattr(args, "file", None) is not None:
        out["source"] = _read_source(args.file)  # unreadable: nothing else can be checked
    if args.methods is not None:
        methods, problem = normalize_methods(_split(args.methods))
        found += lines(problem or (None if methods else "--methods must name at least one method"))
        out["http_methods"] = methods
    if args.event_types is not None:
        out["event_types"] = _split(args.event_types)
    if args.limits is not None:
        try:
            out["limits"] = parse_limits(args.limits, base_limits)
        except ValidationError as exc:
            found += lines(str(exc))
    if args.access is not None or args.auth is not None:
        access, problem = _access(args, base_access)
        found += lines(problem)
        out["access"] = access
    return out, found


def _access(args: argparse.Namespace, base: Any) -> tuple[dict[str, Any], str | None]:
    """The stored policy keys with --access merged over them (a null value removes a key),
    then --auth."""
    out = dict(base or {})
    if args.access is not None:
        try:
            given = jsontext.loads(args.access, "--access")
        except jsontext.JsonRefused as exc:
            return out, str(exc)
        if not isinstance(given, dict) or not set(given) <= KEYS:
            return out, f"--access must be a JSON object of {', '.join(sorted(KEYS))}"
        out.update(given)
        out = {k: v for k, v in out.items() if v is not None}
    if args.auth is not None:
        out["auth"] = args.auth
    return out, None


def _raise(found: list[str]) -> None:
    if found:
        raise ValidationError("\n".join(found))


def _tenant(args: argparse.Namespace) -> Any:
    return scripts.parse_uuid(getattr(args, "tenant", None), "--tenant")


# ------------------------------------------------------------------ handlers
async def cmd_create(args: argparse.Namespace, settings: Settings) -> int:
    tenant = _tenant(args)
    changes, found = _changes(args)
    if args.type == "http" and "http_methods" not in changes:
        changes["http_methods"] = ("GET",)
    spec = ScriptSpec(**{"source": "", **changes})
    _raise(found + problems(spec))
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        script_id = await store.scripts.create(tenant, spec,
                                               "active" if args.activate else "draft",
                                               args.message)
    print(dumps({"id": script_id}) if args.json else script_id)
    return 0


async def cmd_update(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        ref = await store.scripts.resolve(args.script, _tenant(args))
        row = await store.scripts.current(ref)
        stored = {k: v for k, v in (row["metadata"] or {}).items() if k in KEYS}
        changes, found = _changes(args, row["resource_limits"], stored)
        if not changes and not found:
            raise ValidationError("nothing to change (give --file, --cron, --limits, ...)")
        _raise(found and found + problems(scripts.merged(row, changes)))
        await store.scripts.update(ref, changes, args.message)
    print(dumps({"id": ref.id, "updated": sorted(changes)}) if args.json else f"updated {ref.id}")
    return 0


async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        rows = await store.scripts.search(_tenant(args), args.type, args.status,
                                        args.limit + 1)  # one more: were there more?
    rows = list(cut(rows, args.limit))
    print(dumps(rows) if args.json else table(rows, _LIST_COLUMNS))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        row = await store.scripts.current(await store.scripts.resolve(args.script, _tenant(args)))
    if args.json:
        print(dumps(row))
    else:
        print(fields(row, _SHOW_KEYS))
        print("\n" + row["source"].rstrip())
    return 0


async def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        ref = await store.scripts.resolve(args.script, _tenant(args))
        await store.scripts.set_status(ref, args.status)
    print(dumps({"id": ref.id, "status": args.status}) if args.json else f"{ref.id} {args.status}")
    return 0


async def cmd_versions(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        rows = await store.scripts.versions(
            await store.scripts.resolve(args.script, _tenant(args)))
    cols = ("version_number", "current", "size", "created_at", "change_description")
    print(dumps(rows) if args.json else table(rows, cols))
    return 0


async def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        ref = await store.scripts.resolve(args.script, _tenant(args))
        changed = await store.scripts.rollback(ref, args.version)
        now = (await store.scripts.current(ref))["version"]
    if args.json:
        print(dumps({"id": ref.id, "rolled_back_to": args.version, "changed": changed,
                     "version": now}))
    elif not changed:
        print(f"{ref.id} already has the source of version {args.version} (current version "
              f"{now}): nothing changed")
    else:
        print(f"{ref.id} rolled back to the source of version {args.version}, as version {now}")
    return 0


async def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt scripts") as store:
        ref = await store.scripts.resolve(args.script, _tenant(args))
        what = await store.scripts.delete(ref, really=args.yes)
    if args.json:
        print(dumps({"id": ref.id, "tenant_id": ref.tenant_id, "name": ref.name,
                     "deleted": args.yes, **what}))
    else:
        verb = "deleted" if args.yes else "would delete"
        print(f"{verb} script {ref.id} ({ref.tenant_id}/{ref.name}) with "
              f"{what['versions']} version(s), {what['executions']} execution(s) "
              f"({what['unfinished']} unfinished) and {what['dead_letters']} dead letter(s)")
    if not args.yes:
        raise ValidationError("nothing deleted: give --yes to delete")
    return 0
