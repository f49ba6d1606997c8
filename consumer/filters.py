"""Payload filters (#19): `scripts.metadata.event_filters` maps an event type to an SQL/JSON
path predicate on the payload. PostgreSQL parses a filter when its script is saved
(Scripts.check_filters, and the trigger that keeps jsrt_event_filters), and evaluates it in
jsrt_claim_v2's fan-out: an event it does not match creates no execution and costs no sandbox.
A filter that cannot be evaluated on a payload of another shape (`$.total > 100` on a
string total, `strict $.total` without one) matches nothing either; the claim reports each
such pair and it is logged here, once, as `event_filter_skipped`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from consumer import log

_LOG = log.get("jsrt.filters")


@dataclass(frozen=True, slots=True)
class FilterSkip:
    """An (event, script) pair whose filter could not be evaluated on the event's payload."""

    tenant_id: UUID
    script_id: UUID
    event_id: UUID
    event_type: str

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> FilterSkip:
        return cls(UUID(str(item["tenant_id"])), UUID(str(item["script_id"])),
                   UUID(str(item["event_id"])), str(item["event_type"]))


def skips_of(value: Any) -> tuple[FilterSkip, ...]:
    """The claim's filter_errors (a JSON array; anything else is none)."""
    if not isinstance(value, list):
        return ()
    return tuple(FilterSkip.from_json(item) for item in value if isinstance(item, Mapping))


def log_skips(skips: Iterable[FilterSkip]) -> None:
    for s in skips:
        _LOG.warning("event_filter_skipped", tenant_id=str(s.tenant_id),
                     script_id=str(s.script_id), event_id=str(s.event_id),
                     event_type=s.event_type,
                     reason="the filter could not be evaluated on this payload")
