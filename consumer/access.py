"""Who may call an HTTP endpoint, how often, and from which web origins (#15).

Each http script chooses its policy in `scripts.metadata` (policy.py).
`authenticate` answers with an Auth (what the script sees as ctx.auth, and what trigger_data
records: a key id, a JWT subject, never a credential) or raises Denied (401 with
WWW-Authenticate, 403, or 500 when the endpoint's own configuration cannot be used).

HMAC scheme: header `X-Jsrt-Signature: t=<unix seconds>,v1=<hex>` where
hex = HMAC-SHA256(secret, "<t>." + raw body); accepted when |now - t| is within
JSRT_HMAC_TOLERANCE_S (300 s) and the signature was not accepted before (several v1= are
allowed, for a sender rotating its secret).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt

from consumer import log
from consumer.policy import Policy
from consumer.secrets import SecretUnavailable
from consumer.settings import Settings
from consumer.store import Store

_LOG = log.get("jsrt.access")

SIGNATURE_HEADER = "x-jsrt-signature"
_ASYMMETRIC = ["RS256", "ES256"]


# ------------------------------------------------------------------ authentication
@dataclass(frozen=True, slots=True)
class Auth:
    seen: Mapping[str, Any]  # ctx.auth
    recorded: Mapping[str, Any]  # trigger_data.auth


class Denied(Exception):
    def __init__(self, status: int, message: str, challenge: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = {"www-authenticate": challenge} if challenge else {}


def bearer_challenge(error: str | None = None) -> str:
    return 'Bearer realm="jsrt"' + (f', error="{error}"' if error else "")


HMAC_CHALLENGE = 'Jsrt-HMAC realm="jsrt", header="X-Jsrt-Signature"'


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The v1 signature of a request (what a sender computes)."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def parse_signature(header: str) -> tuple[int, list[str]] | None:
    t, sigs = None, []
    for part in header.split(","):
        k, _, v = part.strip().partition("=")
        if k == "t" and v.isdigit():
            t = int(v)
        elif k == "v1" and v:
            sigs.append(v.strip().lower())
    return (t, sigs) if t is not None and sigs else None


class Authenticator:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._jwks: jwt.PyJWKSet | None = None
        self._public_key: str | None = None

    async def authenticate(self, p: Policy, tenant_id: UUID, headers: Mapping[str, str],
                           body: bytes, now: float) -> Auth:
        if p.auth == "public":
            return Auth({"type": "public"}, {"type": "public"})
        if p.auth == "key":
            return await self._key(tenant_id, headers)
        if p.auth == "hmac":
            return await self._hmac(p, tenant_id, headers, body, now)
        return await self._jwt(p, tenant_id, headers, now)

    async def _key(self, tenant_id: UUID, headers: Mapping[str, str]) -> Auth:
        presented = headers.get("x-api-key") or _bearer(headers)
        if not presented:
            raise Denied(401, "an API key is required", bearer_challenge())
        caller = await self.store.keys.verify(presented)
        if caller is None:
            raise Denied(401, "invalid API key", bearer_challenge("invalid_token"))
        if caller.tenant_id is not None and caller.tenant_id != tenant_id:
            raise Denied(403, "this key is not for this tenant")
        if not caller.may(tenant_id, "invoke"):
            raise Denied(403, "this key lacks the invoke scope",
                         bearer_challenge("insufficient_scope"))
        seen = {"type": "key", "key_id": caller.key_id, "key_name": caller.name,
                "operator": caller.tenant_id is None}
        return Auth(seen, {"type": "key", "key_id": caller.key_id})

    async def _hmac(self, p: Policy, tenant_id: UUID, headers: Mapping[str, str], body: bytes,
                    now: float) -> Auth:
        parsed = parse_signature(headers.get(SIGNATURE_HEADER, ""))
        if parsed is None:
            raise Denied(401, "a signature is required (X-Jsrt-Signature: t=<unix>,v1=<hex>)",
                         HMAC_CHALLENGE)
        timestamp, sigs = parsed
        tolerance = self.settings.hmac_tolerance_s
        if abs(now - timestamp) > tolerance:
            raise Denied(401, "signature timestamp outside the tolerance window", HMAC_CHALLENGE)
        secret = await self._secret(tenant_id, p.auth_secret)
        expected = sign(secret, timestamp, body)
        matched = [s for s in sigs if hmac.compare_digest(s.encode(), expected.encode())]
        if not matched:
            raise Denied(401, "invalid signature", HMAC_CHALLENGE)
        # the window a replay could still pass in is twice the tolerance (t may be ahead)
        if await self.store.signatures.replayed(tenant_id, expected, 2 * tolerance):
            raise Denied(401, "signature already used (replay)", HMAC_CHALLENGE)
        seen = {"type": "hmac", "secret": p.auth_secret, "timestamp": timestamp}
        return Auth(seen, seen)

    async def _jwt(self, p: Policy, tenant_id: UUID, headers: Mapping[str, str],
                   now: float) -> Auth:
        token = _bearer(headers)
        if not token:
            raise Denied(401, "a bearer token is required", bearer_challenge())
        if p.auth_secret is not None:
            key: Any = await self._secret(tenant_id, p.auth_secret)
            algorithms = ["HS256"]
        else:
            key, algorithms = self._verifying_key(token), _ASYMMETRIC
        try:
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=p.jwt_audience,
                issuer=p.jwt_issuer,
                options={"require": ["exp"], "verify_aud": p.jwt_audience is not None})
        except jwt.PyJWTError as exc:
            raise Denied(401, f"invalid token: {str(exc)[:100]}",
                         bearer_challenge("invalid_token")) from None
        subject = claims.get("sub")
        return Auth({"type": "jwt", "claims": claims},
                    {"type": "jwt", "sub": subject if isinstance(subject, str) else None})

    def _verifying_key(self, token: str) -> Any:
        s = self.settings
        try:
            if s.jwt_jwks_file:
                if self._jwks is None:
                    self._jwks = jwt.PyJWKSet.from_json(Path(s.jwt_jwks_file).read_text())
                kid = jwt.get_unverified_header(token).get("kid")
                keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
                if not keys:
                    raise Denied(401, "invalid token: unknown kid",
                                 bearer_challenge("invalid_token"))
                return keys[0].key
            if s.jwt_public_key_file:
                if self._public_key is None:
                    self._public_key = Path(s.jwt_public_key_file).read_text()
                return self._public_key
        except jwt.PyJWTError:
            raise Denied(401, "invalid token", bearer_challenge("invalid_token")) from None
        except (OSError, ValueError) as exc:
            _LOG.error("http_auth_misconfigured", error=f"{type(exc).__name__}: {exc}"[:200])
            raise Denied(500, "endpoint authentication is not configured") from None
        _LOG.error("http_auth_misconfigured",
                   error="jwt endpoint without auth_secret, JSRT_JWT_PUBLIC_KEY_FILE or "
                         "JSRT_JWT_JWKS_FILE")
        raise Denied(500, "endpoint authentication is not configured")

    async def _secret(self, tenant_id: UUID, name: str | None) -> str:
        assert name is not None
        try:
            return await self.store.secrets.get(tenant_id, name)
        except SecretUnavailable as exc:
            _LOG.error("http_auth_misconfigured", tenant_id=str(tenant_id), error=str(exc))
            raise Denied(500, "endpoint authentication is not configured") from None


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, token = headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
