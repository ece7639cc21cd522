"""Configuration: every setting declared once, resolved in one place.

Precedence is flag > environment > default.  The launcher turns its flags into
environment variables for the child process and records which ones came from flags in
``OTEL_PERF__FLAG_SOURCES`` (a private variable), so the child can report the source of
every value.  An empty variable counts as unset.

A malformed value never stops the host app: :func:`load` records one problem per bad
variable (name, bad value, value used instead), the bootstrap logs each once, and
``OTEL_PERF_STRICT=true`` turns them into a :class:`ConfigError` at startup.
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Kind = Literal["bool", "int", "float", "str", "enum", "list", "path", "url", "plugin", "plugins"]
Source = Literal["default", "env", "flag"]

#: The longest a ``*_MS`` setting may be: one day (longer switches detection off in practice).
MAX_MS = 86_400_000.0
#: The shortest stats-endpoint token accepted.
MIN_TOKEN_LENGTH = 16
#: Values longer than this are rejected outright: no setting needs more, and a hostile
#: multi-megabyte variable must not be copied around.
MAX_VALUE_LENGTH = 8192
FLAG_SOURCES_ENV = "OTEL_PERF__FLAG_SOURCES"


@dataclass(frozen=True)
class Setting:
    """One configuration variable: its name, type, default and one-line doc."""

    env: str
    kind: Kind
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    #: Standard OpenTelemetry variables are read by the SDK too; we validate and report them.
    standard: bool = False
    #: Launcher flag name; derived from the variable name when empty.
    flag: str = ""
    #: ``plugin``/``plugins``: the entry-point group that names beyond ``choices`` are looked up in
    group: str = ""

    @property
    def flag_name(self) -> str:
        if self.flag:
            return self.flag
        stem = self.env.removeprefix("OTEL_PERF_").removeprefix("OTEL_")
        return "--" + stem.lower().replace("_", "-")


RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
STATIC_SAMPLERS = ("always_on", "always_off", "parentbased_always_on", "parentbased_always_off")


def _s(env: str, kind: Kind, default: Any, doc: str, **kw: Any) -> Setting:
    return Setting(env, kind, default, doc, **kw)


#: The table.  The README's env-var table is generated from it (``otel-perf config --markdown``)
#: and a test checks that the README matches.
SETTINGS: tuple[Setting, ...] = (
    # --- ours: behaviour --------------------------------------------------------------
    _s("OTEL_PERF_STRICT", "bool", False, "Fail at startup on any malformed setting instead of warning."),
    _s(
        "OTEL_PERF_LOG_FORMAT",
        "enum",
        "json",
        "Log output of the app: `json` (one object per line with trace_id/span_id), `text` "
        "(plain lines with trace ids), or `off` (leave logging config alone; records still get "
        "trace_id/span_id attributes).",
        choices=("json", "text", "off"),
    ),
    _s(
        "OTEL_PERF_ASGI_SUBSPANS",
        "bool",
        False,
        "Also create the ASGI `http send`/`http receive` sub-spans (off: one SERVER span per request).",
    ),
    _s(
        "OTEL_PERF_TRACERESPONSE",
        "bool",
        True,
        "Add a W3C `traceresponse` header (`00-<trace-id>-<span-id>-<flags>`) to every response.",
    ),
    _s(
        "OTEL_PERF_SERVER_TIMING",
        "bool",
        False,
        "Add a `Server-Timing` header (total, db time, query count) for browser devtools.",
    ),
    # --- ours: browser (issue #22) ---------------------------------------------------------
    _s(
        "OTEL_PERF_BROWSER_ENDPOINT",
        "url",
        "",
        "OTLP/HTTP base URL browsers send to (the collector's OTLP/HTTP receiver, with CORS). "
        "Set, the app serves the browser script at OTEL_PERF_BROWSER_PATH and HTML responses get "
        "`Server-Timing: traceparent`; unset, the feature is off.",
    ),
    _s(
        "OTEL_PERF_BROWSER_PATH",
        "str",
        "/_otel_perf/browser.js",
        "Path the browser script is served at; pages add `<script src=\"<path>\" defer></script>`.",
    ),
    _s(
        "OTEL_PERF_BROWSER_SERVICE_NAME",
        "str",
        "",
        "`service.name` of browser telemetry; defaults to the server's name with `-browser` appended.",
    ),
    _s(
        "OTEL_PERF_BROWSER_PROPAGATE_ORIGINS",
        "list",
        (),
        "Other origins (`https://api.example.com`) whose fetch/XHR calls from the page get a "
        "`traceparent` header; same-origin calls always do. Those servers must allow the header (CORS).",
    ),
    _s(
        "OTEL_PERF_CAPTURE_SQL",
        "bool",
        True,
        "Put the normalized SQL (literals replaced by `?`) on DB spans as `db.query.text`.",
    ),
    _s(
        "OTEL_PERF_SYSTEM_METRICS",
        "bool",
        True,
        "Export the process metrics (CPU, memory, threads, open files, context switches, disk I/O, GC).",
    ),
    _s(
        "OTEL_PERF_HOST_METRICS",
        "bool",
        False,
        "Also export the host-wide `system.*` metrics (CPU, memory, swap, disk, network, threads) "
        "that stock `opentelemetry-instrument` exports, through the official system-metrics "
        "instrumentation. Off: every worker would report the same host; a collector's hostmetrics "
        "receiver is the place for them.",
    ),
    _s(
        "OTEL_PERF_GC_FREEZE",
        "bool",
        True,
        "Launcher only: move the objects alive when start-up ends (interpreter, standard library, "
        "SDK) to the garbage collector's permanent generation (`gc.freeze()`), so the app's full "
        "collections no longer walk them.",
    ),
    # --- ours: insight ----------------------------------------------------------------
    _s(
        "OTEL_PERF_SLOW_REQUEST_MS", "float", 1000.0, "A request at least this long is slow.",
        minimum=0, maximum=MAX_MS,
    ),
    _s(
        "OTEL_PERF_SLOW_QUERY_MS", "float", 100.0, "A SQL statement at least this long is slow.",
        minimum=0, maximum=MAX_MS,
    ),
    _s(
        "OTEL_PERF_N_PLUS_ONE_THRESHOLD",
        "int",
        5,
        "Same normalized statement this many times in one request is an N+1 finding.",
        minimum=2,
        maximum=100000,
    ),
    _s(
        "OTEL_PERF_CACHE_HIT_RATIO_FLOOR",
        "float",
        0.8,
        "Cache hit ratio (0-1) below which a cache is flagged (stats, report) and PerfCacheHitRatioLow "
        "fires; exported per cache as perf.cache.hit_floor. 0 switches it off.",
        minimum=0,
        maximum=1,
    ),
    _s("OTEL_PERF_LOOP_MONITOR", "bool", True, "Measure asyncio event-loop lag."),
    _s(
        "OTEL_PERF_LOOP_BLOCK_MS",
        "float",
        100.0,
        "Event-loop lag at least this long is reported with the request that blocked the loop.",
        minimum=1,
        maximum=MAX_MS,
    ),
    _s(
        "OTEL_PERF_BUDGETS",
        "path",
        "",
        "Performance budgets file (YAML); adds budget bucket bounds, budget gauges and budget checks.",
    ),
    # --- ours: seeing it without a backend ---------------------------------------------
    _s(
        "OTEL_PERF_STATS_PATH",
        "str",
        "",
        "Serve the JSON stats endpoint at this path (e.g. `/_perf`); needs OTEL_PERF_STATS_TOKEN.",
    ),
    _s(
        "OTEL_PERF_STATS_TOKEN",
        "str",
        "",
        "Bearer token the stats endpoint requires (at least 16 characters); the endpoint is off while "
        "this is empty.",
        secret=True,
    ),
    _s(
        "OTEL_PERF_HEALTH_PATH",
        "str",
        "",
        "Serve a public health check at this path (e.g. `/_perf/health`): `{\"alive\", \"status\", "
        "\"score\"}` of the whole service over the last 5 minutes, no token and no other data; "
        "`?fail=degraded` answers 503 when degraded or worse.",
    ),
    _s("OTEL_PERF_REPORT", "bool", False, "Print a per-endpoint table and findings at process exit."),
    _s(
        "OTEL_PERF_ACCESS_LOG",
        "bool",
        False,
        "One log record per request on logger `otel_perf.access` (a JSON line with the default log "
        "format): method, route, status, duration, SQL statements and time, response size, user and "
        "tenant, trace and span ids.",
    ),
    _s(
        "OTEL_PERF_ENDUSER_FROM",
        "str",
        "",
        "Where the request's user id is: `header:<name>` or `baggage:<key>`; it goes on the SERVER span "
        "as `enduser.id`, on the request's log records and access-log line (never on a metric).",
    ),
    _s(
        "OTEL_PERF_TENANT_FROM",
        "str",
        "",
        "Where the request's tenant is: `header:<name>` or `baggage:<key>`; it goes on the SERVER span as "
        "`tenant.id`, on the request's log records and access-log line.",
    ),
    _s(
        "OTEL_PERF_TENANT_METRIC_VALUES",
        "int",
        0,
        "With OTEL_PERF_TENANT_FROM: also record `perf.tenant.request.duration` by `tenant.id` for at "
        "most this many tenants (later ones `_OTHER`, counted); 0: the tenant is never a metric attribute.",
        minimum=0,
        maximum=10_000,
    ),
    # --- ours: limits and safety -------------------------------------------------------
    _s(
        "OTEL_PERF_MAX_ROUTES",
        "int",
        1000,
        "Most distinct series per metric; more collapse into one overflow series (counted).",
        minimum=10,
        maximum=1_000_000,
    ),
    _s(
        "OTEL_PERF_MAX_DIMENSION_VALUES",
        "int",
        100,
        "Most distinct values per dimension of a metric you name with `measure(..., dimensions=...)`, "
        "`counter()` or `histogram()`; later values are recorded as `_OTHER` and counted.",
        minimum=1,
        maximum=100_000,
    ),
    _s(
        "OTEL_PERF_MAX_STATEMENTS",
        "int",
        256,
        "Most distinct SQL statements tracked per request for N+1 detection.",
        minimum=8,
        maximum=100000,
    ),
    _s(
        "OTEL_PERF_SQL_CACHE_SIZE",
        "int",
        2048,
        "Normalized-SQL cache entries.",
        minimum=16,
        maximum=1_000_000,
    ),
    _s(
        "OTEL_PERF_SENSITIVE_HEADERS",
        "list",
        (),
        "Extra header names never captured (Authorization, Cookie, Set-Cookie, Proxy-Authorization, "
        "X-Api-Key are always excluded).",
    ),
    _s(
        "OTEL_PERF_REDACT_QUERY_PARAMS",
        "list",
        (
            "token",
            "access_token",
            "api_key",
            "apikey",
            "key",
            "password",
            "secret",
            "signature",
            "sig",
            "auth",
            "code",
            "session",
        ),
        "URL query parameters whose values are replaced by `REDACTED` in exported URLs.",
    ),
    _s(
        "OTEL_PERF_WARN_INTERVAL",
        "float",
        60.0,
        "Seconds between repeated warnings of one kind (export failures, repeated findings).",
        minimum=0.1,
        maximum=86400,
    ),
    _s(
        "OTEL_PERF_SHUTDOWN_TIMEOUT",
        "float",
        3.0,
        "Seconds the process waits at exit to flush telemetry, even if the backend black-holes.",
        minimum=0,
        maximum=300,
    ),
    _s(
        "OTEL_PERF_QUEUE_SIZE",
        "int",
        2048,
        "Most spans (and log records) waiting for export; more are dropped and counted "
        "(`OTEL_BSP_MAX_QUEUE_SIZE` / `OTEL_BLRP_MAX_QUEUE_SIZE`, when set, win for their signal).",
        minimum=16,
        maximum=1_000_000,
    ),
    _s(
        "OTEL_PERF_METRIC_VIEWS",
        "path",
        "",
        "Metric views file (YAML: `views:` or a declarative configuration's `meter_provider.views`): "
        "rename, drop, re-aggregate instruments or keep only some attributes, for the SDK's "
        "instruments and ours (README, Metric views).",
    ),
    # --- standard OpenTelemetry variables we read and validate -----------------------
    _s("OTEL_SDK_DISABLED", "bool", False, "Disable all telemetry (the app runs untouched).", standard=True),
    _s(
        "OTEL_SERVICE_NAME",
        "str",
        "",
        "Service name (`service.name`); defaults to the command's name.",
        standard=True,
    ),
    _s(
        "OTEL_RESOURCE_ATTRIBUTES",
        "str",
        "",
        "Extra resource attributes `k=v,k2=v2` (values percent-encoded); malformed pairs are left out.",
        standard=True,
    ),
    _s(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "url",
        "http://localhost:4318",
        "OTLP endpoint (per-signal `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT` are honoured too).",
        standard=True,
        flag="--endpoint",
    ),
    _s(
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "enum",
        "http/protobuf",
        "OTLP protocol.",
        choices=("http/protobuf", "grpc"),
        standard=True,
    ),
    _s(
        "OTEL_TRACES_EXPORTER",
        "plugins",
        ("otlp",),
        "`otlp`, `console`, `none`, or any installed `opentelemetry_traces_exporter` entry point "
        "(`zipkin_json`; `zipkin` means it when the protobuf Zipkin exporter is not installed).",
        choices=("otlp", "otlp_proto_http", "otlp_proto_grpc", "console", "none"),
        group="opentelemetry_traces_exporter",
        standard=True,
    ),
    _s(
        "OTEL_METRICS_EXPORTER",
        "plugins",
        ("otlp",),
        "`otlp`, `prometheus` (ours: OpenMetrics with exemplars), `console`, `none`, or any installed "
        "`opentelemetry_metrics_exporter` entry point.",
        choices=("otlp", "otlp_proto_http", "otlp_proto_grpc", "prometheus", "console", "none"),
        group="opentelemetry_metrics_exporter",
        standard=True,
    ),
    _s(
        "OTEL_LOGS_EXPORTER",
        "plugins",
        ("otlp",),
        "`otlp`, `console`, `none`, or any installed `opentelemetry_logs_exporter` entry point.",
        choices=("otlp", "otlp_proto_http", "otlp_proto_grpc", "console", "none"),
        group="opentelemetry_logs_exporter",
        standard=True,
    ),
    _s(
        "OTEL_TRACES_SAMPLER",
        "plugin",
        "parentbased_always_on",
        "Head sampler: the SDK's six, or any installed `opentelemetry_traces_sampler` entry point "
        "(`jaeger_remote`, `xray`, your own), which gets `OTEL_TRACES_SAMPLER_ARG` as given.",
        choices=(*RATIO_SAMPLERS, *STATIC_SAMPLERS),
        group="opentelemetry_traces_sampler",
        standard=True,
    ),
    _s(
        "OTEL_TRACES_SAMPLER_ARG",
        "float",
        1.0,
        "Sampler ratio (0..1) for the `*traceidratio` samplers; passed as given to entry-point samplers.",
        minimum=0,
        maximum=1,
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_ID_GENERATOR",
        "plugin",
        "random",
        "Trace and span id generator: `random` (the SDK's; ours adds a hand-over that lets the fast "
        "span path work), or any installed `opentelemetry_id_generator` entry point (`xray`), which "
        "takes the SDK's span path.",
        choices=("random",),
        group="opentelemetry_id_generator",
        standard=True,
    ),
    _s(
        "OTEL_PROPAGATORS",
        "plugins",
        ("tracecontext", "baggage"),
        "Context propagators: `tracecontext`, `baggage`, `none`, or any installed "
        "`opentelemetry_propagator` entry point (`b3`, `jaeger`, `xray`).",
        choices=("tracecontext", "baggage", "none"),
        group="opentelemetry_propagator",
        standard=True,
    ),
    _s(
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "int",
        None,
        "Most spans waiting for export (default: OTEL_PERF_QUEUE_SIZE).",
        minimum=1,
        maximum=1_000_000,
        standard=True,
    ),
    _s(
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
        "int",
        None,
        "Most spans per export request (default: 512, at most the queue size).",
        minimum=1,
        maximum=1_000_000,
        standard=True,
    ),
    _s(
        "OTEL_BLRP_MAX_QUEUE_SIZE",
        "int",
        None,
        "Most log records waiting for export (default: OTEL_PERF_QUEUE_SIZE).",
        minimum=1,
        maximum=1_000_000,
        standard=True,
    ),
    _s(
        "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
        "int",
        None,
        "Most log records per export request (default: 512, at most the queue size).",
        minimum=1,
        maximum=1_000_000,
        standard=True,
    ),
    _s(
        "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        "enum",
        "cumulative",
        "Temporality of OTLP metric exports, for the SDK's instruments and ours alike: `cumulative`, "
        "`delta` (counters and histograms as differences; up-down counters and gauges stay "
        "cumulative) or `lowmemory` (as delta, but asynchronous counters stay cumulative).",
        choices=("cumulative", "delta", "lowmemory"),
        standard=True,
    ),
    _s(
        "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
        "enum",
        "explicit_bucket_histogram",
        "Histograms in OTLP metric exports: explicit buckets, or base-2 exponential (ours then also "
        "bucket each measurement exponentially: a few hundred bytecodes per request more).",
        choices=("explicit_bucket_histogram", "base2_exponential_bucket_histogram"),
        standard=True,
    ),
    _s(
        "OTEL_METRICS_EXEMPLAR_FILTER",
        "enum",
        "trace_based",
        "Which measurements may become exemplars: `trace_based` (those in a sampled trace), "
        "`always_on` (every one; ours carry trace ids only for sampled requests) or `always_off`.",
        choices=("trace_based", "always_on", "always_off"),
        standard=True,
    ),
    _s(
        "OTEL_METRIC_EXPORT_INTERVAL",
        "float",
        60000,
        "Milliseconds between metric exports (a number, as the SDK reads it).",
        minimum=1,
        maximum=86_400_000,
        standard=True,
    ),
    _s(
        "OTEL_EXPORTER_PROMETHEUS_HOST",
        "str",
        "127.0.0.1",
        "Address the Prometheus endpoint binds (with OTEL_METRICS_EXPORTER=prometheus).",
        standard=True,
    ),
    _s(
        "OTEL_EXPORTER_PROMETHEUS_PORT",
        "int",
        9464,
        "Port of the Prometheus endpoint.",
        minimum=0,
        maximum=65535,
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_EXCLUDED_URLS",
        "list",
        (),
        "Comma-separated URL regexes to leave untraced and unmeasured.",
        standard=True,
    ),
    *(
        _s(
            f"OTEL_PYTHON_{library}_EXCLUDED_URLS",
            "list",
            (),
            f"Comma-separated URL regexes whose outgoing {label} calls get no span, metric or "
            "`traceparent` (unset: OTEL_PYTHON_EXCLUDED_URLS applies).",
            standard=True,
        )
        for library, label in (
            ("REQUESTS", "`requests`"),
            ("URLLIB3", "`urllib3`"),
            ("AIOHTTP_CLIENT", "aiohttp client"),
            ("HTTPX", "httpx"),
        )
    ),
    *(
        _s(
            f"OTEL_PYTHON_{framework}_EXCLUDED_URLS",
            "list",
            (),
            f"Comma-separated regexes of requests to a {label} app to leave untraced and "
            "unmeasured, matched against the path and the full URL "
            "(unset: OTEL_PYTHON_EXCLUDED_URLS applies).",
            standard=True,
        )
        for framework, label in (
            ("FASTAPI", "FastAPI"),
            ("STARLETTE", "Starlette"),
            ("DJANGO", "Django"),
            ("FLASK", "Flask"),
        )
    ),
    _s(
        "OTEL_PYTHON_LOG_CODE_ATTRIBUTES",
        "bool",
        False,
        "Add `code.file.path`, `code.function.name` and `code.line.number` to every log record "
        "exported over OTLP (unset: on when OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED is true).",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED",
        "bool",
        False,
        "The SDK's (deprecated) switch for its own log handler, which adds the code attributes to "
        "every record: when true, so do ours unless OTEL_PYTHON_LOG_CODE_ATTRIBUTES says otherwise. "
        "Logs are exported over OTLP either way (OTEL_LOGS_EXPORTER).",
        standard=True,
    ),
    _s(
        "OTEL_SEMCONV_STABILITY_OPT_IN",
        "list",
        ("http", "database"),
        "Which semantic conventions spans and metrics follow. The stable HTTP and database ones "
        "always; `http/dup` and `database/dup` add the old ones beside them (`http.method`, "
        "`http.status_code`, `db.statement`..., and the `http.server.duration` and "
        "`http.client.duration` metrics in milliseconds), as the official instrumentations do while "
        "a team moves its dashboards.",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_INSTRUMENTATION_HTTP_CAPTURE_ALL_METHODS",
        "bool",
        False,
        "Record an HTTP method outside the standard set as sent (span name, `http.request.method`, "
        "metrics), as the official instrumentations do, instead of `_OTHER`.",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION",
        "bool",
        True,
        "`false`: no log record is exported over OTLP (the official logging instrumentation's "
        "switch for its handler); the lines and the trace ids on records stay.",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOG_CORRELATION",
        "bool",
        False,
        "Also set the official logging instrumentation's `otelTraceID`, `otelSpanID`, "
        "`otelServiceName` and `otelTraceSampled` on every record; while OTEL_PERF_LOG_FORMAT is "
        "unset, lines are written in OTEL_PYTHON_LOG_FORMAT at OTEL_PYTHON_LOG_LEVEL, as there.",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOG_FORMAT",
        "str",
        "",
        "The line format under OTEL_PYTHON_LOG_CORRELATION=true (unset: the official "
        "instrumentation's, with `trace_id=%(otelTraceID)s span_id=%(otelSpanID)s`).",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOG_LEVEL",
        "enum",
        "info",
        "The root logger's level under OTEL_PYTHON_LOG_CORRELATION=true.",
        choices=("debug", "info", "warning", "error"),
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_LOG_HANDLER_LEVEL",
        "enum",
        "notset",
        "Lowest level of the log records exported over OTLP (the loggers' own levels apply first).",
        choices=("notset", "debug", "info", "warn", "warning", "error", "critical", "fatal"),
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_SYSTEM_METRICS_EXCLUDED_METRICS",
        "list",
        (),
        "Comma-separated fnmatch patterns of process metrics not to export (e.g. `process.memory.*`).",
        standard=True,
    ),
    _s(
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",
        "list",
        (),
        "Instrumentations to skip, ours and official ones, by the names `otel-perf config` lists "
        "(ours: the last column of the README's library table, such as `fastapi`, `django`, "
        "`sqlalchemy`, `redis`, `requests`); a name switches off the official instrumentation of "
        "that name too; `*` for all.",
        standard=True,
    ),
)

BY_ENV: dict[str, Setting] = {s.env: s for s in SETTINGS}
#: The per-library excluded-URL lists of the HTTP clients and the web frameworks (the official
#: instrumentations' names).
EXCLUDED_URLS_BY_LIBRARY = tuple(
    s.env for s in SETTINGS if s.env.endswith("_EXCLUDED_URLS") and s.env != "OTEL_PYTHON_EXCLUDED_URLS"
)
#: Standard variables that the SDK (or the API) reads straight from the environment too: a
#: rejected value is replaced there by the value used, so the SDK does what the warning says.
READ_BY_SDK_TOO = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_PYTHON_EXCLUDED_URLS",
    *EXCLUDED_URLS_BY_LIBRARY,
    "OTEL_PROPAGATORS",
    "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
    "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
    "OTEL_METRICS_EXEMPLAR_FILTER",
)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


#: ``host:port`` (or ``[v6]:port``), the form the gRPC exporter also takes for its endpoint
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):\d{1,5}/?$")
#: where the gRPC exporter sends by default (the SDK's own default for OTLP/gRPC)
GRPC_DEFAULT_ENDPOINT = "http://localhost:4317"


def _grpc_endpoint(values: dict[str, Any], problems: list[Problem], environ: Mapping[str, str]) -> None:
    """Under ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc`` the endpoint may be ``host:port`` (the gRPC
    exporter takes it, as under stock), and a rejected one falls back to the gRPC port."""
    if values.get("OTEL_EXPORTER_OTLP_PROTOCOL") != "grpc":
        return
    env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    problem = next((p for p in problems if p.env == env), None)
    if problem is None:
        return
    raw = environ.get(env, "").strip()
    problems.remove(problem)
    if _HOST_PORT.match(raw):
        values[env] = raw
        return
    values[env] = GRPC_DEFAULT_ENDPOINT
    problems.append(Problem(env, problem.given, GRPC_DEFAULT_ENDPOINT, "expected a URL or host:port"))


class ConfigError(ValueError):
    """A malformed setting under ``OTEL_PERF_STRICT=true``."""


@dataclass(frozen=True)
class Problem:
    """One malformed variable: what was given and what is used instead."""

    env: str
    given: str
    used: Any
    reason: str

    def message(self) -> str:
        """The warning: what is wrong and what is used instead."""
        return (
            f"{self.env}={self._shown()!r} is invalid ({self.reason}); using {_show(self.used)} instead. "
            f"Fix or unset {self.env}."
        )

    def refusal(self) -> str:
        """What strict mode says: what is wrong (nothing is used instead: the process does not start)."""
        return f"{self.env}={self._shown()!r} is invalid ({self.reason}). Fix or unset {self.env}."

    def _shown(self) -> str:
        return self.given if len(self.given) <= 80 else self.given[:77] + "..."


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return repr(",".join(value))
    if value is None:
        return "the default"
    return repr(value)


@dataclass
class Config:
    """The effective configuration: one attribute per setting, plus where each came from."""

    values: dict[str, Any]
    sources: dict[str, Source]
    problems: list[Problem] = field(default_factory=list)

    def __getitem__(self, env: str) -> Any:
        return self.values[env]

    # Typed accessors for the settings the hot path reads, resolved once at startup.
    @property
    def strict(self) -> bool:
        return bool(self.values["OTEL_PERF_STRICT"])

    def flag(self, env: str) -> bool:
        return bool(self.values[env])

    def number(self, env: str) -> float:
        return float(self.values[env])

    def text(self, env: str) -> str:
        return str(self.values[env])

    def items(self, env: str) -> tuple[str, ...]:
        value = self.values[env]
        assert isinstance(value, tuple)
        return value

    def excluded_urls(self, library: str) -> re.Pattern[str] | None:
        """What ``OTEL_PYTHON_<LIBRARY>_EXCLUDED_URLS`` (else ``OTEL_PYTHON_EXCLUDED_URLS``) excludes,
        as the official instrumentations' ``get_excluded_urls``: one pattern to search, or None.

        ``library``: an HTTP client's or a web framework's name there (``requests``, ``DJANGO``...);
        a name without a variable of its own gets the general list.  Every pattern compiles: the
        lists were checked one by one and together when the configuration was loaded.
        """
        name = f"OTEL_PYTHON_{library.upper()}_EXCLUDED_URLS"
        patterns = self.items(name) if library and name in self.values else ()
        patterns = patterns or self.items("OTEL_PYTHON_EXCLUDED_URLS")
        return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None

    def raise_if_strict(self, environ: Mapping[str, str] | None = None) -> None:
        """Under ``OTEL_PERF_STRICT=true``, one :class:`ConfigError` naming every bad variable."""
        if self.strict:
            errors = strict_errors(self, os.environ if environ is None else environ)
            if errors:
                raise ConfigError("; ".join(errors))


def strict_errors(config: Config, env: Mapping[str, str]) -> list[str]:
    """Everything strict mode refuses, found before the app starts: each names its variable.

    The launcher checks this before it runs the command, the bootstrap again in every process
    (the same environment, unless the command changed it).
    """
    errors = [p.refusal() for p in (*config.problems, *sdk_problems(env))]
    path = config.text("OTEL_PERF_BUDGETS")
    if path:
        try:
            from otel_perf._analysis.budgets import load_budgets

            load_budgets(path)
        except Exception as exc:
            errors.append(f"OTEL_PERF_BUDGETS={path!r} cannot be used: {exc}")
    views_path, views_env = metric_views_path(config, env)
    if views_path:
        try:
            from otel_perf._metrics.views import load_views

            load_views(views_path)
        except Exception as exc:
            errors.append(f"{views_env}={views_path!r} cannot be used: {exc}")
    return errors


def metric_views_path(config: Config, env: Mapping[str, str]) -> tuple[str, str]:
    """(file, variable) the metric views come from: ``OTEL_PERF_METRIC_VIEWS``, else the views of a
    declarative configuration file (``OTEL_CONFIG_FILE``), else ("", "")."""
    path = config.text("OTEL_PERF_METRIC_VIEWS")
    if path:
        return path, "OTEL_PERF_METRIC_VIEWS"
    declarative = env.get("OTEL_CONFIG_FILE", "").strip()
    if declarative:
        return declarative, "OTEL_CONFIG_FILE"
    return "", ""


def _parse(setting: Setting, raw: str) -> tuple[Any, str | None]:
    """Parse ``raw`` for ``setting``; return (value, None) or (default, reason)."""
    if len(raw) > MAX_VALUE_LENGTH:
        return setting.default, f"longer than {MAX_VALUE_LENGTH} characters"
    if "\x00" in raw:
        return setting.default, "contains a NUL byte"
    text = raw.strip()
    kind = setting.kind
    if kind == "bool":
        low = text.lower()
        if setting.standard:  # the specification: "true" is true, anything else is false
            if low in ("true", "false"):
                return low == "true", None
            return False, "expected true or false (OpenTelemetry reads anything else as false)"
        if low in _TRUE:
            return True, None
        if low in _FALSE:
            return False, None
        return setting.default, "expected true or false"
    if kind in ("int", "float"):
        try:
            number: float = int(text) if kind == "int" else float(text)
        except ValueError:
            return setting.default, f"expected {'an integer' if kind == 'int' else 'a number'}"
        if isinstance(number, float) and not math.isfinite(number):
            return setting.default, "expected a finite number"
        if setting.minimum is not None and number < setting.minimum:
            return setting.default, f"below the minimum {setting.minimum:g}"
        if setting.maximum is not None and number > setting.maximum:
            return setting.default, f"above the maximum {setting.maximum:g}"
        return number, None
    if kind == "enum":
        low = text.lower()
        if low in setting.choices:
            return low, None
        return setting.default, "expected one of " + ", ".join(setting.choices)
    if kind in ("list", "plugins"):
        items = tuple(part.strip() for part in text.split(",") if part.strip())
        if any(not item.isprintable() for item in items):
            return setting.default, "contains control characters"
        if kind == "plugins":
            return _plugins(setting, items)
        return items, None
    if kind == "plugin":
        if not text.isprintable():
            return setting.default, "contains control characters"
        if text.lower() in setting.choices:
            return text.lower(), None
        if _installed(setting, text):
            return text, None
        return setting.default, f"no {_what(setting)} of that name is installed; known: {_known(setting)}"
    if kind == "url":
        if not text.lower().startswith(("http://", "https://")) or any(c.isspace() for c in text):
            return setting.default, "expected an http:// or https:// URL"
        return text, None
    if not text.isprintable():
        return setting.default, "contains control characters"
    return text, None


def _installed(setting: Setting, name: str) -> bool:
    """Whether an installed distribution registers ``name`` in the setting's entry-point group."""
    from otel_perf._setup.extensions import resolve

    return bool(setting.group) and resolve(setting.group, name) is not None


