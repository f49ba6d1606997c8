"""Checks on what people and host applications hand us, before anything reaches the database.

Each check returns its problems (or None), one line per problem; `problems(spec)` gathers
them for a script, a line each; ScriptSpec.check() raises ValidationError with them, one per
line. Pure functions, except check_syntax, which asks V8 to parse (never run) the source."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from py_mini_racer import JSEvalException, MiniRacer

from consumer import jsontext, policy
from consumer.cron import CronError, validate
from consumer.errors import ValidationError
from consumer.sandbox.script import rewrite_exports
from consumer.sandbox.types import DEFAULT_LIMITS, limit_problems

TYPES = ("scheduled", "http", "event", "oneoff", "embedded")
STATUSES = ("draft", "active", "paused", "disabled", "archived")
HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_NAME = 255
MAX_PATH = 500
MAX_EVENT_TYPE = 255
MAX_SOURCE = 1 << 20
_PATH_CHARS = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")
_PARSE_TIMEOUT_S = 2.0
# "undefined:4: SyntaxError: ..." - V8 puts "(function anonymous(\n) {\n" before the body.
_FN_LOCATION = re.compile(r"^undefined:(\d+): (.*)$")
_FN_HEADER_LINES = 2


@dataclass(frozen=True, slots=True)
class ScriptSpec:
    """A script as it will be written (create, or the merged result of an update)."""

    name: str
    type: str
    source: str
    description: str | None = None
    cron: str | None = None
    timezone: str | None = None
    http_path: str | None = None
    http_methods: tuple[str, ...] = ()
    event_types: tuple[str, ...] = ()
    # payload filters, by event type: SQL/JSON path predicates (metadata.event_filters);
    # PostgreSQL parses them when the script is saved (Scripts.check_filters)
    event_filters: tuple[tuple[str, str], ...] = ()
    # per-key ordering: a JSON path into the payload (metadata.concurrency_key)
    concurrency_key: str | None = None
    limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    # The HTTP access policy (metadata.auth, auth_secret, rate_limit_per_minute, cors, ...:
    # policy.py), kept in scripts.metadata.
    access: Mapping[str, Any] = field(default_factory=dict)

    def check(self) -> ScriptSpec:
        found = problems(self)
        if found:
            raise ValidationError("\n".join(found))
        return self


def problems(spec: ScriptSpec) -> list[str]:
    checks = [
        check_name(spec.name),
        check_type(spec.type),
        *_trigger_problems(spec),
        check_limit_values(spec.limits),
        "\n".join(policy.problems(spec.access)) if spec.type == "http" else None,
        check_syntax(spec.source),
    ]
    return lines(*checks)


def lines(*found: str | None) -> list[str]:
    """The problems of several checks, one line each (a check may report several)."""
    return [line for problem in found if problem for line in problem.splitlines()]


def _trigger_problems(spec: ScriptSpec) -> list[str | None]:
    out: list[str | None] = []
    if spec.type == "scheduled":
        out.append(check_cron(spec.cron, spec.timezone or "UTC"))
    elif spec.cron or spec.timezone:
        out.append("--cron and --timezone apply only to scheduled scripts")
    if spec.type == "http":
        out.append(check_http_path(spec.http_path))
    elif spec.http_path or spec.http_methods:
        out.append("--http-path and --methods apply only to http scripts")
    if spec.type == "event":
        out.append(check_event_types(spec.event_types))
        out.append(check_event_filters(spec.event_filters, spec.event_types))
    else:
        if spec.event_types:
            out.append("--event-types applies only to event scripts")
        if spec.event_filters:
            out.append("--filter applies only to event scripts")
        if spec.concurrency_key:
            out.append("--concurrency-key applies only to event scripts")
    return out


def check_type(type_: str) -> str | None:
    return None if type_ in TYPES else f"--type must be one of {', '.join(TYPES)} (got {type_!r})"


def check_name(name: str) -> str | None:
    if not name or not name.strip():
        return "--name must not be empty"
    if len(name) > MAX_NAME:
        return f"--name is longer than {MAX_NAME} characters"
    if "/" in name or any(ord(c) < 32 for c in name):
        return "--name must not contain '/' or control characters"
    return None


def check_cron(expression: str | None, timezone: str) -> str | None:
    """The expression and the time zone are checked each on its own: a bad one never hides
    the other."""
    found = ["a scheduled script needs --cron"] if not expression else []
    for option, (expr, zone) in (("--cron", (expression, "UTC")),
                                 ("--timezone", ("* * * * *", timezone))):
        if not expr:
            continue
        try:
            validate(expr, zone)
        except CronError as exc:
            found.append(f"{option}: {exc}")
    return "\n".join(found) or None


def check_http_path(path: str | None) -> str | None:
    if not path:
        return "an http script needs --http-path"
    if len(path) > MAX_PATH:
        return f"--http-path is longer than {MAX_PATH} characters"
    found = []
    if not path.startswith("/"):
        found.append(f"--http-path must start with '/' (got {path!r})")
    if not _PATH_CHARS.match("/" + path.lstrip("/")) or "//" in path:
        found.append(
            f"--http-path has characters or empty segments a URL path cannot have ({path!r})")
    segments = path.split("/")
    if any(seg in (".", "..") for seg in segments) or ".." in path:
        found.append(f"--http-path must not contain '..' or '.' segments ({path!r})")
    if "%" in path:
        found.append(f"--http-path must be given decoded, without '%' escapes ({path!r})")
    if path.startswith("/t/") or path == "/t":
        found.append("--http-path must not start with /t/ (reserved for /t/{tenant_id}/...)")
    return "\n".join(found) or None


def normalize_methods(methods: Iterable[str]) -> tuple[tuple[str, ...], str | None]:
    """Upper-cased, de-duplicated, sorted; the problem when one is not supported."""
    upper = sorted({m.strip().upper() for m in methods if m.strip()})
    bad = [m for m in upper if m not in HTTP_METHODS]
    if bad:
        return (), f"--methods must be among {', '.join(HTTP_METHODS)} (got {', '.join(bad)})"
    return tuple(upper), None


def check_event_types(event_types: Iterable[str]) -> str | None:
    types = list(event_types)
    if not types:
        return "an event script needs --event-types"
    found = []
    for t in types:
        if not isinstance(t, str) or not t.strip():
            problem = "--event-types must be non-empty strings"
        elif len(t) > MAX_EVENT_TYPE or t != t.strip():
            problem = f"--event-types: {t!r} must be at most {MAX_EVENT_TYPE} characters, unpadded"
        else:
            continue
        if problem not in found:
            found.append(problem)
    return "\n".join(found) or None


def check_event_filters(filters: Iterable[tuple[str, str]],
                        event_types: Iterable[str]) -> str | None:
    """What can be said of filters without the database: each names an event type the
    script subscribes to and is a non-empty string (PostgreSQL parses them on save)."""
    types = set(event_types)
    found = []
    for event_type, predicate in filters:
        if event_type not in types:
            found.append(f"--filter {event_type}: the script does not subscribe to "
                         f"{event_type!r} (--event-types)")
        if not isinstance(predicate, str) or not predicate.strip():
            found.append(f"--filter {event_type}: the predicate is empty")
    return "\n".join(found) or None


def parse_filters(given: Iterable[str], base: Iterable[tuple[str, str]] = ()
                  ) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """`--filter TYPE=PREDICATE` options over the filters a script has (`TYPE=` removes
    that type's filter); the filters, sorted by event type, and the problems."""
    merged = dict(base)
    found = []
    for item in given:
        event_type, sep, predicate = item.partition("=")
        if not sep or not event_type.strip():
            found.append(f"--filter must be EVENT_TYPE=PREDICATE (got {item!r})")
        elif predicate.strip():
            merged[event_type.strip()] = predicate.strip()
        else:
            merged.pop(event_type.strip(), None)
    return tuple(sorted(merged.items())), found


def parse_limits(raw: str | Mapping[str, Any] | None,
                 base: Mapping[str, Any] | None = None) -> dict[str, int]:
    """A limits object (JSON text or mapping) over `base` (default: the seed's defaults).
    Raises ValidationError naming every bad key and value, one line each."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise ValidationError("--limits must be a JSON object") from None
    if raw is not None and not isinstance(raw, Mapping):
        raise ValidationError("--limits must be a JSON object")
    allowed = ", ".join(DEFAULT_LIMITS)
    found = [f"--limits: unknown key {key!r} (allowed: {allowed})"
             for key in sorted(set(raw or {}) - set(DEFAULT_LIMITS))]
    merged = {**DEFAULT_LIMITS, **dict(base or {}), **dict(raw or {})}
    found += lines(check_limit_values(merged))
    if found:
        raise ValidationError("\n".join(found))
    return {k: int(merged[k]) for k in DEFAULT_LIMITS}


def check_limit_values(limits: Mapping[str, Any]) -> str | None:
    """Every bad limit, one line each (the rules are the runtime's: limit_problems)."""
    found = limit_problems(limits)
    return "\n".join(f"--limits: {p}" for p in found) if found else None


@dataclass(frozen=True, slots=True)
class SyntaxProblem:
    """Why a source does not parse, where V8 says: `line` and `column` (1-based) in the
    tenant's source when known (the console marks them in its editor)."""

    message: str  # the whole line check_syntax reports
    line: int | None = None
    column: int | None = None


def check_syntax(source: str) -> str | None:
    """V8 parses the source as the sandbox will wrap it, without running any of it."""
    problem = syntax_problem(source)
    return problem.message if problem else None


def syntax_problem(source: str) -> SyntaxProblem | None:
    """check_syntax's answer with its line and column. The parse runs on a thread of its
    own: mini-racer's timeout is not allowed on a thread with a running event loop."""
    if not source.strip():
        return SyntaxProblem("the source is empty")
    if (unstorable := jsontext.text_problem(source)) is not None:
        return SyntaxProblem(f"the source cannot be stored: {unstorable}")
    if len(source.encode()) > MAX_SOURCE:
        return SyntaxProblem(f"the source is larger than {MAX_SOURCE} bytes")
    result: list[SyntaxProblem | None] = []
    thread = threading.Thread(target=lambda: result.append(_parse(source)), name="jsrt-parse")
    thread.start()
    thread.join()
    return result[0] if result else SyntaxProblem("the source could not be checked")


def _parse(source: str) -> SyntaxProblem | None:
    racer = MiniRacer()
    try:
        # The Function constructor compiles the body on its own and never calls it: the top
        # level does not run, and the source cannot close a wrapper to run code of its own.
        code = "new Function(" + json.dumps(rewrite_exports(source)) + "); 0"
        racer.eval(code, timeout_sec=_PARSE_TIMEOUT_S)
    except JSEvalException as exc:
        first, *rest = str(exc).split("\n")
        match = _FN_LOCATION.match(first)
        if match is None:
            return SyntaxProblem(f"the source does not parse: {first}")
        line = max(1, int(match[1]) - _FN_HEADER_LINES)
        last = max(1, len(source.splitlines()))
        if line > last:  # at the wrapper's closing `})`: the source ended with a block,
            # call or string still open, and the token V8 names is not the tenant's
            return SyntaxProblem("the source does not parse: SyntaxError: Unexpected end of "
                                 f"input at line {last}", last)
        # V8 quotes the line and puts a caret under the column
        # (the line as the sandbox wrote it: an `export` rewritten is longer, its column lost)
        caret = rest[1].find("^") if len(rest) > 1 else -1
        quoted = source.splitlines()[line - 1] if line <= last else ""
        column = caret + 1 if 0 <= caret <= len(quoted) and rest[0] == quoted else None
        return SyntaxProblem(f"the source does not parse: {match[2]} at line {line}", line,
                             column)
    except Exception as exc:
        return SyntaxProblem(f"the source could not be checked: {type(exc).__name__}")
    finally:
        racer.close()
    return None
