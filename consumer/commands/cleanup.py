"""`jsrt cleanup [--dry-run] [--json]`: apply the retention policy once (see consumer.retention)."""

from __future__ import annotations

import argparse
import json

from consumer.clock import SystemClock
from consumer.retention import RULES, Policy
from consumer.settings import Settings
from consumer.store import Store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "cleanup", help="delete what the retention policy says is old (JSRT_RETENTION_*_DAYS)")
    p.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_cleanup)


async def cmd_cleanup(args: argparse.Namespace, settings: Settings) -> int:
    policy = Policy.from_settings(settings)
    async with Store.session(settings.require_database(), "jsrt cleanup") as store:
        counts = await store.retention.cleanup(policy, SystemClock().now(), dry_run=args.dry_run)
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "deleted": counts}))
        return 0
    verb = "would delete" if args.dry_run else "deleted"
    for rule in RULES:
        days = getattr(policy, f"{rule}_days")
        print(f"{verb:<13} {counts[rule]:>9}  {rule.replace('_', ' ')} older than {days:g} days")
    return 0