def _what(setting: Setting) -> str:
    """``traces exporter``, ``sampler``, ``id generator``, ``propagator``: what the group holds."""
    return setting.group.removeprefix("opentelemetry_").replace("traces_sampler", "sampler").replace("_", " ")


def _known(setting: Setting) -> str:
    from otel_perf._setup.extensions import names

    known = sorted({*setting.choices, *(names(setting.group) if setting.group else ())})
    return ", ".join(known)


def _plugins(setting: Setting, items: tuple[str, ...]) -> tuple[Any, str | None]:
    """Names each known (built in, or an installed entry point); the known ones when some are not."""
    good: list[str] = []
    bad: list[str] = []
    for item in items:
        if item.lower() in setting.choices:
            good.append(item.lower())
        elif _installed(setting, item):
            good.append(item)
        else:
            bad.append(item)
    if not bad:
        return tuple(good), None
    names = ", ".join(repr(b) for b in bad)
    reason = f"no {_what(setting)} named {names} is installed; known: {_known(setting)}"
    return (tuple(good) if good else setting.default), reason


def _flag_sources(env: Mapping[str, str]) -> set[str]:
    return {name for name in env.get(FLAG_SOURCES_ENV, "").split(",") if name}


def load(env: Mapping[str, str] | None = None, settings: Iterable[Setting] = SETTINGS) -> Config:
    """Resolve every setting from ``env`` (default: ``os.environ``).  Never raises."""
    environ = os.environ if env is None else env
    from_flags = _flag_sources(environ)
    values: dict[str, Any] = {}
    sources: dict[str, Source] = {}
    problems: list[Problem] = []
    for setting in settings:
        raw = environ.get(setting.env, "")
        if raw.strip() == "":
            values[setting.env] = setting.default
            sources[setting.env] = "default"
            continue
        value, reason = _parse(setting, raw)
        values[setting.env] = value
        sources[setting.env] = "flag" if setting.env in from_flags else "env"
        if reason is not None:
            problems.append(Problem(setting.env, "***" if setting.secret else raw, value, reason))
            sources[setting.env] = "default"
    _cross_checks(values, problems, environ)
    endpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"  # gRPC's host:port, accepted by a cross-check
    if sources[endpoint] == "default" and values[endpoint] == environ.get(endpoint, "").strip():
        sources[endpoint] = "flag" if endpoint in from_flags else "env"
    return Config(values, sources, problems)


