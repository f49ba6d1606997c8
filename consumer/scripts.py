"""The scripts' repository: the operations behind `jsrt scripts`, the embedded API's ad-hoc
scripts and the HTTP routes. Every write is validated (consumer.validation) before it is
sent; the sync triggers keep the lookup tables and script_versions in step."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

import anyio

from consumer import policy
from consumer.db import Db, ForeignKeyViolation, UniqueViolation
from consumer.errors import NotFound, StoreError, StoreUnavailable, ValidationError
from consumer.sql import q
from consumer.validation import ScriptSpec, check_syntax, parse_limits

_NAME_REF = re.compile(r"^([0-9a-fA-F-]{36})/(.+)$")


@dataclass(frozen=True, slots=True)
class ScriptRef:
    id: UUID
    tenant_id: UUID
    name: str


def parse_uuid(text: str | None, what: str = "id") -> UUID | None:
    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise ValidationError(f"{what} must be a UUID (got {text!r})") from None


class Scripts:
    def __init__(self, db: Db) -> None:
        self._db = db

    async def resolve(self, ref: str, tenant_id: UUID | None = None) -> ScriptRef:
        """SCRIPT as people write it: a script id, `tenant_id/name`, or a name with
        --tenant."""
        match = _NAME_REF.match(ref)
        if match:
            row = await self._db.fetchrow(q("script_by_name"),
                                          parse_uuid(match[1], "tenant id"), match[2])
        elif _is_uuid(ref):
            row = await self._db.fetchrow(q("script_by_id"), UUID(ref), tenant_id)
        elif tenant_id is not None:
            row = await self._db.fetchrow(q("script_by_name"), tenant_id, ref)
        else:
            raise ValidationError(
                f"SCRIPT must be a script id or tenant_id/name (got {ref!r}); "
                "a bare name needs --tenant")
        if row is None:
            raise NotFound(f"no script {ref}")
        return ScriptRef(row["id"], row["tenant_id"], row["name"])

    async def check_filters(self, spec: ScriptSpec) -> None:
        """PostgreSQL parses each payload filter and the concurrency key (its own message when
        it cannot), and a
        filter must be a predicate: one true or false for any payload, never a path that
        selects values (`$.total`, `$ ? (@.total > 1)`), which matches nothing."""
        found = []
        for event_type, predicate in spec.event_filters:
            try:
                unknown = await self._db.fetchval(q("event_filter_check"), predicate)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                message = str(exc).splitlines()[0].removeprefix("database error: ")
                found.append(f"--filter {event_type}: {message}")
                continue
            if unknown:
                found.append(f"--filter {event_type}: {predicate!r} is not a predicate "
                             "(write a condition, e.g. $.total > 100 && $.currency == \"EUR\")")
        if spec.concurrency_key:
            try:
                await self._db.fetchval(q("concurrency_key_check"), spec.concurrency_key)
            except StoreUnavailable:
                raise
            except StoreError as exc:
                message = str(exc).splitlines()[0].removeprefix("database error: ")
                found.append(f"--concurrency-key: {message}")
        if found:
            raise ValidationError("\n".join(found))

    async def create(self, tenant_id: UUID, spec: ScriptSpec, status: str = "draft",
                     message: str | None = None) -> UUID:
        spec.check()
        await self.check_filters(spec)
        metadata = {"change_description": message} if message else {}
        description, source, type_, *triggers = _columns(spec, metadata)
        async with _written(spec):
            script_id: UUID = await self._db.fetchval(
                q("script_create"), tenant_id, spec.name, description, source, type_, status,
                *triggers)
        return script_id

    async def current(self, ref: ScriptRef) -> dict[str, Any]:
        row = await self._db.fetchrow(q("script_show"), ref.id, ref.tenant_id)
        if row is None:
            raise NotFound(f"no script {ref.id}")
        return dict(row)

    async def update(self, ref: ScriptRef, changes: Mapping[str, Any],
                     message: str | None = None) -> ScriptSpec:
        """Apply `changes` (ScriptSpec field → value) over the stored script, validate the
        whole result, write it. A new source becomes a new version."""
        row = await self.current(ref)
        spec = merged(row, changes).check()
        await self.check_filters(spec)
        metadata = dict(row["metadata"] or {})
        metadata.pop("change_description", None)
        if message:
            metadata["change_description"] = message
        async with _written(spec):
            await self._db.fetchval(q("script_update"), ref.id, ref.tenant_id, spec.name,
                                    *_columns(spec, metadata))
        return spec

    async def set_status(self, ref: ScriptRef, status: str) -> None:
        row = await self._db.fetchrow(q("script_set_status"), ref.id, ref.tenant_id, status)
        if row is None:
            raise NotFound(f"no script {ref.id}")

    async def search(self, tenant_id: UUID | None, type_: str | None, status: str | None,
                   limit: int = 500) -> list[dict[str, Any]]:
        rows = await self._db.fetch(q("script_list"), tenant_id, type_, status, limit)
        return [dict(r) for r in rows]

    async def browse(self, tenant_id: UUID | None, words: str | None, type_: str | None,
                     status: str | None, tag: str | None, limit: int, offset: int
                     ) -> tuple[list[dict[str, Any]], int]:
        """A page of the console's list (full-text search, filters) and the count of all."""
        rows = await self._db.fetch(q("script_browse"), tenant_id, words, type_, status, tag,
                                    limit, offset)
        return [dict(r) for r in rows], int(rows[0]["total"]) if rows else 0

    async def tags(self, tenant_id: UUID | None) -> list[str]:
        return [r["tag"] for r in await self._db.fetch(q("script_tags"), tenant_id)]

    async def version_source(self, ref: ScriptRef, version: int) -> str:
        source: str | None = await self._db.fetchval(q("script_version_source"), ref.id,
                                                     ref.tenant_id, version)
        if source is None:
            raise NotFound(f"script {ref.id} has no version {version}")
        return source

    async def versions(self, ref: ScriptRef) -> list[dict[str, Any]]:
        rows = await self._db.fetch(q("script_versions"), ref.id, ref.tenant_id)
        return [dict(r) for r in rows]

    async def rollback(self, ref: ScriptRef, version: int) -> bool:
        """The source of `version` becomes the script's source again (as a new version);
        False when it is the source already (nothing is written)."""
        source = await self._db.fetchval(q("script_version_source"), ref.id, ref.tenant_id,
                                         version)
        if source is None:
            raise NotFound(f"script {ref.id} has no version {version}")
        if source == (await self.current(ref))["source"]:
            return False
        await self.update(ref, {"source": source}, message=f"rollback to version {version}")
        return True

    async def delete(self, ref: ScriptRef, really: bool) -> dict[str, int]:
        """What deleting the script takes with it (versions, executions, of which
        unfinished, dead letters) - and, when `really`, delete it: everything else goes by
        ON DELETE CASCADE, a running execution's late result is then discarded by its
        daemon."""
        row = await self._db.fetchrow(q("script_delete" if really else "script_delete_preview"),
                                      ref.id, ref.tenant_id)
        if row is None:
            raise NotFound(f"no script {ref.id}")
        return {k: int(row[k]) for k in ("versions", "executions", "unfinished", "dead_letters")}

    async def embedded(self, tenant_id: UUID, source: str,
                       limits: Mapping[str, Any] | None) -> UUID:
        """The 'embedded' script that holds an ad-hoc source: one per (tenant, source,
        limits), named `embedded-<sha256 of source and limits>`, created active on first
        use (and set back to that source and those limits if it was edited since)."""
        merged_limits = parse_limits(dict(limits) if limits is not None else None)
        problem = await anyio.to_thread.run_sync(check_syntax, source)
        if problem:
            raise ValidationError(problem)
        digest = hashlib.sha256(
            (json.dumps(merged_limits, sort_keys=True) + "\0" + source).encode()).hexdigest()
        name = f"embedded-{digest[:32]}"
        try:
            script_id: UUID | None = await self._db.fetchval(
                q("embedded_script"), tenant_id, name, source, merged_limits)
        except ForeignKeyViolation:
            raise NotFound(f"no tenant {tenant_id}") from None
        if script_id is None:
            raise ValidationError(f"a script named {name} exists and is not an embedded script")
        return script_id

    async def http_route(self, tenant_id: UUID, path: str
                         ) -> tuple[UUID, tuple[str, ...], Any] | None:
        """The active http script of `tenant_id` at `path`, with its methods (a NULL element
        written by SQL is no method) and its metadata (the access policy), or None. The
        tenant is always part of the key."""
        row = await self._db.fetchrow(q("http_route"), tenant_id, path)
        return None if row is None else _route(row)

    async def http_routes(self, wanted: Sequence[tuple[UUID, str]]
                          ) -> list[tuple[UUID, tuple[str, ...], Any] | None]:
        """http_route for many (tenant, path) pairs in one statement, in their order."""
        rows = await self._db.fetch(q("http_routes"), [t for t, _ in wanted],
                                    [p for _, p in wanted])
        found = {row["i"]: _route(row) for row in rows}
        return [found.get(i) for i in range(1, len(wanted) + 1)]


