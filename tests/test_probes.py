"""Issue 16: every private API a fast path leans on has a fallback that exports the same data.

The same app answers the same requests twice: once with every probe working, once with all of
them forced to fail (``OTEL_PERF__PROBES_OFF=all``: the SDK's own span construction, sampler,
context attach, batch processor and OTLP exporter, FastAPI's lookups, SQLAlchemy's connect,
asyncio's current task).  What reaches the receiver must be the same: span names, kinds,
parents, statuses, attributes and events, and the same metric series with the same counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from otel_perf._core.probes import PROBES
from support.launch import sqlite_urls, start_service
from support.otlp_receiver import OTLPReceiver
from support.procs import AppProcess

pytestmark = pytest.mark.slow

REQUESTS = [
    "/hello",
    "/items/3",
    "/items/4?token=abc",
    "/orders/n-plus-one",
    "/orders/eager",
    "/orders/broken",
    "/boom",
    "/api/v1/shop/items/2",
    "/job",
]
#: attributes whose values differ between two runs of the same requests
VOLATILE = {"perf.db.duration", "client.port", "server.port", "exception.stacktrace", "db.namespace"}
#: metrics whose values are clocks or process state, compared by name only (and the DB one:
#: its counts include start-up statements; the request statements are compared as spans)
GAUGE_LIKE = ("process.", "cpython.", "perf.process.", "perf.asyncio.", "perf.telemetry.")


def _spans(receiver: OTLPReceiver) -> Counter[Any]:
    # The requests' traces (start-up statements are exported on their own clock).
    requests = {s.trace_id for s in receiver.spans(kind="SERVER")}
    spans = [s for s in receiver.spans() if s.trace_id in requests]
    by_id = {s.span_id: s for s in spans}
    out: Counter[Any] = Counter()
    for s in spans:
        parent = by_id.get(s.parent_span_id)
        attrs = tuple(sorted((k, repr(v)) for k, v in s.attributes.items() if k not in VOLATILE))
        events = tuple(e.name for e in s.events)
        out[(s.name, s.kind, parent.name if parent else "", s.status_code, attrs, events)] += 1
    return out


def _metrics(receiver: OTLPReceiver, folder: Path) -> set[Any]:
    out: set[Any] = set()
    for name in receiver.metric_names():
        points = receiver.latest_points(name)
        if name.startswith(GAUGE_LIKE) or name == "db.client.operation.duration":
            out.add(name)
            continue
        for p in points:
            attrs = tuple(sorted((k, repr(v).replace(str(folder), "DB")) for k, v in p.attributes.items()))
            value = p.count if p.count is not None else (p.value if "duration" not in name else None)
            out.add((name, attrs, value))
    return out


def _run(
    app_process: Callable[..., AppProcess], receiver: OTLPReceiver, folder: Path, env: dict[str, str]
) -> tuple[Counter[Any], set[Any]]:
    folder.mkdir()
    receiver.clear()
    svc = start_service(
        app_process, receiver, sqlite_urls(folder)[0], env={"OTEL_PERF_SLOW_QUERY_MS": "10000", **env}
    )
    receiver.clear()  # what start-up exported (the seed data) differs in timing only
    for path in REQUESTS:
        httpx.get(svc.base + path)
    receiver.wait_for(lambda: len(receiver.spans(kind="SERVER")) >= len(REQUESTS), what="the requests' spans")
    svc.proc.stop()  # SIGTERM: everything is flushed
    return _spans(receiver), _metrics(receiver, folder)


def test_every_probe_has_a_fallback() -> None:
    assert len(PROBES) >= 10
    for name, what in PROBES.items():
        assert "fallback:" in what, name


def test_all_probes_off_exports_the_same_data(
    otlp_receiver: OTLPReceiver, app_process: Callable[..., AppProcess], tmp_path: Path
) -> None:
    fast_spans, fast_metrics = _run(app_process, otlp_receiver, tmp_path / "fast", {})
    slow_spans, slow_metrics = _run(
        app_process, otlp_receiver, tmp_path / "slow", {"OTEL_PERF__PROBES_OFF": "all"}
    )
    assert sum(fast_spans.values()) >= len(REQUESTS) + 10
    assert fast_spans == slow_spans, {
        "only with probes": fast_spans - slow_spans,
        "only in fallbacks": slow_spans - fast_spans,
    }
    assert fast_metrics == slow_metrics, {
        "only with probes": fast_metrics - slow_metrics,
        "only in fallbacks": slow_metrics - fast_metrics,
    }


def test_forcing_probes_off_really_takes_the_fallbacks() -> None:
    """Without this the comparison above could pass by comparing the fast paths with themselves."""
    import subprocess
    import sys

    code = (
        "from otel_perf._core import spans\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "t = TracerProvider(id_generator=spans.PrimableIdGenerator()).get_tracer('t')\n"
        "s = spans.SpanStarter(t)\n"
        "print(spans._DIRECT, bool(spans.CONTEXT_IN_FIELD), s.decide is None, s.lean is None,\n"
        "      spans.runtime_context_var() is None)\n"
    )
    env = {"OTEL_PERF__PROBES_OFF": "all", "PATH": "/usr/bin:/bin"}
    off = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert off.stdout.split() == ["False", "False", "True", "True", "True"]
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert on.stdout.split() == ["True", "True", "False", "False", "False"]


def test_the_readme_lists_every_probe() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for name in PROBES:
        assert f"| `{name}` |" in readme, name