def _cross_checks(values: dict[str, Any], problems: list[Problem], environ: Mapping[str, str]) -> None:
    _grpc_endpoint(values, problems, environ)
    path = values["OTEL_PERF_STATS_PATH"]
    if path and (not path.startswith("/") or len(path) < 2 or "?" in path):
        problems.append(Problem("OTEL_PERF_STATS_PATH", path, "", "expected a path like /_perf"))
        values["OTEL_PERF_STATS_PATH"] = ""
    health = values["OTEL_PERF_HEALTH_PATH"]
    if health and (not health.startswith("/") or len(health) < 2 or "?" in health or "#" in health):
        problems.append(Problem("OTEL_PERF_HEALTH_PATH", health, "", "expected a path like /_perf/health"))
        values["OTEL_PERF_HEALTH_PATH"] = ""
    for name in ("OTEL_PERF_ENDUSER_FROM", "OTEL_PERF_TENANT_FROM"):
        source = values[name]
        kind, sep, key = source.partition(":")
        if source and (not sep or kind.strip().lower() not in ("header", "baggage") or not key.strip()
                       or any(c.isspace() for c in key.strip())):
            problems.append(Problem(name, source, "", "expected header:<name> or baggage:<key>"))
            values[name] = ""
    token = values["OTEL_PERF_STATS_TOKEN"]
    if token and len(token) < MIN_TOKEN_LENGTH:
        problems.append(Problem(
            "OTEL_PERF_STATS_TOKEN", "***", "", f"shorter than {MIN_TOKEN_LENGTH} characters, easy to guess; "
            "the stats endpoint stays off (make one with `openssl rand -hex 16`)",
        ))  # fmt: skip
        values["OTEL_PERF_STATS_TOKEN"] = ""
    chosen = environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if values["OTEL_TRACES_SAMPLER"] not in (*RATIO_SAMPLERS, *STATIC_SAMPLERS) or chosen in STATIC_SAMPLERS:
        # An entry-point sampler reads the argument as it likes (jaeger_remote's is
        # "endpoint=...,pollingIntervalMs=..."); a static one the user chose ignores it, as
        # the SDK does (left unset, a bad argument is reported: the sampler was forgotten?).
        problems[:] = [p for p in problems if p.env != "OTEL_TRACES_SAMPLER_ARG"]
    _check_batches(values, problems)
    _check_log_format(values, problems)
    _check_resource_attributes(values, problems)
    _check_excluded_urls(values, problems)
    _check_browser(values, problems)


