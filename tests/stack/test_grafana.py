"""Grafana provisioning: datasource uids and the links between them, `$` escaping, dashboards."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from . import DEPLOY_DIR, load_script, load_yaml
from .exprs import DATASOURCES_FILE, dashboard_files, iter_panels, load_dashboard

GRAFANA_DIR = DEPLOY_DIR / "grafana"
PROVISIONING_DIR = GRAFANA_DIR / "provisioning"
PROVISIONING_FILES = sorted(PROVISIONING_DIR.rglob("*.yaml")) + sorted(PROVISIONING_DIR.rglob("*.yml"))
FIXED_UIDS = {"prometheus": "prometheus", "tempo": "tempo", "loki": "loki"}  # uid -> type
GRAFANA_BUILTINS = {
    "__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
    "__from", "__to", "__dashboard", "__org", "__user", "__name", "__timeFilter",
}  # fmt: skip
# Panels that show no data and so need no unit.
NO_DATA_PANELS = {"row", "text"}


def datasources() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = load_yaml(DATASOURCES_FILE)["datasources"]
    return result


def datasource_uids() -> set[str]:
    return {ds["uid"] for ds in datasources()}


def grafana_expand(text: str, env: dict[str, str]) -> str:
    """What Grafana makes of a provisioning file: $$ -> $, $VAR / ${VAR} -> environment value."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(2)
        return env.get(name, "")

    return re.sub(r"\$\$|\$\{(\w+)\}|\$(\w+)", sub, text)


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


# --- datasources --------------------------------------------------------------------------
def test_datasources_have_fixed_uids_and_types() -> None:
    by_uid = {ds["uid"]: ds for ds in datasources()}
    assert len(by_uid) == len(datasources()), "duplicate datasource uid"
    for uid, kind in FIXED_UIDS.items():
        assert by_uid[uid]["type"] == kind
    assert [ds["uid"] for ds in datasources() if ds.get("isDefault")] == ["prometheus"]


def test_every_datasource_uid_a_link_names_exists() -> None:
    uids = datasource_uids()
    for ds in datasources():
        for key, value in _walk(ds.get("jsonData", {})):
            if key == "datasourceUid":
                assert value in uids, f"{ds['uid']}: link to unknown datasource uid {value!r}"


def test_signal_links_are_configured() -> None:
    by_uid = {ds["uid"]: ds["jsonData"] for ds in datasources()}
    # exemplar -> trace
    exemplars = by_uid["prometheus"]["exemplarTraceIdDestinations"]
    assert {"name": "trace_id", "datasourceUid": "tempo"}.items() <= exemplars[0].items()
    tempo = by_uid["tempo"]
    # trace -> logs, by trace id
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert "__trace.traceId" in tempo["tracesToLogsV2"]["query"]
    # trace -> metrics
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["tracesToMetrics"]["queries"]
    # service map
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"
    assert tempo["nodeGraph"]["enabled"] is True
    # log -> trace
    derived = by_uid["loki"]["derivedFields"][0]
    assert derived["datasourceUid"] == "tempo"
    assert derived["matcherRegex"] == "trace_id"


@pytest.mark.parametrize("path", PROVISIONING_FILES, ids=lambda p: p.name)
def test_provisioning_yaml_escapes_dollars(path: Path) -> None:
    """Grafana expands $VAR / ${VAR} in provisioning files: a literal `$` must be written `$$`."""
    text = path.read_text()
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        stray = re.sub(r"\$\$", "", line)
        assert "$" not in stray, f"{path.name}:{lineno}: unescaped '$' (write '$$'): {line.strip()}"


def test_links_read_correctly_after_grafana_expansion() -> None:
    """After Grafana's expansion the link templates carry the variables Grafana interpolates."""
    expanded = yaml.safe_load(grafana_expand(DATASOURCES_FILE.read_text(), env={}))
    by_uid = {ds["uid"]: ds["jsonData"] for ds in expanded["datasources"]}
    logs_query = by_uid["tempo"]["tracesToLogsV2"]["query"]
    assert logs_query == '{${__tags}} | trace_id="${__trace.traceId}"'
    for query in by_uid["tempo"]["tracesToMetrics"]["queries"]:
        assert "{$__tags" in query["query"], query
    assert by_uid["loki"]["derivedFields"][0]["url"] == "${__value.raw}"


def test_dashboard_provider_points_at_the_mounted_dashboards() -> None:
    provider = load_yaml(PROVISIONING_DIR / "dashboards" / "dashboards.yaml")["providers"][0]
    compose = load_yaml(DEPLOY_DIR / "compose.yaml")
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# --- dashboards ---------------------------------------------------------------------------
DASHBOARDS = dashboard_files()


def test_expected_dashboards_exist() -> None:
    titles = {load_dashboard(p)["title"] for p in DASHBOARDS}
    for name in ("Service", "Database", "Outgoing APIs", "Runtime", "Telemetry health", "Browser"):
        assert f"otel-perf / {name}" in titles


def test_dashboards_are_the_generator_output() -> None:
    builder = load_script(GRAFANA_DIR / "build_dashboards.py")
    rendered: dict[str, str] = builder.render()
    assert sorted(rendered) == sorted(p.name for p in DASHBOARDS)
    for path in DASHBOARDS:
        assert path.read_text() == rendered[path.name], (
            f"{path.name} is stale: run python deploy/grafana/build_dashboards.py"
        )


