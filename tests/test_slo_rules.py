"""SLO rules from budgets: shape, promtool validity, and generated promtool tests that prove a fast
burn pages, a slow burn tickets and healthy traffic stays silent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from otel_perf._analysis.budgets import parse_budgets
from otel_perf._cli import tools
from otel_perf._export import slo_rules
from otel_perf._export.slo_rules import (
    build_slos,
    le_label,
    le_regex,
    promtool_tests,
    render_yaml,
    rule_groups,
)
from support.procs import skip_or_fail
from support.prometheus import promtool_path

BUDGETS = """\
version: 1
service: appointments
defaults:
  p95_ms: 500
  error_rate: 0.01
tiers:
  critical: {p95_ms: 150, p99_ms: 300, error_rate: 0.001}
routes:
  "GET /api/v1/appointments/{appointment_id}":
    tier: critical
    p50_ms: 20
    min_rps: 2
  "POST /api/v1/appointments":
    p95_ms: 1000
    p99_ms: 2000
    availability: 0.995
"""


@pytest.fixture
def budgets_file(tmp_path: Path) -> Path:
    path = tmp_path / "perf-budgets.yaml"
    path.write_text(BUDGETS)
    return path


def _promtool() -> str:
    tool = promtool_path()
    if tool is None:
        skip_or_fail("promtool not installed (Debian package prometheus)")
    return tool


def test_le_matches_every_spelling_of_the_bound() -> None:
    assert le_label(0.15) == "0.15"
    assert le_label(1.0) == "1"
    assert le_regex(0.15) == "0\\\\.15"  # RE2 `0\.15` inside a PromQL string
    assert le_regex(2.0) == "2|2\\\\.0"  # our exporter writes 2, Prometheus 3 normalises to 2.0


def test_slos_per_route_and_for_unlisted_routes() -> None:
    slos = {s.id: s for s in build_slos(parse_budgets(BUDGETS, "perf-budgets.yaml"))}
    assert sorted(slos) == [
        "default-get-errors", "default-get-latency-p95",
        "default-other-methods-errors", "default-other-methods-latency-p95",
        "default-post-errors", "default-post-latency-p95",
        "get-api-v1-appointments-appointment-id-errors",
        "get-api-v1-appointments-appointment-id-latency-p95",
        "get-api-v1-appointments-appointment-id-latency-p99",
        "post-api-v1-appointments-errors",
        "post-api-v1-appointments-latency-p95",
        "post-api-v1-appointments-latency-p99",
    ]
    p95 = slos["get-api-v1-appointments-appointment-id-latency-p95"]
    assert (p95.objective, p95.bound_s, p95.tier) == (0.95, 0.15, "critical")
    assert slos["post-api-v1-appointments-errors"].objective == 0.995  # availability wins over error_rate
    assert slos["get-api-v1-appointments-appointment-id-errors"].budget == pytest.approx(0.001)
    # p50 has no SLO: half the requests may be slower, no burn-rate factor fits.
    assert not any(s.quantile == "p50" for s in slos.values())
    assert "http_route!~" in " ".join(slos["default-get-latency-p95"].matchers)


def test_zero_error_budget_and_no_defaults_generate_no_alert_that_cannot_fire() -> None:
    budgets = parse_budgets('version: 1\nroutes:\n  "GET /a": {error_rate: 0, p95_ms: 100}\n')
    assert [s.id for s in build_slos(budgets)] == ["get-a-latency-p95"]


def test_rules_shape() -> None:
    doc = rule_groups(parse_budgets(BUDGETS, "perf-budgets.yaml"))
    groups = {g["name"]: g["rules"] for g in doc["groups"]}
    assert list(groups) == ["otel-perf-slo-sli", "otel-perf-slo-meta", "otel-perf-slo-alerts"]
    records = {r["record"] for r in groups["otel-perf-slo-sli"]}
    assert records == {f"slo:sli_error:ratio_rate{w}" for w in ("5m", "30m", "1h", "2h", "6h", "1d", "3d")}
    sli = next(r for r in groups["otel-perf-slo-sli"]
               if r["labels"]["slo"] == "get-api-v1-appointments-appointment-id-latency-p95"
               and r["record"].endswith("5m"))
    assert 'job="appointments"' in sli["expr"]  # the file's service selects the job
    assert 'le=~"0\\\\.15"' in sli["expr"]
    errors = next(r for r in groups["otel-perf-slo-sli"] if r["labels"]["slo_kind"] == "errors")
    assert 'http_response_status_code=~"5.."' in errors["expr"]
    alerts = groups["otel-perf-slo-alerts"]
    severities = {(a["alert"], a["labels"]["severity"]) for a in alerts}
    assert severities == {
        ("PerfLatencyBudgetBurn", "page"), ("PerfLatencyBudgetBurn", "ticket"),
        ("PerfErrorBudgetBurn", "page"), ("PerfErrorBudgetBurn", "ticket"),
        ("PerfBudgetBucketMissing", "ticket"), ("PerfThroughputBelowFloor", "ticket"),
    }
    page = next(a for a in alerts if a["labels"] == {
        "severity": "page", "slo": "get-api-v1-appointments-appointment-id-latency-p95",
        "slo_kind": "latency", "slo_tier": "critical"})
    # SRE workbook: 14.4x over 1h and 5m, or 6x over 6h and 30m, of a 5% budget.
    assert "ratio_rate5m" in page["expr"] and "> 0.72" in page["expr"]
    assert "ratio_rate6h" in page["expr"] and "> 0.3" in page["expr"]
    assert "$value" not in str(alerts)  # annotations are deterministic (and testable)
    override = rule_groups(parse_budgets(BUDGETS), job="other")
    assert 'job="other"' in str(override)


@pytest.mark.slow
@pytest.mark.prometheus
def test_generated_rules_pass_promtool_and_their_tests(budgets_file: Path, tmp_path: Path) -> None:
    promtool = _promtool()
    rules, tests = tmp_path / "slo-rules.yml", tmp_path / "slo-rules.test.yml"
    with pytest.raises(SystemExit) as exit_info:
        tools.main(["rules", str(budgets_file), "-o", str(rules), "--tests", str(tests)])
    assert exit_info.value.code == 0
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS" in check.stdout
    test = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True,
                          check=False, timeout=240)
    assert test.returncode == 0, test.stdout + test.stderr

    doc = yaml.safe_load(tests.read_text())
    names = [t["name"] for t in doc["tests"]]
    assert "healthy traffic within budget stays silent" in names
    assert any(n.startswith("fast burn of the p95 latency budget pages") for n in names)
    assert any(n.startswith("slow burn of the error budget opens a ticket") for n in names)
    # The cases assert something: pages, tickets and silence all occur among the expectations.
    expected = [(t["name"], c["eval_time"], a["exp_labels"]["severity"], a["exp_labels"]["alertname"]
                 if "alertname" in a["exp_labels"] else c["alertname"])
                for t in doc["tests"] for c in t["alert_rule_test"] for a in c["exp_alerts"]]
    fast = [e for e in expected if e[0].startswith("fast burn of the p95")]
    assert ("30m", "page") in {(e[1], e[2]) for e in fast}
    assert ("120m", "page") not in {(e[1], e[2]) for e in fast}  # cleared after recovery...
    assert ("120m", "ticket") in {(e[1], e[2]) for e in fast}  # ...while the ticket stays
    slow = [e for e in expected if e[0].startswith("slow burn")]
    assert slow and {e[2] for e in slow} == {"ticket"}
    assert not [e for e in expected if e[0] == "healthy traffic within budget stays silent"]
    assert any(e[3] == "PerfThroughputBelowFloor" for e in expected)
    assert any(e[3] == "PerfBudgetBucketMissing" for e in expected)


@pytest.mark.prometheus
def test_generated_tests_catch_rules_that_do_not_match_the_budgets(tmp_path: Path) -> None:
    """The tests are not vacuous: rules from a looser budgets file fail them."""
    promtool = _promtool()
    strict = parse_budgets('version: 1\nroutes:\n  "GET /a": {p95_ms: 100, error_rate: 0.001}\n', "b.yaml")
    loose = parse_budgets('version: 1\nroutes:\n  "GET /a": {p95_ms: 400, error_rate: 0.05}\n', "b.yaml")
    (tmp_path / "rules.yml").write_text(render_yaml(rule_groups(loose)))
    (tmp_path / "tests.yml").write_text(render_yaml(promtool_tests(strict, "rules.yml")))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "tests.yml")], capture_output=True,
                            text=True, check=False, timeout=120)
    assert result.returncode != 0
    assert "FAILED" in result.stdout + result.stderr


def test_cli_prints_rules_and_reports_budget_errors(budgets_file: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        tools.main(["rules", str(budgets_file)])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("# Generated from")
    assert yaml.safe_load(out)["groups"][0]["name"] == "otel-perf-slo-sli"

    bad = tmp_path / "bad.yaml"
    bad.write_text('version: 1\nroutes:\n  "GET /a": {p95: 100}\n')
    with pytest.raises(SystemExit) as exit_info:
        tools.main(["rules", str(bad)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{bad}:3" in err and "unknown key 'p95'" in err

    with pytest.raises(SystemExit) as exit_info:
        tools.main(["rules", str(budgets_file), "--tests", str(tmp_path / "t.yml")])
    assert exit_info.value.code == 2
    assert "--tests needs --output" in capsys.readouterr().err


def test_model_refuses_ambiguous_cases() -> None:
    with pytest.raises(AssertionError, match="too close"):
        slo_rules._above(0.1, 0.11, "example")
