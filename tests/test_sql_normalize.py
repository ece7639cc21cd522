"""SQL normalization: literals never survive; shapes group; operation and table are found."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_perf._analysis.sql import ShapeCache, classify, normalize
from otel_perf._core.work import Work, current_work

# What Django sends PostgreSQL and SQLite: every identifier double-quoted.
DJANGO_INSERT = (
    'INSERT INTO "shop_order" ("customer_id", "total") VALUES (%s, %s) RETURNING "shop_order"."id"'
)
DJANGO_UPSERT = 'INSERT INTO "t" ("a", "b") VALUES (%s, %s) ON CONFLICT("a") DO UPDATE SET "b" = EXCLUDED."b"'


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        (
            "SELECT * FROM users WHERE email = 'a@b.c' AND id = 42",
            "SELECT * FROM users WHERE email = ? AND id = ?",
        ),
        ("select * from t where id in (1, 2, 3)", "select * from t where id IN (?)"),
        ("SELECT a FROM t WHERE id IN (?, ?, ?)", "SELECT a FROM t WHERE id IN (?)"),
        ("INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')", "INSERT INTO t (a, b) VALUES (?, ?)"),
        ("UPDATE t SET a = %(a)s WHERE id = %s", "UPDATE t SET a = ? WHERE id = ?"),
        ("SELECT * FROM t WHERE a = $1 AND b = :name", "SELECT * FROM t WHERE a = ? AND b = ?"),
        ("SELECT 'it''s' -- comment\n FROM t /* c */", "SELECT ? FROM t"),
        ("SELECT $$dollar secret$$ FROM t", "SELECT ? FROM t"),
        ("SELECT x::text FROM t2 WHERE y = 1.5e3", "SELECT x::text FROM t2 WHERE y = ?"),
        # Django quotes every identifier; a qualifier after a comma is not a double-quoted value
        (
            'SELECT "polls_choice"."id", "polls_choice"."question_id" FROM "polls_choice" '
            'WHERE "polls_choice"."question_id" = %s LIMIT 21',
            'SELECT "polls_choice"."id", "polls_choice"."question_id" FROM "polls_choice" '
            'WHERE "polls_choice"."question_id" = ? LIMIT ?',
        ),
        ('SELECT a FROM t WHERE name = "secret"', "SELECT a FROM t WHERE name = ?"),
    ],
)
def test_normalize(sql: str, expected: str) -> None:
    assert normalize(sql) == expected


@pytest.mark.parametrize(
    ("sql", "operation", "table"),
    [
        ("SELECT users.id FROM users JOIN orders ON 1", "SELECT", "users"),
        ('SELECT * FROM "Public"."Users"', "SELECT", "Public.Users"),
        ("INSERT INTO orders (a) VALUES (?)", "INSERT", "orders"),
        ("UPDATE accounts SET x = ?", "UPDATE", "accounts"),
        ("DELETE FROM sessions WHERE id = ?", "DELETE", "sessions"),
        ("WITH x AS (SELECT 1) SELECT * FROM items", "SELECT", "items"),
        ("BEGIN", "BEGIN", ""),
        ("BEGIN;", "BEGIN", ""),  # asyncpg's transactions
        ("COMMIT;", "COMMIT", ""),
        ("ROLLBACK;", "ROLLBACK", ""),
        ("SELECT 1;", "SELECT", ""),
    ],
)
def test_classify(sql: str, operation: str, table: str) -> None:
    assert classify(normalize(sql)) == (operation, table)


SECRET = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789", min_size=8, max_size=30)


@given(secret=SECRET, number=st.integers(min_value=10_000, max_value=10**12))
def test_no_literal_survives(secret: str, number: int) -> None:
    sql = (
        f"INSERT INTO t (a, b) VALUES ('{secret}', {number}); "
        f"SELECT * FROM t WHERE a = 'x{secret}' OR b = {number} OR c = E'{secret}'"
    )
    out = normalize(sql)
    assert secret not in out and str(number) not in out


@given(st.text(max_size=5000))
def test_never_raises_and_is_bounded(sql: str) -> None:
    out = normalize(sql)
    assert len(out) <= 4096 + 4
    classify(out)


def test_unterminated_string_does_not_leak() -> None:
    assert "topsecret" not in normalize("SELECT * FROM t WHERE a = 'topsecret")
    long = "SELECT * FROM t WHERE a = '" + "x" * 5000 + "secret'"
    assert "secret" not in normalize(long)


def test_cache_is_bounded() -> None:
    cache = ShapeCache(max_entries=16)
    for i in range(100):
        cache.shape(f"SELECT * FROM t WHERE id = {i}")
    assert len(cache._cache) <= 16 and cache.evictions > 0
    assert cache.shape("SELECT a FROM t WHERE b = 1").text == "SELECT a FROM t WHERE b = ?"


@pytest.mark.parametrize("system", ["postgresql", "cockroachdb"])
def test_double_quotes_are_identifiers_where_the_database_says_so(system: str) -> None:
    """PostgreSQL and its kin: "..." is an identifier; an INSERT keeps its column list."""
    assert normalize(DJANGO_INSERT, system) == (
        'INSERT INTO "shop_order" ("customer_id", "total") VALUES (?, ?) RETURNING "shop_order"."id"'
    )
    assert normalize(DJANGO_UPSERT, system) == (
        'INSERT INTO "t" ("a", "b") VALUES (?, ?) ON CONFLICT("a") DO UPDATE SET "b" = EXCLUDED."b"'
    )
    # Two INSERTs into one table with as many columns but different ones are different shapes.
    other = DJANGO_INSERT.replace('"total"', '"note"')
    assert normalize(other, system) != normalize(DJANGO_INSERT, system)
    # literals still go whatever the quotes around identifiers
    assert normalize("""INSERT INTO "t" ("a", "b") VALUES ('secret', 42)""", system) == (
        'INSERT INTO "t" ("a", "b") VALUES (?, ?)'
    )
    if system == "postgresql":  # columns compared or listed, never values
        assert normalize('SELECT a FROM t WHERE b IN ("x", "y") AND c = "z"', system) == (
            'SELECT a FROM t WHERE b IN ("x", "y") AND c = "z"'
        )
    shape = ShapeCache().shape(DJANGO_INSERT, system)
    assert '("customer_id", "total")' in shape.text and shape.operation == "INSERT"
    assert shape.collection == "shop_order"


@pytest.mark.parametrize("system", ["mysql", "mariadb", "sqlite", ""])
def test_double_quoted_values_go_for_mysql_and_unknown_databases(system: str) -> None:
    """MySQL/MariaDB (without ANSI_QUOTES): "..." is a string, maybe a secret; so when unknown,
    and on SQLite, which reads "..." naming no column as a string (Python's sqlite3 runs
    ``WHERE password = "hunter2"``)."""
    assert normalize('INSERT INTO t (a, b) VALUES ("secret", "s3cr3t")', system) == (
        "INSERT INTO t (a, b) VALUES (?, ?)"
    )
    assert normalize('SELECT a FROM t WHERE b IN ("x", "y") AND c = "secret"', system) == (
        "SELECT a FROM t WHERE b IN (?) AND c = ?"
    )
    assert normalize('SELECT * FROM t WHERE name = "secret"', system) == "SELECT * FROM t WHERE name = ?"
    assert normalize('UPDATE users SET password = "s3cr3t" WHERE name = ?', system) == (
        "UPDATE users SET password = ? WHERE name = ?"
    )


@pytest.mark.parametrize("system", ["postgresql", "mysql", ""])
def test_an_unterminated_double_quote_keeps_nothing_after_it(system: str) -> None:
    """A statement cut (or malformed) inside "...": its tail may hold values, never exported."""
    assert normalize("""SELECT * FROM "users WHERE token = 'abc123' AND pin = 4242""", system) == (
        "SELECT * FROM ?"
    )


