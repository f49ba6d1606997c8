"""The editor (/console/scripts/new, /console/scripts/{id}/edit): a script's source in
CodeMirror (a plain textarea without JavaScript), its trigger and limits; validation exactly
as `jsrt scripts create/update` does it (consumer.validation's problems and the filters'
check in PostgreSQL), the parse error's line and column marked in the editor; saving a new
source makes a new version. Run now executes the saved script through the same on-demand
path as `jsrt exec` and the HTTP API (consumer/ondemand.py) and shows output, error and
stack, console lines and metrics beside the editor.

    POST /console/scripts/validate        {ok, errors: [{line, column, message}]} (JSON)
    POST /console/scripts/{id}/execute    Run now (scripts:execute); a fragment for htmx,
                                          the editor page without JavaScript, JSON on Accept
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import anyio
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from consumer import jsontext, log, scripts
from consumer.console.context import ConsoleContext, console
from consumer.console.render import page
from consumer.console.scripts import script_ref
from consumer.console.session import PATH, Viewer, redirect, require
from consumer.errors import NotFound, ScriptBusy, ValidationError
from consumer.ondemand import RunResult
from consumer.sandbox.types import DEFAULT_LIMITS
from consumer.scripts import ScriptRef
from consumer.validation import (
    HTTP_METHODS,
    TYPES,
    ScriptSpec,
    lines,
    normalize_methods,
    parse_limits,
    problems,
    syntax_problem,
)

_LOG = log.get("jsrt.console")

RUN_MAX_WAIT_S = 5.0  # Run now waits this long for a free slot of a full script
EDITABLE_TYPES = tuple(t for t in TYPES if t != "embedded")  # embedded: the API's own
EMBEDDED = ("an embedded script belongs to the embedded API (its name promises its source "
            "and limits): it cannot be edited here; Run now still works")
STARTER = """\
// handler(input, ctx): input is the event payload, the HTTP request, or what Run now sends.
export default async function handler(input, ctx) {
  console.log('hello from', ctx.scriptId);
  return { ok: true, input };
}
"""


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    line: int | None = None
    column: int | None = None

    def json(self) -> dict[str, Any]:
        return {"line": self.line, "column": self.column, "message": self.message}


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _optional(form: FormData, name: str) -> str | None:
    value = _text(form, name).strip()
    return value or None


def form_changes(form: FormData, base_limits: Mapping[str, Any] | None = None
                 ) -> tuple[dict[str, Any], list[str]]:
    """ScriptSpec fields from the editor's form, and the problems of those the spec's own
    check does not see (methods, limits), as the CLI's --options give them."""
    out: dict[str, Any] = {
        "name": _text(form, "name").strip(),
        "type": _text(form, "type"),
        "source": _text(form, "source").replace("\r\n", "\n"),
        "description": _optional(form, "description"),
    }
    found: list[str] = []
    type_ = out["type"]
    out["cron"] = _optional(form, "cron") if type_ == "scheduled" else None
    out["timezone"] = _optional(form, "timezone") if type_ == "scheduled" else None
    out["http_path"] = _optional(form, "http_path") if type_ == "http" else None
    if type_ == "http":
        methods, problem = normalize_methods(str(m) for m in form.getlist("methods"))
        found += lines(problem)
        out["http_methods"] = methods or ("GET",)
    else:
        out["http_methods"] = ()
    out["event_types"] = tuple(p.strip() for p in _text(form, "event_types").split(",")
                               if p.strip()) if type_ == "event" else ()
    raw_limits = _text(form, "limits").strip()
    if raw_limits:
        try:
            out["limits"] = parse_limits(raw_limits, base_limits)
        except ValidationError as exc:
            found += lines(str(exc).replace("--limits", "Limits"))
    return out, found


async def checked(spec: ScriptSpec, found: list[str]) -> list[Problem]:
    """Every problem of a script as `jsrt scripts create` reports them; the parse error
    with its line and column."""
    messages = found + await anyio.to_thread.run_sync(problems, spec)
    located = None
    if any(m.startswith("the source does not parse") for m in messages):
        located = await anyio.to_thread.run_sync(syntax_problem, spec.source)
    out = []
    for message in messages:
        if located is not None and message == located.message:
            out.append(Problem(message, located.line, located.column))
        else:
            out.append(Problem(_cli_words(message)))
    return out


