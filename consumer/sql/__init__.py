"""Named SQL: every runtime query lives in a .sql file of this folder under a `-- name: x`
header (queries.sql for the core loop, one file per further topic). Names are unique across
files."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    parts = _HEADER.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


@cache
def queries() -> dict[str, str]:
    merged: dict[str, str] = {}
    for path in sorted(Path(__file__).parent.glob("*.sql")):
        for name, body in parse(path.read_text()).items():
            if name in merged:
                raise ValueError(f"query {name!r} is defined twice ({path.name})")
            merged[name] = body
    return merged


def q(name: str) -> str:
    return queries()[name]