def test_a_refused_postgresql_statement_is_read_the_cautious_way() -> None:
    """PostgreSQL refuses ``api_key = "sk_live_..."`` (no such column): the failed statement is
    recorded with the value rule, so the would-be value does not leave the process."""
    rt, statements, tracer, provider = _runtime()
    target = statements.target("postgresql")
    work = Work("operation", "unit", tracer.start_span("unit"), rt.max_statements)
    token = current_work.set(work)
    try:
        refused = 'SELECT * FROM "keys" WHERE api_key = "sk_live_abc"'
        statements.record(target, refused, 0.001, "UndefinedColumn", 0)
    finally:
        current_work.reset(token)
        provider.shutdown()
    assert list(work.statements) == ['SELECT * FROM "keys" WHERE api_key = ?']


def test_shape_cache_keeps_systems_apart() -> None:
    """One raw statement on MySQL and on PostgreSQL: each gets its own system's shape."""
    cache = ShapeCache()
    mysql = cache.shape(DJANGO_INSERT, "mysql")
    postgresql = cache.shape(DJANGO_INSERT, "postgresql")
    assert mysql.text == 'INSERT INTO "shop_order" (?, ?) VALUES (?, ?) RETURNING "shop_order"."id"'
    assert '("customer_id", "total")' in postgresql.text
    assert cache.shape(DJANGO_INSERT, "mysql") is mysql
    assert cache.shape(DJANGO_INSERT, "postgresql") is postgresql
    bounded = ShapeCache(max_entries=16)  # the bound holds for both ways together
    for i in range(100):
        bounded.shape(f"SELECT * FROM t WHERE id = {i}", "mysql" if i % 2 else "postgresql")
    assert len(bounded._cache) + len(bounded._quoted_identifiers) <= 16 and bounded.evictions > 0


