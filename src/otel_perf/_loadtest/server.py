"""The server's view of a load test: the app's stats endpoint, or Prometheus.

Client-side latency includes the network, the client's own scheduling and the time a
request waits in the server's accept queue; the server-side numbers (what the app's
request-duration histogram recorded) do not.  Showing both per route makes that gap visible.

* **Stats endpoint** (``OTEL_PERF_STATS_PATH`` with ``OTEL_PERF_STATS_TOKEN``): the window is
  reset right before the run (``POST <path>/reset``) and read right after, so it covers the
  run (and anything else the app served meanwhile).
* **Prometheus**: ``increase``/``histogram_quantile`` over the run's window of
  ``http_server_request_duration_seconds``, optionally for one ``job``.

Both return ``{(method, route): {"count", "errors", "error_rate", "p50_ms", "p95_ms",
"p99_ms", "source"}}``.  Local only; proxies are never used.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

__all__ = ["ServerError", "fetch_stats", "fetch_summary", "prometheus_view", "reset_stats"]

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
Key = tuple[str, str]


class ServerError(RuntimeError):
    """The server-side source could not be read; the message says which URL and why."""


def _request(url: str, *, method: str = "GET", token: str = "", timeout: float = 10.0) -> Any:
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers, data=b"" if method == "POST" else None)
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read()[:200].decode(errors="replace")
        hint = {401: "wrong or missing token (--stats-token / OTEL_PERF_STATS_TOKEN)",
                404: "nothing at that path (is OTEL_PERF_STATS_PATH set on the app?)"}.get(exc.code, detail)
        raise ServerError(f"{method} {url} -> HTTP {exc.code}: {hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ServerError(f"{method} {url} failed: {reason}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise ServerError(f"{method} {url} did not answer JSON: {body[:120]!r}") from None


def _stats_url(host: str, path: str) -> str:
    return host.rstrip("/") + "/" + path.strip("/")


def reset_stats(host: str, path: str, token: str) -> None:
    """Start a new stats window on the app (``POST <path>/reset``)."""
    _request(_stats_url(host, path) + "/reset", method="POST", token=token)


def fetch_summary(host: str, path: str, token: str) -> dict[str, Any]:
    """The app's whole stats summary (every worker of its server)."""
    summary = _request(_stats_url(host, path), token=token)
    if not isinstance(summary, dict):
        raise ServerError(f"GET {_stats_url(host, path)} did not answer a stats summary")
    return summary


def fetch_stats(
    host: str, path: str, token: str, summary: dict[str, Any] | None = None
) -> dict[Key, dict[str, Any]]:
    """Per-route server numbers from the app's stats endpoint (or from ``summary``, read already)."""
    if summary is None:
        summary = fetch_summary(host, path, token)
    out: dict[Key, dict[str, Any]] = {}
    for e in summary.get("endpoints", []):
        out[(str(e.get("method", "")), str(e.get("route", "")))] = {
            "source": "stats",
            "count": e.get("count"),
            "errors": e.get("errors"),
            "error_rate": e.get("error_rate"),
            "client_errors": e.get("client_errors"),
            "client_error_rate": e.get("client_error_rate"),
            "mean_queries": e.get("mean_queries"),
            "p95_queries": e.get("p95_queries"),
            "p50_ms": e.get("p50_ms"),
            "p95_ms": e.get("p95_ms"),
            "p99_ms": e.get("p99_ms"),
            "mean_ms": e.get("mean_ms"),
            "max_ms": e.get("max_ms"),
            "budget": e.get("budget"),
        }
    return out


def _vector(base: str, promql: str, at: float) -> list[tuple[Key, float]]:
    query = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
    doc = _request(f"{base.rstrip('/')}/api/v1/query?{query}")
    if doc.get("status") != "success":
        raise ServerError(f"Prometheus query failed: {doc.get('error', doc)} ({promql})")
    out = []
    for item in doc["data"]["result"]:
        metric = item.get("metric", {})
        value = float(item["value"][1])
        out.append(((metric.get("http_request_method", ""), metric.get("http_route", "")), value))
    return out


def prometheus_view(base: str, start: float, end: float, job: str = "") -> dict[Key, dict[str, Any]]:
    """Per-route server numbers from Prometheus over ``[start, end]`` (epoch seconds)."""
    window = max(1, math.ceil(end - start))
    sel = f'{{job="{job}"}}' if job else ""
    err_sel = f'{{job="{job}", http_response_status_code=~"5.."}}' if job else \
        '{http_response_status_code=~"5.."}'
    by = "http_route, http_request_method"
    metric = "http_server_request_duration_seconds"
    out: dict[Key, dict[str, Any]] = {}
    for key, value in _vector(base, f"sum by ({by}) (increase({metric}_count{sel}[{window}s]))", end):
        out[key] = {"source": "prometheus", "count": round(value), "errors": 0, "error_rate": 0.0}
    for key, value in _vector(base, f"sum by ({by}) (increase({metric}_count{err_sel}[{window}s]))", end):
        if key in out:
            out[key]["errors"] = round(value)
            out[key]["error_rate"] = round(value / out[key]["count"], 6) if out[key]["count"] else 0.0
    for q in (50, 95, 99):
        promql = (f"histogram_quantile({q / 100}, sum by (le, {by}) "
                  f"(rate({metric}_bucket{sel}[{window}s])))")
        for key, value in _vector(base, promql, end):
            if key in out and math.isfinite(value):
                out[key][f"p{q}_ms"] = round(value * 1000.0, 3)
    return out
