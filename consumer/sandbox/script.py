"""Turning a tenant's source into code that installs its handler in a context."""

from __future__ import annotations

import re

# Lambda-style module syntax is rewritten to plain declarations: the source runs as a classic
# script inside a function, so its top-level names never leak into globalThis.
_EXPORT_DEFAULT = re.compile(r"^(\s*)export\s+default\s+", re.MULTILINE)
_EXPORT_DECL = re.compile(
    r"^(\s*)export\s+(?=(?:async\s+)?function\b|const\b|let\b|var\b|class\b)", re.MULTILINE
)
# A function declared at the very start of a line: the IOTA SDK's examples name their entry
# point for what it does (`async function handleRequest(req)`, `validateOrder(order)`).
_TOP_FUNCTION = re.compile(r"^(?:async[ \t]+)?function[ \t]*\*?[ \t]*([A-Za-z_$][\w$]*)[ \t]*\(",
                           re.MULTILINE)
_DEFAULT_NAME = "__jsrt_default"


def rewrite_exports(source: str) -> str:
    """`export default X` → `const __jsrt_default = X`; `export <declaration>` → `<declaration>`."""
    source = _EXPORT_DEFAULT.sub(rf"\1const {_DEFAULT_NAME} = ", source)
    return _EXPORT_DECL.sub(r"\1", source)


def entry_points(source: str) -> list[str]:
    """The names a handler is looked up by, in order: `handler`, the default export, `main`
    (the IOTA SDK's cron examples), then the one function declared at the start of a line
    when the script declares exactly one besides those (found by a regular expression, so
    an identifier: safe to put in code)."""
    names = ["handler", _DEFAULT_NAME, "main"]
    declared = {m.group(1) for m in _TOP_FUNCTION.finditer(source)} - set(names)
    return names + list(declared) if len(declared) == 1 else names


def install_code(source: str, api: str) -> str:
    """Code that runs the script's top level and installs its handler through `api` (the
    context's runtime object).

    The wrapper opens on the source's first line so that error line numbers match the
    tenant's own source. The name `api` stays outside the wrapper function: a script that
    reads its own wrapper (`arguments.callee.toString()`) does not find it there.
    """
    pick = "".join(f"typeof {n} === 'function' ? {n} : " for n in entry_points(source))
    return (
        api
        + ".install((function () {"
        + rewrite_exports(source)
        + f"\n;return {pick}undefined;\n}})());"
    )
