"""Build the provisioned Grafana dashboards (deploy/grafana/dashboards/*.json).

The JSON files are committed; this script is their source.  Run it after editing:

    python deploy/grafana/build_dashboards.py          # rewrite the JSON files
    python deploy/grafana/build_dashboards.py --check  # exit 1 if a file is stale

Queries use the Prometheus names of the metric contract in src/otel_perf/_names.py.
Every panel has a unit and a datasource with one of the fixed uids provisioned in
provisioning/datasources/datasources.yaml (prometheus, tempo, loki).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

OUT_DIR = Path(__file__).resolve().parent / "dashboards"

PROM: JSON = {"type": "prometheus", "uid": "prometheus"}
TEMPO: JSON = {"type": "tempo", "uid": "tempo"}
LOKI: JSON = {"type": "loki", "uid": "loki"}

# Selectors shared by the panels of a dashboard.
SRV = 'job="$job", http_route=~"$route"'
CLI = 'job="$job", server_address=~"$host"'
RT = 'job="$job", instance=~"$instance"'
RATE = "[$__rate_interval]"

TAGS = ["otel-perf"]


def _target(expr: str, legend: str = "__auto", *, exemplar: bool = False, instant: bool = False) -> JSON:
    target: JSON = {"datasource": PROM, "expr": expr, "legendFormat": legend}
    if exemplar:
        target["exemplar"] = True
    if instant:
        target.update({"instant": True, "range": False, "format": "table"})
    else:
        target["range"] = True
    return target


def _thresholds(*steps: tuple[float, str]) -> JSON:
    return {
        "mode": "absolute",
        "steps": [{"color": "green", "value": None}] + [{"color": c, "value": v} for v, c in steps],
    }


def _dashed(match: str) -> JSON:
    """Override drawing the series whose name matches `match` as a dashed line (budgets)."""
    return {
        "matcher": {"id": "byRegexp", "options": match},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}},
        ],
    }


class Board:
    """Collects panels left to right, top to bottom, on Grafana's 24-column grid."""

    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid = uid
        self.title = title
        self.description = description
        self.panels: list[JSON] = []
        self.variables: list[JSON] = []
        self._x = 0
        self._y = 0
        self._row_h = 0

    def _place(self, w: int, h: int) -> JSON:
        if self._x + w > 24:
            self._x, self._y, self._row_h = 0, self._y + self._row_h, 0
        pos = {"x": self._x, "y": self._y, "w": w, "h": h}
        self._x += w
        self._row_h = max(self._row_h, h)
        return pos

    def _add(self, panel: JSON, w: int, h: int) -> None:
        panel["id"] = len(self.panels) + 1
        panel["gridPos"] = self._place(w, h)
        self.panels.append(panel)

    def timeseries(
        self,
        title: str,
        description: str,
        unit: str,
        targets: list[JSON],
        *,
        w: int = 12,
        h: int = 8,
        thresholds: JSON | None = None,
        dashed: str | None = None,
        stack: bool = False,
    ) -> None:
        custom: JSON = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never", "spanNulls": False}
        if stack:
            custom["stacking"] = {"mode": "normal", "group": "A"}
        if thresholds is not None:
            custom["thresholdsStyle"] = {"mode": "dashed"}
        defaults: JSON = {"unit": unit, "custom": custom}
        if thresholds is not None:
            defaults["thresholds"] = thresholds
        self._add(
            {
                "type": "timeseries",
                "title": title,
                "description": description,
                "datasource": PROM,
                "targets": _ref_ids(targets),
                "fieldConfig": {"defaults": defaults, "overrides": [_dashed(dashed)] if dashed else []},
                "options": {
                    "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]},
                    "tooltip": {"mode": "multi", "sort": "desc"},
                },
            },
            w,
            h,
        )

    def stat(
        self, title: str, description: str, unit: str, expr: str, *, thresholds: JSON | None = None
    ) -> None:
        defaults: JSON = {"unit": unit, "thresholds": thresholds or _thresholds()}
        self._add(
            {
                "type": "stat",
                "title": title,
                "description": description,
                "datasource": PROM,
                "targets": _ref_ids([_target(expr)]),
                "fieldConfig": {"defaults": defaults, "overrides": []},
                "options": {
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "area",
                },
            },
            6,
            4,
        )

    def table(self, title: str, description: str, unit: str, expr: str, *, w: int = 12, h: int = 8) -> None:
        self._add(
            {
                "type": "table",
                "title": title,
                "description": description,
                "datasource": PROM,
                "targets": _ref_ids([_target(expr, instant=True)]),
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "transformations": [
                    {"id": "organize", "options": {"excludeByName": {"Time": True}}},
                ],
                "options": {"sortBy": [{"displayName": "Value", "desc": True}]},
            },
            w,
            h,
        )

    def traces(self, title: str, description: str, traceql: str, *, w: int = 12, h: int = 8) -> None:
        self._add(
            {
                "type": "table",
                "title": title,
                "description": description,
                "datasource": TEMPO,
                "targets": [
                    {
                        "refId": "A",
                        "datasource": TEMPO,
                        "queryType": "traceql",
                        "query": traceql,
                        "limit": 20,
                        "tableType": "traces",
                    }
                ],
                # Tempo returns trace durations in milliseconds.
                "fieldConfig": {"defaults": {"unit": "ms"}, "overrides": []},
                "options": {},
            },
            w,
            h,
        )

    def service_map(self, title: str, description: str) -> None:
        self._add(
            {
                "type": "nodeGraph",
                "title": title,
                "description": description,
                "datasource": TEMPO,
                "targets": [{"refId": "A", "datasource": TEMPO, "queryType": "serviceMap"}],
                "fieldConfig": {"defaults": {"unit": "reqps"}, "overrides": []},
                "options": {},
            },
            12,
            10,
        )

    def logs(self, title: str, description: str, logql: str) -> None:
        self._add(
            {
                "type": "logs",
                "title": title,
                "description": description,
                "datasource": LOKI,
                "targets": [{"refId": "A", "datasource": LOKI, "expr": logql, "queryType": "range"}],
                "fieldConfig": {"defaults": {"unit": "short"}, "overrides": []},
                "options": {"showTime": True, "wrapLogMessage": True, "sortOrder": "Descending"},
            },
            12,
            10,
        )

    def query_var(self, name: str, label: str, query: str, *, multi: bool = False) -> None:
        var: JSON = {
            "type": "query",
            "name": name,
            "label": label,
            "datasource": PROM,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": multi,
            "current": {},
            "options": [],
        }
        if multi:
            var["allValue"] = ".*"
        self.variables.append(var)

    def to_json(self) -> JSON:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": TAGS,
            "timezone": "browser",
            "editable": False,
            "graphTooltip": 1,
            "schemaVersion": 39,
            "version": 1,
            "refresh": "30s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [
                {
                    "type": "dashboards",
                    "tags": TAGS,
                    "asDropdown": True,
                    "title": "otel-perf dashboards",
                    "includeVars": True,
                    "keepTime": True,
                }
            ],
            "panels": self.panels,
        }