def _check_log_format(values: dict[str, Any], problems: list[Problem]) -> None:
    """``OTEL_PYTHON_LOG_FORMAT`` must be a format ``logging`` takes (``%``-style): one it refuses
    would leave the app without log lines.  A field no record has is the user's to supply (a
    filter of theirs may set it), as under stock."""
    fmt = values.get("OTEL_PYTHON_LOG_FORMAT") or ""
    if not fmt:
        return
    import logging

    try:
        logging.Formatter(fmt)
    except (ValueError, TypeError) as exc:
        reason = f"not a logging format: {exc}"[:200]
        problems.append(Problem("OTEL_PYTHON_LOG_FORMAT", fmt, "", reason))
        values["OTEL_PYTHON_LOG_FORMAT"] = ""


def _check_browser(values: dict[str, Any], problems: list[Problem]) -> None:
    path = values["OTEL_PERF_BROWSER_PATH"]
    if not path.startswith("/") or len(path) < 2 or "?" in path or "#" in path:
        default = BY_ENV["OTEL_PERF_BROWSER_PATH"].default
        problems.append(Problem("OTEL_PERF_BROWSER_PATH", path, default, "expected a path like /browser.js"))
        values["OTEL_PERF_BROWSER_PATH"] = default
    origins: tuple[str, ...] = values["OTEL_PERF_BROWSER_PROPAGATE_ORIGINS"]
    good = tuple(o for o in origins if _ORIGIN.fullmatch(o))
    if good != origins:
        bad = ", ".join(o for o in origins if o not in good)
        reason = f"expected origins like https://api.example.com (scheme, host, optional port): {bad}"
        problems.append(Problem("OTEL_PERF_BROWSER_PROPAGATE_ORIGINS", ",".join(origins), good, reason[:300]))
        values["OTEL_PERF_BROWSER_PROPAGATE_ORIGINS"] = good