def _route(row: Any) -> tuple[UUID, tuple[str, ...], Any]:
    # a NULL element of http_methods written by SQL is no method
    return (row["script_id"], tuple(m for m in row["http_methods"] or () if isinstance(m, str)),
            row["metadata"])


def is_bare_name(ref: str) -> bool:
    """SCRIPT given as a name alone (neither a script id nor tenant_id/name)."""
    return not _NAME_REF.match(ref) and not _is_uuid(ref)


def _is_uuid(text: str) -> bool:
    try:
        UUID(text)
    except ValueError:
        return False
    return True


def _columns(spec: ScriptSpec, metadata: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = {k: v for k, v in metadata.items()
            if k not in ("timezone", "event_filters", "concurrency_key") and k not in policy.KEYS}
    meta.update(spec.access)
    if spec.concurrency_key:
        meta["concurrency_key"] = spec.concurrency_key
    if spec.timezone:
        meta["timezone"] = spec.timezone
    if spec.event_filters:
        meta["event_filters"] = dict(spec.event_filters)
    return (spec.description, spec.source, spec.type, dict(spec.limits), spec.cron,
            spec.http_path, list(spec.http_methods), list(spec.event_types), meta)


def spec_of(row: Mapping[str, Any]) -> ScriptSpec:
    return ScriptSpec(
        name=row["name"], type=row["type"], source=row["source"],
        description=row["description"], cron=row["cron_expression"],
        timezone=row["timezone"], http_path=row["http_path"],
        http_methods=tuple(row["http_methods"] or ()), event_types=tuple(row["event_types"] or ()),
        limits=dict(row["resource_limits"] or {}),
        access={k: v for k, v in (row.get("metadata") or {}).items() if k in policy.KEYS},
        event_filters=filters_of(row.get("metadata")),
        concurrency_key=key_of(row.get("metadata")),
    )


def key_of(metadata: Any) -> str | None:
    """A stored script's concurrency_key (per-key ordering), when it is a string."""
    key = metadata.get("concurrency_key") if isinstance(metadata, Mapping) else None
    return key if isinstance(key, str) and key.strip() else None


def filters_of(metadata: Any) -> tuple[tuple[str, str], ...]:
    """A stored script's payload filters (metadata.event_filters), sorted by event type;
    what is not a string there (written by SQL) is no filter, as in the database."""
    filters = metadata.get("event_filters") if isinstance(metadata, Mapping) else None
    if not isinstance(filters, Mapping):
        return ()
    return tuple(sorted((k, v) for k, v in filters.items() if isinstance(v, str)))


def merged(row: Mapping[str, Any], changes: Mapping[str, Any]) -> ScriptSpec:
    """The stored script with `changes` applied (not yet checked)."""
    return replace(_retyped(spec_of(row), changes), **changes)


def _retyped(spec: ScriptSpec, changes: Mapping[str, Any]) -> ScriptSpec:
    """A change of type drops the old type's trigger settings (unless given anew)."""
    new = changes.get("type", spec.type)
    if new == spec.type:
        return spec
    return replace(
        spec,
        cron=spec.cron if new == "scheduled" else None,
        timezone=spec.timezone if new == "scheduled" else None,
        http_path=spec.http_path if new == "http" else None,
        http_methods=spec.http_methods if new == "http" else (),
        event_types=spec.event_types if new == "event" else (),
        event_filters=spec.event_filters if new == "event" else (),
        concurrency_key=spec.concurrency_key if new == "event" else None,
    )


@asynccontextmanager
async def _written(spec: ScriptSpec) -> AsyncIterator[None]:
    """Unique and foreign-key violations as one-line messages."""
    try:
        yield
    except UniqueViolation as exc:
        if exc.constraint == "scripts_http_path_tenant_unique":
            raise ValidationError(f"--http-path {spec.http_path} is taken in this tenant") from None
        raise ValidationError(f"a script named {spec.name!r} exists in this tenant") from None
    except ForeignKeyViolation:
        raise NotFound("no such tenant") from None
