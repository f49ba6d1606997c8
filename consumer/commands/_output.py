"""Output helpers shared by the commands: aligned tables for people, JSON for machines.

For people, every time is ISO 8601 in UTC to the second (`2026-12-01T21:17:42Z`), a mapping
is compact JSON, a flag is yes or no; JSON output keeps full precision."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

T = TypeVar("T")


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    return str(value)


def dumps(value: Any, indent: int | None = 2) -> str:
    return json.dumps(value, default=_default, indent=indent, ensure_ascii=False)


def when(value: datetime | None) -> str:
    """A time for people: `2026-12-01T21:17:42Z`, or `-`."""
    if value is None:
        return "-"
    if value.tzinfo is None:  # the database's timestamps all carry one; be safe
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def text(value: Any) -> str:
    """Any value for people: never a Python repr (`{'a': 1}`, `True`)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, Mapping) or (isinstance(value, list | tuple)
                                      and any(isinstance(v, Mapping | list) for v in value)):
        return json.dumps(value, default=_default, sort_keys=True, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return ",".join(text(v) for v in value) or "-"
    return str(value)


def cut(rows: Sequence[T], limit: int, option: str = "--limit") -> Sequence[T]:
    """The first `limit` of rows fetched with one more than the limit; says on stderr when
    there were more, so a list is never taken for all there is."""
    if len(rows) <= limit:
        return rows
    print(f"jsrt: showing the first {limit}; more match (raise {option} to see them)",
          file=sys.stderr)
    return rows[:limit]


def cell(value: Any, width: int = 60) -> str:
    shown = text(value).replace("\n", " ")
    return shown if len(shown) <= width else shown[: width - 1] + "…"


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    if not rows:
        return "(none)"
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(record: Mapping[str, Any], keys: Sequence[str]) -> str:
    width = max(len(k) for k in keys)
    return "\n".join(f"{k.ljust(width)}  {cell(record.get(k), 200)}" for k in keys)
