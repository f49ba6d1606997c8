"""`jsrt exec SCRIPT [--input JSON]`: run a script now (trigger_type 'manual'), print its
output - or its error and console logs - and exit 1 unless it completed. When the script is
at its max_concurrent_runs, exec waits for a slot (with backoff).

The run happens in this command's own process (a sandbox worker of its own), not in a
daemon: settings come from the environment exec is started in, not from the daemon's."""

from __future__ import annotations

import argparse
import sys

from consumer import jsontext, scripts
from consumer.app import sandbox
from consumer.commands._output import dumps
from consumer.errors import ValidationError
from consumer.lease import Lease
from consumer.ondemand import OnDemand, RunResult
from consumer.settings import Settings
from consumer.store import Store


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "exec", help="run a script now and print what it returned",
        description="Run a script now (trigger_type 'manual') and print its output. The script "
                    "runs in this command's own process and sandbox worker, not in a running "
                    "daemon: the daemon's settings do not apply, this environment's do (e.g. "
                    "JSRT_FETCH_ALLOWLIST for ctx.http.fetch). Its max_concurrent_runs still "
                    "counts across every daemon.")
    p.add_argument("script", metavar="SCRIPT", help="script id, or tenant_id/name")
    p.add_argument("--tenant", help="tenant id (to name the script by its name alone)")
    p.add_argument("--input", help="input as JSON (default {})")
    p.add_argument("--max-wait", type=float, default=None,
                   help="seconds to wait for a free slot when the script is full (default: no "
                        "limit)")
    p.add_argument("--json", action="store_true", help="print the whole result as JSON")
    p.set_defaults(func=cmd_exec)


def parse_input(text: str | None) -> str:
    """--input as JSON text the runtime can keep (ValidationError in one line otherwise)."""
    if text is None:
        return "{}"
    try:
        return jsontext.dumps(jsontext.loads(text, "--input"), "--input")
    except jsontext.JsonRefused as exc:
        raise ValidationError(str(exc)) from None


async def cmd_exec(args: argparse.Namespace, settings: Settings) -> int:
    inp = parse_input(args.input)
    tenant = scripts.parse_uuid(args.tenant, "--tenant")
    store = await Store.open(settings.require_database(), min_size=1, max_size=2,
                             settings=settings)
    try:
        ref = await store.scripts.resolve(args.script, tenant)
        lease = Lease(store, settings.heartbeat_interval, kind="exec")
        async with sandbox(settings, store, workers=1) as executor, lease:
            result = await OnDemand(store, executor, lease.id).execute(
                ref.tenant_id, ref.id, "manual", {"type": "manual", "via": "jsrt exec"}, inp,
                max_wait=args.max_wait)
    finally:
        await store.close()
    report(result, args.json)
    return 0 if result.ok else 1


def report(result: RunResult, as_json: bool) -> None:
    if as_json:
        print(dumps({"execution_id": result.execution_id, "status": result.status,
                     "output": result.output, "error": result.error,
                     "logs": list(result.logs), "metrics": dict(result.metrics)}))
        return
    if result.ok:
        print(dumps(result.output))
        return
    print(f"execution {result.execution_id} {result.status}: {result.error}", file=sys.stderr)
    for line in result.logs:
        print(f"  [{line.get('level', 'log')}] {line.get('message')}", file=sys.stderr)
