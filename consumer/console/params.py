"""Query parameters of the console's lists, read forgivingly: a value that is not one of the
allowed ones is no filter (never a 500), a page number out of range is clamped."""

from __future__ import annotations

import math
from dataclasses import dataclass
from uuid import UUID

MAX_PAGE = 10_000


def choice(value: str | None, allowed: tuple[str, ...]) -> str | None:
    """`value` when it is one of `allowed`, else None (no filter)."""
    return value if value in allowed else None


def page_number(raw: str | None) -> int:
    try:
        return max(1, min(int(raw or 1), MAX_PAGE))
    except ValueError:
        return 1


def uuid_or_none(raw: str | None) -> UUID | None:
    try:
        return UUID(raw) if raw else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class Pager:
    number: int
    per_page: int
    total: int

    @property
    def offset(self) -> int:
        return (self.number - 1) * self.per_page

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / self.per_page))
