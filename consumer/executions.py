"""The execution history's repository: what `jsrt executions` lists and shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.db import Db
from consumer.errors import NotFound
from consumer.sql import q


class Executions:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def search(self, tenant_id: UUID | None, script_id: UUID | None, status: str | None,
                   since: datetime | None, limit: int,
                   script_name: str | None = None) -> list[dict[str, Any]]:
        """Newest first; `script_name` matches that name in every tenant (when no id)."""
        rows = await self._db.fetch(q("executions_list"), tenant_id, script_id, status, since,
                                    limit, script_name)
        return [dict(r) for r in rows]

    async def show(self, execution_id: UUID, tenant_id: UUID | None = None) -> dict[str, Any]:
        row = await self._db.fetchrow(q("execution_show"), execution_id, tenant_id)
        if row is None:
            raise NotFound(f"no execution {execution_id}")
        return dict(row)
