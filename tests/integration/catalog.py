"""Catalog snapshots for schema tests: what a set of tables (or a whole schema) looks like
to PostgreSQL, as plain dicts that compare equal exactly when the schemas do.

Each snapshot maps a kind ("column", "constraint", "index", "comment", "trigger",
"function", "relation") to {object name: definition}; `diff` lists what differs, one line
per object, so a failing assertion says precisely what is wrong."""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

Snapshot = dict[str, dict[str, str]]

_COLUMNS = """
SELECT c.relname AS tbl, a.attname AS col,
       row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum) AS pos,
       format_type(a.atttypid, a.atttypmod) AS type,
       a.attnotnull AS notnull, NULLIF(a.attidentity::text, '') AS identity,
       NULLIF(a.attgenerated::text, '') AS generated,
       pg_get_expr(d.adbin, d.adrelid) AS dflt
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.oid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
"""

_CONSTRAINTS = """
SELECT c.relname AS tbl, k.conname AS name, pg_get_constraintdef(k.oid) AS def
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
WHERE c.oid = ANY($1::oid[])
"""

_INDEXES = """
SELECT c.relname AS tbl, i.relname AS name, pg_get_indexdef(i.oid) AS def
FROM pg_index x JOIN pg_class c ON c.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
WHERE c.oid = ANY($1::oid[])
"""

_COMMENTS = """
SELECT c.relname AS tbl, NULL::text AS col, obj_description(c.oid, 'pg_class') AS text
FROM pg_class c WHERE c.oid = ANY($1::oid[])
UNION ALL
SELECT c.relname, a.attname, col_description(c.oid, a.attnum)
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
WHERE c.oid = ANY($1::oid[])
"""

_TRIGGERS = """
SELECT c.relname AS tbl, t.tgname AS name, pg_get_triggerdef(t.oid) AS def
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.oid = ANY($1::oid[]) AND NOT t.tgisinternal
"""

_FUNCTIONS = """
SELECT p.oid::regprocedure::text AS name, pg_get_functiondef(p.oid) AS def,
       obj_description(p.oid, 'pg_proc') AS comment
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = $1 AND p.prokind IN ('f', 'p')
"""

_RELATIONS = """
SELECT c.oid, c.relname, c.relkind::text AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
"""


async def _table_oids(conn: asyncpg.Connection, tables: Iterable[str]) -> list[int]:
    oids = []
    for t in tables:
        oid = await conn.fetchval("SELECT to_regclass($1)::oid", t)
        if oid is None:
            raise LookupError(f"no such table: {t}")
        oids.append(oid)
    return oids


async def snapshot_tables(
    conn: asyncpg.Connection, tables: Iterable[str], *, triggers: bool = True
) -> Snapshot:
    """Columns, constraints, indexes, comments (and triggers) of the given tables."""
    oids = await _table_oids(conn, tables)
    snap: Snapshot = {"column": {}, "constraint": {}, "index": {}, "comment": {}}
    for r in await conn.fetch(_COLUMNS, oids):
        snap["column"][f"{r['tbl']}.{r['col']}"] = (
            f"#{r['pos']} {r['type']}"
            + (" NOT NULL" if r["notnull"] else "")
            + (f" DEFAULT {r['dflt']}" if r["dflt"] is not None else "")
            + (f" IDENTITY({r['identity']})" if r["identity"] else "")
            + (f" GENERATED({r['generated']})" if r["generated"] else "")
        )
    for r in await conn.fetch(_CONSTRAINTS, oids):
        snap["constraint"][f"{r['tbl']}.{r['name']}"] = r["def"]
    for r in await conn.fetch(_INDEXES, oids):
        snap["index"][f"{r['tbl']}.{r['name']}"] = r["def"]
    for r in await conn.fetch(_COMMENTS, oids):
        if r["text"] is not None:
            key = r["tbl"] if r["col"] is None else f"{r['tbl']}.{r['col']}"
            snap["comment"][key] = r["text"]
    if triggers:
        snap["trigger"] = {
            f"{r['tbl']}.{r['name']}": r["def"] for r in await conn.fetch(_TRIGGERS, oids)
        }
    return snap


async def snapshot_schema(conn: asyncpg.Connection, schema: str = "public") -> Snapshot:
    """Everything in one schema: relations, their tables' details, functions."""
    rels = await conn.fetch(_RELATIONS, schema)
    tables = [f'{schema}."{r["relname"]}"' for r in rels if r["kind"] in ("r", "p")]
    snap = await snapshot_tables(conn, tables)
    snap["relation"] = {r["relname"]: r["kind"] for r in rels}
    snap["function"] = {
        r["name"]: r["def"] + (f"\n-- comment: {r['comment']}" if r["comment"] else "")
        for r in await conn.fetch(_FUNCTIONS, schema)
    }
    return snap


def diff(left: Snapshot, right: Snapshot) -> list[str]:
    """One line per object that is missing on a side or defined differently."""
    out = []
    for kind in sorted(set(left) | set(right)):
        a, b = left.get(kind, {}), right.get(kind, {})
        for name in sorted(set(a) | set(b)):
            if name not in b:
                out.append(f"{kind} {name}: only left: {a[name]}")
            elif name not in a:
                out.append(f"{kind} {name}: only right: {b[name]}")
            elif a[name] != b[name]:
                out.append(f"{kind} {name}: {a[name]!r} != {b[name]!r}")
    return out