def _ref_ids(targets: list[JSON]) -> list[JSON]:
    for i, target in enumerate(targets):
        target["refId"] = chr(ord("A") + i)
    return targets


def _job_var(board: Board) -> None:
    board.query_var("job", "Service", "label_values(http_server_request_duration_seconds_count, job)")


def _q(quantile: float, metric: str, sel: str, by: str) -> str:
    return f"histogram_quantile({quantile}, sum by ({by}, le) (rate({metric}_bucket{{{sel}}}{RATE})))"


# --- Service ------------------------------------------------------------------------------
def service() -> Board:
    b = Board(
        "otel-perf-service",
        "otel-perf / Service",
        "RED per route from the app's http.server.request.duration histogram, against the budgets file.",
    )
    _job_var(b)
    b.query_var(
        "route",
        "Route",
        'label_values(http_server_request_duration_seconds_count{job="$job"}, http_route)',
        multi=True,
    )
    count = f"http_server_request_duration_seconds_count{{{SRV}}}"
    errors = f'http_server_request_duration_seconds_count{{{SRV}, error_type!=""}}'
    by = "http_request_method, http_route"
    # Budget gauges carry perf_budget_level "target" or "critical"; thresholds draw the target.
    target = 'perf_budget_level!="critical"'
    p95_budget = f'perf_budget_duration_seconds{{{SRV}, perf_budget_quantile="p95", {target}}}'
    legend = "{{http_request_method}} {{http_route}}"

    b.stat("Request rate", "Requests per second, selected routes.", "reqps", f"sum(rate({count}{RATE}))")
    b.stat(
        "Error ratio",
        "Share of requests that failed (error_type set).",
        "percentunit",
        f"sum(rate({errors}{RATE})) / sum(rate({count}{RATE}))",
        thresholds=_thresholds((0.01, "red")),
    )
    b.stat(
        "p95 latency",
        "95th percentile over all selected routes.",
        "s",
        _q(0.95, "http_server_request_duration_seconds", SRV, "job"),
        thresholds=_thresholds((0.5, "red")),
    )
    b.stat(
        "Routes over p95 budget",
        "Routes whose p95 now exceeds the p95 budget of the budgets file.",
        "short",
        f"count({_q(0.95, 'http_server_request_duration_seconds', SRV, 'job, ' + by)}"
        " > on (job, http_request_method, http_route)"
        f" max by (job, {by}) ({p95_budget}))"
        " or vector(0)",
        thresholds=_thresholds((1, "red")),
    )
    b.timeseries(
        "Requests per route",
        "Request rate by method and route template.",
        "reqps",
        [_target(f"sum by ({by}) (rate({count}{RATE}))", legend)],
        stack=True,
    )
    b.timeseries(
        "Error ratio per route",
        "Failed share per route; dashed: the route's error-rate budget.",
        "percentunit",
        [
            _target(f"sum by ({by}) (rate({errors}{RATE})) / sum by ({by}) (rate({count}{RATE}))", legend),
            _target(f"max by ({by}) (perf_budget_error_rate_ratio{{{SRV}, {target}}})", "budget " + legend),
        ],
        thresholds=_thresholds((0.01, "red")),
        dashed="^budget .*",
    )
    client = f'http_server_request_duration_seconds_count{{{SRV}, http_response_status_code=~"4.."}}'
    b.timeseries(
        "Client error ratio (4xx) per route",
        "Share answered 4xx (validation, authentication, not found), beside the server errors; dashed: "
        "the route's client_error_rate budget.",
        "percentunit",
        [
            _target(f"sum by ({by}) (rate({client}{RATE})) / sum by ({by}) (rate({count}{RATE}))", legend),
            _target(
                f"max by ({by}) (perf_budget_client_error_rate_ratio{{{SRV}, {target}}})", "budget " + legend
            ),
        ],
        dashed="^budget .*",
    )
    for quantile, name in ((0.5, "p50"), (0.95, "p95"), (0.99, "p99")):
        targets = [
            _target(_q(quantile, "http_server_request_duration_seconds", SRV, by), legend, exemplar=True)
        ]
        targets.append(
            _target(
                f"max by ({by}) (perf_budget_duration_seconds"
                f'{{{SRV}, perf_budget_quantile="{name}", {target}}})',
                f"budget {name} " + legend,
            )
        )
        b.timeseries(
            f"{name} latency per route",
            f"{name} of request duration per route (exemplars link to traces); dashed: the {name} budget.",
            "s",
            targets,
            w=8,
            dashed="^budget .*",
        )
    b.table(
        "p95 against budget",
        "p95 over the last 5 minutes divided by the p95 budget, per route (over 100% = over budget).",
        "percentunit",
        f"{_q(0.95, 'http_server_request_duration_seconds', SRV, 'job, ' + by).replace(RATE, '[5m]')}"
        " / on (job, http_request_method, http_route)"
        f" max by (job, {by}) ({p95_budget})",
    )
    b.timeseries(
        "Slow requests per route",
        "Requests over their route's slow threshold (perf.slow_requests).",
        "reqps",
        [_target(f"sum by ({by}) (rate(perf_slow_requests_total{{{SRV}}}{RATE}))", legend)],
    )
    b.timeseries(
        "Active requests",
        "Requests in flight, by method.",
        "short",
        [
            _target(
                'sum by (http_request_method) (http_server_active_requests{job="$job"})',
                "{{http_request_method}}",
            )
        ],
    )
    b.timeseries(
        "Server spans per second (collector span metrics)",
        "Calls counted by the collector's span_metrics connector from every span, before sampling.",
        "reqps",
        [
            _target(
                'sum by (span_name, status_code) (rate(traces_span_metrics_calls_total{job="$job", '
                f'span_kind="SPAN_KIND_SERVER"}}{RATE}))',
                "{{span_name}} {{status_code}}",
            )
        ],
    )
    b.timeseries(
        "Server span p95 (collector span metrics)",
        "p95 of server span duration from the span_metrics connector (exemplars link to traces).",
        "s",
        [
            _target(
                _q(
                    0.95,
                    "traces_span_metrics_duration_seconds",
                    'job="$job", span_kind="SPAN_KIND_SERVER"',
                    "span_name",
                ),
                "{{span_name}}",
                exemplar=True,
            )
        ],
    )
    b.timeseries(
        "Custom operations per second",
        "Runs of code blocks timed with otel_perf.measure, by operation (perf.operation.duration count).",
        "ops",
        [
            _target(
                'sum by (perf_operation_name) (rate(perf_operation_duration_seconds_count{job="$job"}'
                f"{RATE}))",
                "{{perf_operation_name}}",
            )
        ],
        stack=True,
    )
    b.timeseries(
        "Custom operations p95",
        "95th percentile of code blocks timed with perf.operation, by operation name.",
        "s",
        [
            _target(
                _q(0.95, "perf_operation_duration_seconds", 'job="$job"', "perf_operation_name"),
                "{{perf_operation_name}}",
                exemplar=True,
            )
        ],
    )
    b.timeseries(
        "Custom operation errors",
        "Failures of code blocks timed with perf.operation, per second.",
        "cps",
        [
            _target(
                f'sum by (perf_operation_name) (rate(perf_operation_errors_total{{job="$job"}}{RATE}))',
                "{{perf_operation_name}}",
            )
        ],
    )
    b.service_map("Service map", "Calls between services, from Tempo's service-graph metrics.")
    b.traces(
        "Slow and failed traces",
        "Recent server traces of this service that failed or took over 500 ms.",
        '{resource.service.name="$job" && kind=server && (status=error || duration > 500ms)}',
    )
    b.logs(
        "Error logs",
        "Error logs of this service; each line links to its trace.",
        '{service_name="$job"} | severity_text=~"(?i)error|critical|fatal"',
    )
    return b


