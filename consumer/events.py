"""Raw NOTIFY payloads from other services: parse and validate, or say in one line why not.

Format: {"tenant_id": "<uuid>", "event_type": "<non-empty string>", "payload": <JSON>,
"id": "<optional de-duplication key>"}. jsrt_publish's wake-up is exactly
{"queued": true, "tenant_id": "<uuid>"}; anything else with an event_type is an event."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from consumer import jsontext
from consumer.errors import InvalidEvent
from consumer.records import RawEvent

MAX_NESTING = 64
MAX_EVENT_TYPE = 255
MAX_DEDUP_KEY = 255


def is_wakeup(message: Any) -> bool:
    """jsrt_publish's notification, which carries no event (the row is the truth). Told
    apart by its exact shape, so that an event of another service that happens to have a
    "queued" key is stored, not dropped."""
    return (isinstance(message, dict) and message.get("queued") is True
            and set(message) <= {"queued", "tenant_id"})


WAKEUP_MAX = 128  # a wake-up is {"queued": true, "tenant_id": "<uuid>"}: longer is something else


def wakeup_tenant(text: str) -> UUID | None:
    """The tenant a jsrt_publish wake-up names, or None (another payload, or not one). Only a
    hint for which tenant a side claim serves: a forged one changes no claim's fairness."""
    if len(text) > WAKEUP_MAX or '"tenant_id"' not in text:
        return None
    try:
        return wakeup_tenant_of(jsontext.loads(text, "notification", 2))
    except jsontext.JsonRefused:
        return None


def wakeup_tenant_of(message: Any) -> UUID | None:
    """`wakeup_tenant` of a notification decoded already."""
    if not is_wakeup(message):
        return None
    try:
        return UUID(message["tenant_id"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def decode(text: str) -> Any:
    try:
        # one level above the payload's limit: the notification object wraps it
        return jsontext.loads(text, "notification", MAX_NESTING + 1)
    except jsontext.JsonRefused as exc:
        message = str(exc).removeprefix("notification ")
        if message.startswith("is nested"):
            raise InvalidEvent(f"payload nested deeper than {MAX_NESTING} levels") from None
        if message.startswith("cannot be stored"):
            raise InvalidEvent(f"the notification {message}") from None
        raise InvalidEvent("not JSON: " + message.removeprefix("is not valid JSON: ")) from None


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
    if dedup is not None and (isinstance(dedup, bool) or not isinstance(dedup, str | int)):
        raise InvalidEvent("id must be a string or an integer")
    if dedup is not None and not (0 < len(str(dedup)) <= MAX_DEDUP_KEY):
        raise InvalidEvent(f"id must be 1..{MAX_DEDUP_KEY} characters")
    dedup_key = None if dedup is None else dedup_key_of(dedup)
    return RawEvent(tenant_id, event_type, payload, dedup_key)


def dedup_key_of(dedup: str | int) -> str:
    """The stored de-duplication key: the id's JSON text (`"k1"` → `"\"k1\""`, `1` → `"1"`),
    so that `"id": 1` and `"id": "1"` are two events, as their JSON says."""
    return jsontext.dumps(dedup)


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
