"""Raw NOTIFY payloads from other services: parse and validate, or say in one line why not.

Format: {"tenant_id": "<uuid>", "event_type": "<non-empty string>", "payload": <JSON>,
"id": "<optional de-duplication key>"}. A payload with "queued" is jsrt_publish's wake-up."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from consumer.errors import InvalidEvent
from consumer.records import RawEvent

MAX_NESTING = 64
MAX_EVENT_TYPE = 255
MAX_DEDUP_KEY = 255


def is_wakeup(message: Any) -> bool:
    return isinstance(message, dict) and "queued" in message


def decode(text: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise InvalidEvent(f"payload nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None


def parse_raw(message: Any) -> RawEvent:
    if not isinstance(message, dict):
        raise InvalidEvent(f"expected a JSON object, got {type(message).__name__}")
    tenant = message.get("tenant_id")
    if not isinstance(tenant, str):
        raise InvalidEvent("tenant_id is missing or not a string")
    try:
        tenant_id = UUID(tenant)
    except ValueError:
        raise InvalidEvent(f"tenant_id {tenant[:60]!r} is not a UUID") from None
    event_type = message.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent("event_type must be a non-empty string")
    if len(event_type) > MAX_EVENT_TYPE:
        raise InvalidEvent(f"event_type longer than {MAX_EVENT_TYPE} characters")
    payload = message.get("payload", {})
    if depth(payload) > MAX_NESTING:
        raise InvalidEvent(f"payload nested deeper than {MAX_NESTING} levels")
    dedup = message.get("id")
    if dedup is not None and not isinstance(dedup, str | int):
        raise InvalidEvent("id must be a string or an integer")
    dedup_key = None if dedup is None else str(dedup)
    if dedup_key is not None and not (0 < len(dedup_key) <= MAX_DEDUP_KEY):
        raise InvalidEvent(f"id must be 1..{MAX_DEDUP_KEY} characters")
    return RawEvent(tenant_id, event_type, payload, dedup_key)


def depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in v.values())
        elif isinstance(v, list):
            deepest = max(deepest, d)
            stack.extend((c, d + 1) for c in v)
    return deepest


def truncate(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + f"…(+{len(text) - limit} chars)"