def test_dashboard_uids_unique_and_valid() -> None:
    uids = [load_dashboard(p)["uid"] for p in DASHBOARDS]
    assert len(uids) == len(set(uids))
    for uid in uids:
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", uid), uid


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_panel_has_a_unit_and_a_known_datasource(path: Path) -> None:
    board = load_dashboard(path)
    uids = datasource_uids()
    for panel in iter_panels(board):
        if panel["type"] in NO_DATA_PANELS:
            continue
        title = panel.get("title")
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit")
        assert isinstance(unit, str), f"{path.name}: panel {title!r} has no unit"
        assert unit.strip(), f"{path.name}: panel {title!r} has an empty unit"
        assert panel["datasource"]["uid"] in uids, f"{path.name}: panel {title!r}"
        assert panel.get("targets"), f"{path.name}: panel {title!r} has no query"
        for target in panel["targets"]:
            ds = target.get("datasource", panel["datasource"])
            assert ds["uid"] in uids, f"{path.name}: panel {title!r} target {target.get('refId')}"
            assert ds["uid"] == panel["datasource"]["uid"], "mixed datasources in one panel"
            assert FIXED_UIDS[ds["uid"]] == ds["type"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_panels_have_unique_ids_and_do_not_overlap(path: Path) -> None:
    panels = list(iter_panels(load_dashboard(path)))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    boxes = [(p["gridPos"], p["title"]) for p in panels]
    for i, (a, ta) in enumerate(boxes):
        assert a["x"] + a["w"] <= 24, ta
        for b, tb in boxes[i + 1 :]:
            overlap = (
                a["x"] < b["x"] + b["w"]
                and b["x"] < a["x"] + a["w"]
                and a["y"] < b["y"] + b["h"]
                and b["y"] < a["y"] + a["h"]
            )
            assert not overlap, (ta, tb)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_variables_are_defined_and_job_selects_the_service(path: Path) -> None:
    board = load_dashboard(path)
    variables = {v["name"]: v for v in board["templating"]["list"]}
    job = variables["job"]
    assert job["datasource"]["uid"] == "prometheus"
    assert job["query"]["query"] == "label_values(http_server_request_duration_seconds_count, job)"
    text = json.dumps([p.get("targets", []) for p in iter_panels(board)])
    used = {name for name in re.findall(r"\$\{?(\w+)", text) if not name.isdigit()}  # ${1}: back-reference
    undefined = used - set(variables) - GRAFANA_BUILTINS
    assert undefined == set(), f"{path.name}: undefined variables"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_json_is_not_escaped_like_provisioning(path: Path) -> None:
    """Dashboard JSON is not env-expanded: `$$` there would reach the query verbatim."""
    assert "$$" not in path.read_text()
    assert "${DS_" not in path.read_text(), "import placeholders do not resolve when provisioned"


def test_service_dashboard_shows_red_per_route_with_budgets() -> None:
    board = load_dashboard(next(p for p in DASHBOARDS if p.name == "service.json"))
    exprs = " ".join(t.get("expr", "") for p in iter_panels(board) for t in p.get("targets", []))
    for quantile in ("0.5", "0.95", "0.99"):
        assert f"histogram_quantile({quantile}," in exprs
    for q in ("p50", "p95", "p99"):
        assert f'perf_budget_quantile="{q}"' in exprs
    assert "perf_budget_error_rate_ratio" in exprs
    assert 'error_type!=""' in exprs
    latency = [p for p in iter_panels(board) if re.fullmatch(r"p\d\d latency per route", p["title"])]
    assert len(latency) == 3
    assert latency
    assert all(t.get("exemplar") for p in latency for t in p["targets"][:1])
    types = {p["type"] for p in iter_panels(board)}
    assert "nodeGraph" in types, "service map"


def test_browser_dashboard_shows_vitals_per_page_and_api_calls_from_both_sides() -> None:
    board = load_dashboard(next(p for p in DASHBOARDS if p.name == "browser.json"))
    exprs = " ".join(t.get("expr", "") for p in iter_panels(board) for t in p.get("targets", []))
    for metric in ("perf_browser_lcp_seconds", "perf_browser_inp_seconds", "perf_browser_cls",
                   "perf_browser_ttfb_seconds", "perf_browser_fcp_seconds"):
        assert f"histogram_quantile(0.75, sum by (http_route, le) (rate({metric}_bucket" in exprs, metric
    assert "perf_browser_page_load_duration_seconds_bucket" in exprs  # slowest pages
    both = next(p for p in iter_panels(board) if p["title"] == "API calls p95: browser vs server")
    browser_side, server_side = (t["expr"] for t in both["targets"])
    assert "perf_browser_request_duration_seconds_bucket" in browser_side
    assert 'http_server_request_duration_seconds_bucket{job="$job"}' in server_side
    assert "and on (url_template)" in server_side  # only the routes the browser calls
    assert any(p["type"] == "table" and p["datasource"]["uid"] == "tempo" for p in iter_panels(board))
