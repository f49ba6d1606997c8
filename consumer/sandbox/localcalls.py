"""Host calls the worker answers itself: the digests and HMACs behind `crypto.subtle`.

They need nothing of the daemon (no database, no network), so they never cross the pipe and
are no API calls: they do not count against max_api_calls_per_minute. Their values travel as
base64 text; inputs are capped so that one call cannot make the worker decode an unbounded
string.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from typing import Any

MAX_INPUT_BYTES = 8 << 20
_HASHES = {"SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384", "SHA-512": "sha512"}
# Named apart from the daemon's own host calls (ctx.crypto.hmacSha256 is "hmac" there).
OPS = frozenset({"subtle.digest", "subtle.hmac"})


class LocalCallError(Exception):
    """A local call refused; the message reaches the script as an Error's message."""


def answer(op: str, args: Any) -> str:
    """The call's result (base64 text); LocalCallError with one line otherwise."""
    if op == "subtle.digest" and _shape(args, 2):
        return _b64(hashlib.new(_hash(args[0]), _bytes(args[1], "data")).digest())
    if op == "subtle.hmac" and _shape(args, 3):
        key, data = _bytes(args[1], "key"), _bytes(args[2], "data")
        return _b64(hmac.new(key, data, _hash(args[0])).digest())
    raise LocalCallError(f"crypto.subtle: malformed {op[:32]} call")


def _shape(args: Any, n: int) -> bool:
    return isinstance(args, list) and len(args) == n and all(isinstance(a, str) for a in args)


def _hash(name: str) -> str:
    try:
        return _HASHES[name]
    except KeyError:
        raise LocalCallError(f"crypto.subtle: unsupported hash {name[:32]!r}") from None


def _bytes(text: str, what: str) -> bytes:
    if len(text) > (MAX_INPUT_BYTES * 4 + 2) // 3 + 4:
        raise LocalCallError(
            f"crypto.subtle: {what} larger than {MAX_INPUT_BYTES} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise LocalCallError(f"crypto.subtle: {what} is not base64") from None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