# --- Database -----------------------------------------------------------------------------
def database() -> Board:
    b = Board(
        "otel-perf-database",
        "otel-perf / Database",
        "Query latency by operation and table, queries per request, slow queries, N+1 findings, pools, "
        "caches (hit ratio) and background jobs.",
    )
    _job_var(b)
    sel = 'job="$job"'
    ops = "db_operation_name, db_collection_name"
    ops_legend = "{{db_operation_name}} {{db_collection_name}}"
    pool = "db_client_connection_pool_name"
    b.timeseries(
        "Query p95 by operation and table",
        "95th percentile of db.client.operation.duration (exemplars link to traces); dashed: the db budget.",
        "s",
        [
            _target(_q(0.95, "db_client_operation_duration_seconds", sel, ops), ops_legend, exemplar=True),
            _target(
                f"max by ({ops}) (perf_budget_db_duration_seconds{{{sel}, perf_budget_quantile=\"p95\", "
                'perf_budget_level!="critical"})',
                "budget " + ops_legend,
            ),
        ],
        dashed="^budget .*",
    )
    b.timeseries(
        "Query p99 by operation and table",
        "99th percentile of db.client.operation.duration.",
        "s",
        [_target(_q(0.99, "db_client_operation_duration_seconds", sel, ops), ops_legend, exemplar=True)],
    )
    b.timeseries(
        "Queries per second by operation and table",
        "Rate of database operations.",
        "ops",
        [
            _target(
                f"sum by ({ops}) (rate(db_client_operation_duration_seconds_count{{{sel}}}{RATE}))",
                ops_legend,
            )
        ],
        stack=True,
    )
    b.timeseries(
        "Slow queries by operation and table",
        "Queries over the slow-query threshold (perf.slow_queries).",
        "ops",
        [_target(f"sum by ({ops}) (rate(perf_slow_queries_total{{{sel}}}{RATE}))", ops_legend)],
    )
    route = "http_request_method, http_route"
    route_legend = "{{http_request_method}} {{http_route}}"
    b.timeseries(
        "Queries per request (p95) by route",
        "95th percentile of the number of queries one request runs; dashed: the queries_per_request budget.",
        "short",
        [
            _target(_q(0.95, "perf_db_queries_per_request", sel, route), route_legend),
            _target(
                f'max by ({route}) (perf_budget_queries_per_request{{{sel}, perf_budget_level!="critical"}})',
                "budget " + route_legend,
            ),
        ],
        dashed="^budget .*",
    )
    b.timeseries(
        "Queries per request (mean) by route",
        "Average number of queries per request.",
        "short",
        [
            _target(
                f"sum by ({route}) (rate(perf_db_queries_per_request_sum{{{sel}}}{RATE}))"
                f" / sum by ({route}) (rate(perf_db_queries_per_request_count{{{sel}}}{RATE}))",
                route_legend,
            )
        ],
    )
    b.timeseries(
        "N+1 findings by route",
        "N+1 query patterns detected per second (perf.n_plus_one).",
        "cps",
        [_target(f"sum by ({route}) (rate(perf_n_plus_one_total{{{sel}}}{RATE}))", route_legend)],
    )
    b.table(
        "N+1 findings in the last 24 hours",
        "Routes with N+1 findings, most first.",
        "short",
        f"sort_desc(sum by ({route}) (increase(perf_n_plus_one_total{{{sel}}}[24h])) > 0)",
    )
    b.timeseries(
        "Pool connections",
        "Connections by pool and state; dashed: the pool's maximum.",
        "short",
        [
            _target(
                f"sum by ({pool}, db_client_connection_state) (db_client_connection_count{{{sel}}})",
                "{{db_client_connection_pool_name}} {{db_client_connection_state}}",
            ),
            _target(
                f"max by ({pool}) (db_client_connection_max{{{sel}}})",
                "max {{db_client_connection_pool_name}}",
            ),
        ],
        dashed="^max .*",
    )
    b.timeseries(
        "Pool usage",
        "Used connections over the pool's maximum; 100% means requests wait for a connection.",
        "percentunit",
        [
            _target(
                f'sum by ({pool}) (db_client_connection_count{{{sel}, db_client_connection_state="used"}})'
                f" / max by ({pool}) (db_client_connection_max{{{sel}}})",
                "{{db_client_connection_pool_name}}",
            )
        ],
        thresholds=_thresholds((0.8, "orange"), (1, "red")),
    )
    b.timeseries(
        "Requests waiting for a connection",
        "Pending connection requests per pool.",
        "short",
        [
            _target(
                f"sum by ({pool}) (db_client_connection_pending_requests{{{sel}}})",
                "{{db_client_connection_pool_name}}",
            )
        ],
    )
    b.timeseries(
        "Connection timeouts",
        "Requests that gave up waiting for a pool connection.",
        "cps",
        [
            _target(
                f"sum by ({pool}) (rate(db_client_connection_timeouts_total{{{sel}}}{RATE}))",
                "{{db_client_connection_pool_name}}",
            )
        ],
    )
    b.traces(
        "Slow query spans",
        "Recent database spans of this service over 100 ms.",
        '{resource.service.name="$job" && span.db.system.name != nil && duration > 100ms}',
        w=24,
    )
    _caches_and_jobs(b, sel)
    return b


