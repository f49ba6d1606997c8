"""JSON that tenants hand us, as text: the one home of its limits and its checks.

The runtime moves tenant JSON (payloads, inputs, outputs) as *text* wherever it only passes it
on: the daemon never builds Python objects for a payload it hands to V8, or for an output it
hands to PostgreSQL, so no value however deep or large can make it recurse, and nothing is
re-encoded on the way. Where JSON does enter or leave (HTTP bodies, the CLI, the embedded API,
ctx.events.publish, results), these checks give one readable line for what cannot be kept:

    MAX_DEPTH   values nest at most 64 levels (`{}` and `[]` are one level each)
    U+0000      PostgreSQL's jsonb and text cannot hold it
    surrogates  an unpaired UTF-16 surrogate is not Unicode, and jsonb refuses it

Console lines and error messages are diagnostics, not data: `clean_text` replaces U+0000 and
unpaired surrogates there with U+FFFD instead of refusing the run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

from consumer.errors import JsrtError

MAX_DEPTH = 64


class JsonRefused(JsrtError, ValueError):
    """The JSON value cannot be taken."""


# What JSON may hold outside its strings besides brackets (deleted before counting levels).
_NOT_BRACKET = b"0123456789+-.eEtrufalsn ,:\t\r\n"
_PAIRS = re.compile(rb"\[\]|\{\}")
# An escape that jsonb refuses: \u0000, or a UTF-16 surrogate that is not half of an escaped
# pair. An escape is real only after an even number of backslashes.
_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u(0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
_LOW = re.compile(r"\\u[dD][c-fC-F][0-9a-fA-F]{2}")
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


def depth_exceeds(text: str, limit: int = MAX_DEPTH) -> bool:
    """Whether JSON text nests deeper than `limit`, with string methods only (about 10 ms per
    MiB of bracket-heavy JSON, nothing for small values) and without recursion: strings are
    cut out, everything but brackets deleted, then innermost pairs peeled off a level a pass.
    Text that is not JSON may give either answer; its parser refuses it anyway."""
    if text.count("[") + text.count("{") <= limit:
        return False
    # Without escaped backslashes and quotes, every remaining quote opens or closes a string.
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside = "".join(unescaped.split('"')[::2])
    try:
        brackets = outside.encode("ascii").translate(None, _NOT_BRACKET)
    except UnicodeEncodeError:  # non-ASCII outside a string: not JSON
        return False
    for _ in range(limit):
        peeled = _PAIRS.sub(b"", brackets)  # one scan: a pair it uncovers waits for the next
        if not peeled or len(peeled) == len(brackets):  # flat now, or unbalanced
            return False
        brackets = peeled
    return True


def unstorable(text: str) -> str | None:
    """Why PostgreSQL's jsonb would refuse this JSON text, or None."""
    if "\\u" not in text:  # the common case: nothing escaped at all
        return None
    paired_low = -1  # where the low half of the last escaped pair starts
    for match in _ESCAPE.finditer(text):
        code = match.group(1).lower()
        if code == "0000":
            return "it contains U+0000, which PostgreSQL cannot store"
        escape_at = match.start(1) - 2
        if code[1] in "89ab" and _LOW.match(text, match.end()):
            paired_low = match.end()
        elif escape_at != paired_low:
            return "it contains an unpaired UTF-16 surrogate, which is not valid Unicode"
    return None


def check_text(text: str, what: str = "value", depth: int = MAX_DEPTH) -> str:
    """JSON text that the runtime may pass on and PostgreSQL may store, or JsonRefused.
    (`depth` is larger only for a wrapper around a value that was checked already.)"""
    if depth_exceeds(text, depth):
        raise JsonRefused(f"{what} is nested deeper than {depth} levels")
    problem = unstorable(text)
    if problem:
        raise JsonRefused(f"{what} cannot be stored: {problem}")
    return text


def dumps(value: Any, what: str = "value", depth: int = MAX_DEPTH) -> str:
    """A Python value as compact JSON text that passes check_text, or JsonRefused."""
    try:
        text = orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        # orjson refuses integers beyond 64 bits, lone surrogates and NaN; the standard
        # encoder keeps big integers exact and says what else is wrong.
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except RecursionError:
            raise JsonRefused(f"{what} is nested deeper than {depth} levels") from None
        except (TypeError, ValueError) as exc:
            raise JsonRefused(f"{what} is not JSON: {exc}") from None
    return check_text(text, what, depth)


def loads(text: str | bytes, what: str = "value", depth: int = MAX_DEPTH) -> Any:
    """Parse JSON from outside: at most `depth` deep, no NaN or Infinity, integers exact."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise JsonRefused(f"{what} is not valid UTF-8") from None
    if depth_exceeds(text, depth):
        raise JsonRefused(f"{what} is nested deeper than {depth} levels")
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # unreachable after depth_exceeds; never let it escape
        raise JsonRefused(f"{what} is nested too deeply") from None
    except ValueError as exc:
        raise JsonRefused(f"{what} is not valid JSON: {exc}") from None
    problem = unstorable(text)
    if problem:
        raise JsonRefused(f"{what} cannot be stored: {problem}")
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_stored(text: str) -> Any:
    """Decode JSON that PostgreSQL gave back (valid, and without NUL or lone surrogates by
    construction): fast, integers exact, never a RecursionError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise JsonRefused(f"a stored value is nested too deeply to decode ({len(text)} bytes)")\
            from None


def text_problem(text: str) -> str | None:
    """Why PostgreSQL could not store this text (a script's source, say), or None."""
    found = _BAD_CHARS.search(text)
    if found is None:
        return None
    if found.group() == "\x00":
        return "it contains U+0000, which PostgreSQL cannot store"
    return "it contains an unpaired UTF-16 surrogate, which is not valid Unicode"


def clean_text(text: str) -> str:
    """A diagnostic string (console line, error message) that PostgreSQL can store: U+0000
    and unpaired surrogates become U+FFFD."""
    return _BAD_CHARS.sub("\ufffd", text) if _BAD_CHARS.search(text) else text


def string_literal(text: str) -> str:
    """`text` as a JavaScript string literal (JSON's string syntax is a subset of JS's)."""
    return json.dumps(text)
