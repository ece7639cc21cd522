"""SQL normalization: literals never survive; shapes group; operation and table are found."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otel_perf._analysis.sql import ShapeCache, classify, normalize


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