def _caches_and_jobs(b: Board, sel: str) -> None:
    """Caches (Redis hit ratio, command latency) and background jobs (Celery, BackgroundTasks)."""
    cache = "perf_cache_system, perf_cache_name"
    reads = f"sum by ({cache}) (rate(perf_cache_operations_total{{{sel}}}{RATE}))"
    hits = f'sum by ({cache}) (rate(perf_cache_operations_total{{{sel}, perf_cache_result="hit"}}{RATE}))'
    b.timeseries(
        "Cache hit ratio by cache",
        "Reads that found their key (perf.cache.operations); dashed: the floor the app exports "
        "(OTEL_PERF_CACHE_HIT_RATIO_FLOOR), under which PerfCacheHitRatioLow fires.",
        "percentunit",
        [
            _target(f"({hits} or 0 * {reads}) / {reads}", "{{perf_cache_name}}"),
            _target(
                f"max by ({cache}) (perf_cache_hit_floor_ratio{{{sel}}})", "floor {{perf_cache_name}}"
            ),
        ],
        dashed="^floor .*",
    )
    b.timeseries(
        "Cache reads by result",
        "Cache reads per second, hits and misses, per cache.",
        "ops",
        [
            _target(
                f"sum by ({cache}, perf_cache_result) (rate(perf_cache_operations_total{{{sel}}}{RATE}))",
                "{{perf_cache_name}} {{perf_cache_result}}",
            )
        ],
        stack=True,
    )
    redis_by = "db_operation_name"
    b.timeseries(
        "Redis command p95 by command",
        "95th percentile of db.client.operation.duration of Redis commands (exemplars link to traces).",
        "s",
        [
            _target(
                _q(0.95, "db_client_operation_duration_seconds", f'{sel}, db_system_name="redis"', redis_by),
                "{{db_operation_name}}",
                exemplar=True,
            )
        ],
    )
    job = "perf_job_system, perf_job_name"
    job_legend = "{{perf_job_system}} {{perf_job_name}}"
    b.timeseries(
        "Job duration p95 by job",
        "95th percentile of perf.job.duration: Celery tasks and BackgroundTasks, each run on its own.",
        "s",
        [_target(_q(0.95, "perf_job_duration_seconds", sel, job), job_legend, exemplar=True)],
    )
    b.timeseries(
        "Job runs and failures",
        "Runs per second by job; dashed: the failed ones (error.type set; retried runs, "
        "error.type Retry, are not failures).",
        "ops",
        [
            _target(f"sum by ({job}) (rate(perf_job_duration_seconds_count{{{sel}}}{RATE}))", job_legend),
            _target(
                f"sum by ({job}) (rate(perf_job_duration_seconds_count"
                f'{{{sel}, error_type!~"|Retry"}}{RATE}))',
                "failed {{perf_job_system}} {{perf_job_name}}",
            ),
        ],
        dashed="^failed .*",
    )
    b.timeseries(
        "Job queue wait p95 by job",
        "95th percentile of perf.job.queue_wait: from send (or eta) to start, Celery tasks sent by an "
        "instrumented process.",
        "s",
        [_target(_q(0.95, "perf_job_queue_wait_seconds", sel, job), job_legend)],
    )
    b.timeseries(
        "Queries per job run (mean)",
        "Average number of SQL statements one run of the job executes (perf.job.queries).",
        "short",
        [
            _target(
                f"sum by ({job}) (rate(perf_job_queries_sum{{{sel}}}{RATE}))"
                f" / sum by ({job}) (rate(perf_job_queries_count{{{sel}}}{RATE}))",
                job_legend,
            )
        ],
    )


