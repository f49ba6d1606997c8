"""Pages of a capped match: how the console lists executions and dead letters (#18).

A listing query (console_runs.sql) returns one page, newest first, with the size of the match
counted up to MATCH_CAP: the pager's count stops at the cap (shown as "10,000+") and so does
paging, so a page costs at most MATCH_CAP index entries for the count and offset + size (per
tenant) for the rows, however long the history. Such a query answers one row with total 0 (and
the rest NULL) when nothing matches, so that the count arrives with the page in one round
trip."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.db import Db
from consumer.sql import q

PAGE_SIZE = 20
MATCH_CAP = 10_000
MAX_PAGE = MATCH_CAP // PAGE_SIZE

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Page:
    rows: list[Row]
    total: int  # rows matched, at most MATCH_CAP
    page: int  # 1-based
    size: int

    @property
    def capped(self) -> bool:
        """More may match than were counted."""
        return self.total >= MATCH_CAP

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def past_the_end(self) -> bool:
        """Rows match, but none on this page (a page number beyond the last)."""
        return not self.rows and self.total > 0


def clamp_page(page: int) -> int:
    return min(max(page, 1), MAX_PAGE)


async def fetch_page(db: Db, query: str, args: tuple[Any, ...], page: int,
                     size: int = PAGE_SIZE) -> Page:
    """Run a listing query of console_runs.sql: `args` are its filters, followed here by the cap,
    the offset and the page size."""
    page = clamp_page(page)
    rows = await db.fetch(q(query), *args, MATCH_CAP, (page - 1) * size, size)
    total = int(rows[0]["total"]) if rows else 0
    found = [{k: v for k, v in r.items() if k != "total"} for r in rows if r["id"] is not None]
    return Page(found, total, page, size)
