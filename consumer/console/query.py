"""The list pages' filters, read from a query string (or a form) into the repositories' query
records (executions.ExecutionQuery, dead_letters.LetterQuery).

Whatever a query string holds, reading it either gives a query or a list of problems in
words (the page shows them beside its form, answered 400): never an exception past this
module, and never a value PostgreSQL cannot take (U+0000, text past a column's length, a time
outside its range). The tenant is never read from here: the pages take it from the session."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from starlette.datastructures import ImmutableMultiDict

from consumer import dead_letters, executions
from consumer.paging import MAX_PAGE

MAX_TEXT = 255  # script names and event types are VARCHAR(255)
MAX_ERROR_TEXT = 200
_AGE = re.compile(r"^(\d{1,6})\s*([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
_LATEST = datetime(9000, 1, 1, tzinfo=UTC)
LETTER_VIEWS = {"unresolved": dead_letters.UNRESOLVED, "all": ()}


# starlette's QueryParams and FormData both
Params = ImmutableMultiDict[str, Any]


@dataclass
class Reading:
    """Problems found so far, and the values as the form should show them again."""

    problems: list[str] = field(default_factory=list)
    shown: dict[str, Any] = field(default_factory=dict)

    def text(self, params: Params, name: str, label: str, limit: int = MAX_TEXT) -> str | None:
        raw = params.get(name)
        value = raw.strip() if isinstance(raw, str) else ""
        self.shown[name] = value
        if not value:
            return None
        if "\x00" in value:
            self.problems.append(f"{label} cannot contain a NUL character")
            return None
        if len(value) > limit:
            self.problems.append(f"{label} is longer than {limit} characters")
            return None
        return value

    def choices(self, params: Params, name: str, label: str,
                allowed: Sequence[str]) -> tuple[str, ...]:
        values = [v.strip() for v in params.getlist(name) if isinstance(v, str) and v.strip()]
        self.shown[name] = values
        wrong = [v for v in values if v not in allowed]
        if wrong:
            self.problems.append(f"{label} must be one of {', '.join(allowed)} "
                                 f"(got {_quoted(wrong[0])})")
            return ()
        return tuple(dict.fromkeys(values))

    def time(self, params: Params, name: str, label: str, now: datetime) -> datetime | None:
        value = self.text(params, name, label, 64)
        if value is None:
            return None
        when = parse_time(value, now)
        if when is None:
            self.problems.append(f"{label} must be a time such as 2026-12-02 14:30 (UTC unless "
                                 f"it says otherwise) or an age such as 30m, 2h, 7d (got "
                                 f"{_quoted(value)})")
        return when

    def page(self, params: Params) -> int:
        raw = params.get("page")
        try:
            number = int(raw) if isinstance(raw, str) and raw.strip() else 1
        except ValueError:
            number = 1
        number = min(max(number, 1), MAX_PAGE)
        self.shown["page"] = number
        return number

    def script(self, params: Params) -> tuple[UUID | None, str | None]:
        """A script by id, or by name (the tenant's script of that name)."""
        value = self.text(params, "script", "Script")
        if value is None:
            return None, None
        try:
            return UUID(value), None
        except ValueError:
            return None, value


def parse_time(text: str, now: datetime) -> datetime | None:
    """An ISO time (UTC unless it names an offset; a space or a T between date and time) or an
    age before `now`; None when it is neither, or outside what PostgreSQL and Python share."""
    match = _AGE.match(text)
    try:
        if match:
            when = now - timedelta(**{_UNITS[match[2]]: int(match[1])})
        else:
            when = datetime.fromisoformat(text)
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
    return when if _EARLIEST <= when <= _LATEST else None


def _quoted(value: str) -> str:
    return repr(value if len(value) <= 40 else value[:40] + "…")


def executions_query(params: Params, now: datetime) -> tuple[executions.ExecutionQuery, Reading]:
    r = Reading()
    script_id, script_name = r.script(params)
    statuses = r.choices(params, "status", "Status", executions.STATUSES)
    triggers = r.choices(params, "trigger", "Trigger", executions.TRIGGERS)
    started_from = r.time(params, "from", "Started after", now)
    started_before = r.time(params, "until", "Started before", now)
    page = r.page(params)
    return executions.ExecutionQuery(script_id, script_name, statuses, triggers, started_from,
                                      started_before, page), r


def letters_query(params: Params, now: datetime) -> tuple[dead_letters.LetterQuery, Reading]:
    r = Reading()
    script_id, script_name = r.script(params)
    view = params.get("view")
    view = view.strip() if isinstance(view, str) and view.strip() else "unresolved"
    states = r.choices(params, "state", "State", dead_letters.STATES)
    if view not in LETTER_VIEWS:
        r.problems.append(f"View must be unresolved or all (got {_quoted(view)})")
        view = "unresolved"
    r.shown["view"] = view
    event_type = r.text(params, "event_type", "Event type")
    created_from = r.time(params, "from", "Created after", now)
    created_before = r.time(params, "until", "Created before", now)
    error = r.text(params, "error", "Error text", MAX_ERROR_TEXT)
    page = r.page(params)
    return dead_letters.LetterQuery(script_id, script_name, states or LETTER_VIEWS[view],
                                    event_type, created_from, created_before, error, page), r


def link(shown: Mapping[str, Any], **changes: Any) -> str:
    """The query string of the same filters with `changes` (page=2, ...), for links."""
    values = {**shown, **changes}
    pairs: list[tuple[str, str]] = []
    for key, value in values.items():
        if isinstance(value, list | tuple):
            pairs += [(key, str(v)) for v in value]
        elif value not in (None, "") and not (key == "page" and value == 1):
            pairs.append((key, str(value)))
    return "?" + urlencode(pairs) if pairs else "?"