# --- Outgoing APIs ------------------------------------------------------------------------
def http_client() -> Board:
    b = Board(
        "otel-perf-http-client",
        "otel-perf / Outgoing APIs",
        "Latency, errors, 429s and rate-limit headroom of the HTTP APIs this service calls, per host.",
    )
    _job_var(b)
    b.query_var(
        "host",
        "Host",
        'label_values(http_client_request_duration_seconds_count{job="$job"}, server_address)',
        multi=True,
    )
    count = f"http_client_request_duration_seconds_count{{{CLI}}}"
    host = "{{server_address}}"
    b.timeseries(
        "p95 latency by host",
        "95th percentile of outgoing request duration (exemplars link to traces).",
        "s",
        [
            _target(
                _q(0.95, "http_client_request_duration_seconds", CLI, "server_address"), host, exemplar=True
            )
        ],
    )
    b.timeseries(
        "Requests by host",
        "Outgoing request rate.",
        "reqps",
        [_target(f"sum by (server_address) (rate({count}{RATE}))", host)],
        stack=True,
    )
    b.timeseries(
        "Error ratio by host",
        "Share of outgoing requests that failed (error_type set).",
        "percentunit",
        [
            _target(
                f'sum by (server_address) (rate({count[:-1]}, error_type!=""}}{RATE}))'
                f" / sum by (server_address) (rate({count}{RATE}))",
                host,
            )
        ],
        thresholds=_thresholds((0.01, "red")),
    )
    b.timeseries(
        "429 responses by host",
        "Too Many Requests answers per second.",
        "reqps",
        [
            _target(
                f'sum by (server_address) (rate({count[:-1]}, http_response_status_code="429"}}{RATE}))',
                host,
            )
        ],
    )
    b.timeseries(
        "Throttled requests by host",
        "Requests the API throttled (perf.http.client.throttled).",
        "cps",
        [_target(f"sum by (server_address) (rate(perf_http_client_throttled_total{{{CLI}}}{RATE}))", host)],
    )
    b.timeseries(
        "Rate-limit headroom by host",
        "Remaining over limit from the API's rate-limit headers; low means throttling is near.",
        "percentunit",
        [
            _target(
                f"min by (server_address) (perf_http_client_ratelimit_remaining{{{CLI}}})"
                f" / max by (server_address) (perf_http_client_ratelimit_limit{{{CLI}}})",
                host,
            )
        ],
        thresholds={
            "mode": "absolute",
            "steps": [
                {"color": "red", "value": None},
                {"color": "orange", "value": 0.1},
                {"color": "green", "value": 0.25},
            ],
        },
    )
    b.timeseries(
        "Rate-limit remaining by host",
        "Requests left in the current rate-limit window.",
        "short",
        [_target(f"min by (server_address) (perf_http_client_ratelimit_remaining{{{CLI}}})", host)],
    )
    b.timeseries(
        "Responses by host and status",
        "Outgoing request rate by response status code.",
        "reqps",
        [
            _target(
                f"sum by (server_address, http_response_status_code) (rate({count}{RATE}))",
                "{{server_address}} {{http_response_status_code}}",
            )
        ],
    )
    return b


