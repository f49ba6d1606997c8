"""What ctx.db accepts, decided on PostgreSQL's own grammar (pglast: libpg_query).

A statement is read into an `Analysis` (cached by its text): the tables it names (with the
scope of its CTEs taken into account), those it writes, the functions it calls, the types it
casts to, the highest $n. `check` then holds it against the tables exposed to scripts. This
is the first layer only: the statement then runs under the role jsrt_tenant_data, which can
reach nothing but the exposed tables, under row-level security by tenant (tenant_data.py).
Every refusal is one line that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pglast
from pglast import ast

from consumer.errors import ValidationError

MAX_SQL_LENGTH = 100_000
MAX_PARAMS = 1000


class SqlRefused(ValidationError):
    """ctx.db: statement refused"""


# Scalar and aggregate functions a script may call: pure computations on values. Nothing
# that reads settings, sleeps, locks, touches files, large objects, other databases or the
# catalogs (set_config, current_setting, pg_sleep, pg_advisory_*, dblink, lo_*, pg_read_*,
# pg_*), nothing that reaches a table by name (to_regclass, has_*_privilege, nextval, ...).
ALLOWED_FUNCTIONS = frozenset(str.split("""
    abs ceil ceiling floor round trunc sign mod power pow sqrt cbrt exp ln log log10 pi
    greatest least coalesce nullif random div width_bucket
    lower upper initcap length char_length character_length octet_length bit_length
    substring substr left right trim btrim ltrim rtrim lpad rpad replace reverse repeat
    position strpos split_part concat concat_ws format starts_with translate ascii chr
    md5 sha224 sha256 sha384 sha512 encode decode to_hex quote_literal quote_ident
    regexp_replace regexp_match regexp_matches regexp_split_to_array regexp_like
    string_to_array array_to_string array_length array_position array_positions
    array_append array_prepend array_cat array_remove array_replace cardinality unnest
    array_lower array_upper
    now current_date current_time current_timestamp localtimestamp localtime
    statement_timestamp transaction_timestamp clock_timestamp
    date_trunc date_part extract age make_date make_time make_timestamp make_timestamptz
    make_interval to_timestamp to_char to_date to_number timezone date_bin isfinite
    justify_days justify_hours justify_interval
    count sum avg min max bool_and bool_or every string_agg array_agg json_agg jsonb_agg
    json_object_agg jsonb_object_agg stddev stddev_pop stddev_samp variance var_pop var_samp
    percentile_cont percentile_disc mode
    row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value
    last_value nth_value
    to_json to_jsonb json_build_object jsonb_build_object json_build_array
    jsonb_build_array json_object jsonb_object jsonb_set jsonb_set_lax jsonb_insert
    jsonb_strip_nulls jsonb_pretty jsonb_typeof json_typeof jsonb_array_length
    json_array_length jsonb_each jsonb_each_text json_each json_each_text
    jsonb_array_elements jsonb_array_elements_text json_array_elements
    json_array_elements_text jsonb_object_keys json_object_keys jsonb_extract_path
    jsonb_extract_path_text json_extract_path json_extract_path_text jsonb_path_query
    jsonb_path_query_array jsonb_path_query_first jsonb_path_exists jsonb_path_match
    row_to_json array_to_json
    gen_random_uuid uuid_generate_v4 generate_series
    num_nonnulls num_nulls
"""))

# The types a value may be cast to (with or without pg_catalog.): never reg* (a cast to
# regclass looks a name up in the catalogs), never a type of the host's.
ALLOWED_TYPES = frozenset(str.split("""
    int2 int4 int8 smallint integer int bigint numeric decimal float4 float8 real
    double text varchar bpchar char character bool boolean uuid date time timetz timestamp
    timestamptz interval json jsonb bytea
