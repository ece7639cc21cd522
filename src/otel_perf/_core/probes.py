"""Every private API of a library that a fast path of ours leans on, by name.

Each is checked (probed) before it is used, and each has a fallback on the library's public
path that exports the same data, only slower.  ``OTEL_PERF__PROBES_OFF`` (a private variable,
like ``OTEL_PERF__RAISE_ERRORS``; names separated by commas, or ``all``) forces probes to
fail, so the tests can prove every fallback (tests/test_probes.py runs the same app and
requests with all of them off and compares what is exported).

Private APIs used for correctness rather than speed (the fork hooks' SDK locks, FastAPI's
native-telemetry switch and its effective-route scope entry, SQLAlchemy's first-connect
marker) are probed where they are used, fail safe, and are listed in the README's
"Library versions" section; they are not in this table because their fallback necessarily
exports something different (a duplicate span, a route without its prefix).
"""

from __future__ import annotations

import os

#: name -> what it makes faster, and the public path used when it fails
PROBES: dict[str, str] = {
    "sdk-span-layout": "SpanContext and NonRecordingSpan built directly (SDK tuple layout checked); "
    "fallback: their constructors",
    "sdk-span-context-field": "a span's context read from its field; fallback: get_span_context()",
    "sdk-sampler": "the SDK's own samplers taken as one decision before a span exists; "
    "fallback: Tracer.start_span and the sampler",
    "sdk-lean-spans": "recording SDK spans built without Tracer.start_span's re-checks; "
    "fallback: Tracer.start_span",
    "sdk-lean-end": "a live span we started ended straight into our processor's on_end_fields "
    "(Span.end's steps checked); fallback: Span.end and a ReadableSpan",
    "api-context-var": "context attached through the API's ContextVar; fallback: context.attach",
    "sdk-batch-queue": "sampled spans encoded as they end and queued as bytes in the SDK batch "
    "processor; fallback: the processor's on_end",
    "otlp-encoder": "OTLP/HTTP spans, metrics and logs written by our encoders and sent by the SDK's "
    "HTTP client (exporter 1.45+), so no process imports protobuf; fallback: the SDK's OTLP/HTTP exporters",
    "otlp-lean-transport": "the standard library's http.client as the OTLP exporters' transport for "
    "plain-http endpoints (exporter 1.45+); "
    "fallback: their default requests session",
    "instrumentation-logging-handler-alone": "the official LoggingHandler's module run on its own, "
    "without its package's instrumentor (BaseInstrumentor's imports); fallback: the usual import",
    "api-suppress-keys": "the suppression keys read from and set in the API's context (what "
    "is_http_instrumentation_enabled and suppress_instrumentation use), without importing "
    "opentelemetry-instrumentation's utils and wrapt; fallback: those official functions",
    "fastapi-telemetry-lookups": "FastAPI's per-request telemetry lookups skipped while its native "
    "telemetry is off; fallback: left as they are",
    "sqlalchemy-connect-bypass": "hooked engines connect straight to SQLAlchemy's method; "
    "fallback: through our Engine.connect wrapper",
    "asyncio-current-tasks": "the running task read from asyncio's task table; "
    "fallback: asyncio.current_task",
    "asyncio-task-context": "(Python 3.12+, public API) the loop watchdog reads the blocked task's "
    "request or job from Task.get_context(), so requests register nothing (and a child task of a "
    "request, such as a Django ASGI view's or BaseHTTPMiddleware's, is named too); "
    "fallback: each request registers its task",
}

FORCED_OFF_ENV = "OTEL_PERF__PROBES_OFF"
_FORCED = frozenset(x.strip() for x in os.environ.get(FORCED_OFF_ENV, "").split(",") if x.strip())


def forced_off(name: str) -> bool:
    """Whether probe ``name`` is forced to fail (tests): take the fallback."""
    assert name in PROBES, name
    return name in _FORCED or "all" in _FORCED
