"""Scripts (/console/scripts): the list with search (the seed's full-text index), filters by
type, status and tag, 20 a page; a script's page with its triggers, limits and metadata,
status actions, its versions with a diff between any two, rollback, and its latest runs
(an htmx fragment polled every 2 s). Everything works without JavaScript too.

Scopes: scripts:read to look, scripts:write for status and rollback, executions:read for
the runs. A script id of another tenant is 404, as one that does not exist."""

from __future__ import annotations

from urllib.parse import urlencode
from uuid import UUID

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from consumer import log, policy
from consumer.console import diffs
from consumer.console.context import ConsoleContext, console
from consumer.console.params import Pager, choice, page_number
from consumer.console.render import page
from consumer.console.session import PATH, Viewer, redirect, require
from consumer.errors import NotFound, ValidationError
from consumer.scripts import ScriptRef, filters_of, key_of
from consumer.validation import STATUSES, TYPES

_LOG = log.get("jsrt.console")

PER_PAGE = 20
RUNS_SHOWN = 10
# the status actions of a script's page: the status each sets, and the button's words
ACTIONS = (("active", "Activate"), ("paused", "Pause"), ("archived", "Archive"))
# what the page says after a change sent it here (?done=...)
DONE = {"created": "Script created (version {version}).",
        "saved": "Saved: the current source is version {version}.",
        "rolled-back": "Rolled back: the old source is version {version} now.",
        "status": "Status changed to {status}."}


async def script_ref(request: Request, viewer: Viewer, script_id: UUID) -> ScriptRef:
    """The script if the viewer may see it (NotFound otherwise, whoever owns it)."""
    try:
        ref = await console(request).store.scripts.resolve(str(script_id),
                                                           viewer.caller.tenant_id)
    except NotFound:
        raise NotFound("no such script") from None
    viewer.check(ref.tenant_id, "script")
    return ref


async def index(request: Request) -> Response:
    viewer = await require(request, "scripts:read")
    store = console(request).store
    params = request.query_params
    words = (params.get("q") or "").strip()[:200] or None
    type_ = choice(params.get("type"), TYPES)
    status = choice(params.get("status"), STATUSES)
    tag = (params.get("tag") or "").strip()[:100] or None
    number = page_number(params.get("page"))
    rows, total = await store.scripts.browse(viewer.tenant_filter, words, type_, status, tag,
                                             PER_PAGE, Pager(number, PER_PAGE, 0).offset)
    pages = Pager(number, PER_PAGE, total).pages
    filters = {"q": words or "", "type": type_ or "", "status": status or "", "tag": tag or ""}
    return await page(request, "scripts.html", scripts=rows, total=total, number=number,
                      pages=pages, filters=filters, types=TYPES, statuses=STATUSES,
                      tags=await store.scripts.tags(viewer.tenant_filter),
                      query=_query(filters), filtered=any(filters.values()))


def _query(filters: dict[str, str]) -> str:
    """The filters as a query string prefix for the pager's links."""
    kept = {k: v for k, v in filters.items() if v}
    return urlencode(kept) + ("&" if kept else "")


async def show(request: Request) -> Response:
    viewer = await require(request, "scripts:read")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    return await _show(request, viewer, ref, done=request.query_params.get("done"))


async def _show(request: Request, viewer: Viewer, ref: ScriptRef, *, notice: str | None = None,
                error: str | None = None, status: int = 200, done: str | None = None
                ) -> Response:
    store = console(request).store
    script = await store.scripts.current(ref)
    if done in DONE:
        notice = DONE[done].format(version=script["version"], status=script["status"])
    versions = await store.scripts.versions(ref)
    metadata = dict(script["metadata"] or {})
    runs = (await store.executions.search(ref.tenant_id, ref.id, None, None, RUNS_SHOWN)
            if viewer.may("executions:read") else None)
    return await page(
        request, "script.html", status=status, script=script, versions=versions, runs=runs,
        script_id=ref.id,
        actions=[a for a in ACTIONS if a[0] != script["status"]], notice=notice, error=error,
        access={k: v for k, v in metadata.items() if k in policy.KEYS and k != "auth_secret"},
        filters=filters_of(metadata), concurrency_key=key_of(metadata),
        change=metadata.get("change_description"),
        other_metadata={k: v for k, v in metadata.items() if k not in policy.KEYS
                        and k not in ("timezone", "event_filters", "concurrency_key",
                                      "change_description")},
    )


