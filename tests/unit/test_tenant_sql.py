"""What ctx.db accepts, decided on PostgreSQL's grammar (consumer/tenant_sql.py), and how
database values cross to JavaScript (consumer/tenant_data.to_json_value)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from consumer.tenant_data import to_json_value
from consumer.tenant_sql import Exposed, SqlRefused, TableRef, analyse, check

EXPOSED = {("public", "orders"): Exposed("public", "orders", True),
           ("public", "customers"): Exposed("public", "customers", False),
           ("app", "items"): Exposed("app", "items", False)}

ACCEPTED = [
    "SELECT * FROM orders WHERE id = $1",
    "select o.id, c.name from orders o join customers c using (tenant_id) where o.id = $1",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "WITH x AS (SELECT * FROM orders), y AS (SELECT * FROM x) SELECT count(*) FROM y",
    "SELECT extract(year FROM now()), trim(both FROM 'x'), substring('abc' FROM 1 FOR 2)",
    "SELECT now() AT TIME ZONE 'UTC', coalesce(NULL, 1)::int, '1'::numeric(10, 2)",
    "SELECT payload->>'a', payload #>> '{b,c}', jsonb_array_length(payload->'l') FROM orders",
    "SELECT * FROM app.items",
    "INSERT INTO orders (tenant_id, total) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING id",
    "UPDATE orders SET total = total + 1 WHERE id IN (SELECT id FROM customers)",
    "DELETE FROM orders USING customers WHERE orders.id = customers.id",
    "SELECT current_user, current_timestamp, CASE WHEN true THEN 1 END",
]


@pytest.mark.parametrize("sql", ACCEPTED)
def test_accepted(sql: str) -> None:
    found = analyse(sql)
    check(sql, found.params, EXPOSED, read_only=not found.writes)


REFUSED = [
    ("SELECT 1; SELECT 2", "exactly one statement"),
    ("", "non-empty string"),
    ("SET statement_timeout = 0", "SET and RESET"),
    ("SET LOCAL ROLE postgres", "SET and RESET"),
    ("SHOW ALL", "SHOW is not allowed"),
    ("CREATE TABLE t (a int)", "DDL is not allowed"),
    ("CREATE VIEW v AS SELECT 1", "DDL is not allowed"),
    ("TRUNCATE orders", "DDL is not allowed"),
    ("GRANT ALL ON orders TO public", "DDL is not allowed"),
    ("COPY orders FROM '/tmp/x'", "COPY is not allowed"),
    ("LISTEN ch", "LISTEN"),
    ("NOTIFY ch", "NOTIFY"),
    ("UNLISTEN *", "UNLISTEN"),
    ("DO $$ BEGIN END $$", "DO is not allowed"),
    ("EXPLAIN SELECT 1", "EXPLAIN"),
    ("LOCK TABLE orders", "LOCK"),
    ("SELECT * FROM orders FOR NO KEY UPDATE", "locking clauses"),
    ("SELECT * FROM (SELECT * FROM orders FOR UPDATE) s", "locking clauses"),
    ("SELECT pg_catalog.pg_sleep(1)", "function pg_catalog.pg_sleep"),
    ("SELECT public.lower('x')", "function public.lower"),
    ("SELECT txid_current()", "function txid_current"),
    ("SELECT nextval('orders_id_seq')", "function nextval"),
    ("SELECT to_regclass('secrets')", "function to_regclass"),
    ("SELECT * FROM pg_class", "table pg_class is not exposed"),
    ("SELECT * FROM public.secrets", "table public.secrets is not exposed"),
    ("SELECT * FROM other.orders", "table other.orders is not exposed"),
    ("SELECT * FROM items", "table items is not exposed"),  # app.items needs its schema
    ("SELECT * FROM db.public.orders", "qualified with a database"),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", "table b is not exposed"),
    ("WITH orders AS (SELECT 1) INSERT INTO orders VALUES (1)", "only tables can be written"),
    ("SELECT 1::regclass", "a cast to regclass"),
    ("SELECT 'x'::public.mytype", "a cast to public.mytype"),
    ("SELECT 1 OPERATOR(public.+) 1", "operator public.+"),
    ("SELECT * FROM orders TABLESAMPLE system (10)", "TABLESAMPLE"),
    ("SELECT xmlelement(name a)", "XML"),
    ("SELECT * INTO t FROM orders", "SELECT INTO"),
    ("UPDATE customers SET name = 'x'", "customers is read-only"),
    ("WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d", "read-only: use execute"),
    ("SELECT $1, $2", "uses 2 parameter(s)"),
    ("SELECT $0", "parameters are $1"),
]


@pytest.mark.parametrize(("sql", "message"), REFUSED)
def test_refused_with_one_line(sql: str, message: str) -> None:
    with pytest.raises(SqlRefused) as caught:
        check(sql, 0, EXPOSED, read_only="use execute" in message)
    said = str(caught.value)
    assert said.startswith("ctx.db: ") and message in said and "\n" not in said


def test_cte_names_are_scoped() -> None:
    found = analyse("SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) s")
    assert found.reads == {TableRef(None, "secrets")}


@pytest.mark.parametrize(("value", "shown"), [
    (None, None), (True, True), (7, 7), (2**53, 2**53), (2**53 + 1, "9007199254740993"),
    (0.5, 0.5), (float("nan"), "nan"), (Decimal("9.99"), 9.99), (Decimal("10.50"), 10.5),
    (Decimal("12"), 12), (Decimal("0.1000000000000000001"), "0.1000000000000000001"),
    (Decimal("1e400"), "1E+400"), (Decimal("NaN"), "NaN"),
    (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05+00:00"),
    (date(2026, 1, 2), "2026-01-02"), (timedelta(minutes=1, seconds=30), 90.0),
    (UUID(int=1), "00000000-0000-0000-0000-000000000001"), (b"\x00\x01\x02", "AAEC"),
    ({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]}), ([Decimal("1.5"), None], [1.5, None]),
])
def test_value_mapping(value: object, shown: object) -> None:
    assert to_json_value(value) == shown
