"""`jsrt dead-letters list | show | retry | discard`: see and replay failed event executions.

Tables for people, `--json` for machines. Semantics (marking, manual retries) are documented
in consumer/dead_letters.py."""

from __future__ import annotations

import argparse
import json
import re
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer import dead_letters as dl
from consumer.commands._output import cut, when
from consumer.errors import ValidationError
from consumer.settings import Settings
from consumer.store import Store

PROGRESS_MIN = 50  # show a progress counter on stderr from this many letters on
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


# ---------------------------------------------------------------- arguments
def _uuid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a UUID: {text!r}") from None


def _since(text: str) -> datetime:
    """An ISO date/time (UTC when no offset) or an age: 30m, 24h, 7d."""
    m = _DURATION.match(text.strip())
    if m:
        return datetime.now(UTC) - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time or an age (e.g. 2026-11-30T08:00, 24h, 7d): {text!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--script", help="script id or name")
    p.add_argument("--event-type", help="only letters of this event type")
    p.add_argument("--exhausted", action="store_true", help="only letters with no retries left")
    p.add_argument("--since", type=_since, help="created since: ISO time or age (24h, 7d)")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", type=_uuid, help="only this tenant's letters")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    top = sub.add_parser("dead-letters", help="list, show, retry or discard dead letters")
    dsub = top.add_subparsers(dest="dl_command", required=True)

    ls = dsub.add_parser("list", help="dead letters, newest first (unresolved unless --resolved)")
    _common(ls)
    _filters(ls)
    ls.add_argument("--resolved", action="store_true", help="include resolved letters")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    ls.set_defaults(func=cmd_list)

    sh = dsub.add_parser("show", help="a letter: payload, error, every attempt")
    sh.add_argument("id", type=_uuid)
    _common(sh)
    sh.set_defaults(func=cmd_show)

    rt = dsub.add_parser("retry", help="retry now, whatever the count (exhausted: one more)")
    rt.add_argument("ids", nargs="*", type=_uuid, metavar="ID")
    rt.add_argument("--all", action="store_true", help="every unresolved letter the filters match")
    rt.add_argument("--version", choices=("current", "original"),
                    help="source its retries run: the script's current one, or the version "
                         "that failed (recorded with the letter); default: as before")
    _common(rt)
    _filters(rt)
    rt.set_defaults(func=cmd_retry)

    ds = dsub.add_parser("discard", help="resolve as discarded: kept for review, never retried")
    ds.add_argument("ids", nargs="+", type=_uuid, metavar="ID")
    _common(ds)
    ds.set_defaults(func=cmd_discard)


# ---------------------------------------------------------------- commands
async def cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        raise ValidationError("--limit must be >= 1")
    filters = dl.Filters(args.tenant, args.script, args.event_type, args.exhausted, args.since,
                         args.resolved, args.limit + 1)  # one more: were there more?
    async with Store.session(settings.require_database(), "jsrt-cli") as store:
        rows = list(cut(await store.dead_letters.search(filters), args.limit))
    if args.json:
        _print_json(rows)
    elif not rows:
        print("no dead letters")
    else:
        print(table(LIST_COLUMNS, [_list_cells(r) for r in rows]))
    return 0


async def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt-cli") as store:
        letter = await store.dead_letters.show(args.id, args.tenant)
    if args.json:
        _print_json(letter)
    else:
        print(render_letter(letter))
    return 0


async def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.ids) == bool(args.all):
        raise ValidationError("give dead letter ids, or --all (with filters)")
    async with Store.session(settings.require_database(), "jsrt-cli") as store:
        ids = list(args.ids) or await _matching(store, args)
        applied = await store.dead_letters.retry(ids, args.tenant,
                                                 progress=_progress(len(ids)),
                                                 version=args.version)
    return _report(args, applied, "retried", "due now")


async def cmd_discard(args: argparse.Namespace, settings: Settings) -> int:
    async with Store.session(settings.require_database(), "jsrt-cli") as store:
        applied = await store.dead_letters.discard(args.ids, args.tenant)
    return _report(args, applied, "discarded", "resolved, kept for review")


async def _matching(store: Store, args: argparse.Namespace) -> list[uuid.UUID]:
    filters = dl.Filters(args.tenant, args.script, args.event_type, args.exhausted, args.since)
    return [r["id"] for r in await store.dead_letters.search(filters)
            if r["state"] != "in_flight"]


def _progress(total: int) -> Any:
    if total < PROGRESS_MIN:
        return None

    def show(done: int, of: int) -> None:
        end = "\n" if done >= of else ""
        print(f"\rretrying dead letters: {done}/{of}", end=end, file=sys.stderr, flush=True)

    return show


def _report(args: argparse.Namespace, applied: dl.Applied, verb: str, note: str) -> int:
    if args.json:
        _print_json({verb: applied.done,
                     "skipped": {str(k): v for k, v in applied.skipped.items()}})
    else:
        print(f"{verb} {len(applied.done)} dead letter(s): {note}")
        for letter_id, reason in applied.skipped.items():
            print(f"jsrt: skipped {letter_id}: {reason}", file=sys.stderr)
    return 1 if applied.skipped else 0


# ---------------------------------------------------------------- rendering
LIST_COLUMNS = ("ID", "TENANT", "SCRIPT", "EVENT TYPE", "RETRIES", "STATE", "NEXT RETRY",
                "CREATED", "ERROR")


def _list_cells(r: dict[str, Any]) -> list[str]:
    return [str(r["id"]), r["tenant_name"] or str(r["tenant_id"])[:8], r["script_name"],
            r["event_type"], f"{r['retries_used']}/{r['max_retries']}", r["state"],
            fmt_time(r["next_retry_at"]), fmt_time(r["created_at"]), clip(r["error"], 60)]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
                     for line in lines)


def render_letter(d: dict[str, Any]) -> str:
    version = d["script_version"] if d["script_version"] is not None else "?"
    lines = [
        f"dead letter  {d['id']}",
        f"tenant       {d['tenant_id']} ({d['tenant_name']})",
        f"script       {d['script_name']} ({d['script_id']}), {d['script_status']}, "
        f"failed at version {version}",
        f"event        {d['event_type']} (event {d['event_id']})",
        f"state        {d['state']}, {d['retries_used']}/{d['max_retries']} retries used",
        f"next retry   {fmt_time(d['next_retry_at'])}",
        f"created      {fmt_time(d['created_at'])}",
        f"last retry   {fmt_time(d['last_retry_at'])}",
        f"resolved     {fmt_time(d['resolved_at'])}",
        f"limits       {json.dumps(d['resource_limits'], sort_keys=True)}",
        "error", _indent(d["error"]),
        "payload", _indent(json.dumps(d["event_data"], indent=2, sort_keys=True)),
        "attempts",
    ]
    cells = [[str(a["attempt"]), str(a["id"]), a["status"], fmt_time(a["started_at"]),
              fmt_time(a["completed_at"]), clip(a["error"] or "", 60)] for a in d["attempts"]]
    att = table(("#", "EXECUTION", "STATUS", "STARTED", "COMPLETED", "ERROR"), cells)
    return "\n".join([*lines, _indent(att)])


def fmt_time(moment: datetime | None) -> str:
    return when(moment)


def clip(text: str, width: int) -> str:
    text = text.splitlines()[0] if text else ""
    return text if len(text) <= width else text[: width - 1] + "…"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _print_json(value: Any) -> None:
    print(json.dumps(value, default=_json_default, indent=2, sort_keys=True))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return str(value)