_ORIGIN = re.compile(r"https?://[A-Za-z0-9.\-]+(:\d{1,5})?/?")


def _check_batches(values: dict[str, Any], problems: list[Problem]) -> None:
    """An export batch larger than its queue can never fill: the SDK refuses it (and the signal)."""
    for prefix in ("OTEL_BSP", "OTEL_BLRP"):
        batch = values[f"{prefix}_MAX_EXPORT_BATCH_SIZE"]
        queue = values[f"{prefix}_MAX_QUEUE_SIZE"] or values["OTEL_PERF_QUEUE_SIZE"]
        if batch is not None and batch > queue:
            name = f"{prefix}_MAX_EXPORT_BATCH_SIZE"
            problems.append(Problem(name, str(batch), queue, f"larger than the queue ({queue})"))
            values[name] = queue


def parse_resource_attributes(text: str) -> tuple[dict[str, str], list[str], list[str]]:
    """``k=v,k2=v2`` (values percent-decoded, as the specification says): attributes, the valid
    pairs as given, and the malformed ones."""
    attributes: dict[str, str] = {}
    good: list[str] = []
    bad: list[str] = []
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        key = key.strip()
        try:
            decoded = urllib.parse.unquote(value.strip(), errors="strict")
        except UnicodeDecodeError:
            decoded = None
        if not sep or not key or decoded is None or not key.isprintable() or " " in key:
            bad.append(pair.strip())
            continue
        attributes[key] = decoded
        good.append(pair.strip())
    return attributes, good, bad