# --- Runtime ------------------------------------------------------------------------------
def runtime() -> Board:
    b = Board(
        "otel-perf-runtime",
        "otel-perf / Runtime",
        "CPU, memory against its limit, threads, garbage collection and event-loop lag per instance.",
    )
    _job_var(b)
    b.query_var(
        "instance", "Instance", 'label_values(process_memory_usage_bytes{job="$job"}, instance)', multi=True
    )
    inst = "{{instance}}"
    b.timeseries(
        "CPU time by type",
        "CPU seconds per second (1 = one core busy), user and system.",
        "short",
        [
            _target(
                f"sum by (instance, type) (rate(process_cpu_time_seconds_total{{{RT}}}{RATE}))",
                "{{instance}} {{type}}",
            )
        ],
        stack=True,
    )
    b.timeseries(
        "CPU utilization",
        "Process CPU utilization.",
        "percentunit",
        [_target(f"max by (instance) (process_cpu_utilization_ratio{{{RT}}})", inst)],
    )
    b.timeseries(
        "Memory",
        "Resident memory; dashed: the cgroup limit or host RAM.",
        "bytes",
        [
            _target(f"max by (instance) (process_memory_usage_bytes{{{RT}}})", inst),
            _target(f"max by (instance) (perf_process_memory_limit_bytes{{{RT}}})", "limit " + inst),
        ],
        dashed="^limit .*",
    )
    b.timeseries(
        "Memory of limit",
        "Resident memory over its limit; the alert fires above 80%.",
        "percentunit",
        [
            _target(
                f"max by (instance) (process_memory_usage_bytes{{{RT}}})"
                f" / max by (instance) (perf_process_memory_limit_bytes{{{RT}}})",
                inst,
            )
        ],
        thresholds=_thresholds((0.8, "red")),
    )
    b.timeseries(
        "Threads",
        "Threads per process.",
        "short",
        [_target(f"max by (instance) (process_thread_count{{{RT}}})", inst)],
    )
    b.timeseries(
        "GC collections by generation",
        "CPython garbage collections per second.",
        "cps",
        [
            _target(
                f"sum by (generation) (rate(cpython_gc_collections_total{{{RT}}}{RATE}))",
                "gen {{generation}}",
            )
        ],
    )
    b.timeseries(
        "Event-loop lag",
        "How late the asyncio loop runs a scheduled callback: p50 and p99.",
        "s",
        [
            _target(_q(0.5, "perf_asyncio_loop_lag_seconds", RT, "job"), "p50"),
            _target(_q(0.99, "perf_asyncio_loop_lag_seconds", RT, "job"), "p99"),
        ],
        thresholds=_thresholds((0.1, "red")),
    )
    b.timeseries(
        "Event-loop lag p99 by instance",
        "99th percentile of event-loop lag per process.",
        "s",
        [_target(_q(0.99, "perf_asyncio_loop_lag_seconds", RT, "instance"), inst)],
    )
    return b


