"""Named SQL: every runtime query lives in queries.sql under a `-- name: x` header."""

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
    return parse((Path(__file__).parent / "queries.sql").read_text())


def q(name: str) -> str:
    return queries()[name]
