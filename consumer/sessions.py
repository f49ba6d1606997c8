"""Web console sessions (consumer/console): a random id in an HttpOnly cookie, only its
SHA-256 in jsrt_console_sessions, tied to the API key it was signed in with. A session ends
at its absolute expiry, after being idle too long, at sign-out, or when its key is revoked
(checked on every request: the key's row is read with the session).

A key made in the console waits for its one showing in jsrt_console_reveals, sealed under a
key derived from the session's cookie (Fernet, from `cryptography`): any console process can
show it to that browser, and the database alone cannot."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from cryptography.fernet import Fernet, InvalidToken

from consumer.db import Db
from consumer.keys import Caller, NewKey
from consumer.sql import q


@dataclass(frozen=True, slots=True)
class Session:
    """A live session: who signed in (the key as it is now), the tenant in view."""

    caller: Caller
    tenant_id: UUID | None  # the key's tenant; an operator's choice (None: every tenant)
    tenant_name: str | None
    csrf_token: str
    created_at: datetime
    expires_at: datetime


def session_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


REVEAL_S = 60.0  # how long a new key waits for its one showing


def _sealer(token: str) -> Fernet:
    """The session's own sealing key: from its cookie's value, which the database never sees."""
    derived = hmac.new(token.encode(), b"jsrt console reveal", hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(derived))


class Sessions:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def create(self, caller: Caller, lifetime_s: float, idle_s: float) -> tuple[str, str]:
        """(cookie value, csrf token) of a new session of `caller`."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        await self._db.fetchrow(q("console_session_create"), session_hash(token), caller.key_id,
                                caller.tenant_id, csrf, idle_s, lifetime_s)
        return token, csrf

    async def get(self, token: str, idle_s: float) -> Session | None:
        """The live session of a cookie value, or None; a dead one (expired, idle, its key
        revoked) is deleted on the way."""
        digest = session_hash(token)
        row = await self._db.fetchrow(q("console_session_lookup"), digest, idle_s)
        if row is None:
            return None
        if not row["live"]:
            await self._db.execute(q("console_session_delete"), digest)
            return None
        await self._db.execute(q("console_session_touch"), digest)
        return _session(row)

    async def choose_tenant(self, token: str, tenant_id: UUID | None) -> bool:
        """An operator's tenant in view; False when there is no such tenant."""
        return bool(await self._db.fetchval(q("console_session_tenant"), session_hash(token),
                                            tenant_id))

    async def delete(self, token: str) -> None:
        await self._db.execute(q("console_session_delete"), session_hash(token))

    async def end_for_key(self, key_id: str) -> None:
        await self._db.execute(q("console_sessions_of_key"), key_id)

    async def hold_new_key(self, token: str, made: NewKey) -> str:
        """Keep a key made by this session for its one showing; the ticket to show it by."""
        ticket = secrets.token_urlsafe(16)
        # orjson takes the dataclass; str() for the UUID type asyncpg returns
        sealed = _sealer(token).encrypt(orjson.dumps(made, default=str))
        await self._db.execute(q("console_reveal_put"), session_hash(ticket),
                               session_hash(token), sealed, REVEAL_S)
        return ticket

    async def take_new_key(self, token: str, ticket: str) -> NewKey | None:
        """The key held for this session under `ticket`, once; None when it was shown
        already, waited too long, or belongs to another session."""
        row = await self._db.fetchrow(q("console_reveal_take"), session_hash(ticket),
                                      session_hash(token))
        if row is None or not row["live"]:
            return None
        try:
            held = orjson.loads(_sealer(token).decrypt(row["sealed"]))
        except InvalidToken:
            return None
        return NewKey(held["id"], UUID(held["tenant_id"]) if held["tenant_id"] else None,
                      held["name"], tuple(held["scopes"]),
                      datetime.fromisoformat(held["created_at"]), held["key"])


def _session(row: Any) -> Session:
    caller = Caller(row["key_id"], row["key_tenant_id"], row["key_name"], tuple(row["scopes"]))
    tenant = row["key_tenant_id"] if row["key_tenant_id"] is not None else row["tenant_id"]
    return Session(caller, tenant, row["tenant_name"] if tenant is not None else None,
                   row["csrf_token"], row["created_at"], row["expires_at"])