def _check_resource_attributes(values: dict[str, Any], problems: list[Problem]) -> None:
    raw = values["OTEL_RESOURCE_ATTRIBUTES"]
    if not raw:
        return
    _, good, bad = parse_resource_attributes(raw)
    if bad:
        used = ",".join(good)
        shown = ", ".join(repr(b) for b in bad[:5])
        problems.append(Problem(
            "OTEL_RESOURCE_ATTRIBUTES", raw, used,
            f"not key=value pairs (values percent-encoded): {shown}; the valid pairs are kept",
        ))  # fmt: skip
        values["OTEL_RESOURCE_ATTRIBUTES"] = used


def _regex_error(pattern: str) -> str | None:
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return str(exc)
    return None


def _check_excluded_urls(values: dict[str, Any], problems: list[Problem]) -> None:
    """Keep only patterns that compile: one bad regex must not fail every request."""
    for name in ("OTEL_PYTHON_EXCLUDED_URLS", *EXCLUDED_URLS_BY_LIBRARY):
        _check_url_patterns(name, values, problems)


def _check_url_patterns(name: str, values: dict[str, Any], problems: list[Problem]) -> None:
    patterns: tuple[str, ...] = values.get(name, ())
    if not patterns:
        return
    good = tuple(p for p in patterns if _regex_error(f"(?:{p})") is None)
    errors = [f"{p!r}: {_regex_error(f'(?:{p})')}" for p in patterns if p not in good]
    combined = _regex_error("|".join(f"(?:{p})" for p in good)) if good else None
    if combined is not None:  # each compiles, together they do not (e.g. a back-reference)
        errors.append(f"together: {combined}")
        good = ()
    if errors:
        reason = "not a valid regular expression: " + "; ".join(errors)
        problems.append(Problem(name, ",".join(patterns), good, reason[:300]))
        values[name] = good