def _cli_words(message: str) -> str:
    """The CLI names its options; the form's fields say the same in words."""
    for option, field in (("--http-path", "The path"), ("--event-types", "Event types"),
                          ("--cron", "The cron expression"), ("--timezone", "The time zone"),
                          ("--methods", "Methods"), ("--name", "The name"),
                          ("--limits", "Limits")):
        message = message.replace(option, field)
    return message


# ------------------------------------------------------------------ pages
def _blank(viewer: Viewer) -> dict[str, Any]:
    return {"id": None, "name": "", "description": "", "type": "event", "source": STARTER,
            "event_types": [], "cron_expression": "", "timezone": "", "http_path": "",
            "http_methods": ["GET"], "resource_limits": dict(DEFAULT_LIMITS), "status": "draft",
            "tenant_id": viewer.tenant_filter}


def _from_form(form: FormData, base: dict[str, Any]) -> dict[str, Any]:
    """What the person typed, to show it again beside its problems."""
    return {**base, "name": _text(form, "name"), "description": _text(form, "description"),
            "type": _text(form, "type"), "source": _text(form, "source"),
            "event_types": [p.strip() for p in _text(form, "event_types").split(",")],
            "cron_expression": _text(form, "cron"), "timezone": _text(form, "timezone"),
            "http_path": _text(form, "http_path"),
            "http_methods": [str(m) for m in form.getlist("methods")],
            "limits_text": _text(form, "limits")}


async def _editor(request: Request, viewer: Viewer, script: dict[str, Any], *,
                  status: int = 200, errors: list[Problem] | None = None,
                  result: RunResult | None = None, run_error: str | None = None,
                  run_input: str = "{}") -> Response:
    first = next((p for p in errors or [] if p.line is not None), None)
    limits = script.get("limits_text") or jsontext.dumps(script.get("resource_limits") or {})
    embedded = script.get("type") == "embedded"
    return await page(request, "editor.html", status=status, script=script,
                      errors=errors or [], error_at=first,
                      types=(*EDITABLE_TYPES, "embedded") if embedded else EDITABLE_TYPES,
                      locked=EMBEDDED if embedded else None,
                      methods=HTTP_METHODS, limits_text=limits, result=result,
                      run_error=run_error, run_input=run_input,
                      can_run=console(request).ondemand is not None)