"""))

_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Comment", "Grant", "Revoke",
                 "Truncate", "Reindex", "Cluster", "Vacuum", "Refresh", "Security", "Import")
_NAMED_REFUSALS = {
    "VariableSetStmt": "SET and RESET are not allowed",
    "VariableShowStmt": "SHOW is not allowed",
    "CopyStmt": "COPY is not allowed",
    "ListenStmt": "LISTEN is not allowed",
    "UnlistenStmt": "UNLISTEN is not allowed",
    "NotifyStmt": "NOTIFY is not allowed",
    "TransactionStmt": "transaction control is not allowed (use ctx.db.transaction)",
    "ExplainStmt": "EXPLAIN is not allowed",
    "DoStmt": "DO is not allowed",
    "CallStmt": "CALL is not allowed",
    "LockStmt": "LOCK is not allowed",
    "PrepareStmt": "PREPARE is not allowed",
    "ExecuteStmt": "EXECUTE is not allowed",
    "DeallocateStmt": "DEALLOCATE is not allowed",
    "DiscardStmt": "DISCARD is not allowed",
    "LoadStmt": "LOAD is not allowed",
    "CheckPointStmt": "CHECKPOINT is not allowed",
    "DeclareCursorStmt": "cursors are not allowed",
    "FetchStmt": "cursors are not allowed",
    "ClosePortalStmt": "cursors are not allowed",
}
# Nodes refused wherever they appear.
_REFUSED_NODES = {
    "RangeTableSample": "TABLESAMPLE is not allowed",
    "RangeTableFunc": "XMLTABLE is not allowed",
    "CurrentOfExpr": "WHERE CURRENT OF is not allowed",
    "XmlExpr": "XML functions are not allowed",
    "XmlSerialize": "XML functions are not allowed",
}


@dataclass(frozen=True, slots=True)
class TableRef:
    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


@dataclass(frozen=True, slots=True)
class Exposed:
    """A table exposed with `jsrt db expose`."""

    schema: str
    name: str
    writable: bool
    columns: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Analysis:
    reads: frozenset[TableRef]
    writes: frozenset[TableRef]
    params: int  # the highest $n


def _refuse(message: str) -> SqlRefused:
    return SqlRefused(f"ctx.db: {message}")


@lru_cache(maxsize=1024)
def analyse(sql: str) -> Analysis:
    """Parse and walk one statement; raise SqlRefused for what is never allowed."""
    if not isinstance(sql, str) or not sql.strip():
        raise _refuse("the SQL must be a non-empty string")
    if len(sql) > MAX_SQL_LENGTH:
        raise _refuse(f"the SQL is longer than {MAX_SQL_LENGTH} characters")
    try:
        statements = pglast.parse_sql(sql)
    except pglast.parser.ParseError as exc:
        raise _refuse(f"syntax error: {str(exc).splitlines()[0][:200]}") from None
    if len(statements) != 1:
        raise _refuse(f"exactly one statement is allowed (got {len(statements)})")
    stmt = statements[0].stmt
    kind = type(stmt).__name__
    if kind not in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt"):
        raise _refuse(_statement_refusal(kind))
    walker = _Walker()
    walker.walk(stmt, frozenset())
    return Analysis(frozenset(walker.reads), frozenset(walker.writes), walker.params)


def _statement_refusal(kind: str) -> str:
    if kind in _NAMED_REFUSALS:
        return _NAMED_REFUSALS[kind]
    readable = kind.removesuffix("Stmt")
    if readable.startswith(_DDL_PREFIXES) or kind in ("IndexStmt", "ViewStmt", "RuleStmt"):
        return f"DDL is not allowed ({readable})"
    return f"only SELECT, INSERT, UPDATE, DELETE and WITH … SELECT are allowed (got {readable})"


class _Walker:
    def __init__(self) -> None:
        self.reads: set[TableRef] = set()
        self.writes: set[TableRef] = set()
        self.params = 0

    def walk(self, node: Any, scope: frozenset[str]) -> None:  # noqa: C901 - one switch over node kinds
        if isinstance(node, tuple | list):
            for item in node:
                self.walk(item, scope)
            return
        if not isinstance(node, ast.Node):
            return
        kind = type(node).__name__
        if kind in _REFUSED_NODES:
            raise _refuse(_REFUSED_NODES[kind])
        if kind.endswith("Stmt") and kind not in ("SelectStmt", "InsertStmt", "UpdateStmt",
                                                  "DeleteStmt"):
            raise _refuse(_statement_refusal(kind))
        scope = self._enter(node, scope)
        match node:
            case ast.SelectStmt() if node.intoClause is not None:
                raise _refuse("SELECT INTO is not allowed")
            case ast.SelectStmt() if node.lockingClause:
                raise _refuse("locking clauses (FOR UPDATE, FOR SHARE, …) are not allowed")
            case ast.RangeVar():
                self._range(node, scope)
                return
            case ast.InsertStmt() | ast.UpdateStmt() | ast.DeleteStmt():
                target = self._table(node.relation)
                if target is None or (target.schema is None and target.name in scope):
                    raise _refuse("only tables can be written")
                self.writes.add(target)
            case ast.FuncCall():
                self._function(node.funcname)
            case ast.TypeCast():
                self._type(node.typeName)
            case ast.A_Expr():
                self._operator(node.name)
            case ast.ParamRef():
                number = node.number or 0
                if not 1 <= number <= MAX_PARAMS:
                    raise _refuse(f"parameters are $1 to ${MAX_PARAMS}")
                self.params = max(self.params, number)
        for child in _children(node, skip=("withClause",)):
            self.walk(child, scope)

    def _enter(self, node: ast.Node, scope: frozenset[str]) -> frozenset[str]:
        """The CTE names a statement's WITH brings into scope; each CTE's own query sees the
        earlier ones (all of them under RECURSIVE), never a later one: a later name there
        would be a table of that name, and is checked as one."""
        with_clause = getattr(node, "withClause", None)
        if not isinstance(with_clause, ast.WithClause):
            return scope
        ctes = [c for c in with_clause.ctes or () if isinstance(c, ast.CommonTableExpr)]
        names = [c.ctename or "" for c in ctes]
        for i, cte in enumerate(ctes):
            visible = names if with_clause.recursive else names[:i]
            self.walk(cte.ctequery, scope | frozenset(visible))
        return scope | frozenset(names)

    def _range(self, rv: ast.RangeVar, scope: frozenset[str]) -> None:
        ref = self._table(rv)
        if ref is not None and not (ref.schema is None and ref.name in scope):
            self.reads.add(ref)
        if rv.alias is not None:
            self.walk(rv.alias, scope)

    @staticmethod
    def _table(rv: Any) -> TableRef | None:
        if not isinstance(rv, ast.RangeVar):
            return None
        if rv.catalogname:
            raise _refuse("names qualified with a database are not allowed")
        return TableRef(rv.schemaname or None, rv.relname or "")

    @staticmethod
    def _function(funcname: Any) -> None:
        parts = [getattr(p, "sval", "") for p in funcname or ()]
        name = parts[-1] if parts else ""
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog") \
                or name.lower() not in ALLOWED_FUNCTIONS:
            raise _refuse(f"function {'.'.join(parts)[:100]} is not allowed")

    @staticmethod
    def _type(type_name: Any) -> None:
        parts = [getattr(p, "sval", "") for p in getattr(type_name, "names", None) or ()]
        name = parts[-1] if parts else ""
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "pg_catalog") \
                or name.lower() not in ALLOWED_TYPES:
            raise _refuse(f"a cast to {'.'.join(parts)[:100]} is not allowed")

    @staticmethod
    def _operator(name: Any) -> None:
        parts = [getattr(p, "sval", "") for p in name or ()]
        if len(parts) > 1 and parts[0] != "pg_catalog":
            raise _refuse(f"operator {'.'.join(parts)[:100]} is not allowed")


def _children(node: ast.Node, skip: tuple[str, ...] = ()) -> Iterator[Any]:
    for name in getattr(node, "__slots__", ()):
        if name not in skip:
            value = getattr(node, name, None)
            if isinstance(value, ast.Node | tuple | list):
                yield value


def resolve(ref: TableRef, exposed: Mapping[tuple[str, str], Exposed]) -> Exposed | None:
    """The exposed table a name means: `schema.name` exactly, or a bare name in public."""
    return exposed.get((ref.schema or "public", ref.name))


def check(sql: str, param_count: int, exposed: Mapping[tuple[str, str], Exposed],
          read_only: bool) -> Analysis:
    """The statement, analysed and held against the exposed tables; raises SqlRefused."""
    found = analyse(sql)
    for ref in sorted(found.reads | found.writes, key=str):
        if resolve(ref, exposed) is None:
            raise _refuse(f"table {str(ref)[:130]} is not exposed to scripts")
    if found.writes and read_only:
        raise _refuse("query and queryOne are read-only: use execute (or a transaction) to "
                      "write")
    for ref in sorted(found.writes, key=str):
        table = resolve(ref, exposed)
        if table is not None and not table.writable:
            raise _refuse(f"table {str(ref)[:130]} is read-only for scripts (exposed without "
                          "--write)")
    if found.params != param_count:
        raise _refuse(f"the statement uses {found.params} parameter(s) ($1..${found.params}) "
                      f"but {param_count} were given")
    return found