#: Variables the OpenTelemetry SDK reads itself while we build the pipeline.  Malformed,
#: some make it raise (all telemetry off), some make its threads spin or block forever.
#: They are checked like ours; a bad one is reported and then removed from the
#: environment, so the SDK uses its default, which is what the report says.
_SDK_POSITIVE_INTS = (
    "OTEL_BSP_SCHEDULE_DELAY",
    "OTEL_BSP_EXPORT_TIMEOUT",
    "OTEL_BLRP_SCHEDULE_DELAY",
    "OTEL_BLRP_EXPORT_TIMEOUT",
)
#: milliseconds the SDK reads with float() (so "5000.5" is valid there)
_SDK_POSITIVE_FLOATS = ("OTEL_METRIC_EXPORT_TIMEOUT",)
_SDK_NON_NEGATIVE_INTS = (
    "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
    "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT",
    "OTEL_SPAN_LINK_COUNT_LIMIT",
    "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LINK_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
)
_SDK_TIMEOUTS = tuple(
    f"OTEL_EXPORTER_OTLP{signal}_TIMEOUT" for signal in ("", "_TRACES", "_METRICS", "_LOGS")
)
_SDK_CHOICES: dict[str, tuple[str, ...]] = {}
SDK_DEFAULT = "the SDK default"


