"""Tenant secrets (#15): named values a tenant's scripts read with `await ctx.secrets.get(NAME)`,
encrypted at rest.

Encryption is Fernet (AES-128-CBC + HMAC-SHA256, from `cryptography`) under JSRT_SECRETS_KEY:
one or more Fernet keys, comma-separated, the first one encrypting and every one decrypting
(MultiFernet). Rotation: put a new key first, keep the old ones after it, run
`jsrt secrets rotate` (re-encrypts every secret under the first key), then drop the old keys.
The secret's tenant and name are bound to its ciphertext (they are encrypted with the value
and checked when it is read), so a ciphertext copied to another tenant's row does not decrypt
there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from consumer.db import Db, ForeignKeyViolation
from consumer.errors import ConfigError, JsrtError, NotFound, ValidationError
from consumer.policy import SECRET_NAME
from consumer.sql import q

NAME = SECRET_NAME
MAX_VALUE_BYTES = 64 << 10
# Shorter values are refused: masking a two-letter secret would mask every word it is in.
MIN_VALUE_CHARS = 4


class SecretUnavailable(JsrtError):
    """The secret cannot be read."""


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValidationError(
            f"invalid secret name {name[:40]!r}: letters, digits and _, not starting with a "
            "digit, at most 128")
    return name


def check_value(value: str) -> str:
    if len(value) < MIN_VALUE_CHARS:
        raise ValidationError(f"a secret must be at least {MIN_VALUE_CHARS} characters")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise ValidationError(f"a secret must be at most {MAX_VALUE_BYTES} bytes")
    if "\x00" in value:
        raise ValidationError("a secret cannot hold U+0000")
    return value


@dataclass(frozen=True, slots=True)
class Cipher:
    """JSRT_SECRETS_KEY as a MultiFernet; `None` keys: secrets are unavailable, said in one line."""

    fernet: MultiFernet | None

    @classmethod
    def from_keys(cls, keys: Sequence[str]) -> Cipher:
        if not keys:
            return cls(None)
        try:
            return cls(MultiFernet([Fernet(k.strip().encode()) for k in keys]))
        except (ValueError, TypeError):
            raise ConfigError(
                "JSRT_SECRETS_KEY must be Fernet keys (32 url-safe base64-encoded bytes each, "
                "comma-separated; make one with `jsrt secrets keygen`)") from None

    def _need(self) -> MultiFernet:
        if self.fernet is None:
            raise SecretUnavailable(
                "secrets are not available: JSRT_SECRETS_KEY is not set on this server")
        return self.fernet

    def encrypt(self, tenant_id: UUID, name: str, value: str) -> str:
        plain = json.dumps([str(tenant_id), name, value]).encode()
        return self._need().encrypt(plain).decode()

    def decrypt(self, tenant_id: UUID, name: str, token: str) -> str:
        try:
            tenant, stored_name, value = json.loads(self._need().decrypt(token.encode()))
        except (InvalidToken, ValueError, TypeError):
            raise SecretUnavailable(
                f"secret {name} cannot be decrypted with JSRT_SECRETS_KEY "
                "(was its key rotated away?)") from None
        if tenant != str(tenant_id) or stored_name != name:
            raise SecretUnavailable(f"secret {name} cannot be decrypted: it belongs elsewhere")
        return str(value)

    def rotate(self, token: str) -> str:
        return self._need().rotate(token.encode()).decode()


def keygen() -> str:
    return Fernet.generate_key().decode()


class Secrets:
    def __init__(self, db: Db, cipher: Cipher) -> None:
        self._db = db
        self.cipher = cipher

    async def set(self, tenant_id: UUID, name: str, value: str) -> bool:
        """True when created, False when replaced."""
        token = self.cipher.encrypt(tenant_id, check_name(name), check_value(value))
        try:
            return bool(await self._db.fetchval(q("secret_set"), tenant_id, name, token))
        except ForeignKeyViolation:
            raise NotFound(f"no tenant {tenant_id}") from None

    async def get(self, tenant_id: UUID | str, name: str) -> str:
        """The value, or SecretUnavailable with one line saying why."""
        if not isinstance(name, str) or not NAME.match(name):
            raise SecretUnavailable("secrets.get: a secret name is letters, digits and _")
        token = await self._db.fetchval(q("secret_get"), UUID(str(tenant_id)), name)
        if token is None:
            raise SecretUnavailable(f"secret {name} is not set")
        return self.cipher.decrypt(UUID(str(tenant_id)), name, token)

    async def search(self, tenant_id: UUID | None) -> list[dict[str, Any]]:
        return [dict(r) for r in await self._db.fetch(q("secret_list"), tenant_id)]

    async def delete(self, tenant_id: UUID, name: str) -> None:
        if await self._db.fetchval(q("secret_delete"), tenant_id, name) is None:
            raise NotFound(f"no secret {name} in tenant {tenant_id}")

    async def rotate(self) -> tuple[int, list[str]]:
        """Re-encrypt every secret under the first key: (how many, those that failed)."""
        done, failed = 0, []
        for row in await self._db.fetch(q("secret_all_ciphertexts")):
            try:
                token = self.cipher.rotate(row["ciphertext"])
            except InvalidToken:
                failed.append(f"{row['tenant_id']}/{row['name']}")
                continue
            await self._db.execute(q("secret_reencrypt"), row["tenant_id"], row["name"],
                                   row["ciphertext"], token)
            done += 1
        return done, failed
