"""An HTTP endpoint's access policy, as its script's metadata gives it (#15): pure, checked
when the script is saved (validation.py) and when a row, however it was written, is served.

    auth                   "key" (the default) | "hmac" | "jwt" | "public"
    auth_secret            the tenant secret that signs (hmac) or verifies HS256 tokens (jwt)
    jwt_audience           required `aud` of jwt tokens (optional)
    jwt_issuer             required `iss` of jwt tokens (optional)
    rate_limit_per_minute  requests per minute across every server sharing the database
    cors                   {"origins": [...] | "*", "methods": [...], "headers": [...],
                            "max_age": seconds}
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
KEYS = frozenset({"auth", "auth_secret", "jwt_audience", "jwt_issuer", "rate_limit_per_minute",
                  "cors"})

MODES = ("key", "hmac", "jwt", "public")
DEFAULT_MODE = "key"
CORS_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_RATE = 1_000_000


@dataclass(frozen=True, slots=True)
class Cors:
    origins: tuple[str, ...]  # ("*",) for any
    methods: tuple[str, ...]
    headers: tuple[str, ...]
    max_age: int

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def allow_origin(self, origin: str) -> str:
        return "*" if "*" in self.origins else origin


@dataclass(frozen=True, slots=True)
class Policy:
    auth: str = DEFAULT_MODE
    auth_secret: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    rate_limit_per_minute: int | None = None
    cors: Cors | None = None


class InvalidPolicy(ValueError):
    """The endpoint's metadata cannot be used; the message says why."""


def problems(metadata: Mapping[str, Any] | None) -> list[str]:
    """Every problem of the access keys of a script's metadata, one line each."""
    try:
        parse_policy(metadata)
    except InvalidPolicy as exc:
        return str(exc).splitlines()
    return []


def parse_policy(metadata: Mapping[str, Any] | None) -> Policy:
    m = metadata if isinstance(metadata, Mapping) else {}
    found: list[str] = []
    mode = m.get("auth", DEFAULT_MODE)
    if mode not in MODES:
        found.append(f"metadata.auth must be one of {', '.join(MODES)} (got {_shown(mode)})")
    secret = m.get("auth_secret")
    if secret is not None and (not isinstance(secret, str) or not SECRET_NAME.match(secret)):
        found.append(f"metadata.auth_secret must name a secret (got {_shown(secret)})")
    if mode == "hmac" and secret is None:
        found.append("metadata.auth 'hmac' needs metadata.auth_secret (the signing secret)")
    for key in ("jwt_audience", "jwt_issuer"):
        if m.get(key) is not None and not isinstance(m[key], str):
            found.append(f"metadata.{key} must be a string")
    rate = m.get("rate_limit_per_minute")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int)
                             or not 0 < rate <= MAX_RATE):
        found.append(f"metadata.rate_limit_per_minute must be an integer from 1 to {MAX_RATE} "
                     f"(got {_shown(rate)})")
    cors = _cors(m.get("cors"), found)
    if found:
        raise InvalidPolicy("\n".join(found))
    return Policy(mode, secret, m.get("jwt_audience"), m.get("jwt_issuer"), rate, cors)


def _cors(raw: Any, found: list[str]) -> Cors | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or not set(raw) <= {"origins", "methods", "headers",
                                                        "max_age"}:
        found.append("metadata.cors must be an object of origins, methods, headers, max_age")
        return None
    before = len(found)
    origins = _strings(raw.get("origins", ()), "origins", found, allow_star=True)
    if not origins and len(found) == before:
        found.append("metadata.cors.origins must name at least one origin (or be \"*\")")
    methods = tuple(m.upper() for m in _strings(raw.get("methods", ("GET", "POST")), "methods",
                                                  found))
    bad = [m for m in methods if m not in CORS_METHODS]
    if bad:
        found.append(f"metadata.cors.methods: unknown method {bad[0]!r}")
    headers = _strings(raw.get("headers", ()), "headers", found, allow_star=True)
    max_age = raw.get("max_age", 600)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age <= 86400:
        found.append("metadata.cors.max_age must be an integer from 0 to 86400")
        max_age = 600
    return Cors(origins, methods, tuple(h.lower() for h in headers), max_age)


def _strings(raw: Any, what: str, found: list[str], allow_star: bool = False) -> tuple[str, ...]:
    if allow_star and raw == "*":
        return ("*",)
    if not isinstance(raw, list | tuple) or not all(isinstance(v, str) and v for v in raw):
        found.append(f"metadata.cors.{what} must be a list of strings"
                     + (' (or "*")' if allow_star else ""))
        return ()
    return tuple(raw)


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