def sdk_problems(env: Mapping[str, str] | None = None) -> list[Problem]:
    """Malformed values of the SDK-read variables above (never raises)."""
    environ = os.environ if env is None else env
    problems: list[Problem] = []

    def bad(name: str, raw: str, reason: str) -> None:
        problems.append(Problem(name, raw, SDK_DEFAULT, reason))

    numbers = (*_SDK_POSITIVE_INTS, *_SDK_POSITIVE_FLOATS, *_SDK_NON_NEGATIVE_INTS, *_SDK_TIMEOUTS)
    for name in (*numbers, *_SDK_CHOICES):
        raw = environ.get(name, "")
        text = raw.strip()
        if not text:
            continue
        if len(raw) > MAX_VALUE_LENGTH or not text.isprintable():
            bad(name, raw, "too long or contains control characters")
        elif name in _SDK_CHOICES:
            if text.lower() not in _SDK_CHOICES[name]:
                bad(name, raw, "expected one of " + ", ".join(_SDK_CHOICES[name]))
        elif name in _SDK_POSITIVE_FLOATS:
            try:
                millis = float(text)
            except ValueError:
                millis = math.nan
            if not (math.isfinite(millis) and 0 < millis <= MAX_MS):
                bad(name, raw, f"expected a number of milliseconds above 0 and at most {int(MAX_MS)}")
        elif name in _SDK_TIMEOUTS:
            try:
                seconds = float(text)
            except ValueError:
                seconds = math.nan
            if not (math.isfinite(seconds) and 0 < seconds <= 3600):
                bad(name, raw, "expected a number of seconds above 0 and at most 3600")
        else:
            minimum = 1 if name in _SDK_POSITIVE_INTS else 0
            # Delays and timeouts (milliseconds) at most a day; limits at most what a value can hold.
            maximum = int(MAX_MS) if name in _SDK_POSITIVE_INTS else 1 << 31
            if not (text.isascii() and text.isdigit() and minimum <= int(text) <= maximum):
                bad(name, raw, f"expected an integer from {minimum} to {maximum}")
    return problems


def markdown_table(settings: Iterable[Setting] = SETTINGS) -> str:
    """The README's env-var table, generated from :data:`SETTINGS`."""
    rows = ["| Variable | Flag | Type | Default | What it does |", "|---|---|---|---|---|"]
    for s in settings:
        default = _show(s.default) if s.default not in ("", (), None) else "(unset)"
        kind = s.kind if s.kind != "enum" else " \\| ".join(s.choices)
        if s.kind in ("plugin", "plugins"):
            kind = "name" if s.kind == "plugin" else "list of names"
        rows.append(f"| `{s.env}` | `{s.flag_name}` | {kind} | `{default}` | {s.doc} |")
    return "\n".join(rows)


def describe(
    config: Config, redact: Callable[[Setting, Any], str] | None = None
) -> list[tuple[str, str, str]]:
    """(variable, shown value, source) for every setting; secrets are masked."""
    out: list[tuple[str, str, str]] = []
    for s in SETTINGS:
        value = config.values[s.env]
        shown = "***" if s.secret and value else (redact(s, value) if redact else _show(value))
        out.append((s.env, shown, config.sources[s.env]))
    return out