def _runtime() -> tuple[Any, Any, Any, Any]:
    """A runtime, its statement core, a tracer and the provider to shut down."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider

    from otel_perf._config import load
    from otel_perf._core.runtime import Runtime, build_instruments
    from otel_perf._core.statements import Statements
    from otel_perf._metrics.instruments import Registry

    provider = TracerProvider(shutdown_on_exit=False)
    registry = Registry()
    tracer = provider.get_tracer("otel_perf")
    rt = Runtime(load({}), tracer, registry, build_instruments(registry), Resource({}))
    return rt, Statements(rt), tracer, provider


def test_statement_core_honours_the_targets_system() -> None:
    """Statements.record: a target's db.system.name decides (the shape cache is per runtime)."""
    rt, statements, tracer, provider = _runtime()
    postgresql, sqlite, mysql = (statements.target(s) for s in ("postgresql", "sqlite", "mysql"))
    other = DJANGO_INSERT.replace('"total"', '"note"')
    work = Work("operation", "unit", tracer.start_span("unit"), rt.max_statements)
    token = current_work.set(work)
    try:
        # MySQL first: a shape cache shared across systems would hand PostgreSQL MySQL's shape
        for target in (mysql, postgresql, sqlite, postgresql, mysql):
            statements.record(target, DJANGO_INSERT, 0.001, "", 0)
        for target in (postgresql, postgresql):
            statements.record(target, other, 0.001, "", 0)
    finally:
        current_work.reset(token)
        provider.shutdown()
    assert work.statements == {
        'INSERT INTO "shop_order" (?, ?) VALUES (?, ?) RETURNING "shop_order"."id"': 3,  # MySQL, SQLite
        'INSERT INTO "shop_order" ("customer_id", "total") VALUES (?, ?) RETURNING "shop_order"."id"': 2,
        'INSERT INTO "shop_order" ("customer_id", "note") VALUES (?, ?) RETURNING "shop_order"."id"': 2,
    }
