"""The budgets file: resolution (defaults < tier < route), lookup, bucket bounds, and errors that
say file, line, key path and what to do."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_perf._analysis.budgets import (
    BudgetError,
    Budgets,
    RouteBudget,
    load_budgets,
    parse_budgets,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[1]

FULL = """\
version: 1
service: demo
defaults:
  p95_ms: 500
  p99_ms: 1000
  error_rate: 0.01
  tier: standard
tiers:
  critical: {p95_ms: 150, p99_ms: 300, error_rate: 0.001}
  standard: {p99_ms: 900}
routes:
  "GET /api/v1/appointments":
    tier: critical
    p50_ms: 50
  "get /api/v1/appointments/{appointment_id}":
    tier: critical
    p99_ms: null
    availability: 0.9995
  "POST /api/v1/appointments":
    p95_ms: 250
    min_rps: 5
load:
  users: 100
  spawn_rate: 20
  duration: 1m30s
"""


@pytest.fixture
def full() -> Budgets:
    return parse_budgets(FULL, "perf-budgets.yaml")


def test_route_budget_is_defaults_then_tier_then_route(full: Budgets) -> None:
    listing = full.lookup("GET", "/api/v1/appointments")
    assert listing == RouteBudget(p50_ms=50, p95_ms=150, p99_ms=300, error_rate=0.001, tier="critical")
    # null removes the tier's p99; the method is normalised to upper case.
    detail = full.lookup("GET", "/api/v1/appointments/{appointment_id}")
    assert detail == RouteBudget(p95_ms=150, p99_ms=None, error_rate=0.001, availability=0.9995,
                                 tier="critical")
    # No tier named: the defaults' tier applies (standard overrides the defaults' p99).
    create = full.lookup("post", "/api/v1/appointments")
    assert create == RouteBudget(p95_ms=250, p99_ms=900, error_rate=0.01, min_rps=5, tier="standard")


def test_unlisted_routes_get_the_defaults_unmatched_requests_none(full: Budgets) -> None:
    expected = RouteBudget(p95_ms=500, p99_ms=900, error_rate=0.01, tier="standard")
    assert full.lookup("GET", "/hello") == expected
    assert full.lookup("DELETE", "/api/v1/appointments") == full.defaults
    assert full.lookup("GET", "") is None
    bare = parse_budgets('version: 1\nroutes:\n  "GET /a": {p95_ms: 10}\n')
    assert bare.lookup("GET", "/b") is None
    assert bare.lookup("GET", "/a") == RouteBudget(p95_ms=10)


def test_routes_keep_file_order_and_bounds_are_exact_seconds(full: Budgets) -> None:
    assert [(m, r) for m, r, _ in full.routes()] == [
        ("GET", "/api/v1/appointments"),
        ("GET", "/api/v1/appointments/{appointment_id}"),
        ("POST", "/api/v1/appointments"),
    ]
    assert full.bounds_seconds() == [0.05, 0.15, 0.25, 0.3, 0.5, 0.9]
    assert 0.15 in full.bounds_seconds()  # the float 150/1000, so le="0.15" matches exactly
    assert full.service == "demo"
    assert (full.load.users, full.load.spawn_rate, full.load.duration_s) == (100, 20.0, 90.0)


def test_helpers_on_route_budget() -> None:
    b = RouteBudget(p50_ms=10, p99_ms=90, error_rate=0.002, tier="x")
    assert b.latency_ms() == {"p50": 10.0, "p99": 90.0}
    assert b.availability_target() == pytest.approx(0.998)
    assert RouteBudget(availability=0.99).max_error_rate() == pytest.approx(0.01)
    assert b.as_dict() == {"tier": "x", "p50_ms": 10, "p99_ms": 90, "error_rate": 0.002}
    assert not RouteBudget().has_objective()


def test_the_example_budgets_file_in_deploy_loads() -> None:
    budgets = load_budgets(REPO / "deploy" / "perf-budgets.yaml")
    assert len(budgets) >= 1
    for method, route, budget in budgets.routes():
        assert budgets.lookup(method, route) is budget
        assert budget.has_objective()


def test_merge_keys_and_anchors_are_supported() -> None:
    text = ('version: 1\ntiers:\n  fast: &fast {p95_ms: 100, p99_ms: 200}\n'
            'routes:\n  "GET /a": {<<: *fast, p50_ms: 20}\n  "GET /b": *fast\n')
    budgets = parse_budgets(text)
    assert budgets.lookup("GET", "/a") == RouteBudget(p50_ms=20, p95_ms=100, p99_ms=200)
    assert budgets.lookup("GET", "/b") == RouteBudget(p95_ms=100, p99_ms=200)


BAD = [
    # (yaml, fragments the message must contain)
    ('version: 1\nroutes:\n  "GET /a":\n    p95: 100\n',
     ["b.yaml:4", 'routes["GET /a"].p95', "unknown key 'p95'", "p95_ms"]),
    ('version: 1\ndefaults: {p99_ms: 100}\nroutes:\n  "GET /a":\n    p95_ms: 200\n',
     ["b.yaml:5", "p95_ms 200 is greater than p99_ms 100", "defaults + the route entry", "Lower p95_ms"]),
    ('version: 1\ntiers: {slow: {p50_ms: 900}}\nroutes:\n  "GET /a": {tier: slow, p95_ms: 100}\n',
     ["p50_ms 900 is greater than p95_ms 100", "tier 'slow'"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: 1}\n  "GET /a": {p95_ms: 2}\n',
     ["b.yaml:4", "duplicate key", "line 3"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: 1}\n  "get /a": {p95_ms: 2}\n',
     ["b.yaml:4", "the same route as 'GET /a'"]),
    ('version: 1\nroutes:\n  "/a": {p95_ms: 1}\n', ["b.yaml:3", '"METHOD /route/template"']),
    ('version: 1\nroutes:\n  "FETCH /a": {p95_ms: 1}\n', ["unknown HTTP method 'FETCH'"]),
    ('version: 1\nroutes:\n  "GET /a?x=1": {p95_ms: 1}\n', ["no query string"]),
    ('version: 1\nroutes:\n  "GET /a/{id": {p95_ms: 1}\n', ["unbalanced braces"]),
    ('version: 1\ntiers: {critical: {p95_ms: 100}}\nroutes:\n  "GET /a": {tier: critcal}\n',
     ["b.yaml:4", "unknown tier 'critcal'", "defines critical"]),
    ('version: 1\ntiers: {critical: {tier: x}}\n', ["A tier cannot name another tier"]),
    ('version: 1\nroutes:\n  "GET /a": {error_rate: 1.5}\n', ["is not a ratio", "did you mean 0.015"]),
    ('version: 1\nroutes:\n  "GET /a": {availability: 99.9}\n', ["availability", "did you mean 0.999"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: -3}\n', ["positive number of milliseconds"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: "150ms"}\n', ["'150ms' is not a number"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: .nan}\n', ["not a finite number"]),
    ('version: 1\ndefaults: {p95_ms: yes}\n', ["True is not a number"]),
    ('version: 1\nroutes:\n  "GET /a": {min_rps: -1}\n', ["throughput floor"]),
    ('version: 1\nroutes:\n  "GET /a": {p95_ms: 1\n', ["b.yaml:4", "not valid YAML"]),
    ('version: 1\nroute: {}\n', ["b.yaml:2", "unknown top-level key 'route'"]),
    ("routes: {}\n", ["missing 'version: 1'"]),
    ("version: 2\n", ["unsupported version 2"]),
    ("", ["the file is empty"]),
    ("- a\n- b\n", ["top level must be a mapping"]),
    ('version: 1\nroutes: ["GET /a"]\n', ["expected a mapping"]),
    ('version: 1\nroutes:\n  "GET /a": 150\n', ["expected a mapping of objectives"]),
    ("version: 1\nload: {duration: soon}\n", ["load.duration", "'soon' is not a duration"]),
    ("version: 1\nload: {users: 0}\n", ["load.users", "whole number"]),
    ("version: 1\nload: {vus: 3}\n", ["unknown key 'vus'"]),
    ("version: 1\nservice: ''\n", ["service name"]),
]


@pytest.mark.parametrize(("text", "fragments"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_errors_say_where_and_what_to_do(text: str, fragments: list[str]) -> None:
    with pytest.raises(BudgetError) as info:
        parse_budgets(text, "b.yaml")
    message = str(info.value)
    assert message.startswith("b.yaml")
    for fragment in fragments:
        assert fragment in message, message


def test_alias_bombs_are_refused() -> None:
    lines = ["version: 1", "a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    for i in range(1, 8):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    with pytest.raises(BudgetError, match="YAML nodes"):
        parse_budgets("\n".join(lines) + "\n", "bomb.yaml")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match="no such budgets file"):
        load_budgets(tmp_path / "missing.yaml")
    with pytest.raises(BudgetError, match="is a directory"):
        load_budgets(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"version: 1\n\xff\xfe")
    with pytest.raises(BudgetError, match="not UTF-8"):
        load_budgets(binary)
    big = tmp_path / "big.yaml"
    big.write_text("#" * ((1 << 20) + 1))
    with pytest.raises(BudgetError, match="larger than"):
        load_budgets(big)
    good = tmp_path / "good.yaml"
    good.write_text(FULL)
    assert load_budgets(str(good)).source == str(good)


@pytest.mark.parametrize(("text", "seconds"), [
    (90, 90.0), (1.5, 1.5), ("90", 90.0), ("90s", 90.0), ("2m", 120.0), ("1h30m", 5400.0), ("500ms", 0.5),
    ("1m 30s", 90.0),
])
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "-1", "0", "1d", True, "nan"])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


_ms = st.one_of(st.none(), st.integers(1, 5000))


@settings(max_examples=150, deadline=None)
@given(
    defaults=st.tuples(_ms, _ms, _ms),
    routes=st.lists(st.tuples(st.sampled_from(["GET", "POST"]),
                              st.from_regex(r"/[a-z]{1,6}(/\{[a-z_]{1,5}\})?", fullmatch=True),
                              st.tuples(_ms, _ms, _ms)), max_size=6, unique_by=lambda r: (r[0], r[1])),
)
def test_valid_files_resolve_consistently(defaults: tuple[int | None, ...],
                                          routes: list[tuple[str, str, tuple[int | None, ...]]]) -> None:
    """Property: a file either fails with BudgetError or every resolved budget is ordered, and
    bounds_seconds holds exactly every latency threshold in seconds."""

    def mapping(values: tuple[int | None, ...]) -> str:
        keys = ("p50_ms", "p95_ms", "p99_ms")
        items = [f"{k}: {v}" for k, v in zip(keys, values, strict=True) if v is not None]
        return "{" + ", ".join(items) + "}"

    text = f"version: 1\ndefaults: {mapping(defaults)}\nroutes:\n"
    text += "".join(f'  "{m} {r}": {mapping(v)}\n' for m, r, v in routes)
    try:
        budgets = parse_budgets(text)
    except BudgetError as exc:
        message = str(exc)
        budgets = None
    if budgets is None:
        assert "is greater than" in message
        return
    expected: set[float] = set()
    for budget in (budgets.defaults, *(b for _, _, b in budgets.routes())):
        values = [v for v in (budget.p50_ms, budget.p95_ms, budget.p99_ms) if v is not None]
        assert values == sorted(values)
        expected.update(v / 1000.0 for v in values)
    assert budgets.bounds_seconds() == sorted(expected)
    assert all(math.isfinite(b) and b > 0 for b in budgets.bounds_seconds())
    for method, route, budget in budgets.routes():
        assert budgets.lookup(method, route) is budget


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("defaults: {critical: {p95_ms: 10}}", "a critical level of p95_ms without a target p95_ms"),
        ("defaults: {p95_ms: 100, critical: {p95_ms: 10}}", "critical p95_ms 10 is below the target 100"),
        ("defaults: {min_rps: 5, critical: {min_rps: 10}}", "critical min_rps 10 is above the target 5"),
        ("defaults: {queries_per_request: 2.5}", "queries_per_request is a whole number"),
        ("defaults: {client_error_rate: 5}", "did you mean 0.05?"),
        ("defaults: {critical: {availability: 0.9}}", "unknown key 'availability'"),
        ("defaults: {max_queries: 5}", "The queries objective is queries_per_request."),
        ('db: {"SELECT": {p95_ms: 1}}', 'a database key is "OPERATION table"'),
        ('db: {"SELECT t": {p95_ms: 10, p50_ms: 20}}', "p50_ms 20 is greater than p95_ms 10"),
        ('db: {"SELECT t": {error_rate: 0.1}}', "unknown key 'error_rate'"),
    ],
)
def test_issue_21_objectives_are_validated(text: str, fragment: str) -> None:
    with pytest.raises(BudgetError, match=re.escape(fragment)):
        parse_budgets(f"version: 1\n{text}\n", "b.yaml")


def test_critical_levels_merge_like_targets_and_db_lookup_is_most_specific() -> None:
    budgets = parse_budgets(
        "version: 1\n"
        "defaults: {p95_ms: 500, error_rate: 0.01, critical: {p95_ms: 1500, error_rate: 0.05}}\n"
        "tiers:\n  fast: {p95_ms: 100, critical: {p95_ms: 300}}\n"
        'routes:\n  "GET /a": {tier: fast}\n  "GET /b": {critical: {error_rate: null}}\n'
        'db_defaults: {p95_ms: 50}\ndb:\n  "SELECT t": {p95_ms: 5}\n  "SELECT *": {p95_ms: 20}\n'
        '  "* t": {p95_ms: 30}\n',
        "b.yaml",
    )
    a, b = budgets.lookup("GET", "/a"), budgets.lookup("GET", "/b")
    assert a is not None and b is not None
    assert a.levels("p95_ms") == (100, 300) and a.levels("error_rate") == (0.01, 0.05)
    assert b.critical == {"p95_ms": 1500}
    assert [budgets.db_lookup(op, t).p95_ms for op, t in  # type: ignore[union-attr]
            (("select", "t"), ("SELECT", "u"), ("INSERT", "t"), ("INSERT", "u"))] == [5, 20, 30, 50]
    assert budgets.bounds_seconds() == [0.1, 0.3, 0.5, 1.5]