async def new_form(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    return await _editor(request, viewer, _blank(viewer))


async def create(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    form = await request.form()
    changes, found = form_changes(form)
    spec = ScriptSpec(**changes)
    errors = await checked(spec, found)
    shown = _from_form(form, _blank(viewer))
    if errors:
        return await _editor(request, viewer, shown, status=400, errors=errors)
    tenant = viewer.acting_tenant()
    status = "active" if form.get("activate") else "draft"
    try:
        script_id = await console(request).store.scripts.create(
            tenant, spec, status, _optional(form, "message"))
    except ValidationError as exc:  # the name or path is taken, a filter PostgreSQL refuses
        return await _editor(request, viewer, shown, status=400,
                             errors=[Problem(_cli_words(m)) for m in lines(str(exc))])
    _LOG.info("console_script_created", script_id=str(script_id), tenant_id=str(tenant),
              key_id=viewer.caller.key_id)
    return redirect(f"{PATH}/scripts/{script_id}?done=created", request)


async def _stored(request: Request, viewer: Viewer) -> tuple[ScriptRef, dict[str, Any]]:
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    return ref, await console(request).store.scripts.current(ref)


async def edit_form(request: Request) -> Response:
    viewer = await require(request, "scripts:read")
    _, script = await _stored(request, viewer)
    return await _editor(request, viewer, script)


async def save(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    ref, row = await _stored(request, viewer)
    if row["type"] == "embedded":
        raise ValidationError(EMBEDDED)
    form = await request.form()
    changes, found = form_changes(form, row["resource_limits"])
    errors = await checked(scripts.merged(row, changes), found)
    if not errors:
        try:
            await console(request).store.scripts.update(ref, changes, _optional(form, "message"))
        except ValidationError as exc:
            errors = [Problem(_cli_words(m)) for m in lines(str(exc))]
    if errors:
        return await _editor(request, viewer, _from_form(form, row), status=400, errors=errors)
    _LOG.info("console_script_saved", script_id=str(ref.id), key_id=viewer.caller.key_id)
    return redirect(f"{PATH}/scripts/{ref.id}?done=saved", request)


async def validate(request: Request) -> Response:
    """The editor's live check: the whole form as it would be saved (JSON answer)."""
    viewer = await require(request, "scripts:read")
    form = await request.form()
    base: Mapping[str, Any] | None = None
    raw_id = _text(form, "script_id")
    if raw_id:
        try:
            ref = await script_ref(request, viewer, UUID(raw_id))
        except ValueError:
            raise NotFound("no such script") from None
        row = await console(request).store.scripts.current(ref)
        changes, found = form_changes(form, row["resource_limits"])
        spec = scripts.merged(row, changes)
    else:
        changes, found = form_changes(form, base)
        spec = ScriptSpec(**changes)
    errors = await checked(spec, found)
    return JSONResponse({"ok": not errors, "errors": [e.json() for e in errors]})


async def execute(request: Request) -> Response:
    viewer = await require(request, "scripts:execute")
    ref, row = await _stored(request, viewer)
    form = await request.form()
    raw = _text(form, "input").strip() or "{}"
    result, problem = await _run(request, viewer, ref, raw)
    wants_json = "application/json" in request.headers.get("accept", "")
    if wants_json:
        if problem is not None:
            return JSONResponse({"error": problem}, status_code=400)
        assert result is not None
        return JSONResponse(_result_json(result))
    if "hx-request" in request.headers:
        return await page(request, "run_result.html", result=result, run_error=problem,
                          fragment=True, status=200 if problem is None else 400)
    return await _editor(request, viewer, row, result=result, run_error=problem, run_input=raw,
                         status=200 if problem is None else 400)


async def _run(request: Request, viewer: Viewer, ref: ScriptRef,
               raw: str) -> tuple[RunResult | None, str | None]:
    ondemand = console(request).ondemand
    if ondemand is None:
        return None, ("this server has no sandbox to run scripts (Run now works under "
                      "`jsrt serve` and `jsrt run --http`)")
    try:
        input_json = jsontext.dumps(jsontext.loads(raw, "the input"), "the input")
    except jsontext.JsonRefused as exc:
        return None, str(exc)
    trigger = {"type": "manual", "via": "console", "key_id": viewer.caller.key_id}
    try:
        result = await ondemand.execute(ref.tenant_id, ref.id, "manual", trigger, input_json,
                                        max_wait=RUN_MAX_WAIT_S)
    except NotFound:
        return None, "this script cannot run while it is disabled or archived: activate it first"
    except ScriptBusy:
        return None, (f"the script is at its max_concurrent_runs; no run finished within "
                      f"{RUN_MAX_WAIT_S:g} s, try again")
    _LOG.info("console_run", script_id=str(ref.id), execution_id=str(result.execution_id),
              status=result.status, key_id=viewer.caller.key_id)
    return result, None


def _result_json(result: RunResult) -> dict[str, Any]:
    return {"execution_id": str(result.execution_id), "status": result.status,
            "output": result.output, "error": result.error, "stack": result.stack,
            "logs": list(result.logs),
            "metrics": dict(result.metrics)}


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [
        Route("/scripts/new", new_form, methods=["GET"]),
        Route("/scripts/new", create, methods=["POST"]),
        Route("/scripts/validate", validate, methods=["POST"]),
        Route("/scripts/{script_id:uuid}/edit", edit_form, methods=["GET"]),
        Route("/scripts/{script_id:uuid}/edit", save, methods=["POST"]),
        Route("/scripts/{script_id:uuid}/execute", execute, methods=["POST"]),
    ]