# --- Telemetry health ---------------------------------------------------------------------
def telemetry() -> Board:
    b = Board(
        "otel-perf-telemetry",
        "otel-perf / Telemetry health",
        "Is the telemetry itself arriving? In-process exporter queues and the collector pipeline.",
    )
    _job_var(b)
    sel = 'job="$job"'
    sig = "{{signal}}"
    for metric, title, desc in (
        ("perf_telemetry_exported_total", "Exported by the app", "Items exported per second, per signal."),
        (
            "perf_telemetry_dropped_total",
            "Dropped by the app",
            "Items dropped (queue full) per second, per signal.",
        ),
        (
            "perf_telemetry_export_failures_total",
            "Export failures in the app",
            "Failed export calls per second.",
        ),
    ):
        b.timeseries(
            title, desc, "cps", [_target(f"sum by (signal) (rate({metric}{{{sel}}}{RATE}))", sig)], w=8
        )
    b.timeseries(
        "App export queue fill",
        "Items waiting in the in-process queue over its capacity, per instance and signal.",
        "percentunit",
        [
            _target(
                f"max by (instance, signal) (perf_telemetry_queue_size{{{sel}}})"
                f" / max by (instance, signal) (perf_telemetry_queue_capacity{{{sel}}})",
                "{{instance}} {{signal}}",
            )
        ],
        thresholds=_thresholds((0.8, "red")),
    )
    b.timeseries(
        "App export queue size",
        "Items waiting in the in-process queue.",
        "short",
        [
            _target(
                f"max by (instance, signal) (perf_telemetry_queue_size{{{sel}}})", "{{instance}} {{signal}}"
            )
        ],
    )
    col = 'job="otel-collector"'
    b.timeseries(
        "Collector accepted",
        "Spans, metric points and log records the collector's receivers accepted.",
        "cps",
        [
            _target(f"sum(rate(otelcol_receiver_accepted_spans_total{{{col}}}{RATE}))", "spans"),
            _target(
                f"sum(rate(otelcol_receiver_accepted_metric_points_total{{{col}}}{RATE}))", "metric points"
            ),
            _target(f"sum(rate(otelcol_receiver_accepted_log_records_total{{{col}}}{RATE}))", "log records"),
        ],
    )
    b.timeseries(
        "Collector refused",
        "Data the collector refused (memory_limiter pressure or invalid data).",
        "cps",
        [
            _target(f"sum(rate(otelcol_receiver_refused_spans_total{{{col}}}{RATE}))", "spans"),
            _target(
                f"sum(rate(otelcol_receiver_refused_metric_points_total{{{col}}}{RATE}))", "metric points"
            ),
            _target(f"sum(rate(otelcol_receiver_refused_log_records_total{{{col}}}{RATE}))", "log records"),
        ],
    )
    b.timeseries(
        "Collector send failures by exporter",
        "Items an exporter failed to send; they stay in the persistent queue and are retried.",
        "cps",
        [
            _target(
                'sum by (exporter) (rate({__name__=~"otelcol_exporter_send_failed_'
                f'(spans|metric_points|log_records)_total", {col}}}{RATE}))',
                "{{exporter}}",
            )
        ],
    )
    b.timeseries(
        "Collector queue fill by exporter",
        "Sending queue size over capacity; near 100% the collector starts refusing.",
        "percentunit",
        [
            _target(
                f"max by (exporter) (otelcol_exporter_queue_size{{{col}}})"
                f" / max by (exporter) (otelcol_exporter_queue_capacity{{{col}}})",
                "{{exporter}}",
            )
        ],
        thresholds=_thresholds((0.8, "red")),
    )
    b.timeseries(
        "Scrape targets up",
        "1 when Prometheus reached the target at the last scrape.",
        "short",
        [_target("up", "{{job}} {{instance}}")],
        w=24,
    )
    return b


# --- Browser (issue #22) --------------------------------------------------------------------
# The browser script's metrics (job = the browser service, "<service>-browser" by default),
# next to the server's own (job = $job). Names: the Browser section of src/otel_perf/_names.py.
BRW = 'job=~"$browser", http_route=~"$page"'
API = 'job=~"$browser"'


def _server_route_as_template(inner: str) -> str:
    """The server's http_route relabelled as url_template, route parameters as {id}, the way the
    browser names a call it made (up to three parameters per route)."""
    expr = f'label_replace({inner}, "url_template", "${{1}}", "http_route", "(.*)")'
    for _ in range(3):  # each pass turns one parameter other than {id} into {id}
        expr = (
            f'label_replace({expr}, "url_template", "${{1}}{{id}}${{2}}", "url_template",'
            f' "(.*)\\\\{{(?:[^i}}][^}}]*|i[^d}}][^}}]*|id[^}}]+)\\\\}}(.*)")'
        )
    return expr