async def runs(request: Request) -> Response:
    """The latest runs, as a fragment (polled by htmx every 2 s on the script's page)."""
    viewer = await require(request, "executions:read")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    found = await console(request).store.executions.search(ref.tenant_id, ref.id, None, None,
                                                           RUNS_SHOWN)
    return await page(request, "script_runs.html", runs=found, script_id=ref.id, fragment=True)


async def set_status(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    wanted = str((await request.form()).get("status") or "")
    if wanted not in {a[0] for a in ACTIONS}:
        raise ValidationError(f"a script can be set to {', '.join(a[0] for a in ACTIONS)} here")
    await console(request).store.scripts.set_status(ref, wanted)
    _LOG.info("console_script_status", script_id=str(ref.id), status=wanted,
              key_id=viewer.caller.key_id)
    return redirect(f"{PATH}/scripts/{ref.id}?done=status", request)


async def rollback(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    raw = str((await request.form()).get("version") or "")
    if not raw.isdigit():
        raise ValidationError("choose the version to roll back to")
    try:
        changed = await console(request).store.scripts.rollback(ref, int(raw))
    except ValidationError as exc:  # the old version no longer passes today's checks
        return await _show(request, viewer, ref, status=400,
                           error=f"Version {raw} cannot be restored: {exc}")
    _LOG.info("console_script_rollback", script_id=str(ref.id), version=int(raw),
              key_id=viewer.caller.key_id)
    if not changed:
        return await _show(request, viewer, ref,
                           notice=f"Version {raw} is the current source already: nothing "
                                  "changed.")
    return redirect(f"{PATH}/scripts/{ref.id}?done=rolled-back", request)


async def delete_form(request: Request) -> Response:
    """What deleting takes with it, and a button to confirm."""
    viewer = await require(request, "scripts:write")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    counts = await console(request).store.scripts.delete(ref, really=False)
    return await page(request, "script_delete.html", script={"id": ref.id, "name": ref.name},
                      counts=counts)


async def delete(request: Request) -> Response:
    viewer = await require(request, "scripts:write")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    counts = await console(request).store.scripts.delete(ref, really=True)
    _LOG.info("console_script_deleted", script_id=str(ref.id), key_id=viewer.caller.key_id,
              **counts)
    return redirect(f"{PATH}/scripts", request)


async def diff(request: Request) -> Response:
    viewer = await require(request, "scripts:read")
    ref = await script_ref(request, viewer, request.path_params["script_id"])
    store = console(request).store
    versions = await store.scripts.versions(ref)
    if not versions:
        raise NotFound("this script has no versions")
    numbers = [v["version_number"] for v in versions]
    a = _version_param(request.query_params.get("a"), numbers, min(numbers[:2]))
    b = _version_param(request.query_params.get("b"), numbers, numbers[0])
    view = "unified" if request.query_params.get("view") == "unified" else "split"
    old = await store.scripts.version_source(ref, a)
    new = await store.scripts.version_source(ref, b)
    rows = diffs.unified(old, new) if view == "unified" else diffs.side_by_side(old, new)
    added, removed = diffs.stats(rows)
    script = await store.scripts.current(ref)
    return await page(request, "diff.html", script=script, versions=versions, a=a, b=b,
                      view=view, rows=rows, added=added, removed=removed, source=new)


def _version_param(raw: str | None, numbers: list[int], default: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) not in numbers:
        raise NotFound(f"no version {raw[:20]} of this script")
    return int(raw)


def routes(ctx: ConsoleContext) -> list[BaseRoute]:
    return [
        Route("/scripts", index, methods=["GET"]),
        Route("/scripts/{script_id:uuid}", show, methods=["GET"]),
        Route("/scripts/{script_id:uuid}/runs", runs, methods=["GET"]),
        Route("/scripts/{script_id:uuid}/diff", diff, methods=["GET"]),
        Route("/scripts/{script_id:uuid}/status", set_status, methods=["POST"]),
        Route("/scripts/{script_id:uuid}/rollback", rollback, methods=["POST"]),
        Route("/scripts/{script_id:uuid}/delete", delete_form, methods=["GET"]),
        Route("/scripts/{script_id:uuid}/delete", delete, methods=["POST"]),
    ]


