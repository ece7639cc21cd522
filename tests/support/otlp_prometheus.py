"""What the collector's ``prometheus`` exporter would show for the OTLP metrics a receiver got.

No collector binary runs here, so tests that need browser metrics in a real Prometheus serve the
receiver's points through :class:`ExpositionServer`: the standard OTLP -> Prometheus translation
(``UnderscoreEscapingWithSuffixes``: dots to underscores, unit suffix ``_seconds`` for ``s``,
none for ``1`` or ``{annotations}`` on histograms, ``_total`` on monotonic sums; ``job`` from
``service.name``), with delta points summed into cumulative series the way the agent's
``delta_to_cumulative`` processor does. Scrape it with ``honor_labels: true``.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any

from .otlp_receiver import MetricPoint

_UNIT_SUFFIX = {"s": "seconds", "ms": "milliseconds", "By": "bytes"}


def prometheus_name(point: MetricPoint) -> str:
    """The metric name the collector's Prometheus exporter gives ``point``'s metric."""
    name = re.sub(r"[^a-zA-Z0-9_:]", "_", point.name)
    unit = point.unit
    suffix = "ratio" if unit == "1" and point.kind == "gauge" else _UNIT_SUFFIX.get(unit, "")
    if suffix and not name.endswith("_" + suffix):
        name += "_" + suffix
    if point.kind == "sum" and point.is_monotonic:
        name += "_total"
    return name


def _le(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(float(bound))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    def esc(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in pairs) + "}"


def exposition(points: Iterable[MetricPoint]) -> str:
    """Prometheus text format for ``points`` (histograms and sums; delta points are summed)."""
    series: dict[tuple[str, tuple[tuple[str, str], ...]], dict[str, Any]] = {}
    kinds: dict[str, str] = {}
    for p in points:
        if p.kind not in ("histogram", "sum"):
            continue
        name = prometheus_name(p)
        labels = {re.sub(r"[^a-zA-Z0-9_]", "_", k): str(v) for k, v in p.attributes.items()}
        labels["job"] = str(p.resource.get("service.name", ""))
        key = (name, tuple(sorted(labels.items())))
        kinds[name] = "histogram" if p.kind == "histogram" else "counter"
        state = series.setdefault(key, {"count": 0, "sum": 0.0, "buckets": [], "bounds": [], "value": 0.0})
        if p.temporality != "delta":
            state.update(count=0, sum=0.0, buckets=[], value=0.0)  # cumulative: the latest point is the total
        if p.kind == "histogram":
            state["count"] += p.count or 0
            state["sum"] += p.sum or 0.0
            state["bounds"] = p.explicit_bounds
            old = state["buckets"] or [0] * len(p.bucket_counts)
            state["buckets"] = [a + b for a, b in zip(old, p.bucket_counts, strict=True)]
        else:
            state["value"] += float(p.value or 0)
    lines: list[str] = []
    for name in sorted(kinds):
        lines.append(f"# TYPE {name} {kinds[name]}")
        for (series_name, labels), state in sorted(series.items()):
            if series_name != name:
                continue
            if kinds[name] == "counter":
                lines.append(f"{name}{_labels(labels)} {state['value']}")
                continue
            running = 0
            for bound, count in zip([*state["bounds"], float("inf")], state["buckets"], strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else _le(bound)
                lines.append(f"{name}_bucket{_labels([*labels, ('le', le)])} {running}")
            lines.append(f"{name}_sum{_labels(labels)} {state['sum']}")
            lines.append(f"{name}_count{_labels(labels)} {state['count']}")
    return "\n".join(lines) + "\n"


class ExpositionServer:
    """Serves ``exposition(source())`` at ``/metrics`` on 127.0.0.1, recomputed at every scrape."""

    def __init__(self, source: Callable[[], Iterable[MetricPoint]]) -> None:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = exposition(owner.source()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.source = source
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )

    @property
    def target(self) -> str:
        """``host:port`` to scrape."""
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ExpositionServer:
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
