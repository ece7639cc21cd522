"""A real Prometheus server for end-to-end tests.

:func:`start_prometheus` writes a config scraping the given ``host:port`` targets every second, starts
``/usr/bin/prometheus`` (Debian package ``prometheus``, 2.42 here) with exemplar storage enabled and
a temp TSDB, on 127.0.0.1 and a free port, and waits until it is ready. :class:`PrometheusServer` then
answers PromQL through the HTTP API (:meth:`~PrometheusServer.query`, ``query_range``,
``exemplars``) and stops with :meth:`~PrometheusServer.stop`.

Prometheus 2.42 has no OTLP receiver (that came in 2.47); metrics reach it only by scraping.
Exemplars are only ingested from targets answering in the OpenMetrics text format.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from .procs import AppProcess, free_port, http_get

_DEFAULT_BINARY = "/usr/bin/prometheus"
_DEFAULT_PROMTOOL = "/usr/bin/promtool"


def prometheus_path() -> str | None:
    """Path of the ``prometheus`` binary, or None if it is not installed."""
    return shutil.which("prometheus") or (_DEFAULT_BINARY if Path(_DEFAULT_BINARY).is_file() else None)


def promtool_path() -> str | None:
    """Path of ``promtool`` (config/rules checker, ships with the prometheus package), or None."""
    return shutil.which("promtool") or (_DEFAULT_PROMTOOL if Path(_DEFAULT_PROMTOOL).is_file() else None)


class PrometheusError(RuntimeError):
    """The HTTP API answered with an error (the message names the PromQL) or the server failed."""


class PrometheusServer:
    """A running Prometheus scraping fixed targets. Create with :func:`start_prometheus`."""

    def __init__(self, process: AppProcess, port: int, base_dir: Path, config: dict[str, Any]) -> None:
        self.process = process
        self.port = port
        self.base_dir = base_dir
        self.config = config

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP API --------------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None, *, what: str = "") -> Any:
        """GET ``/api/v1/<path>`` and return its ``data``; PrometheusError on any failure."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        url = f"{self.url}/api/v1/{path}{query}"
        label = what or path
        try:
            status, body = http_get(url, timeout=10)
        except (urllib.error.URLError, OSError) as exc:
            raise PrometheusError(f"{label}: {url} unreachable: {exc!r}\n{self.process.describe()}") from exc
        try:
            doc = json.loads(body)
        except ValueError:
            raise PrometheusError(f"{label}: HTTP {status}, not JSON: {body[:500]!r}") from None
        if status != 200 or doc.get("status") != "success":
            raise PrometheusError(
                f"{label}: HTTP {status} {doc.get('errorType', '')}: {doc.get('error', body[:500])}"
            )
        return doc["data"]

    def query(self, promql: str, at: float | None = None) -> list[Any]:
        """Instant query; returns ``data.result``: for a vector a list of
        ``{"metric": {...}, "value": [ts, "v"]}``, for a scalar ``[ts, "v"]``."""
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        return list(self.api("query", params, what=f"query {promql!r}")["result"])

    def query_value(self, promql: str) -> float | None:
        """Instant query expected to give at most one sample; its value as float, None if empty."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise PrometheusError(f"query {promql!r} returned {len(result)} series, expected one: {result}")
        return float(result[0]["value"][1])

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[Any]:
        """Range query; returns ``data.result`` (``{"metric": {...}, "values": [[ts, "v"], ...]}``)."""
        params = {"query": promql, "start": str(start), "end": str(end), "step": str(step)}
        return list(self.api("query_range", params, what=f"query_range {promql!r}")["result"])

    def exemplars(self, promql: str, start: float, end: float) -> list[Any]:
        """``/api/v1/query_exemplars``: list of ``{"seriesLabels": {...}, "exemplars": [{"labels":
        {"trace_id": ...}, "value": "...", "timestamp": ...}]}``."""
        params = {"query": promql, "start": str(start), "end": str(end)}
        return list(self.api("query_exemplars", params, what=f"query_exemplars {promql!r}"))

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets with ``health`` (``up``/``down``/``unknown``) and ``lastError``."""
        return list(self.api("targets", {"state": "active"})["activeTargets"])

    # -- waiting ---------------------------------------------------------------------------------

    def wait_for_target_up(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Wait until every configured target was scraped successfully; AssertionError otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            targets = self.targets()
            if targets and all(t.get("health") == "up" for t in targets):
                return targets
            if time.monotonic() >= deadline:
                summary = "\n".join(
                    f"  {t.get('scrapeUrl')}: {t.get('health')} {t.get('lastError', '')}" for t in targets
                )
                raise AssertionError(
                    f"Prometheus targets not all up within {timeout}s:\n{summary or '  (none)'}\n"
                    f"{self.process.describe()}"
                )
            time.sleep(0.2)

    def wait_for_query(
        self,
        promql: str,
        predicate: Callable[[list[Any]], bool] = bool,
        *,
        timeout: float = 30.0,
    ) -> list[Any]:
        """Re-run an instant query until ``predicate(result)`` holds (default: non-empty); return it."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if predicate(result):
                return result
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"query {promql!r} did not satisfy the condition in {timeout}s: {result}"
                )
            time.sleep(0.25)

    # -- lifecycle -------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop Prometheus and delete its TSDB and config. Idempotent."""
        self.process.stop(timeout=10)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PrometheusServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def scrape_config(
    targets: Sequence[str],
    *,
    job: str = "app",
    scrape_interval: str = "1s",
    metrics_path: str = "/metrics",
) -> dict[str, Any]:
    """The Prometheus config (as a dict) that scrapes ``targets`` (``host:port``) as one job."""
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": [
            {
                "job_name": job,
                "scrape_interval": scrape_interval,
                "scrape_timeout": scrape_interval,
                "metrics_path": metrics_path,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }


def start_prometheus(
    targets: Sequence[str] = (),
    *,
    job: str = "app",
    scrape_interval: str = "1s",
    metrics_path: str = "/metrics",
    config: Mapping[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 30.0,
) -> PrometheusServer:
    """Start Prometheus scraping ``targets`` (``"127.0.0.1:8000"``) and wait until it is ready.

    Pass ``config`` to use a complete config dict instead of the generated one (e.g. with
    ``rule_files``). Raises FileNotFoundError when the binary is missing.
    """
    binary = prometheus_path()
    if binary is None:
        raise FileNotFoundError(
            "prometheus binary not found: apt-get install -y prometheus (Debian package, 2.42)"
        )
    cfg = (
        dict(config)
        if config is not None
        else scrape_config(targets, job=job, scrape_interval=scrape_interval, metrics_path=metrics_path)
    )
    base_dir = Path(tempfile.mkdtemp(prefix="otel-perf-prom-"))
    config_file = base_dir / "prometheus.yml"
    config_file.write_text(json.dumps(cfg, indent=2))  # JSON is valid YAML
    port = free_port()
    process = AppProcess(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={base_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
            "--log.level=warn",
            *extra_args,
        ],
        name="prometheus",
    )
    server = PrometheusServer(process, port, base_dir, cfg)
    try:
        process.start()
        process.wait_http(f"{server.url}/-/ready", timeout=timeout)
        deadline = time.monotonic() + timeout
        while http_get(f"{server.url}/-/ready", timeout=5)[0] != 200:
            if time.monotonic() >= deadline or not process.is_running():
                raise PrometheusError(f"Prometheus not ready within {timeout}s\n{process.describe()}")
            time.sleep(0.1)
    except BaseException:
        server.stop()
        raise
    return server
