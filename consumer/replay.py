"""Replay (#19): finished executions run again as new executions, with the same input and
trigger data, linked to the original by `trigger_data.replay_of`, through the queue (any
daemon runs them, under the script's limits). The source is the script's current one, or
(`version="original"`) the version that ran the original: the newest script_versions row
created by the time it started (a version is created with every new source), run through
jsrt_runs.source_version. An event replay starts again at attempt 1 and is dead-lettered like
any first attempt if it fails."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.errors import NotFound, ValidationError
from consumer.store import Store

VERSIONS = ("current", "original")
REPLAYABLE = ("failed", "timeout", "cancelled", "completed")
DEFAULT_STATUSES = ("failed", "timeout")


@dataclass(frozen=True, slots=True)
class Selection:
    """Which executions: `ids`, or a script's (of these statuses, started in [since, until))."""

    ids: tuple[UUID, ...] = ()
    script_id: UUID | None = None
    tenant_id: UUID | None = None
    statuses: tuple[str, ...] = DEFAULT_STATUSES
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Planned:
    """One replay: the original, the version it will run (None: the script's current source)."""

    original: dict[str, Any]
    version: int | None
    execution_id: UUID | None = None  # the new execution, once created


async def replay(store: Store, selection: Selection, version: str = "current",
                 dry_run: bool = False) -> list[Planned]:
    """Plan the replays of the selected executions and, unless `dry_run`, create them.
    Raises NotFound for ids that are no finished execution, ValidationError for an original
    version that is not recorded."""
    if version not in VERSIONS:
        raise ValidationError(f"--version must be one of {', '.join(VERSIONS)} (got {version!r})")
    ex = store.executions
    rows = await ex.replay_candidates(
        selection.ids or None, selection.script_id, selection.tenant_id, selection.statuses,
        selection.since, selection.until, selection.limit)
    if selection.ids:
        found = {r["id"] for r in rows}
        missing = [i for i in selection.ids if i not in found]
        if missing:
            raise NotFound("\n".join(f"no finished execution {i}" for i in missing))
    plan = []
    for r in rows:
        if version == "original" and r["original_version"] is None:
            raise ValidationError(f"execution {r['id']}: no source version is recorded from "
                                  "before it started (replay it with --version current)")
        plan.append(Planned(r, r["original_version"] if version == "original" else None))
    if dry_run or not plan:
        return plan
    made = await ex.replay([p.original["id"] for p in plan], [p.version for p in plan])
    return [Planned(p.original, p.version, made.get(p.original["id"])) for p in plan]
