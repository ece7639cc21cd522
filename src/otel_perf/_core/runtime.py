"""The process-wide runtime: configuration, tracer, fast instruments and insight state.

Built once by the bootstrap (:mod:`otel_perf._setup.install`) and read by every
instrumentation.  Everything the hot path needs is resolved here at startup into plain
attributes, so per-request code does no configuration lookups.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource

from otel_perf import _names as n
from otel_perf._analysis.findings import FindingStore, RateLimiter
from otel_perf._analysis.redact import LogScrubber
from otel_perf._analysis.sql import ShapeCache
from otel_perf._config import Config
from otel_perf._metrics.instruments import (
    COUNT_BOUNDS,
    DIMENSIONS,
    DURATION_BOUNDS,
    SIZE_BOUNDS,
    Counter,
    Gauge,
    Histogram,
    Key,
    Registry,
    RequestRecorder,
)

if TYPE_CHECKING:
    from otel_perf._analysis.budgets import Budgets
    from otel_perf._core.semconv_dup import OldHttpMetrics

logger = logging.getLogger("otel_perf")


@dataclass
class Instruments:
    """Every fast instrument, by role."""

    server_duration: Histogram
    response_size: Histogram
    request_size: Histogram
    client_duration: Histogram
    client_request_size: Histogram
    client_response_size: Histogram
    db_duration: Histogram
    returned_rows: Histogram
    queries_per_request: Histogram
    slow_requests: Counter
    slow_queries: Counter
    n_plus_one: Counter
    throttled: Counter
    ratelimit_remaining: Gauge
    ratelimit_limit: Gauge
    ratelimit_reset: Gauge
    loop_lag: Histogram
    operation_duration: Histogram
    operation_errors: Counter
    cache_operations: Counter
    job_duration: Histogram
    job_queue_wait: Histogram
    job_queries: Histogram
    #: server_duration, response_size and queries_per_request, recorded together per request
    request_metrics: RequestRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.request_metrics = RequestRecorder(
            self.server_duration, self.response_size, self.queries_per_request
        )


@dataclass
class Runtime:
    """What the instrumentations share."""

    config: Config
    tracer: trace.Tracer
    registry: Registry
    inst: Instruments
    resource: Resource
    budgets: Budgets | None = None
    findings: FindingStore = field(default_factory=FindingStore)
    shapes: ShapeCache = field(default_factory=ShapeCache)
    started: float = field(default_factory=time.time)
    #: (method, scheme) -> in-flight requests (read by the http.server.active_requests callback)
    active: dict[tuple[str, str], int] = field(default_factory=dict)
    warn_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(60.0))
    #: Exporter/queue self-telemetry, filled by the providers.
    health: Any = None
    #: The stats endpoint server adapters answer at OTEL_PERF_STATS_PATH (None: off).
    stats_endpoint: Any = None
    #: The browser script server adapters serve (None: OTEL_PERF_BROWSER_ENDPOINT unset).
    browser_script: Any = None
    #: The old HTTP metrics, while OTEL_SEMCONV_STABILITY_OPT_IN has http/dup (None: not).
    old_http: OldHttpMetrics | None = None
    #: Whether OTEL_SEMCONV_STABILITY_OPT_IN has database/dup: spans carry the old db.* names too.
    old_db: bool = False
    #: The asyncio event-loop monitor server adapters register requests with (None: off).
    loop_monitor: Any = None
    #: The SDK pipeline (providers, log handler, shutdown hooks), set by the bootstrap.
    pipeline: Any = None
    #: Apps our server adapters instrumented in this process ("FastAPI/Starlette", "Django", ...).
    apps: set[str] = field(default_factory=set)
    #: What the report should say when no request was recorded (the app failed to load, an
    #: integration failed its self-check); bounded.
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Remember why this process may record nothing (said in the report and stats)."""
        if text not in self.notes and len(self.notes) < 20:
            self.notes.append(text[:300])

    # Hot-path settings resolved once.
    slow_request_s: float = 1.0
    slow_query_s: float = 0.1
    n_plus_one_threshold: int = 5
    max_statements: int = 256
    traceresponse: bool = True
    server_timing: bool = False
    capture_sql: bool = True
    scrubber: LogScrubber = field(default_factory=lambda: LogScrubber(()))

    def __post_init__(self) -> None:
        c = self.config
        self.slow_request_s = c.number("OTEL_PERF_SLOW_REQUEST_MS") / 1000.0
        self.slow_query_s = c.number("OTEL_PERF_SLOW_QUERY_MS") / 1000.0
        self.n_plus_one_threshold = int(c.number("OTEL_PERF_N_PLUS_ONE_THRESHOLD"))
        self.max_statements = int(c.number("OTEL_PERF_MAX_STATEMENTS"))
        self.traceresponse = c.flag("OTEL_PERF_TRACERESPONSE")
        self.server_timing = c.flag("OTEL_PERF_SERVER_TIMING")
        self.capture_sql = c.flag("OTEL_PERF_CAPTURE_SQL")
        self.shapes = ShapeCache(int(c.number("OTEL_PERF_SQL_CACHE_SIZE")))
        self.warn_limiter = RateLimiter(c.number("OTEL_PERF_WARN_INTERVAL"))
        #: takes values out of exception text before it leaves (span events, exported logs)
        self.scrubber = LogScrubber(c.items("OTEL_PERF_REDACT_QUERY_PARAMS"))

    def active_points(self) -> Iterable[tuple[float, Key]]:
        return [(float(v), key) for key, v in list(self.active.items())]


