"""Every metric, attribute and event name this package emits, declared once.

Names follow the OpenTelemetry semantic conventions where one exists (stable HTTP and
database conventions) and live under ``perf.*`` where they are ours.  The comment after
each metric gives the name Prometheus shows after the standard OTLP -> Prometheus
translation (dots to underscores, unit suffix, ``_total`` on counters); dashboards,
alert rules and the budget rule generator use those.
"""

from __future__ import annotations

from typing import Final

# --- HTTP server (stable semconv) -------------------------------------------------------
HTTP_SERVER_DURATION: Final = "http.server.request.duration"  # http_server_request_duration_seconds
HTTP_SERVER_ACTIVE: Final = "http.server.active_requests"  # http_server_active_requests
# --- HTTP client ------------------------------------------------------------------------
HTTP_CLIENT_DURATION: Final = "http.client.request.duration"  # http_client_request_duration_seconds
RATELIMIT_REMAINING: Final = "perf.http.client.ratelimit.remaining"  # perf_http_client_ratelimit_remaining
RATELIMIT_LIMIT: Final = "perf.http.client.ratelimit.limit"  # perf_http_client_ratelimit_limit
RATELIMIT_RESET: Final = "perf.http.client.ratelimit.reset"  # perf_http_client_ratelimit_reset_seconds
HTTP_CLIENT_THROTTLED: Final = "perf.http.client.throttled"  # perf_http_client_throttled_total
# --- Database (stable semconv) ----------------------------------------------------------
DB_DURATION: Final = "db.client.operation.duration"  # db_client_operation_duration_seconds
DB_CONN_COUNT: Final = "db.client.connection.count"  # db_client_connection_count
DB_CONN_MAX: Final = "db.client.connection.max"  # db_client_connection_max
DB_CONN_PENDING: Final = "db.client.connection.pending_requests"  # db_client_connection_pending_requests
DB_CONN_TIMEOUTS: Final = "db.client.connection.timeouts"  # db_client_connection_timeouts_total
# --- Insight (ours) ---------------------------------------------------------------------
QUERIES_PER_REQUEST: Final = "perf.db.queries_per_request"  # perf_db_queries_per_request
SLOW_REQUESTS: Final = "perf.slow_requests"  # perf_slow_requests_total
SLOW_QUERIES: Final = "perf.slow_queries"  # perf_slow_queries_total
N_PLUS_ONE: Final = "perf.n_plus_one"  # perf_n_plus_one_total
LOOP_LAG: Final = "perf.asyncio.loop.lag"  # perf_asyncio_loop_lag_seconds
OPERATION_DURATION: Final = "perf.operation.duration"  # perf_operation_duration_seconds
OPERATION_ERRORS: Final = "perf.operation.errors"  # perf_operation_errors_total
# --- Budgets (exported as gauges when OTEL_PERF_BUDGETS is set, so rules and dashboards
# compare against the same numbers the budgets file holds) ------------------------------
# labels: http_route, http_request_method, perf_budget_quantile
BUDGET_DURATION: Final = "perf.budget.duration"  # perf_budget_duration_seconds
BUDGET_ERROR_RATE: Final = "perf.budget.error_rate"  # perf_budget_error_rate_ratio
# --- Runtime ----------------------------------------------------------------------------
PROCESS_CPU_TIME: Final = "process.cpu.time"  # process_cpu_time_seconds_total{type}
PROCESS_CPU_UTILIZATION: Final = "process.cpu.utilization"  # process_cpu_utilization_ratio
PROCESS_MEMORY: Final = "process.memory.usage"  # process_memory_usage_bytes
PROCESS_MEMORY_LIMIT: Final = "perf.process.memory.limit"  # perf_process_memory_limit_bytes
PROCESS_THREADS: Final = "process.thread.count"  # process_thread_count
GC_COLLECTIONS: Final = "cpython.gc.collections"  # cpython_gc_collections_total
# --- Self-telemetry ---------------------------------------------------------------------
TELEMETRY_EXPORTED: Final = "perf.telemetry.exported"  # perf_telemetry_exported_total{signal}
TELEMETRY_DROPPED: Final = "perf.telemetry.dropped"  # perf_telemetry_dropped_total{signal}
TELEMETRY_EXPORT_FAILURES: Final = "perf.telemetry.export.failures"  # perf_telemetry_export_failures_total
TELEMETRY_QUEUE_SIZE: Final = "perf.telemetry.queue.size"  # perf_telemetry_queue_size{signal}
TELEMETRY_QUEUE_CAPACITY: Final = "perf.telemetry.queue.capacity"  # perf_telemetry_queue_capacity{signal}

# --- Attributes -------------------------------------------------------------------------
A_ROUTE: Final = "http.route"
A_METHOD: Final = "http.request.method"
A_STATUS: Final = "http.response.status_code"
A_ERROR_TYPE: Final = "error.type"
A_SERVER_ADDRESS: Final = "server.address"
A_DB_SYSTEM: Final = "db.system.name"
A_DB_OPERATION: Final = "db.operation.name"
A_DB_COLLECTION: Final = "db.collection.name"
A_DB_QUERY_TEXT: Final = "db.query.text"
A_DB_POOL_NAME: Final = "db.client.connection.pool.name"
A_DB_CONN_STATE: Final = "db.client.connection.state"
A_SIGNAL: Final = "signal"
A_BUDGET_QUANTILE: Final = "perf.budget.quantile"  # "p50" | "p95" | "p99"
A_OPERATION: Final = "perf.operation.name"
A_PERF_SLOW: Final = "perf.slow"
A_PERF_QUERY_COUNT: Final = "perf.db.query_count"
A_PERF_DB_DURATION: Final = "perf.db.duration"
A_PERF_STATEMENT: Final = "perf.db.statement"
A_PERF_REPEAT: Final = "perf.db.repeat_count"
EVENT_N_PLUS_ONE: Final = "perf.n_plus_one"
