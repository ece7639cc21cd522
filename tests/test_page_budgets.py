"""Page-load objectives in the budgets file (issue #22): parsing and its errors, the generated
PerfPageVitalOverBudget alerts, and promtool proving they fire on bad pages and stay silent on
healthy or quiet ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from otel_perf._analysis.budgets import BudgetError, PageBudget, parse_budgets
from otel_perf._export.page_rules import ALERT_PAGE, page_objectives, page_rule_group
from otel_perf._export.slo_rules import promtool_tests, render_yaml, rule_groups
from support.procs import skip_or_fail
from support.prometheus import promtool_path

BUDGETS = """\
version: 1
service: shop
defaults:
  p95_ms: 500
page_defaults:
  lcp_ms: 2500
  inp_ms: 200
  cls: 0.1
pages:
  "/checkout":
    lcp_ms: 1800
    cls: null
  "/orders/{order_id}":
    ttfb_ms: 600
"""


def _promtool() -> str:
    tool = promtool_path()
    if tool is None:
        skip_or_fail("promtool not installed (Debian package prometheus)")
    return tool


def test_pages_resolve_over_the_page_defaults() -> None:
    budgets = parse_budgets(BUDGETS, "b.yaml")
    assert budgets.page_defaults == PageBudget(lcp_ms=2500, inp_ms=200, cls=0.1)
    assert budgets.pages["/checkout"] == PageBudget(lcp_ms=1800, inp_ms=200)
    assert budgets.pages["/orders/{order_id}"] == PageBudget(lcp_ms=2500, inp_ms=200, cls=0.1, ttfb_ms=600)
    assert budgets.page_lookup("/unlisted") == budgets.page_defaults
    assert budgets.page_bounds() == {"lcp": [1.8, 2.5], "inp": [0.2], "cls": [0.1], "ttfb": [0.6]}
    assert budgets.browser_job() == "shop-browser"
    assert budgets.browser_job("other") == "other-browser"
    assert parse_budgets(BUDGETS + "browser_service: web\n").browser_job() == "web"
    # A file without pages is what it was before.
    plain = parse_budgets("version: 1\ndefaults: {p95_ms: 500}\n")
    assert plain.pages == {} and plain.page_lookup("/") is None and plain.page_bounds() == {}


@pytest.mark.parametrize(
    ("text", "where", "what"),
    [
        ("page_defaults: {lcp: 2500}", "b.yaml:2: page_defaults.lcp", "lcp_ms"),
        ("page_defaults: {cls: 10}", "b.yaml:2: page_defaults.cls", "unitless score"),
        ("page_defaults: {inp_ms: -5}", "b.yaml:2: page_defaults.inp_ms", "positive number of milliseconds"),
        ("page_defaults: {p95_ms: 5}", "b.yaml:2: page_defaults.p95_ms", "routes:"),
        ('pages:\n  "GET /x": {lcp_ms: 1}', 'b.yaml:3: pages["GET /x"]', "without a method"),
        ("pages:\n  checkout: {lcp_ms: 1}", "b.yaml:3: pages.checkout", "starting with '/'"),
        ("pages:\n  /x?a=1: {lcp_ms: 1}", 'b.yaml:3: pages["/x?a=1"]', "no query string"),
        ("pages:\n  /x: 5", 'b.yaml:3: pages["/x"]', "mapping of page-load objectives"),
        ("pages: [1]", "b.yaml:2: pages", "mapping of"),
        ("browser_service: 3", "b.yaml:2: browser_service", "as text"),
    ],
)
def test_bad_page_budgets_say_file_line_key_and_fix(text: str, where: str, what: str) -> None:
    with pytest.raises(BudgetError) as err:
        parse_budgets("version: 1\n" + text + "\n", "b.yaml")
    message = str(err.value)
    assert message.startswith(where), message
    assert what in message


def test_one_alert_per_page_objective_and_defaults_for_unlisted_pages() -> None:
    budgets = parse_budgets(BUDGETS, "b.yaml")
    objectives = [(o.route, o.vital, o.bound) for o in page_objectives(budgets)]
    assert objectives == [
        ("/checkout", "lcp", 1.8),
        ("/checkout", "inp", 0.2),
        ("/orders/{order_id}", "lcp", 2.5),
        ("/orders/{order_id}", "inp", 0.2),
        ("/orders/{order_id}", "cls", 0.1),
        ("/orders/{order_id}", "ttfb", 0.6),
        ("", "lcp", 2.5),
        ("", "inp", 0.2),
        ("", "cls", 0.1),
    ]
    group = page_rule_group(budgets)
    assert group is not None and group["name"] == "otel-perf-page-alerts"
    first, default_cls = group["rules"][0], group["rules"][-1]
    assert first["alert"] == ALERT_PAGE and first["for"] == "15m"
    assert first["labels"] == {
        "severity": "ticket",
        "vital": "lcp",
        "page_budget": "/checkout",
        "budget": "1800 ms",
    }
    assert (
        'perf_browser_lcp_seconds_bucket{job="shop-browser", http_route="/checkout", le=~"1\\\\.8"}'
        in first["expr"]
    )
    assert default_cls["labels"]["budget"] == "0.1"
    assert (
        'perf_browser_cls_bucket{job="shop-browser", http_route!~"/checkout|/orders/\\\\{order_id\\\\}"'
        in (default_cls["expr"])
    )
    # The page group rides along with the server SLOs; a file without pages adds none.
    assert "otel-perf-page-alerts" in [g["name"] for g in rule_groups(budgets)["groups"]]
    plain = parse_budgets("version: 1\ndefaults: {p95_ms: 500}\n")
    assert "otel-perf-page-alerts" not in [g["name"] for g in rule_groups(plain)["groups"]]


@pytest.mark.prometheus
def test_page_alerts_pass_promtool_and_their_tests(tmp_path: Path) -> None:
    promtool = _promtool()
    budgets = parse_budgets(BUDGETS, "b.yaml")
    rules, tests = tmp_path / "rules.yml", tmp_path / "rules.test.yml"
    rules.write_text(render_yaml(rule_groups(budgets)))
    tests.write_text(render_yaml(promtool_tests(budgets, "rules.yml")))
    page_cases = [t for t in yaml.safe_load(tests.read_text())["tests"] if t["name"].startswith("page ")]
    assert len(page_cases) == 3 * len(page_objectives(budgets))
    check = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run(
        [promtool, "test", "rules", str(tests)], capture_output=True, text=True, check=False
    )
    assert test.returncode == 0, test.stdout + test.stderr


@pytest.mark.prometheus
def test_page_alert_tests_catch_rules_with_another_budget(tmp_path: Path) -> None:
    """Rules built for a looser budget than the tests expect fail the generated tests."""
    promtool = _promtool()
    loose = parse_budgets(BUDGETS.replace("lcp_ms: 1800", "lcp_ms: 4000"), "b.yaml")
    strict = parse_budgets(BUDGETS, "b.yaml")
    (tmp_path / "rules.yml").write_text(render_yaml(rule_groups(loose)))
    (tmp_path / "tests.yml").write_text(render_yaml(promtool_tests(strict, "rules.yml")))
    result = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert ALERT_PAGE in result.stdout + result.stderr