def browser() -> Board:
    b = Board(
        "otel-perf-browser",
        "otel-perf / Browser",
        "What real browsers saw: Web Vitals p75 per page against the Web Vitals thresholds (page budgets "
        "alert through `otel-perf rules`), slowest pages, JavaScript errors, and API calls as the "
        "browser saw them next to the server's own duration for the same route.",
    )
    _job_var(b)
    b.query_var(
        "browser", "Browser service", "label_values(perf_browser_page_load_duration_seconds_count, job)"
    )
    b.query_var(
        "page",
        "Page",
        'label_values(perf_browser_page_load_duration_seconds_count{job=~"$browser"}, http_route)',
        multi=True,
    )
    page = "{{http_route}}"
    for title, metric, unit, good, poor in (
        ("LCP p75", "perf_browser_lcp_seconds", "s", 2.5, 4.0),
        ("INP p75", "perf_browser_inp_seconds", "s", 0.2, 0.5),
        ("CLS p75", "perf_browser_cls", "none", 0.1, 0.25),
    ):
        b.stat(
            f"{title} (all pages)",
            f"75th percentile over the selected pages; Web Vitals good up to {good:g}, poor from {poor:g}.",
            unit,
            f"histogram_quantile(0.75, sum by (le) (rate({metric}_bucket{{{BRW}}}[$__range])))",
            thresholds=_thresholds((good, "orange"), (poor, "red")),
        )
    b.stat(
        "Page loads",
        "Page loads per second over the selected pages.",
        "reqps",
        f"sum(rate(perf_browser_page_load_duration_seconds_count{{{BRW}}}{RATE}))",
    )
    for title, metric, unit, good, poor, what in (
        ("LCP p75 per page", "perf_browser_lcp_seconds", "s", 2.5, 4.0, "Largest Contentful Paint"),
        ("INP p75 per page", "perf_browser_inp_seconds", "s", 0.2, 0.5, "Interaction to Next Paint"),
        ("CLS p75 per page", "perf_browser_cls", "none", 0.1, 0.25, "Cumulative Layout Shift"),
        ("TTFB p75 per page", "perf_browser_ttfb_seconds", "s", 0.8, 1.8, "Time to first byte"),
    ):
        b.timeseries(
            title,
            f"{what}, 75th percentile of page loads per page. Dashed lines: Web Vitals good ({good:g}) and "
            f"poor ({poor:g}); page budgets from the budgets file alert as PerfPageVitalOverBudget.",
            unit,
            [_target(_q(0.75, metric, BRW, "http_route"), page)],
            thresholds=_thresholds((good, "orange"), (poor, "red")),
        )
    b.table(
        "Slowest pages (page load p75)",
        "Navigation start to the end of the load event, 75th percentile over the time range.",
        "s",
        "topk(10, histogram_quantile(0.75, sum by (http_route, le) "
        f"(rate(perf_browser_page_load_duration_seconds_bucket{{{BRW}}}[$__range]))))",
    )
    b.timeseries(
        "FCP p75 per page",
        "First Contentful Paint, 75th percentile per page.",
        "s",
        [_target(_q(0.75, "perf_browser_fcp_seconds", BRW, "http_route"), page)],
        thresholds=_thresholds((1.8, "orange"), (3.0, "red")),
    )
    template = "{{url_template}}"
    server = _server_route_as_template(
        f'sum by (http_route, le) (rate(http_server_request_duration_seconds_bucket{{job="$job"}}{RATE}))'
    )
    b.timeseries(
        "API calls p95: browser vs server",
        "fetch/XHR calls as the browser saw them (network, queueing and server) next to the server's own "
        "duration for the same route (route parameters shown as {id}). The gap is what the network "
        "and the browser add.",
        "s",
        [
            _target(
                _q(0.95, "perf_browser_request_duration_seconds", API, "url_template"), f"browser {template}"
            ),
            _target(
                "histogram_quantile(0.95, sum by (url_template, le) ("
                + server
                + " and on (url_template) sum by (url_template, le) "
                f"(rate(perf_browser_request_duration_seconds_bucket{{{API}}}{RATE}))))",
                f"server {template}",
            ),
        ],
        w=24,
    )
    b.timeseries(
        "API calls from the browser",
        "fetch/XHR calls per second by template and status.",
        "reqps",
        [
            _target(
                "sum by (url_template, http_response_status_code) "
                f"(rate(perf_browser_request_duration_seconds_count{{{API}}}{RATE}))",
                "{{url_template}} {{http_response_status_code}}",
            )
        ],
    )
    b.timeseries(
        "JavaScript errors per page",
        "Uncaught errors and unhandled promise rejections per second; each is an exception event on "
        "the page-load span in Tempo.",
        "cps",
        [_target(f"sum by (http_route) (rate(perf_browser_errors_total{{{BRW}}}{RATE}))", page)],
    )
    b.traces(
        "Slowest page loads",
        "Page-load spans (child of the server span that rendered the page: open one to see the "
        "server request and its queries in the same trace).",
        '{ resource.service.name =~ "$browser" && name = "page load" } | select(span.http.route, '
        "span.perf.browser.lcp_ms, span.perf.browser.inp_ms)",
        w=24,
    )
    return b


BOARDS: dict[str, Callable[[], Board]] = {
    "browser.json": browser,
    "service.json": service,
    "database.json": database,
    "http-client.json": http_client,
    "runtime.json": runtime,
    "telemetry-health.json": telemetry,
}


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {
        name: json.dumps(build().to_json(), indent=2, sort_keys=False) + "\n"
        for name, build in BOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a committed file differs")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = OUT_DIR / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("stale dashboards (run deploy/grafana/build_dashboards.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