def build_instruments(
    registry: Registry,
    budget_bounds: Iterable[float] = (),
    *,
    query_bounds: Iterable[float] = (),
    db_bounds: Iterable[float] = (),
) -> Instruments:
    """Every fast instrument; budget thresholds (request latency, queries per request, DB latency)
    become bucket bounds, so "over budget or not" is exact."""
    route = (n.A_ROUTE, n.A_METHOD)
    client_attributes = (
        n.A_SERVER_ADDRESS, n.A_METHOD, n.A_STATUS, n.A_ERROR_TYPE, n.A_SERVER_PORT, n.A_PROTOCOL_VERSION,
    )  # fmt: skip
    db_attributes = (
        n.A_DB_SYSTEM, n.A_DB_OPERATION, n.A_DB_COLLECTION, n.A_ERROR_TYPE, n.A_DB_NAMESPACE,
        n.A_SERVER_ADDRESS, n.A_SERVER_PORT,
    )  # fmt: skip
    server_bounds = sorted(set(DURATION_BOUNDS) | set(budget_bounds))
    return Instruments(
        server_duration=registry.histogram(
            n.HTTP_SERVER_DURATION,
            "s",
            "Duration of HTTP server requests.",
            (n.A_ROUTE, n.A_METHOD, n.A_STATUS, n.A_ERROR_TYPE, n.A_URL_SCHEME, n.A_PROTOCOL_VERSION),
            server_bounds,
        ),
        response_size=registry.histogram(
            n.HTTP_SERVER_RESPONSE_SIZE,
            "By",
            "Size of HTTP server response bodies.",
            (n.A_ROUTE, n.A_METHOD, n.A_STATUS, n.A_ERROR_TYPE, n.A_URL_SCHEME, n.A_PROTOCOL_VERSION),
            SIZE_BOUNDS,
        ),
        request_size=registry.histogram(
            n.HTTP_SERVER_REQUEST_SIZE,
            "By",
            "Size of HTTP server request bodies (requests that declare a Content-Length).",
            (n.A_ROUTE, n.A_METHOD, n.A_STATUS, n.A_ERROR_TYPE, n.A_URL_SCHEME, n.A_PROTOCOL_VERSION),
            SIZE_BOUNDS,
        ),
        client_duration=registry.histogram(
            n.HTTP_CLIENT_DURATION, "s", "Duration of outgoing HTTP requests.", client_attributes
        ),
        client_request_size=registry.histogram(
            n.HTTP_CLIENT_REQUEST_SIZE,
            "By",
            "Size of outgoing HTTP request bodies (clients that know it: urllib3).",
            client_attributes,
            SIZE_BOUNDS,
        ),
        client_response_size=registry.histogram(
            n.HTTP_CLIENT_RESPONSE_SIZE,
            "By",
            "Size of HTTP response bodies received, from their Content-Length (urllib3).",
            client_attributes,
            SIZE_BOUNDS,
        ),
        db_duration=registry.histogram(
            n.DB_DURATION,
            "s",
            "Duration of database client operations.",
            db_attributes,
            sorted(set(DURATION_BOUNDS) | set(db_bounds)),
        ),
        returned_rows=registry.histogram(
            n.DB_RETURNED_ROWS,
            "{row}",
            "Rows a DB-API cursor reported for a statement (rowcount, where the driver knows it).",
            db_attributes,
            SIZE_BOUNDS,
        ),
        queries_per_request=registry.histogram(
            n.QUERIES_PER_REQUEST,
            "{query}",
            "SQL statements executed per HTTP request.",
            route,
            sorted(set(COUNT_BOUNDS) | set(query_bounds)),
        ),
        slow_requests=registry.counter(
            n.SLOW_REQUESTS, "{request}", "Requests at or over the slow threshold.", route
        ),
        slow_queries=registry.counter(
            n.SLOW_QUERIES,
            "{query}",
            "SQL statements at or over the slow threshold.",
            (n.A_DB_OPERATION, n.A_DB_COLLECTION),
        ),
        n_plus_one=registry.counter(n.N_PLUS_ONE, "{finding}", "Requests with an N+1 query pattern.", route),
        throttled=registry.counter(
            n.HTTP_CLIENT_THROTTLED, "{response}", "Outgoing requests answered 429.", (n.A_SERVER_ADDRESS,)
        ),
        ratelimit_remaining=registry.gauge(
            n.RATELIMIT_REMAINING,
            "{request}",
            "Rate-limit requests remaining, from the last response.",
            (n.A_SERVER_ADDRESS,),
        ),
        ratelimit_limit=registry.gauge(
            n.RATELIMIT_LIMIT, "{request}", "Rate-limit quota, from the last response.", (n.A_SERVER_ADDRESS,)
        ),
        ratelimit_reset=registry.gauge(
            n.RATELIMIT_RESET,
            "s",
            "Seconds until the rate-limit window resets, from the last response.",
            (n.A_SERVER_ADDRESS,),
        ),
        loop_lag=registry.histogram(
            n.LOOP_LAG,
            "s",
            "Delay before a ready asyncio callback runs.",
            (),
            (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        ),
        # The last key element of the operation instruments holds the dimensions measure() was given.
        operation_duration=registry.histogram(
            n.OPERATION_DURATION,
            "s",
            "Duration of measured operations.",
            (n.A_OPERATION, n.A_ERROR_TYPE, DIMENSIONS),
        ),
        operation_errors=registry.counter(
            n.OPERATION_ERRORS,
            "{error}",
            "Measured operations that raised.",
            (n.A_OPERATION, n.A_ERROR_TYPE, DIMENSIONS),
        ),
        cache_operations=registry.counter(
            n.CACHE_OPERATIONS,
            "{operation}",
            "Cache reads by result (hit or miss).",
            (n.A_CACHE_SYSTEM, n.A_CACHE_NAME, n.A_CACHE_RESULT),
        ),
        job_duration=registry.histogram(
            n.JOB_DURATION,
            "s",
            "Duration of background job runs.",
            (n.A_JOB_SYSTEM, n.A_JOB_NAME, n.A_ERROR_TYPE),
            (*DURATION_BOUNDS, 30.0, 60.0, 120.0, 300.0),
        ),
        job_queue_wait=registry.histogram(
            n.JOB_QUEUE_WAIT,
            "s",
            "Time a job waited between being sent and starting.",
            (n.A_JOB_SYSTEM, n.A_JOB_NAME),
            (*DURATION_BOUNDS, 30.0, 60.0, 120.0, 300.0),
        ),
        job_queries=registry.histogram(
            n.JOB_QUERIES,
            "{query}",
            "SQL statements executed per job run.",
            (n.A_JOB_SYSTEM, n.A_JOB_NAME),
            COUNT_BOUNDS,
        ),
    )


#: The runtime of this process, once the bootstrap has run.
_RUNTIME: Runtime | None = None


def get() -> Runtime | None:
    return _RUNTIME


def set_runtime(runtime: Runtime | None) -> None:
    global _RUNTIME
    _RUNTIME = runtime
