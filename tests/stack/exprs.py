"""Every PromQL expression the stack ships, where it lives, and helpers to use them.

``all_promql()`` lists each expression of every Prometheus panel target in the provisioned
dashboards, every recording and alerting rule, and the trace-to-metrics link queries of the
Tempo datasource, with Grafana variables replaced by concrete values (``concretize``), so the
list can be run as is against a live Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"
RULES_DIR = ROOT / "deploy" / "prometheus" / "rules"
DATASOURCES_FILE = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
NAMES_FILE = ROOT / "src" / "otel_perf" / "_names.py"

PROMETHEUS_UID = "prometheus"
DEFAULT_JOB = "otel-perf-demo"

# Values for Grafana's built-in variables and the dashboards' own template variables.
BUILTIN_VALUES: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "15000",
}
TEMPLATE_DEFAULTS: dict[str, str] = {
    "route": ".*",
    "host": ".*",
    "instance": ".*",
    "browser": ".*",  # the Browser dashboard's browser service and pages
    "page": ".*",
}

_VAR = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)(?::\w+)?\]\]|\$(\w+)")


def concretize(expr: str, job: str = DEFAULT_JOB, **values: str) -> str:
    """Replace Grafana variables ($job, ${job}, $__rate_interval, $__tags, ...) with values.

    `job` fills $job (and $__tags of the trace-to-metrics links); other template variables
    default to match-all regexes and can be given as keyword arguments. An unknown variable
    raises ValueError, so a new dashboard variable cannot slip through unnoticed.
    """
    table = {**BUILTIN_VALUES, **TEMPLATE_DEFAULTS, "job": job, "__tags": f'job="{job}"', **values}

    def sub(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g is not None)
        if name.isdigit():  # ${1}: a label_replace back-reference, which Grafana leaves alone
            return match.group(0)
        if name not in table:
            raise ValueError(f"unknown Grafana variable ${name} in {expr!r}")
        return table[name]

    out = _VAR.sub(sub, expr)
    if "$" in re.sub(r"\$\{\d+\}", "", out):
        raise ValueError(f"unresolved '$' left in {out!r}")
    return out


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS_DIR.glob("*.json"))


def load_dashboard(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def _target_uid(panel: dict[str, Any], target: dict[str, Any]) -> str | None:
    ds = target.get("datasource") or panel.get("datasource")
    if isinstance(ds, dict):
        uid = ds.get("uid")
        return uid if isinstance(uid, str) else None
    return None


def dashboard_promql() -> list[tuple[str, str]]:
    """(where, raw expr) for every Prometheus target of every dashboard panel."""
    out: list[tuple[str, str]] = []
    for path in dashboard_files():
        board = load_dashboard(path)
        for panel in iter_panels(board):
            for target in panel.get("targets", []):
                if _target_uid(panel, target) == PROMETHEUS_UID and target.get("expr"):
                    where = (
                        f"dashboard {path.name} ({board['uid']}): "
                        f"panel {panel['title']!r} target {target['refId']}"
                    )
                    out.append((where, target["expr"]))
    return out


def rule_promql() -> list[tuple[str, str]]:
    """(where, expr) for every recording and alerting rule."""
    out: list[tuple[str, str]] = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        data = yaml.safe_load(path.read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                name = f"record {rule['record']}" if "record" in rule else f"alert {rule['alert']}"
                out.append((f"rules {path.name}: group {group['name']}: {name}", rule["expr"]))
    return out


def datasource_promql() -> list[tuple[str, str]]:
    """(where, expr as Grafana sees it) for the Tempo datasource's trace-to-metrics queries.

    The provisioning file is expanded by Grafana ($$ -> $), so the expressions are unescaped here.
    """
    data = yaml.safe_load(DATASOURCES_FILE.read_text())
    out: list[tuple[str, str]] = []
    for ds in data["datasources"]:
        for query in ds.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            where = f"datasource {ds['uid']}: tracesToMetrics query {query['name']!r}"
            out.append((where, query["query"].replace("$$", "$")))
    return out


def raw_promql() -> list[tuple[str, str]]:
    """Every expression as written, Grafana variables left in."""
    return dashboard_promql() + rule_promql() + datasource_promql()


def all_promql(job: str = DEFAULT_JOB) -> list[tuple[str, str]]:
    """(where, expr) for EVERY PromQL expression shipped, ready to run (variables concretized)."""
    return [(where, concretize(expr, job=job)) for where, expr in raw_promql()]


# --- metric names ---------------------------------------------------------------------------
_KEYWORDS = frozenset(
    {
        "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
        "and", "or", "unless", "inf", "nan", "atan2", "le",
    }
)  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (by name or by a {__name__=...} matcher)."""
    names = set(re.findall(r'__name__\s*=~?\s*"([^"]+)"', expr))
    text = _STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range / subquery durations
    text = _GROUPING.sub("", text)
    for match in _IDENT.finditer(text):
        ident, call = match.group(1), match.group(2)
        if call or ident.lower() in _KEYWORDS or re.fullmatch(r"\d+[smhdwy]", ident):
            continue
        names.add(ident)
    return names


def contract_names() -> set[str]:
    """Prometheus names of the metric contract, read from the comments of _names.py."""
    names: set[str] = set()
    for line in NAMES_FILE.read_text().splitlines():
        match = re.match(r'^[A-Z_]+: Final = "[^"]+"\s*#\s*([a-z_:][a-z0-9_:]*)', line)
        if match:
            names.add(match.group(1))
    return names
