"""API keys: what comes over HTTP proves who it is with one (#15).

A key reads `jsrt_<id>_<secret>`: `id` (12 base32 characters) is public and names the row,
`secret` (32 random bytes, urlsafe base64) is shown once, when the key is made, and never kept:
the row holds HMAC-SHA256(pepper, secret), the pepper being JSRT_KEY_PEPPER (a server-side
value the database never sees). A presented key is looked up by its id and its hash compared
with hmac.compare_digest; an unknown id is compared against a dummy hash all the same, so the
answer takes as long either way. A key with no tenant is an operator key (every tenant).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from consumer.db import Db, ForeignKeyViolation
from consumer.errors import NotFound, ValidationError
from consumer.sql import q

# keys:manage: the web console's Keys page for a tenant's admins (create and revoke keys of
# their own tenant, with scopes they hold themselves)
SCOPES = ("invoke", "scripts:read", "scripts:write", "scripts:execute", "executions:read",
          "dead-letters:manage", "keys:manage")
DEFAULT_SCOPES = ("invoke",)
PREFIX = "jsrt_"
_KEY = re.compile(r"^jsrt_([a-z2-7]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = bytes(32)


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    tenant_id: UUID | None
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    key: str  # the only time it exists in the clear


@dataclass(frozen=True, slots=True)
class Caller:
    """A verified key: who called (never the key itself)."""

    key_id: str
    tenant_id: UUID | None  # None: an operator key
    name: str
    scopes: tuple[str, ...]

    def may(self, tenant_id: UUID, scope: str) -> bool:
        return (self.tenant_id is None or self.tenant_id == tenant_id) and scope in self.scopes


def key_hash(pepper: str, secret: str) -> bytes:
    return hmac.new(pepper.encode(), secret.encode(), hashlib.sha256).digest()


def parse_key(text: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None."""
    m = _KEY.match(text.strip())
    return (m.group(1), m.group(2)) if m else None


def new_key_text() -> tuple[str, str, str]:
    """(id, secret, key) of a fresh key."""
    key_id = base64.b32encode(secrets.token_bytes(10)).decode().lower().rstrip("=")[:12]
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    return key_id, secret, f"{PREFIX}{key_id}_{secret}"


def check_scopes(scopes: Iterable[str]) -> tuple[str, ...]:
    out = tuple(dict.fromkeys(s.strip() for s in scopes if s.strip()))
    unknown = [s for s in out if s not in SCOPES]
    if unknown:
        raise ValidationError(f"unknown scope {unknown[0]!r} (scopes: {', '.join(SCOPES)})")
    if not out:
        raise ValidationError("give at least one scope")
    return out


class ApiKeys:
    def __init__(self, db: Db, pepper: str = "") -> None:
        self._db = db
        self.pepper = pepper

    async def create(self, tenant_id: UUID | None, name: str,
                     scopes: Iterable[str] = DEFAULT_SCOPES) -> NewKey:
        if not name.strip() or len(name) > 255:
            raise ValidationError("--name must be 1 to 255 characters")
        checked = check_scopes(scopes)
        key_id, secret, key = new_key_text()
        try:
            row = await self._db.fetchrow(q("key_create"), key_id, tenant_id, name,
                                          list(checked), key_hash(self.pepper, secret))
        except ForeignKeyViolation:
            raise NotFound(f"no tenant {tenant_id}") from None
        assert row is not None
        return NewKey(row["id"], row["tenant_id"], row["name"], tuple(row["scopes"]),
                      row["created_at"], key)

    async def verify(self, presented: str) -> Caller | None:
        """The caller a presented key belongs to, or None (malformed, unknown, revoked or
        wrong): the four look the same from outside, and cost the same comparison."""
        parsed = parse_key(presented)
        key_id, secret = parsed if parsed else ("", presented)
        row = await self._db.fetchrow(q("key_lookup"), key_id) if parsed else None
        stored = bytes(row["key_hash"]) if row is not None else _DUMMY_HASH
        matches = hmac.compare_digest(key_hash(self.pepper, secret), stored)
        if row is None or not matches or row["revoked_at"] is not None:
            return None
        await self._db.execute(q("key_touch"), key_id)
        return Caller(row["id"], row["tenant_id"], row["name"], tuple(row["scopes"]))

    async def search(self, tenant_id: UUID | None, limit: int,
                     with_operator: bool = True) -> list[dict[str, Any]]:
        rows = await self._db.fetch(q("key_list"), tenant_id, with_operator, limit)
        return [_shown(r) for r in rows]

    async def get(self, key_id: str) -> dict[str, Any]:
        """One key as listed (tenant_id None for an operator key); NotFound if none."""
        row = await self._db.fetchrow(q("key_get"), key_id.removeprefix(PREFIX))
        if row is None:
            raise NotFound(f"no key {key_id}")
        out = dict(row)
        out["scopes"] = list(out["scopes"])
        return out

    async def revoke(self, key_id: str) -> dict[str, Any]:
        row = await self._db.fetchrow(q("key_revoke"), key_id.removeprefix(PREFIX))
        if row is None:
            raise NotFound(f"no key {key_id}")
        return dict(row)


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["tenant_id"] = out["tenant_id"] or "operator"
    out["scopes"] = list(out["scopes"])
    return out
