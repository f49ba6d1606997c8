"""The tenants' repository. Inside an IOTA SDK database the tenants table is the host's: a
create that its schema refuses (a NOT NULL column the runtime does not know) says so in one
line."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from consumer.db import Db, NotNullViolation, UniqueViolation
from consumer.errors import StoreError, ValidationError
from consumer.sql import q
from consumer.validation import MAX_NAME


class Tenants:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(self, name: str | None) -> UUID:
        if name is not None and (not name.strip() or len(name) > MAX_NAME):
            raise ValidationError(f"--name must be 1 to {MAX_NAME} characters")
        try:
            tenant_id: UUID = await self._db.fetchval(q("tenant_create"), name)
        except UniqueViolation:
            raise ValidationError(f"a tenant named {name!r} exists") from None
        except NotNullViolation as exc:
            if exc.column == "name":
                raise ValidationError("this database's tenants need a name: give --name") from None
            raise StoreError(
                f"cannot create a tenant here: this database's tenants table requires "
                f"{exc.column!r} (NOT NULL, no default), which jsrt does not know; create "
                "the tenant with the application that owns the table") from None
        return tenant_id

    async def search(self, limit: int) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._db.fetch(q("tenant_list"), limit)]

    async def names(self, limit: int) -> list[dict[str, Any]]:
        """(id, name) of tenants by name: the console's tenant selector."""
        return [dict(r) for r in await self._db.fetch(q("tenant_names"), limit)]
