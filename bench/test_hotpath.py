"""Microbenchmarks of the per-request hot path: where each microsecond goes.

    python -m pytest bench/test_hotpath.py --benchmark-columns=min,median,iqr,ops --benchmark-sort=name

Everything runs in this process against ``bench/app.py``, bootstrapped exactly as the
launcher does with the README's production settings (10% of traces, parent-based; OTLP
export of every signal to an in-process sink).  One benchmark call is one unit:

* ``test_request_*``: one HTTP request through the whole ASGI stack (no server, no socket),
  ``bare`` (the app's own stack), ``ours`` (10% sampled) and ``ours100`` (every request
  sampled); ours minus bare is what the instrumentation costs a request.
* ``test_sql_*``: one ``SELECT`` through a SQLAlchemy connection, with and without our listener.
* ``test_part_*``: the pieces of that cost one by one (span start/end, context attach,
  metric recording, the ``traceresponse`` header, the end-of-request findings).
* ``test_export_*``: encoding and sending one span (a 512-span batch, divided by 512).

No assertions on time: CI runs this file only as a smoke (``--benchmark-disable``).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # app.py, sink.py and inproc.py live beside this file
    sys.path.insert(0, str(BENCH))
import inproc  # noqa: E402

PER_BATCH = 512

pytest.importorskip("pytest_benchmark")
pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")


@pytest.fixture(scope="module")
def env() -> Iterator[dict[str, Any]]:
    """Bootstrap as the launcher would, import the app, build its middleware stack."""
    from otel_perf._core import runtime as runtime_mod

    if runtime_mod.get() is not None:
        pytest.skip("otel_perf is already bootstrapped in this process")
    tmp = tempfile.mkdtemp(prefix="otel-perf-hotpath-")
    saved = dict(os.environ)
    os.environ.update(
        {
            "OTEL_SERVICE_NAME": "hotpath",
            "OTEL_EXPORTER_OTLP_ENDPOINT": inproc.start_sink(),
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.1",
            "OTEL_PERF_LOG_FORMAT": "off",
            "OTEL_PERF_LOOP_MONITOR": "true",
            "BENCH_DB": os.path.join(tmp, "bench.db"),
        }
    )
    from otel_perf._setup.install import bootstrap

    rt = bootstrap()
    assert rt is not None
    import app as bench_app

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(inproc.call(bench_app.app, "/hello"))
    ours = bench_app.app.middleware_stack
    from otel_perf._integrations.asgi import PerfMiddleware

    assert isinstance(ours, PerfMiddleware)
    yield {
        "rt": rt,
        "loop": loop,
        "ours": ours,
        "bare": ours.app,
        "ours100": _always_on(ours, rt),
        "engine": bench_app.engine,
    }
    loop.close()
    os.environ.clear()
    os.environ.update(saved)


def _always_on(ours: Any, rt: Any) -> Any:
    """The same middleware over a runtime whose tracer samples every request."""
    import dataclasses

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider, sampling

    from otel_perf._integrations.asgi import PerfMiddleware

    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    always = TracerProvider(
        resource=provider.resource,
        sampler=sampling.ParentBased(sampling.ALWAYS_ON),
        shutdown_on_exit=False,
        id_generator=type(provider.id_generator)(),
    )
    always._active_span_processor = provider._active_span_processor
    rt100 = dataclasses.replace(rt, tracer=always.get_tracer("otel_perf"))
    from otel_perf._integrations.starlette import StarletteWork, route_template

    rt100.stats_endpoint, rt100.loop_monitor = ours.core.stats, ours.loop_monitor
    return PerfMiddleware(ours.app, rt100, route_template, StarletteWork)


def _request(env: dict[str, Any], which: str, path: str) -> Callable[[], None]:
    loop, asgi = env["loop"], env[which]
    return lambda: loop.run_until_complete(inproc.call(asgi, path))


# --- whole requests ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bare", "ours", "ours100"])
@pytest.mark.parametrize("path", ["/hello", "/items/42"])
def test_request(benchmark: Any, env: dict[str, Any], which: str, path: str) -> None:
    benchmark(_request(env, which, path))


@pytest.mark.parametrize("which", ["bare", "ours", "ours100"])
def test_request_db(benchmark: Any, env: dict[str, Any], which: str) -> None:
    benchmark.pedantic(_request(env, which, "/db"), rounds=300, warmup_rounds=20)


@pytest.mark.parametrize("listener", ["without", "with"])
def test_sql_select(benchmark: Any, env: dict[str, Any], listener: str) -> None:
    """One primary-key SELECT through a SQLAlchemy connection, with and without our hooks."""
    from otel_perf._integrations import sqlalchemy as ours_sa

    state = ours_sa._state.get("listener")
    assert state is not None
    if listener == "without":
        ours_sa.detach_listener(state)
    try:
        with env["engine"].connect() as conn:
            benchmark(lambda: conn.exec_driver_sql("SELECT id FROM customers WHERE id = 7").all())
    finally:
        if listener == "without":
            ours_sa.attach_listener(state)


def test_sql_record_in_request(benchmark: Any, env: dict[str, Any]) -> None:
    """The statement core's per-statement work inside a request (unsampled): metrics + Work counters."""
    from otel_perf._core.work import Work, current_work
    from otel_perf._integrations import sqlalchemy as ours_sa

    listener = ours_sa._state["listener"]
    with env["engine"].connect() as conn:
        span = env["rt"].tracer.start_span("GET")
        token = current_work.set(Work("request", "", span, 256))
        try:
            statement = "SELECT customers.id, customers.name FROM customers WHERE customers.id = ?"
            target = listener.target(conn.dialect)
            record = listener.statements.record
            benchmark(lambda: record(target, statement, 0.0002, "", 0))
        finally:
            current_work.reset(token)


