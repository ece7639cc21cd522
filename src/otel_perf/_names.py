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
HTTP_SERVER_ACTIVE: Final = "http.server.active_requests"  # http_server_active_requests (UpDownCounter)
HTTP_SERVER_RESPONSE_SIZE: Final = "http.server.response.body.size"  # http_server_response_body_size_bytes
HTTP_SERVER_REQUEST_SIZE: Final = "http.server.request.body.size"  # http_server_request_body_size_bytes
# --- HTTP client ------------------------------------------------------------------------
HTTP_CLIENT_DURATION: Final = "http.client.request.duration"  # http_client_request_duration_seconds
HTTP_CLIENT_REQUEST_SIZE: Final = "http.client.request.body.size"  # http_client_request_body_size_bytes
HTTP_CLIENT_RESPONSE_SIZE: Final = "http.client.response.body.size"  # http_client_response_body_size_bytes
RATELIMIT_REMAINING: Final = "perf.http.client.ratelimit.remaining"  # perf_http_client_ratelimit_remaining
RATELIMIT_LIMIT: Final = "perf.http.client.ratelimit.limit"  # perf_http_client_ratelimit_limit
RATELIMIT_RESET: Final = "perf.http.client.ratelimit.reset"  # perf_http_client_ratelimit_reset_seconds
HTTP_CLIENT_THROTTLED: Final = "perf.http.client.throttled"  # perf_http_client_throttled_total
# --- Database (stable semconv) ----------------------------------------------------------
DB_DURATION: Final = "db.client.operation.duration"  # db_client_operation_duration_seconds
DB_RETURNED_ROWS: Final = "db.client.response.returned_rows"  # db_client_response_returned_rows
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
# labels: perf.metric.name (a user metric, or perf.operation.duration), perf.dimension.name
DIMENSION_OVERFLOW: Final = "perf.metric.dimension_overflow"  # perf_metric_dimension_overflow_total
# --- Tenants (ours; only with OTEL_PERF_TENANT_FROM and OTEL_PERF_TENANT_METRIC_VALUES > 0) -------
TENANT_DURATION: Final = "perf.tenant.request.duration"  # perf_tenant_request_duration_seconds
# --- Caches (ours; one family for Redis, Django's cache framework and others) -----------
# labels: perf.cache.system ("redis", "django"), perf.cache.name (the cache: server/db or alias),
# perf.cache.result ("hit" | "miss"); hit ratio = rate(hit) / rate(hit + miss) per cache
CACHE_OPERATIONS: Final = "perf.cache.operations"  # perf_cache_operations_total
# the hit-ratio floor (OTEL_PERF_CACHE_HIT_RATIO_FLOOR) per cache seen, which the
# PerfCacheHitRatioLow alert compares the hit ratio with; labels perf.cache.system, perf.cache.name
CACHE_HIT_FLOOR: Final = "perf.cache.hit_floor"  # perf_cache_hit_floor_ratio
# --- Background jobs (ours; Celery tasks, FastAPI/Starlette BackgroundTasks, ...) -------
# labels: perf.job.system ("celery", "background"), perf.job.name, error.type
JOB_DURATION: Final = "perf.job.duration"  # perf_job_duration_seconds
JOB_QUEUE_WAIT: Final = "perf.job.queue_wait"  # perf_job_queue_wait_seconds
JOB_QUERIES: Final = "perf.job.queries"  # perf_job_queries (statements per job run)
# --- Budgets (exported as gauges when OTEL_PERF_BUDGETS is set, so rules and dashboards
# compare against the same numbers the budgets file holds) ------------------------------
# labels: http_route, http_request_method, perf_budget_quantile, perf_budget_level (target | critical)
BUDGET_DURATION: Final = "perf.budget.duration"  # perf_budget_duration_seconds
BUDGET_ERROR_RATE: Final = "perf.budget.error_rate"  # perf_budget_error_rate_ratio
BUDGET_CLIENT_ERROR_RATE: Final = "perf.budget.client_error_rate"  # perf_budget_client_error_rate_ratio
BUDGET_QUERIES: Final = "perf.budget.queries_per_request"  # perf_budget_queries_per_request
# labels: db_operation_name, db_collection_name, perf_budget_quantile, perf_budget_level
BUDGET_DB_DURATION: Final = "perf.budget.db.duration"  # perf_budget_db_duration_seconds
# --- Browser (issue #22): sent by the browser script (_browser/src/index.js) as OTLP, delta
# temporality; the collector sums them (delta_to_cumulative). Resource service.name is the
# browser service (OTEL_PERF_BROWSER_SERVICE_NAME, default "<service>-browser"), so `job` is too.
# labels of the vitals and page loads: http_route (the server's route template of the page)
BROWSER_LCP: Final = "perf.browser.lcp"  # perf_browser_lcp_seconds (histogram)
BROWSER_FCP: Final = "perf.browser.fcp"  # perf_browser_fcp_seconds
BROWSER_TTFB: Final = "perf.browser.ttfb"  # perf_browser_ttfb_seconds
BROWSER_INP: Final = "perf.browser.inp"  # perf_browser_inp_seconds (pages with an interaction)
BROWSER_CLS: Final = "perf.browser.cls"  # perf_browser_cls (unit 1: no suffix on a histogram)
BROWSER_PAGE_LOAD: Final = "perf.browser.page_load.duration"  # perf_browser_page_load_duration_seconds
# labels: http_request_method, url_template (ids as {id}), http_response_status_code
BROWSER_REQUEST: Final = "perf.browser.request.duration"  # perf_browser_request_duration_seconds
BROWSER_ERRORS: Final = "perf.browser.errors"  # perf_browser_errors_total{http_route}
# The Prometheus names, as the dashboards and generated page alerts use them.
PROM_BROWSER_LCP: Final = "perf_browser_lcp_seconds"
PROM_BROWSER_FCP: Final = "perf_browser_fcp_seconds"
PROM_BROWSER_TTFB: Final = "perf_browser_ttfb_seconds"
PROM_BROWSER_INP: Final = "perf_browser_inp_seconds"
PROM_BROWSER_CLS: Final = "perf_browser_cls"
PROM_BROWSER_PAGE_LOAD: Final = "perf_browser_page_load_duration_seconds"
PROM_BROWSER_REQUEST: Final = "perf_browser_request_duration_seconds"
PROM_BROWSER_ERRORS: Final = "perf_browser_errors_total"
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
A_SERVER_PORT: Final = "server.port"
A_URL_SCHEME: Final = "url.scheme"
A_PROTOCOL_VERSION: Final = "network.protocol.version"
A_DB_SYSTEM: Final = "db.system.name"
A_DB_NAMESPACE: Final = "db.namespace"
A_DB_OPERATION: Final = "db.operation.name"
A_DB_COLLECTION: Final = "db.collection.name"
A_DB_QUERY_TEXT: Final = "db.query.text"
A_DB_POOL_NAME: Final = "db.client.connection.pool.name"
A_DB_CONN_STATE: Final = "db.client.connection.state"
A_SIGNAL: Final = "signal"
A_BUDGET_QUANTILE: Final = "perf.budget.quantile"  # "p50" | "p95" | "p99"
A_BUDGET_LEVEL: Final = "perf.budget.level"  # "target" | "critical"
A_OPERATION: Final = "perf.operation.name"
A_METRIC_NAME: Final = "perf.metric.name"
A_TENANT: Final = "tenant.id"
A_DIMENSION_NAME: Final = "perf.dimension.name"
A_CACHE_SYSTEM: Final = "perf.cache.system"
A_CACHE_NAME: Final = "perf.cache.name"
A_CACHE_RESULT: Final = "perf.cache.result"
A_JOB_SYSTEM: Final = "perf.job.system"
A_JOB_NAME: Final = "perf.job.name"
A_PERF_SLOW: Final = "perf.slow"
A_PERF_QUERY_COUNT: Final = "perf.db.query_count"
A_PERF_DB_DURATION: Final = "perf.db.duration"
A_PERF_STATEMENT: Final = "perf.db.statement"
A_PERF_REPEAT: Final = "perf.db.repeat_count"
A_PERF_REDIS_COUNT: Final = "perf.redis.command_count"  # on a sampled unit's span
A_PERF_REDIS_DURATION: Final = "perf.redis.duration"  # seconds, on a sampled unit's span
EVENT_N_PLUS_ONE: Final = "perf.n_plus_one"
# Browser span attributes ("page load" span; values in ms except CLS and sizes)
A_BROWSER_LCP: Final = "perf.browser.lcp_ms"
A_BROWSER_FCP: Final = "perf.browser.fcp_ms"
A_BROWSER_TTFB: Final = "perf.browser.ttfb_ms"
A_BROWSER_INP: Final = "perf.browser.inp_ms"
A_BROWSER_CLS: Final = "perf.browser.cls"
A_BROWSER_DCL: Final = "perf.browser.dom_content_loaded_ms"
A_BROWSER_LOAD: Final = "perf.browser.load_ms"
A_URL_TEMPLATE: Final = "url.template"  # fetch/XHR CLIENT spans: the path with ids as {id}