# --- the pieces ------------------------------------------------------------------------------


def _tracer(env: dict[str, Any], sampler: Any) -> Any:
    """A tracer of the bootstrapped pipeline (same processors, resource, id generator) with ``sampler``."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    provider: Any = trace.get_tracer_provider()
    other = TracerProvider(
        resource=provider.resource,
        sampler=sampler,
        shutdown_on_exit=False,
        id_generator=type(provider.id_generator)(),
    )
    other._active_span_processor = provider._active_span_processor
    return other.get_tracer("otel_perf", "0.1.0")


@pytest.mark.parametrize("how", ["sdk", "ours"])
def test_part_span_unsampled(benchmark: Any, env: dict[str, Any], how: str) -> None:
    """Start and end a dropped SERVER span: Tracer.start_span vs our SpanStarter."""
    from opentelemetry.sdk.trace import sampling
    from opentelemetry.trace import SpanKind

    from otel_perf._core.spans import SpanStarter

    tracer = _tracer(env, sampling.ParentBased(sampling.ALWAYS_OFF))
    if how == "sdk":
        benchmark(lambda: tracer.start_span("GET", None, SpanKind.SERVER).end())
    else:
        starter = SpanStarter(tracer)
        assert starter.fast
        benchmark(lambda: starter.start("GET", None, SpanKind.SERVER).end())


START = {
    "http.request.method": "GET",
    "url.path": "/hello",
    "url.scheme": "http",
    "network.protocol.version": "1.1",
}
END = {
    "http.route": "/hello",
    "http.response.status_code": 200,
    "perf.db.query_count": 0,
    "perf.db.duration": 0.0,
}


@pytest.mark.parametrize("how", ["sdk", "ours"])
def test_part_span_sampled_server(benchmark: Any, env: dict[str, Any], how: str) -> None:
    """A sampled SERVER span with the middleware's attributes, ended into the export queue."""
    from opentelemetry.sdk.trace import sampling
    from opentelemetry.trace import SpanKind

    from otel_perf._core.spans import SpanStarter

    tracer = _tracer(env, sampling.ParentBased(sampling.ALWAYS_ON))
    starter = SpanStarter(tracer)

    def sdk() -> None:
        span = tracer.start_span("GET", None, SpanKind.SERVER, START)
        span.update_name("GET /hello")
        span.set_attributes(END)
        span.end()

    def ours() -> None:
        span = starter.start("GET", None, SpanKind.SERVER, lambda: START)
        span.update_name("GET /hello")
        starter.set_attributes(span, END)
        span.end()

    benchmark(sdk if how == "sdk" else ours)


@pytest.mark.parametrize("how", ["api", "ours"])
def test_part_context_attach_detach(benchmark: Any, env: dict[str, Any], how: str) -> None:
    """Make a span current and restore: the API's calls vs the ContextVar behind them."""
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation import _SPAN_KEY

    from otel_perf._core.spans import runtime_context_var

    span = env["rt"].tracer.start_span("GET")
    var = runtime_context_var()
    assert var is not None

    def api() -> None:
        context.detach(context.attach(trace.set_span_in_context(span)))

    def ours() -> None:
        values = var.get().copy()
        values[_SPAN_KEY] = span
        var.reset(var.set(context.Context(values)))

    benchmark(api if how == "api" else ours)


def test_part_histogram_record(benchmark: Any, env: dict[str, Any]) -> None:
    hist = env["rt"].inst.server_duration
    benchmark(lambda: hist.record(0.0031, ("/hello", "GET", 200, "")))


def test_part_histogram_record_exemplar(benchmark: Any, env: dict[str, Any]) -> None:
    hist = env["rt"].inst.server_duration
    benchmark(lambda: hist.record(0.0031, ("/hello", "GET", 200, ""), 0x1234, 0x5678))


def test_part_finish_request(benchmark: Any, env: dict[str, Any]) -> None:
    """The end of an unsampled request: RED metrics, queries per request, the findings checks."""
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

    from otel_perf._core.server import ServerCore
    from otel_perf._core.work import Work

    rt = env["rt"]
    core = ServerCore(rt)
    span = NonRecordingSpan(SpanContext(0x1234, 0x5678, False, TraceFlags(0)))
    work = Work("request", "", span, 256, "GET")
    benchmark(lambda: core.finish(work, "/hello", 200, "", 0.0031))


def test_part_traceresponse(benchmark: Any, env: dict[str, Any]) -> None:
    from otel_perf._core.work import Work

    ours = env["ours"]
    work = Work("request", "", env["ours100"].rt.tracer.start_span("GET"), 256)
    message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", b"17"), (b"content-type", b"application/json")],
    }
    benchmark(lambda: ours._response_headers(dict(message), work, 0.0))


# --- export -----------------------------------------------------------------------------------


def _spans(env: dict[str, Any], n: int) -> list[Any]:
    """``n`` ended SERVER spans shaped like the middleware's."""
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import SpanKind

    out: list[ReadableSpan] = []

    class Collect(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            out.extend(spans)
            return SpanExportResult.SUCCESS

    from opentelemetry.sdk.trace import sampling

    provider = TracerProvider(resource=env["rt"].resource, sampler=sampling.ALWAYS_ON, shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(Collect()))
    tracer = provider.get_tracer("otel_perf", "0.1.0")
    for i in range(n):
        span = tracer.start_span("GET", None, SpanKind.SERVER)
        for key, value in (
            ("http.request.method", "GET"),
            ("url.path", f"/items/{i}"),
            ("url.scheme", "http"),
            ("network.protocol.version", "1.1"),
            ("http.route", "/items/{item_id}"),
            ("http.response.status_code", 200),
            ("perf.db.query_count", 3),
            ("perf.db.duration", 0.00042),
        ):
            span.set_attribute(key, value)
        span.update_name("GET /items/{item_id}")
        span.end()
    return out


def test_export_encode_stock_x512(benchmark: Any, env: dict[str, Any]) -> None:
    """The SDK's OTLP encoder + protobuf serialization, 512 spans."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    spans = _spans(env, PER_BATCH)
    benchmark(lambda: encode_spans(spans).SerializePartialToString())


def test_export_encode_ours_x512(benchmark: Any, env: dict[str, Any]) -> None:
    """Our OTLP span encoder, 512 spans (skipped until it exists)."""
    encoder = pytest.importorskip("otel_perf._export.otlp_spans")
    spans = _spans(env, PER_BATCH)
    enc = encoder.SpanEncoder()
    benchmark(lambda: enc.encode(spans))


def test_export_configured_exporter_x512(benchmark: Any, env: dict[str, Any]) -> None:
    """The configured trace exporter end to end (encode + HTTP POST to the sink), 512 spans."""
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    processors = provider._active_span_processor._span_processors
    exporter = _find_exporter(processors[0])
    spans = _spans(env, PER_BATCH)
    benchmark.pedantic(lambda: exporter.export(spans), rounds=30, warmup_rounds=3)


def test_export_pre_encode_x512(benchmark: Any, env: dict[str, Any]) -> None:
    """Encoding 512 spans one by one as they end (what request threads now pay per span)."""
    from otel_perf._export.otlp_spans import SpanEncoder

    spans = _spans(env, PER_BATCH)
    enc = SpanEncoder()
    benchmark(lambda: [enc.pre_encode(span) for span in spans])


def test_export_configured_exporter_pre_encoded_x512(benchmark: Any, env: dict[str, Any]) -> None:
    """The configured exporter sending 512 spans encoded as they ended (the export thread's share)."""
    from opentelemetry import trace

    provider: Any = trace.get_tracer_provider()
    exporter = _find_exporter(provider._active_span_processor._span_processors[0])
    encoder = getattr(exporter, "inner", exporter)._encoder  # under the counting wrapper
    spans = [encoder.pre_encode(span) for span in _spans(env, PER_BATCH)]
    assert all(type(span) is bytes for span in spans)
    benchmark.pedantic(lambda: exporter.export(spans), rounds=30, warmup_rounds=3)


def _find_exporter(obj: Any) -> Any:
    for _ in range(6):
        for attr in ("inner", "_batch_processor", "_exporter", "exporter"):
            nxt = getattr(obj, attr, None)
            if nxt is not None:
                obj = nxt
                break
        if hasattr(obj, "export") and not hasattr(obj, "on_end"):
            return obj
    return obj
